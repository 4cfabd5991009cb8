"""``cotrecipe doctor``: the report on this machine, the version table against the real pins, the verdict for a
chosen preset (exit code), the GPU path judged on fake machines, and import checks that survive a broken package."""

from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from packaging.requirements import Requirement

from recipe.cli import main
from recipe.config import core as C
from recipe.tools import doctor

ROOT = Path(__file__).resolve().parents[1]


def project() -> dict:
    """pyproject.toml's [project] table, read independently of the doctor (tomllib: Python 3.11+)."""
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


# A CUDA machine with the gpu extra installed at the pinned versions (everything else: what is installed here).
GPU_SET = {"unsloth": "2026.10.4", "unsloth_zoo": "2026.10.6", "vllm": "0.27.1", "torch": "2.13.0+cu128",
           "bitsandbytes": "0.45.5", "xformers": "0.0.35"}


REAL_VERSION = doctor.installed_version


def fake_installed(changes: dict[str, str | None]):
    return lambda name: changes[name] if name in changes else REAL_VERSION(name)


def t4_machine(**changes) -> doctor.Machine:
    pins, source = doctor.read_pins(fake_installed(changes.pop("versions", GPU_SET)))
    m = doctor.Machine(python="3.11", os="Linux", cpu="x", cpu_flags={}, torch="2.13.0+cu128", torch_cuda="12.8",
                       cuda=True, bf16=False, gpus=[("Tesla T4", 14.74)], driver="570.86",
                       imports={"unsloth": (True, "2026.10.4"), "vllm": (True, "0.27.1")}, pins=pins,
                       pins_source=source, smollm2=True)
    return replace(m, **changes)


