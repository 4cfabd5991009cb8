"""Vendor the part of Unsloth's model-name tables that the recipe's presets touch, from the pinned wheel, into
``tests/data/unsloth_mapper_2026.10.9.json`` (tests/test_gpu_weights.py resolves repositories against it).

Regenerate (no GPU needed)::

    pip download --no-deps -d /tmp/whl unsloth==2026.10.9
    python scripts/unsloth_mapper.py /tmp/whl/unsloth-2026.10.9-py3-none-any.whl > tests/data/unsloth_mapper_2026.10.9.json

``unsloth/models/mapper.py`` is plain data plus the function that builds the lookup tables from it (no imports), so it
is run from the wheel as Unsloth itself runs it; only the entries of :data:`FAMILIES` are kept.
"""

from __future__ import annotations

import json
import sys
import types
import zipfile

FAMILIES = ("qwen2.5-3b", "qwen2.5-0.5b", "gemma-4-e2b-it")  # the T4 preset's model, a small one, one without a plain 4-bit twin
TABLES = ("FLOAT_TO_INT_MAPPER", "INT_TO_FLOAT_MAPPER", "MAP_TO_UNSLOTH_16bit")


def wanted(key: str) -> bool:
    """``org/<family>`` with or without a 4-bit suffix."""
    name = key.lower().rpartition("/")[2].removesuffix("-bnb-4bit").removesuffix("-unsloth")
    return name in FAMILIES


def extract(wheel: str) -> dict:
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read("unsloth/models/mapper.py").decode()
        version = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")).split("-")[1].split(".dist")[0]
    module = types.ModuleType("unsloth_models_mapper")
    exec(compile(source, "unsloth/models/mapper.py", "exec"), module.__dict__)  # Unsloth's own table builder
    tables = {name: {k: v for k, v in sorted(getattr(module, name).items()) if wanted(k)} for name in TABLES}
    return {"versions": {"unsloth": version}, "generated_by": "scripts/unsloth_mapper.py", "families": FAMILIES,
            **tables}


if __name__ == "__main__":
    json.dump(extract(sys.argv[1]), sys.stdout, indent=1)
    print()
