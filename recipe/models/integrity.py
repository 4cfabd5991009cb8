"""Is a weights folder or a TRL checkpoint intact? Cheap structural checks, no model load: a ``.safetensors`` file's
header must pass safetensors' own ``safe_open``; a ``.pt``/``.pth`` file must load with ``torch.load(...,
weights_only=True)`` (memory-mapped, nothing unpickled beyond tensors and plain data); a checkpoint's
``trainer_state.json`` must be a JSON object. Each check returns ``None`` when intact, else a short reason.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "adapter_model.safetensors"
>>> _ = p.write_bytes(b"\\x10\\x00")
>>> weights_file_problem(p)
'not readable by safetensors (2 bytes: header too small)'
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from safetensors import SafetensorError, safe_open

from recipe.models.names import ADAPTER_WEIGHTS, MODEL_WEIGHTS

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file ``path`` is unusable, or None: safetensors' own ``safe_open`` reads the header (JSON,
    every tensor's dtype, shape and offsets, the data exactly covering the rest of the file), the check every loader
    makes (offsets that disagree with a shape and bytes past the last tensor included)."""
    try:
        with safe_open(path, framework="numpy"):  # numpy: reading the header loads no torch
            return None
    except SafetensorError as exc:
        reason = str(exc).removeprefix("Error while deserializing header: ")
        size = path.stat().st_size
        declared = _declared_size(path)
        if declared is not None and size < declared:  # a copy or a save cut off: say so in the user's words
            return f"truncated ({size} of {declared} bytes; safetensors: {reason})"
        return f"not readable by safetensors ({size} bytes: {reason})"


def _declared_size(path: Path) -> int | None:
    """The size the file's own header promises (8 + header + the last tensor's end), or None when the header itself
    cannot be read; only asked after safetensors has refused the file, to tell a cut-off file from a malformed one."""
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100_000_000:
                return None
            header = json.loads(fh.read(length))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        return 8 + length + max(ends, default=0)
    except (struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def torch_file_problem(path: Path) -> str | None:
    """Why ``path`` does not load with ``torch.load(weights_only=True)`` (the way transformers reads optimizer,
    scheduler and rng state), or None."""
    import torch  # lazy: the CLI checks run directories without importing torch
    from transformers.trainer_pt_utils import safe_globals  # lazy: same; the allow-list transformers resumes with

    try:
        with safe_globals():
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the answer
        return f"does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    return None


def weights_file_problem(path: Path) -> str | None:
    if path.stat().st_size == 0:
        return "empty"
    if path.suffix == ".safetensors":
        return safetensors_problem(path)
    return torch_file_problem(path)


def missing_weights(folder: Path) -> str | None:
    """The weight file a weights folder's config promises but that is not there (an adapter config without its
    adapter weights, a model config without model weights; peft would then look the local path up on the hub), or
    None."""
    for config, names in (("adapter_config.json", ADAPTER_WEIGHTS), ("config.json", MODEL_WEIGHTS)):
        if (folder / config).is_file():
            return None if any((folder / n).is_file() for n in names) else f"{names[0]} (beside its {config})"
    return None  # no config: loading it stops at recipe.models.model's own check, naming the folder


def weights_dir_problem(folder: Path) -> str | None:
    """Why the finished-weights folder ``folder`` is unusable (``missing ...``: the folder or its weight file is
    gone; else a weight or config file damaged, named), or None."""
    if not folder.is_dir():
        return "missing" if not folder.exists() else "not a folder"
    gone = missing_weights(folder)
    if gone:
        return f"missing {gone}"
    for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        problem = weights_file_problem(path)
        if problem:
            return f"{path.name} is {problem}"
    for name in ("adapter_config.json", "config.json"):
        if (folder / name).is_file():
            try:
                json.loads((folder / name).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError):
                return f"{name} is not valid JSON"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why the TRL checkpoint ``folder`` cannot be resumed from (trainer state, weights, optimizer, scheduler, rng
    state), or None."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        loaded = json.loads(state.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "trainer_state.json is not valid JSON"
    if not isinstance(loaded, dict):
        return "trainer_state.json is not a JSON object"
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            problem = weights_file_problem(path)
            if problem:
                return f"{path.name} is {problem}"
    return None
