"""``run-all``: stage 1 -> 2 -> 3 -> eval + report in one run directory, resumable.

Run directory::

    config.yaml      the resolved config of the latest invocation
    manifest.json    versions; per stage: status, start/end, wall time, the config it ran with, data hash, metrics,
                     effective trainer config, output folder
    stage1/ stage2/ stage3/
        trainer/     TRL output_dir: checkpoint-N folders (the resume points) and logs
        model/       the finished weights, written once, atomically (adapter or full model)
    eval/ report.md report.png   (evaluation)

Resume: the same command again skips stages whose status is ``done`` and continues an unfinished stage from its last
complete TRL checkpoint. Every file here is written atomically, so a SIGKILL at any moment leaves a run that a rerun
completes without recomputing a finished stage. A finished stage whose config changed is an error naming the changed
keys, unless ``--force`` (which reruns that stage and every later one).
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from recipe import config as config_mod
from recipe.config import Config
from recipe.fsio import read_json, write_json, write_text

log = logging.getLogger("recipe")

STAGES = ("stage1", "stage2", "stage3")
STAGE_TITLES = {"stage1": "structure (SFT, masked shuffled reconstruction)",
                "stage2": "brevity (GRPO, masked completion)",
                "stage3": "internalisation (persistent failures, GRPO rewriting)"}
# Config sections that shape every stage's weights; stageN also depends on the sections of stages 1..N.
_SHARED_SECTIONS = ("model", "data")
_IGNORED_KEYS = {"data.eval_source"}


class RunError(RuntimeError):
    """A run directory problem (changed config, missing stage output, ...)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("cotrecipe", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def stage_config(cfg: Config, stage: str) -> dict:
    """The part of the config that determines ``stage``'s output (earlier stages included)."""
    full = config_mod.to_dict(cfg)
    upto = STAGES[: STAGES.index(stage) + 1]
    out = {key: full[key] for key in _SHARED_SECTIONS + upto}
    out["data"] = {k: v for k, v in out["data"].items() if f"data.{k}" not in _IGNORED_KEYS}
    out["run"] = {"seed": full["run"]["seed"]}
    return out


# --------------------------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------------------------


def manifest_path(run_dir: Path) -> Path:
    return Path(run_dir) / "manifest.json"


def load_manifest(run_dir: str | Path) -> dict:
    path = manifest_path(Path(run_dir))
    if not path.is_file():
        return {"created": _now(), "versions": versions(), "stages": {}}
    return read_json(path)


def save_manifest(run_dir: Path, manifest: dict) -> None:
    write_json(manifest_path(run_dir), manifest)


def stage_done(manifest: dict, stage: str) -> bool:
    return manifest.get("stages", {}).get(stage, {}).get("status") == "done"


def stage_output(run_dir: str | Path, stage: str) -> str | None:
    """Weights folder of a finished stage (``None`` for ``base``: the config's model). Errors name what is missing."""
    if stage == "base":
        return None
    if stage not in STAGES:
        raise RunError(f"unknown stage '{stage}' (allowed: base, {', '.join(STAGES)})")
    run_dir = Path(run_dir)
    if not manifest_path(run_dir).is_file():
        raise RunError(f"{run_dir} is not a run directory (no manifest.json)")
    entry = load_manifest(run_dir).get("stages", {}).get(stage)
    if not entry or entry.get("status") != "done":
        status = entry.get("status") if entry else "not started"
        raise RunError(f"{stage} of run {run_dir} is not finished (status: {status}); run it first")
    return _absolute(run_dir, entry.get("output"))


def check_config(run_dir: Path, cfg: Config, manifest: dict, force: bool) -> None:
    """Refuse (or with ``force`` reset) stages whose recorded config differs from ``cfg``."""
    for i, stage in enumerate(STAGES):
        entry = manifest.get("stages", {}).get(stage)
        if not entry or "config" not in entry:
            continue
        changed = config_mod.diff_keys(entry["config"], stage_config(cfg, stage))
        if not changed:
            continue
        if not force:
            raise RunError(f"{stage} ({entry.get('status')}) was run with a different config; changed keys: "
                           f"{', '.join(changed)}. Use a new --output-dir, restore them, or pass --force to rerun "
                           f"{stage} and the stages after it")
        for later in STAGES[i:]:
            log.warning("--force: %s will be rerun (changed: %s)", later, ", ".join(changed))
            manifest["stages"].pop(later, None)
            shutil.rmtree(run_dir / later, ignore_errors=True)
        return


# --------------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------------


def _relative(run_dir: Path, path: str) -> str:
    """Stage outputs inside the run directory are recorded relative to it, so a run folder can be moved."""
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def _absolute(run_dir: Path, path: str | None) -> str | None:
    if path is None:
        return None
    return str(run_dir / path) if not Path(path).is_absolute() else path


def _stage_module(stage: str):
    from recipe.stages import stage1, stage2, stage3

    return {"stage1": stage1, "stage2": stage2, "stage3": stage3}[stage]


def _execute(cfg: Config, run_dir: Path, manifest: dict, stage: str, init_from: str | None) -> None:
    entry = {"status": "running", "started": _now(), "config": stage_config(cfg, stage), "init_from": init_from}
    previous = manifest["stages"].get(stage, {})
    if previous.get("status") in ("running", "failed"):
        entry["attempts"] = previous.get("attempts", 1) + 1
    manifest["stages"][stage] = entry
    save_manifest(run_dir, manifest)
    t0 = time.monotonic()
    try:
        result = _stage_module(stage).run(cfg, run_dir / stage, init_from=init_from)
    except BaseException as exc:
        entry.update(status="failed", ended=_now(), error=f"{type(exc).__name__}: {exc}")
        save_manifest(run_dir, manifest)
        raise
    if result.get("output"):
        result["output"] = _relative(run_dir, result["output"])
    entry.update(status="done", ended=_now(), wall_s=round(time.monotonic() - t0, 2), **result)
    save_manifest(run_dir, manifest)
    write_json(run_dir / stage / "metrics.json", result.get("metrics", {}))
    log.info("%s done in %.1f s: %s", stage, entry["wall_s"], _short_metrics(result.get("metrics", {})))


def _short_metrics(metrics: dict) -> str:
    keys = ("loss_last", "reward_first", "reward_last", "completions/mean_length_first",
            "completions/mean_length_last", "failures")
    return ", ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                     for k in keys if k in metrics) or "-"


def _warn_overlapping_slices(cfg: Config) -> None:
    """Disjoint stage slices are the default; an overlap (the paper preset mines stage 3 over stage 2's rows too) is
    allowed but said out loud."""
    from recipe.data import check_disjoint_slices

    try:
        check_disjoint_slices({s: getattr(cfg.data, f"{s}_rows") for s in STAGES if getattr(cfg, s).enabled})
    except ValueError as exc:
        log.warning("%s: those problems are seen by more than one stage", exc)


def prepare(cfg: Config, force: bool) -> tuple[Path, dict]:
    run_dir = Path(cfg.run.output_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(run_dir)
    manifest.setdefault("stages", {})
    check_config(run_dir, cfg, manifest, force)
    _warn_overlapping_slices(cfg)
    manifest["versions"] = versions()
    manifest["updated"] = _now()
    write_text(run_dir / "config.yaml", config_mod.dump_yaml(cfg))
    save_manifest(run_dir, manifest)
    return run_dir, manifest


def overall_bar(done: int, total: int, width: int = 12) -> str:
    """The run-all progress line's bar (each stage also has TRL's own progress bar).

    >>> overall_bar(1, 3)
    'curriculum [####--------] 1/3'
    """
    filled = round(width * done / total)
    return f"curriculum [{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


def run_all(cfg: Config, force: bool = False) -> Path:
    """Stage 1 -> 2 -> 3 (skipping finished ones), then evaluation and the report when enabled."""
    run_dir, manifest = prepare(cfg, force)
    init_from: str | None = None
    enabled = [s for s in STAGES if getattr(cfg, s).enabled]
    for n, stage in enumerate(STAGES, start=1):
        if not getattr(cfg, stage).enabled:
            log.info("%s %s disabled in the config; skipped", overall_bar(n - 1, len(STAGES)), stage)
            continue
        if stage_done(manifest, stage):
            log.info("%s %s already done; skipped", overall_bar(n - 1, len(STAGES)), stage)
        else:
            log.info("%s %s: %s", overall_bar(n - 1, len(STAGES)), stage, STAGE_TITLES[stage])
            _execute(cfg, run_dir, manifest, stage, init_from)
        init_from = _absolute(run_dir, manifest["stages"][stage].get("output")) or init_from
    log.info("%s stages finished: %s", overall_bar(len(STAGES), len(STAGES)), ", ".join(enabled) or "none")
    if cfg.eval.enabled:
        from recipe.evaluate import evaluate_run

        evaluate_run(cfg, run_dir)
    return run_dir


def run_stage(cfg: Config, stage: str, init_from: str | None = None, force: bool = False) -> Path:
    """Run one stage in the run directory; starting weights from ``--from``, else the previous finished stage."""
    run_dir, manifest = prepare(cfg, force=force)
    if stage_done(manifest, stage) and not force:
        log.info("%s already done in %s; pass --force to rerun it", stage, run_dir)
        return run_dir
    if stage_done(manifest, stage):
        manifest["stages"].pop(stage)
        shutil.rmtree(run_dir / stage, ignore_errors=True)
    if init_from is None and stage != "stage1":
        prev = STAGES[STAGES.index(stage) - 1]
        if stage_done(manifest, prev):
            init_from = _absolute(run_dir, manifest["stages"][prev].get("output"))
        else:
            log.warning("%s is not done in %s and no --from was given: %s starts from the base model", prev,
                        run_dir, stage)
    elif init_from is not None and not Path(init_from).exists():
        raise RunError(f"--from path not found: {init_from}")
    _execute(cfg, run_dir, manifest, stage, init_from)
    return run_dir
