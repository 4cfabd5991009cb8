"""What a GPU machine without network gets (scripts/gpu_image.txt + the carried wheels, installed by
scripts/install_carried.sh; proved by scripts/offline_install_check.sh), and the `gpu-novllm` extra resolved against
Colab's torch (.ci/colab_resolve.sh, through .ci/check_resolved.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(path: Path) -> dict[str, Requirement]:
    """A requirements file's lines by canonical name (comments, inline ones too, dropped)."""
    lines = (line.split(" #", 1)[0].strip() for line in path.read_text().splitlines())
    return {canonicalize_name(r.name): r for r in (Requirement(line) for line in lines if line and line[0] != "#")}


def pinned(req: Requirement) -> str | None:
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


IMAGE = requirements(ROOT / "scripts" / "gpu_image.txt")
CARRIED = requirements(ROOT / "scripts" / "gpu_wheels_recipe.txt")
UNSLOTH = requirements(ROOT / "scripts" / "gpu_wheels_unsloth.txt")
CORE = {canonicalize_name(r.name): r for r in map(Requirement, PROJECT["dependencies"])}


def test_every_requirement_of_cotrecipe_is_on_the_image_within_its_bounds_or_carried():
    """What the image lacks, or holds at a version outside the bound, has a carried wheel inside the bound."""
    for name, req in CORE.items():
        image = IMAGE.get(name)
        image_ok = image is not None and (pinned(image) is None or req.specifier.contains(pinned(image)))
        if not image_ok:
            assert name in CARRIED, f"{name}: the image lacks it or holds {image}, outside {req}, and nothing is carried"
        if name in CARRIED:
            assert req.specifier.contains(pinned(CARRIED[name])), f"carried {CARRIED[name]} is outside {req}"


def test_carried_pins_are_the_project_pins():
    constraints = requirements(ROOT / "constraints.txt")
    for name, req in CARRIED.items():
        assert pinned(req), f"{req}: a carried wheel is one exact version"
        if name in CORE and pinned(CORE[name]):
            assert pinned(req) == pinned(CORE[name]), f"{req} vs pyproject.toml's {CORE[name]}"
        if name in constraints:
            assert pinned(req) == pinned(constraints[name]), f"{req} vs constraints.txt's {constraints[name]}"
    gpu = {canonicalize_name(r.name): r for r in map(Requirement, PROJECT["optional-dependencies"]["gpu"])}
    for name, req in UNSLOTH.items():
        if name in gpu:
            assert gpu[name].specifier.contains(pinned(req)), f"{req} is outside the gpu extra's {gpu[name]}"
    assert set(UNSLOTH) >= {"unsloth", "unsloth-zoo", "bitsandbytes"} and not set(UNSLOTH) & set(CARRIED)


def test_install_carried_leaves_a_folder_it_did_not_make_alone(tmp_path):
    (tmp_path / "wheels").mkdir()
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "keep.txt").write_text("mine")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "install_carried.sh"), sys.executable,
                           str(tmp_path / "wheels"), str(venv)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == f"install_carried: {venv} exists and was not made by this script: not touching it\n"
    assert sorted(p.name for p in venv.iterdir()) == ["keep.txt"]


def test_offline_check_leaves_a_work_folder_it_did_not_write_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "offline_install_check.sh")], capture_output=True, text=True,
                          env={**os.environ, "OFFLINE_CHECK_WORK": str(tmp_path)}, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"offline_install_check: {tmp_path} holds files this script did not write: set "
                           "OFFLINE_CHECK_WORK to a new folder\n")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


RESOLVED = "torch==2.9.0\n    # via cotrecipe\nunsloth==2026.10.9\nunsloth-zoo==2026.10.9\n"


def check_resolved(tmp_path, text, *specs):
    (tmp_path / "resolved.txt").write_text(text)
    return subprocess.run([sys.executable, str(ROOT / ".ci" / "check_resolved.py"), str(tmp_path / "resolved.txt"),
                           "label", *specs], capture_output=True, text=True, timeout=60)