def test_the_report_on_this_machine_and_demo_runs_here():
    result = CliRunner().invoke(main, ["doctor", "--preset", "demo"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"Python       {platform.python_version()}" in out
    assert f"torch        {torch.__version__} (CUDA build {torch.version.cuda or 'none'}" in out
    if Path("/proc/cpuinfo").is_file():
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
        assert f"avx512_bf16 {'✓' if 'avx512_bf16' in flags else '✗'}" in out
    assert f"pins from {ROOT / 'pyproject.toml'}" in out
    table = {line.split()[1]: line.split()[0] for line in out.splitlines() if line.startswith("    ")}
    core = [Requirement(r).name for r in project()["dependencies"]]
    assert set(core) <= set(table) and all(table[name] == "✓" for name in core)  # this machine runs the hf path
    assert all(f"  {'✓' if ok else '✗'} {name}" in out for name, ok in [("demo", True), ("smoke", True)])
    assert set(C.preset_names()) <= {line.split()[1] for line in out.split("presets on this machine:")[1].splitlines()
                                     if line.startswith("  ")}
    assert out.rstrip().endswith("✓ --preset demo can run here (hf on cpu)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="judges a machine without CUDA")
def test_a_preset_that_needs_cuda_exits_non_zero_here():
    result = CliRunner().invoke(main, ["doctor", "--preset", "qwen2.5-3b-t4"])
    assert result.exit_code == 1
    verdict = result.output.split("✗ --preset qwen2.5-3b-t4 cannot run here")[1]
    assert "model.backend=unsloth needs a CUDA GPU" in verdict and "run.device=cuda but torch sees no CUDA" in verdict
    assert "smallest card by plan: T4 16 GB" in result.output
    bad = CliRunner().invoke(main, ["doctor", "--preset", "nope"])
    assert bad.exit_code == 1 and "invalid config: unknown preset 'nope'" in bad.output


def test_an_out_of_range_pin_is_a_cross_with_its_fix_and_fails_the_hf_path(monkeypatch):
    monkeypatch.setattr(doctor, "installed_version", fake_installed({"trl": "1.15.0"}))
    result = CliRunner().invoke(main, ["doctor", "--preset", "smoke"])
    assert result.exit_code == 1
    trl = next(line for line in result.output.splitlines() if line.startswith("    ✗ trl "))
    assert "==1.14.2" in trl and "1.15.0" in trl and trl.endswith('fix: pip install "trl==1.14.2"')
    assert 'trl==1.14.2 is pinned, 1.15.0 installed: pip install "trl==1.14.2"' in result.output.split("cannot run")[1]


def test_the_version_table_checks_every_pin_of_pyproject():
    fake = fake_installed({"transformers": "5.16.0", "peft": None, "datasets": "4.8.9", "torch": "2.13.0+cu128",
                           "bitsandbytes": "0.46.0", "unsloth": None})
    pins, _ = doctor.read_pins(fake)
    groups = {"": project()["dependencies"], **project()["optional-dependencies"]}
    assert sorted((p.group, p.name, p.spec) for p in pins) == sorted(
        (g, Requirement(r).name, str(Requirement(r).specifier)) for g, rs in groups.items() for r in rs)
    by = {(p.group, p.name): p for p in pins}
    assert not by["", "transformers"].ok and by["", "transformers"].fix == 'pip install "transformers==5.17.0"'
    assert not by["", "peft"].ok and by["", "datasets"].ok and by["gpu", "torch"].ok  # a local +cu128 label matches
    assert not by["gpu", "bitsandbytes"].ok  # != 0.46.0
    lines = doctor.pin_lines(pins)
    assert any(line.startswith("    ✗ transformers") and line.endswith('fix: pip install "transformers==5.17.0"')
               for line in lines)
    assert any(line.startswith("    ✗ peft") and "not installed" in line for line in lines)  # core: missing is ✗
    assert any(line.startswith("    - unsloth ") for line in lines)  # an extra: missing is '-', not a failure
    assert any(line.startswith("    ✓ datasets") and "fix" not in line for line in lines)


def test_metadata_requirements_land_in_their_extra():
    reqs = [("trl==1.14.2", ""), ('vllm==0.27.1; extra == "gpu"', ""), ('ruff>=0.6; extra == "dev"', ""),
            ('nothing==1; sys_platform == "no-such-os"', "")]
    pins = doctor.parse_pins(reqs, {"trl": "1.14.2", "vllm": "0.26.0"}.get, extras=["gpu", "dev"])
    assert [(p.name, p.group, p.ok) for p in pins] == [("trl", "", True), ("vllm", "gpu", False), ("ruff", "dev", False)]


def test_the_gpu_path_on_a_fake_t4():
    cfg = C.resolve(preset="qwen2.5-3b-t4")
    assert doctor.can_run(cfg, t4_machine()) == ("unsloth on cuda", [])
    where, problems = doctor.can_run(cfg, t4_machine(imports={"unsloth": (True, "x"), "vllm": (False, "import fails: "
                                                                                     "ImportError: libcudart.so.12")}))
    assert problems == ["vllm.enabled=true needs vLLM to import (import fails: ImportError: libcudart.so.12): "
                        "pip install 'cotrecipe[gpu]'"]
    _, problems = doctor.can_run(cfg, t4_machine(versions={**GPU_SET, "bitsandbytes": "0.46.0"}))
    assert problems == ['bitsandbytes!=0.46.0,!=0.48.0,>=0.45.5 is pinned, 0.46.0 installed: '
                        'pip install "bitsandbytes!=0.46.0,!=0.48.0,>=0.45.5"']
    _, problems = doctor.can_run(cfg, t4_machine(gpus=[("small", 6.0)]))
    assert problems and all(p.startswith("plan: ") and "the GPU has 6.0 GiB" in p for p in problems)
    _, problems = doctor.can_run(C.resolve(preset="paper", overrides=["model.dtype=bfloat16"]), t4_machine())
    assert any("no native bfloat16" in p for p in problems)
    # the paper preset's backend auto: unsloth when it imports, else hf on the GPU
    assert doctor.can_run(C.resolve(preset="paper"), t4_machine(imports={"unsloth": (None, "not installed"),
                                                                         "vllm": (None, "not installed")}))[0] == \
        "hf on cuda"


def test_import_checks_survive_a_broken_or_hanging_package(tmp_path, monkeypatch):
    (tmp_path / "brokencuda.py").write_text("raise RuntimeError('CUDA driver initialization failed')\n")
    (tmp_path / "hangs.py").write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "aborts.py").write_text("import os\nos.abort()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{ROOT}")
    assert doctor.import_check("brokencuda", 30) == (False, "import fails: RuntimeError: CUDA driver initialization "
                                                           "failed")
    assert doctor.import_check("hangs", 1) == (False, "import did not finish in 1 s")
    ok, why = doctor.import_check("aborts", 30)
    assert ok is False and why.startswith("import fails")
    assert doctor.import_check("no_such_module_here", 30) == (None, "not installed")
    assert doctor.import_check("click", 30) == (True, doctor.installed_version("click"))
    with pytest.raises(ValueError, match="not a module name"):
        doctor.import_check("os; print(1)", 30)


def test_driver_gpus_and_cpu_flags_are_read_from_nvidia_smi_and_cpuinfo(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '570.86.15, Tesla T4, 15360'\necho '570.86.15, NVIDIA H200, 143771'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert doctor.nvidia_smi() == ("570.86.15", [("Tesla T4", 15.0), ("NVIDIA H200", 143771 / 1024)])
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver'\nexit 9\n")
    assert doctor.nvidia_smi() == ("nvidia-smi failed (CalledProcessError)", [])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert doctor.nvidia_smi() == (None, [])
    name, flags = doctor.cpu_info("processor\t: 0\nmodel name\t: Intel Xeon 8480+\nflags\t\t: fpu avx2 avx512f "
                                  "avx512_bf16 amx_tile amx_bf16\n")
    assert name.startswith("Intel Xeon 8480+ (") and all(flags.values()) and set(flags) == set(doctor.CPU_FLAGS)
    assert not any(doctor.cpu_info("model name : Old\nflags : fpu sse2\n")[1].values())
