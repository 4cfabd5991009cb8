"""The run directory: its layout, its manifest and the config check, in one place (layout: docs/run-directory.md).

Every trainable *entry* of a run (a curriculum stage or a baseline) owns a folder ``<run>/<name>/`` with
``trainer/`` (TRL checkpoints, the resume points) and ``model/`` (the finished weights), a record in
``manifest.json`` under ``entries.<name>`` (status, times, the config it ran with, data fingerprint, metrics, trainer
config, output) and an evaluation folder ``eval/<name>/``. Every file is written atomically (:mod:`recipe.fsio`).

A finished entry whose recorded config differs from the current one is refused, naming the changed keys; with
``force`` it is *invalidated* instead: it and every entry that starts from its weights are marked ``stale`` and
their folders removed, so the next run trains them again. A failed or interrupted entry has no result to protect:
a changed config simply retrains it.

Reopening a run (:func:`open_run`, under the run's lock, :mod:`recipe.store.runlock`) also repairs what a crash or a user
left: an entry still ``running`` is marked ``interrupted`` (it resumes), a done entry whose weights folder is gone is
trained again with what starts from it, one whose weights are damaged is an error naming the file and ``--force``,
and a corrupt ``manifest.json`` is an error saying how to recover. A manifest that keeps its records under
``stages`` (as older versions wrote it, baselines and the warm-up included) is read as ``entries``
(:func:`migrate_manifest`).

The entries themselves (name, what they start from, the sections their weights depend on) are the table of
:mod:`recipe.entries`.

>>> import tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> is_done(load_manifest(run), "stage1"), eval_dir(run, "base").relative_to(run).as_posix()
(False, 'eval/base')
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from recipe import dist
from recipe.config import core as config_mod
from recipe.config.core import Config
from recipe.entries import STAGES, Entry
from recipe.errors import RunError
from recipe.fsio import read_json, write_json, write_text
from recipe.models.integrity import weights_dir_problem
from recipe.store.fingerprint import diff_keys, entry_config, with_legacy_keys

log = logging.getLogger("recipe")

CONFIG_FILE = "config.yaml"  # the resolved config of the latest invocation
MANIFEST_FILE = "manifest.json"
MANIFEST_LOCK = ".manifest.lock"  # serialises the merged writes of entries trained side by side (not the run's .lock)
TRAINER_DIR = "trainer"  # TRL output_dir inside an entry folder: checkpoint-N folders and logs
MODEL_DIR = "model"  # the entry's finished weights (adapter or full model), written once, atomically
METRICS_FILE = "metrics.json"  # an entry's summarised training metrics
TRAINER_LOG = "trainer_log.json"  # TRL's full log history
EVAL_DIR = "eval"
RESULTS = "results.json"  # eval/<name>/results.json: metrics, protocol, model, data hash (written last)
GENERATIONS = "generations.jsonl"  # eval/<name>/generations.jsonl: one row per problem
INVOCATIONS = "run_all.jsonl"  # one line per finished `run-all`: start, end, wall, lanes, entries already done
REPORT_MD, REPORT_PNG = "report.md", "report.png"
ENTRIES_KEY = "entries"  # the manifest's records, one per entry
LEGACY_ENTRIES_KEY = "stages"  # the key older versions wrote the records under (baselines and warm-up included)
__all__ = ["CONFIG_FILE", "EVAL_DIR", "GENERATIONS", "MANIFEST_FILE", "MODEL_DIR", "RESULTS", "STAGES",
           "TRAINER_DIR", "Entry"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def peak_rss_mb(children: bool = False) -> float:
    """This process's peak resident memory so far, in MiB (Linux reports ``ru_maxrss`` in KiB); ``children``: that
    of its largest finished child process instead."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def trained_tokens(run_dir: str | Path, name: str) -> int | None:
    """The tokens entry ``name`` trained on: the last ``num_tokens`` of its ``trainer_log.json`` (TRL's count of
    prompt and completion tokens processed), or None without a log or a count. An unreadable log raises."""
    path = Path(run_dir) / name / TRAINER_LOG
    history = read_json(path) if path.is_file() else []
    counts = [row["num_tokens"] for row in history if isinstance(row, dict) and "num_tokens" in row] \
        if isinstance(history, list) else []
    return int(float(counts[-1])) if counts else None