def test_check_resolved_prints_the_resolution_and_names_each_missing_or_outside_package(tmp_path):
    ok = check_resolved(tmp_path, RESOLVED, "torch==2.9.0", "unsloth_zoo>=2026.10.4,<2026.11")
    assert ok.returncode == 0 and ok.stdout == "label resolves to: torch==2.9.0, unsloth_zoo==2026.10.9\n"
    bad = check_resolved(tmp_path, RESOLVED, "torch==2.10.0", "xformers>=0.0.27.post2", "unsloth>=2026.10.4")
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("label resolved outside the supported range: torch==2.9.0 (supported: ==2.10.0); "
                                  "xformers==None (supported: >=0.0.27.post2)")


def fake_uv(tmp_path, fail_torch: str, lacks_xformers: str) -> dict:
    """PATH with a `uv` that 'resolves' the gpu-novllm extra: no solution for ``fail_torch``, no xformers in the
    resolution for ``lacks_xformers``, else torch, xformers and unsloth at supported versions."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uv = bin_dir / "uv"
    uv.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        while [ $# -gt 0 ]; do
          case "$1" in -c) constraints="$2"; shift;; -o) out="$2"; shift;; esac; shift
        done
        torch="$(sed 's/torch==//' "$constraints")"
        if [ "$torch" = {fail_torch} ]; then
          echo "error: No solution found: xformers has no usable wheels for torch==$torch" >&2; exit 1
        fi
        {{ echo "torch==$torch"; [ "$torch" = {lacks_xformers} ] || echo "xformers==0.0.35"
           printf 'unsloth==2026.10.9\\nunsloth-zoo==2026.10.9\\nbitsandbytes==0.50.2\\ntrl==1.14.2\\n'
           echo "transformers==5.17.0"; }} > "$out"
        """))
    uv.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}


def test_colab_resolution_fails_loudly_for_a_torch_without_an_xformers_wheel(tmp_path):
    env = fake_uv(tmp_path, fail_torch="2.9.0", lacks_xformers="2.8.0")
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "colab_resolve.sh")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1
    assert ("gpu-novllm on Colab's current runtime (torch 2.11.0, Python 3.13) resolves to: torch==2.11.0, "
            "xformers==0.0.35") in proc.stdout
    assert "no usable wheels for torch==2.9.0" in proc.stderr
    assert ("colab_resolve: gpu-novllm on Colab's 2026.01 runtime (torch 2.9.0, Python 3.12) does not resolve (uv's "
            "message above; if it names xformers, no xformers wheel is built for torch 2.9.0)") in proc.stderr
    assert ("gpu-novllm on Colab's 2025.10 runtime (torch 2.8.0, Python 3.12) resolved outside the supported range: "
            "xformers==None") in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == \
        "colab_resolve: the gpu-novllm extra fails on Colab runtime(s) 2026.01 2025.10"


def test_ci_runs_both_resolutions():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".ci/gpu_resolve.sh" in ci and ".ci/colab_resolve.sh" in ci


@pytest.mark.slow
def test_the_offline_install_check_passes(tmp_path):
    """scripts/offline_install_check.sh end to end (PyPI for the wheels and the image venv; minutes the first time)."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "offline_install_check.sh")], capture_output=True, text=True,
                          env={**os.environ, "OFFLINE_CHECK_WORK": str(tmp_path / "work")}, timeout=3000)
    if "no Python 3.12 here" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "offline_install_check: passed" in proc.stdout
    installed = next(line for line in proc.stdout.splitlines() if line.startswith("install_carried: torch=="))
    for part in ("torch==2.11.0 (image)", "transformers==5.17.0 (image)", "pydantic==2.14.4 (carried)",
                 "peft==0.21.2 (carried)", "filelock==4.3.1 (carried)", "fsspec==2026.2.0 (carried)"):
        assert part in installed
    assert "verdict: fits" in proc.stdout
    assert "run-all: {'stage1': 'done', 'stage2': 'done', 'stage3': 'done'}" in proc.stdout
