"""Write the fields of the pinned TRL's ``SFTConfig`` and ``GRPOConfig`` (name -> a plain type) into
``recipe/config/trl_fields.json``: what a stage section passes through to TRL (:mod:`recipe.config.trl_pass`).

The recipe reads the table instead of importing TRL while it resolves a config (importing TRL loads transformers,
which must come after unsloth on the GPU backend). ``tests/test_trl_pass.py`` checks it against the installed TRL.

Regenerate after a TRL upgrade::

    python scripts/trl_fields.py > recipe/config/trl_fields.json
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing

PLAIN = {bool: "bool", int: "int", float: "float", str: "str", dict: "dict", type(None): "None"}


def plain_type(tp: typing.Any) -> list[str]:
    """An annotation as the plain alternatives a YAML value can take: bool, int, float, str, dict, None,
    list[...], any (an enum is its string values; a class YAML cannot spell is ``any``)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return list(dict.fromkeys(alt for arg in typing.get_args(tp) for alt in plain_type(arg)))
    if origin is typing.Literal:
        return list(dict.fromkeys(alt for arg in typing.get_args(tp) for alt in plain_type(type(arg))))
    if origin is list:
        (item,) = typing.get_args(tp) or (typing.Any,)
        return [f"list[{' | '.join(plain_type(item))}]"]
    if origin is dict:
        return ["dict"]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return ["str"]
    return [PLAIN.get(tp, "any")]


def fields_of(cls: type) -> dict[str, str]:
    hints = typing.get_type_hints(cls)
    return {f.name: " | ".join(plain_type(hints[f.name])) for f in dataclasses.fields(cls) if f.init}


def table() -> dict:
    import trl  # lazy: a tool run by hand, and by the test that checks the vendored table

    return {"trl": trl.__version__, "SFTConfig": fields_of(trl.SFTConfig), "GRPOConfig": fields_of(trl.GRPOConfig)}


def dumps(data: dict) -> str:
    """One field per line (a TRL upgrade shows as a readable diff)."""
    parts = [f'  "trl": {json.dumps(data["trl"])}']
    for name in ("SFTConfig", "GRPOConfig"):
        rows = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in data[name].items())
        parts.append(f'  "{name}": {{\n{rows}\n  }}')
    return "{\n" + ",\n".join(parts) + "\n}\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(table()))
