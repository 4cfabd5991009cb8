"""The local GPU's memory, read from the NVIDIA driver without creating a CUDA context (for ``cotrecipe plan`` and
the run-all parent's fit check, :func:`recipe.tools.plan.check_fits`)."""

from __future__ import annotations

import os
import shutil
import subprocess

GIB = 2**30


def gpu_total_gib() -> float | None:
    """GPU 0's memory in GiB as CUDA reports it, read from the driver's ``nvidia-smi`` (it ships with every NVIDIA
    driver), or None without one. Never through torch: ``torch.cuda.get_device_properties`` creates a CUDA context,
    which in the run-all parent would hold a few hundred MiB of the card beside every child for the whole run.

    ``memory.total`` includes what the driver reserves for itself (0.25 GiB of a T4's 15 GiB), which CUDA does not
    hand out: ``memory.reserved`` is subtracted where the driver knows that field. With ``CUDA_VISIBLE_DEVICES`` the
    first device it names is read (the one torch calls ``cuda:0``)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible.startswith("-"):  # CUDA_VISIBLE_DEVICES=-1: no GPU for this process
        return None
    select = [f"--id={visible}"] if visible else ["--id=0"]
    for fields in ("memory.total,memory.reserved", "memory.total"):  # an older driver refuses the first query
        try:
            out = subprocess.run([exe, *select, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        lines = out.stdout.strip().splitlines()
        if out.returncode != 0 or not lines:
            continue
        total, reserved = (_mib(v) for v in (lines[0].split(",") + ["0"])[:2])
        return None if not total else (total - (reserved or 0.0)) * 2**20 / GIB
    return None


def _mib(text: str) -> float | None:
    """A number of MiB as nvidia-smi prints it, or None (``[N/A]``).

    >>> _mib(" 15360"), _mib("[N/A]")
    (15360.0, None)
    """
    try:
        return float(text)
    except ValueError:
        return None
