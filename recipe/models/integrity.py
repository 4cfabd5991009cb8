"""Is a weights folder or a TRL checkpoint intact? Cheap structural checks, no model load: a ``.safetensors`` file's
header must parse and its tensors must fit the file; a ``.pt``/``.pth`` file must load with ``torch.load(...,
weights_only=True)`` (memory-mapped, nothing unpickled beyond tensors and plain data); a checkpoint's
``trainer_state.json`` must be a JSON object. Each check returns ``None`` when intact, else a short reason.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "adapter_model.safetensors"
>>> _ = p.write_bytes(b"\\x10\\x00")
>>> weights_file_problem(p)
'truncated (2 bytes, no header)'
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
# the weight files peft / transformers read from a folder with that config (one of them must be there)
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file ``path`` is unusable (header unreadable, tensors past its end), or None."""
    size = path.stat().st_size
    if size < 8:
        return f"truncated ({size} bytes, no header)"
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > min(size - 8, _MAX_HEADER):
            return f"truncated (header of {n} bytes, file of {size})"
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return "header is not valid JSON"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"tensor {name!r} has no valid data_offsets"
        end = max(end, offsets[1])
    if 8 + n + end > size:
        return f"truncated ({size} bytes, tensors need {8 + n + end})"
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