def record_invocation(run_dir: str | Path, record: dict) -> None:
    """Append one finished ``run-all``'s record to ``run_dir/`` :data:`INVOCATIONS` (the run lock is held)."""
    path = Path(run_dir) / INVOCATIONS
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    write_text(path, previous + json.dumps(record, sort_keys=True) + "\n")


def versions() -> dict:
    """Python and library versions, recorded in the manifest and in every results.json."""
    out = {"python": platform.python_version()}
    for pkg in ("cotrecipe", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "unsloth"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


# --------------------------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------------------------


def run_path(cfg: Config) -> Path:
    return Path(cfg.run.output_dir).expanduser()


def entry_dir(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / name


def eval_dir(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / EVAL_DIR / name


def relative(run_dir: Path, path: str) -> str:
    """Outputs inside the run directory are recorded relative to it, so a run folder can be moved."""
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(path)


def absolute(run_dir: Path, path: str | None) -> str | None:
    if path is None:
        return None
    return str(Path(run_dir) / path) if not Path(path).is_absolute() else path


# --------------------------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------------------------


def is_run_dir(run_dir: str | Path) -> bool:
    return (Path(run_dir) / MANIFEST_FILE).is_file()


def _manifest_problem(manifest: object) -> str | None:
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    for key in (ENTRIES_KEY, LEGACY_ENTRIES_KEY):
        records = manifest.get(key, {})
        if not isinstance(records, dict):
            return f"{key!r} is not an object"
        for name, record in records.items():
            if not isinstance(record, dict) or not isinstance(record.get("status", ""), str):
                return f"the record of {name!r} is not an object with a status"
    return None


def migrate_manifest(manifest: dict) -> dict:
    """The manifest with its records under ``entries``: records under ``stages`` (older versions' key) move there, in
    place. A manifest with both (an older version reopened a newer run) keeps every record, those under ``entries``
    winning. The file itself changes on the next save.

    >>> migrate_manifest({"created": "t", "stages": {"stage1": {"status": "done"}}})
    {'created': 't', 'entries': {'stage1': {'status': 'done'}}}
    """
    if LEGACY_ENTRIES_KEY in manifest:
        legacy = manifest.pop(LEGACY_ENTRIES_KEY)
        if manifest.get(ENTRIES_KEY):
            log.warning("manifest has both %r and %r: keeping the records of both (%r wins for %s)", ENTRIES_KEY,
                        LEGACY_ENTRIES_KEY, ENTRIES_KEY, ", ".join(sorted(set(legacy) & set(manifest[ENTRIES_KEY])))
                        or "none")
        manifest[ENTRIES_KEY] = {**legacy, **manifest.get(ENTRIES_KEY, {})}
    manifest.setdefault(ENTRIES_KEY, {})
    return manifest


def load_manifest(run_dir: str | Path) -> dict:
    """The manifest (:func:`migrate_manifest`: in today's shape), or a fresh one for a folder that has none yet. A
    corrupt one (truncated, empty, not the manifest's shape) is a :class:`RunError` saying how to recover."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return {"created": now(), "versions": versions(), ENTRIES_KEY: {}}
    try:
        manifest = read_json(path)
        problem = _manifest_problem(manifest)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        problem = "empty" if path.stat().st_size == 0 else f"not valid JSON: {str(exc)[:80]}"
    if problem:
        raise RunError(f"{path} is corrupt ({problem}); move it aside (mv {path} {path}.bad) and run again: stages "
                       f"are then trained again, resuming from their checkpoints in <stage>/{TRAINER_DIR}")
    return migrate_manifest(manifest)


_OWN: set[str] = set()  # this process trains beside others and writes only these records (empty: the whole manifest)


def write_only(names: set[str]) -> None:
    """This process (a child beside others, :mod:`recipe.run.parallel`) now saves and repairs only ``names``."""
    _OWN.clear()
    _OWN.update(names)


def save_manifest(run_dir: str | Path, manifest: dict) -> None:
    """Rank 0 writes it (every rank keeps its own copy in memory; see :mod:`recipe.dist`)."""
    if dist.is_main() and _OWN:
        save_records(run_dir, manifest, _OWN)
    elif dist.is_main():
        write_json(Path(run_dir) / MANIFEST_FILE, manifest)


def save_records(run_dir: str | Path, manifest: dict, names: set[str]) -> None:
    """Write ``names``' records of ``manifest`` into manifest.json as it is on disk now, under :data:`MANIFEST_LOCK`:
    the records other processes wrote meanwhile stay."""
    with FileLock(Path(run_dir) / MANIFEST_LOCK, preserve_lock_file=True):
        disk = load_manifest(run_dir)
        disk[ENTRIES_KEY].update({n: r for n, r in manifest[ENTRIES_KEY].items() if n in names})
        write_json(Path(run_dir) / MANIFEST_FILE, disk)


def is_done(manifest: dict, name: str) -> bool:
    return manifest.get(ENTRIES_KEY, {}).get(name, {}).get("status") == "done"


def output_of(run_dir: str | Path, name: str, manifest: dict | None = None) -> str | None:
    """Weights folder of a finished entry (``None`` for ``base``: the config's model). Errors name what is
    missing."""
    if name == "base":
        return None
    run_dir = Path(run_dir)
    if manifest is None:
        if not is_run_dir(run_dir):
            raise RunError(f"{run_dir} is not a run directory (no {MANIFEST_FILE})")
        manifest = load_manifest(run_dir)
    entry = manifest.get(ENTRIES_KEY, {}).get(name)
    if not entry or entry.get("status") != "done":
        status = entry.get("status") if entry else "not started"
        raise RunError(f"{name} of run {run_dir} is not finished (status: {status}); run it first")
    return absolute(run_dir, entry.get("output"))


# --------------------------------------------------------------------------------------------------------------------
# Config check and invalidation
# --------------------------------------------------------------------------------------------------------------------


def downstream(entries: Mapping[str, Entry], name: str) -> list[str]:
    """``name`` and every entry that (transitively) starts from its weights, in table order.

    >>> from recipe.entries import ENTRIES
    >>> downstream(ENTRIES, "stage1"), downstream(ENTRIES, "baseline-sft")
    (['stage1', 'stage2', 'stage3'], ['baseline-sft'])
    """
    out = [name]
    for other in entries.values():
        up = other.starts_from
        while up is not None and up not in out:
            up = entries[up].starts_from if up in entries else None
        if up is not None and other.name not in out:
            out.append(other.name)
    return out


def invalidate(run_dir: Path, manifest: dict, entries: Mapping[str, Entry], name: str, reason: str) -> list[str]:
    """Mark ``name`` and its downstream entries ``stale`` and delete their folders and evaluations; returns them.
    The manifest is saved."""
    stale = downstream(entries, name)
    for other in stale:
        if other not in manifest[ENTRIES_KEY] and not entry_dir(run_dir, other).exists():
            continue
        log.warning("%s will be trained again (%s)", other, reason)
        manifest[ENTRIES_KEY][other] = {"status": "stale", "reason": reason, "marked": now()}
        if dist.is_main():  # several processes: the caller makes the others wait for it (a barrier)
            shutil.rmtree(entry_dir(run_dir, other), ignore_errors=True)
            shutil.rmtree(eval_dir(run_dir, other), ignore_errors=True)
    save_manifest(run_dir, manifest)
    return stale


def refuse_or_invalidate_changed(run_dir: Path, manifest: dict, cfg: Config, entries: Mapping[str, Entry],
                                 force: bool) -> None:
    """An entry whose recorded config differs from ``cfg`` is an error naming the changed keys; with ``force`` it
    (and what starts from it) is invalidated instead."""
    for entry in entries.values():
        record = manifest[ENTRIES_KEY].get(entry.name)
        if not record or "config" not in record:
            continue
        now_cfg = entry_config(cfg, entry)
        changed = diff_keys(with_legacy_keys(record["config"], now_cfg), now_cfg)
        if not changed:
            continue
        if record.get("status") != "done":  # failed, interrupted, stale: no result to protect
            invalidate(run_dir, manifest, entries, entry.name,
                       f"{record.get('status')} entry rerun with a changed config: {', '.join(changed)}")
            continue
        if not force:
            raise RunError(f"{entry.name} ({record.get('status')}) was run with a different config; changed keys: "
                           f"{', '.join(changed)}. Use a new --output-dir, restore them, or pass --force to rerun "
                           f"{entry.name} and what starts from it")
        invalidate(run_dir, manifest, entries, entry.name, f"--force, changed: {', '.join(changed)}")


def mark_interrupted(run_dir: Path, manifest: dict, names: set[str] | None = None) -> None:
    """An entry (of ``names``, default all) still ``running`` when its run directory's lock is free was interrupted
    (killed, disk full): it resumes from its last intact checkpoint. Call it holding the lock."""
    for name, record in manifest[ENTRIES_KEY].items():
        if record.get("status") == "running" and (names is None or name in names):
            log.warning("%s was interrupted (status 'running' with no live writer); it resumes", name)
            record.update(status="interrupted", marked=now())


def check_outputs(run_dir: Path, manifest: dict, entries: Mapping[str, Entry], force: bool = False) -> None:
    """A done entry whose weights folder or weight file is gone is trained again (with what starts from it); one whose
    weights are damaged is an error naming the file and the way to retrain it (with ``force``: trained again)."""
    for entry in entries.values():
        record = manifest[ENTRIES_KEY].get(entry.name, {})
        if record.get("status") != "done" or not record.get("output"):
            continue
        out = Path(absolute(run_dir, record["output"]))
        problem = weights_dir_problem(out)
        if (problem and problem.startswith("missing")) or (problem and force):  # nothing left to protect
            invalidate(run_dir, manifest, entries, entry.name, f"its finished weights {out} are {problem}")
        elif problem:
            command = f"baseline {entry.baseline_key}" if entry.baseline_key else entry.name
            own = f"cotrecipe {command} --force, or " if entry.kind != "warmup" else ""  # the warm-up has no command
            raise RunError(f"{entry.name} is done but its weights {out} are damaged ({problem}); retrain it with "
                           f"--force ({own}run-all --force)")


def open_run(cfg: Config, entries: Mapping[str, Entry], force: bool) -> tuple[Path, dict]:
    """Create or reopen the run directory of ``cfg``: interrupted entries, missing outputs, config check, versions,
    ``config.yaml``. The caller holds the run's lock (:func:`recipe.store.runlock.locked`)."""
    run_dir = run_path(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(run_dir)
    entries = {n: e for n, e in entries.items() if not _OWN or n in _OWN}  # beside others: its own entries only
    mark_interrupted(run_dir, manifest, _OWN or None)
    check_outputs(run_dir, manifest, entries, force)
    refuse_or_invalidate_changed(run_dir, manifest, cfg, entries, force)
    manifest["versions"] = versions()
    manifest["updated"] = now()
    if dist.is_main():
        write_text(run_dir / CONFIG_FILE, config_mod.dump_yaml(cfg))
    save_manifest(run_dir, manifest)
    return run_dir, manifest


# --------------------------------------------------------------------------------------------------------------------
# An entry's record
# --------------------------------------------------------------------------------------------------------------------


def mark_running(run_dir: Path, manifest: dict, cfg: Config, entry: Entry, init_from: str | None) -> dict:
    record = {"status": "running", "started": now(), "config": entry_config(cfg, entry), "init_from": init_from,
              "processes": dist.world_size(), "pid": os.getpid()}
    previous = manifest[ENTRIES_KEY].get(entry.name, {})
    if previous.get("status") in ("running", "failed", "interrupted"):
        record["attempts"] = previous.get("attempts", 1) + 1
        if previous.get("processes", 1) != record["processes"]:
            log.warning("%s resumes with %d processes (its last attempt had %d): the effective batch changes",
                        entry.name, record["processes"], previous.get("processes", 1))
    manifest[ENTRIES_KEY][entry.name] = record
    save_manifest(run_dir, manifest)
    return record


def mark_failed(run_dir: Path, manifest: dict, name: str, exc: BaseException) -> None:
    """``failed``, or ``interrupted`` when Ctrl-C stopped it (KeyboardInterrupt); either resumes on the next run."""
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    manifest[ENTRIES_KEY][name].update(status=status, ended=now(), error=f"{type(exc).__name__}: {exc}"[:500])
    try:
        save_manifest(run_dir, manifest)
    except OSError as err:  # e.g. the full disk that failed the entry: the next start marks it interrupted
        log.error("could not record %s as failed in %s (%s)", name, run_dir / MANIFEST_FILE, err)


def mark_done(run_dir: Path, manifest: dict, name: str, result: dict, wall_s: float) -> dict:
    if result.get("output"):
        result["output"] = relative(run_dir, result["output"])
    record = manifest[ENTRIES_KEY][name]
    record.update(status="done", ended=now(), wall_s=round(wall_s, 2), **result)
    save_manifest(run_dir, manifest)
    if dist.is_main():
        write_json(entry_dir(run_dir, name) / METRICS_FILE, result.get("metrics", {}))
    return record
