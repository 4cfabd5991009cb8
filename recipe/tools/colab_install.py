"""What a notebook's first cell installs on a fresh Colab (or any) machine, decided from the NVIDIA driver.

The `gpu` extra pins torch 2.13.0 (vllm 0.27.1 needs exactly it). That PyPI wheel is a CUDA 13 build: its METADATA
requires ``cuda-toolkit[...]==13.0.3`` and ``nvidia-cudnn-cu13``, ``nvidia-nccl-cu13`` (read from the manylinux
x86-64 wheel), and CUDA 13 runs only on an NVIDIA driver of the R580 branch or newer. Installing it over an older
driver replaces a working torch with one that sees no GPU. So:

* driver R580+: the pinned set, ``pip install -e REPO[gpu]``;
* an older driver: the documented fallback, ``pip install -e REPO[gpu-novllm] torch==<the installed torch>``: Unsloth
  and bitsandbytes on the torch the machine ships, no vLLM (the notebooks then pass ``vllm.enabled=false``:
  GRPO generates with HF generate, slower);
* no driver: cotrecipe alone (the CPU presets).

This file imports only the standard library: the cell runs it by path (``python REPO/recipe/tools/colab_install.py REPO``)
before the ``recipe`` package is installed.

>>> driver_major("550.54.15\\n"), driver_major("580.82.07"), driver_major("NVIDIA-SMI has failed"), driver_major(None)
(550, 580, None, None)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

MIN_DRIVER_MAJOR = 580  # CUDA 13.x needs the R580 driver branch or newer
TORCH_PIN = "2.13.0"  # the `gpu` extra's torch (tests/test_gpu_install.py checks they agree)
# xformers (the gpu extra's, and unsloth's own dependency) from wheels only: where no wheel fits the machine's torch,
# pip fails in seconds instead of compiling CUDA kernels for an hour (uv resolved wheels for torch 2.6, 2.8, 2.9, 2.13)
WHEELS_ONLY = ("--only-binary", "xformers")


@dataclass(frozen=True)
class Install:
    mode: str  # "gpu" (the pinned set) | "gpu-novllm" (the fallback) | "cpu" | "stop"
    pip_args: tuple[str, ...]  # after `pip install`; empty for "stop"
    line: str  # the one line the cell prints


def driver_major(text: str | None) -> int | None:
    """The driver's major version from ``nvidia-smi --query-gpu=driver_version`` output (the lowest of several GPUs);
    None for no output or an error message."""
    majors = [int(m.group(1)) for line in (text or "").splitlines()
              if (m := re.fullmatch(r"\s*(\d+)\.\d+(?:\.\d+)?\s*", line))]
    return min(majors) if majors else None


def query_driver() -> str | None:
    """``nvidia-smi``'s driver version(s), or None where there is no NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return None
    proc = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                          text=True)
    return proc.stdout if proc.returncode == 0 else None


def installed_torch() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def choose(driver: str | None, repo: str | Path, torch_version: str | None) -> Install:
    """The install for a machine whose ``nvidia-smi`` printed ``driver`` and which has ``torch_version`` installed."""
    major = driver_major(driver)
    if major is None:
        return Install("cpu", ("-e", str(repo)), "no NVIDIA driver found: installing cotrecipe without the gpu extra "
                       "(the CPU presets smoke and demo run here; qwen2.5-3b-t4 needs a GPU)")
    version = (driver or "").split()[0]
    if major >= MIN_DRIVER_MAJOR:
        return Install("gpu", ("-e", f"{repo}[gpu]", *WHEELS_ONLY),
                       f"NVIDIA driver {version} (R{MIN_DRIVER_MAJOR}+, CUDA 13): installing the pinned gpu set "
                       f"(torch {TORCH_PIN}, vllm, unsloth)")
    if torch_version is None:
        return Install("stop", (), f"NVIDIA driver {version} is older than R{MIN_DRIVER_MAJOR}, which torch "
                       f"{TORCH_PIN} (CUDA 13) needs, and no torch is installed: install a torch built for this "
                       "driver's CUDA first, then run this cell again")
    return Install("gpu-novllm", ("-e", f"{repo}[gpu-novllm]", f"torch=={torch_version}", *WHEELS_ONLY),
                   f"NVIDIA driver {version} is older than R{MIN_DRIVER_MAJOR}, which torch {TORCH_PIN} (CUDA 13) "
                   f"needs: keeping torch {torch_version} and installing Unsloth without vLLM "
                   "(vllm.enabled=false: GRPO generates with HF generate, slower)")


def main(argv: list[str] | None = None) -> int:
    """``python colab_install.py [REPO]``: print the decision in one line, then run pip (its output stays visible)."""
    argv = sys.argv[1:] if argv is None else argv
    repo = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    install = choose(query_driver(), repo.resolve(), installed_torch())
    print(install.line, flush=True)
    if install.mode == "stop":
        return 2
    return subprocess.call([sys.executable, "-m", "pip", "install", *install.pip_args])


if __name__ == "__main__":
    sys.exit(main())
