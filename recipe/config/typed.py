"""Plain data -> typed dataclasses, checked against their annotations: the machinery under :mod:`recipe.config.core`.

Every error is a :class:`~recipe.errors.ConfigError` naming the dotted key, the bad value and what is expected; an
unknown key suggests the nearest known one ("did you mean ...").

>>> from dataclasses import dataclass
>>> @dataclass
... class Section:
...     rate: float = 1.0
>>> from_mapping(Section, {"rate": "1e-5"}).rate
1e-05
>>> from_mapping(Section, {"rat": 2}, "opt")
Traceback (most recent call last):
...
recipe.errors.ConfigError: unknown key 'opt.rat' (did you mean 'opt.rate'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal

from recipe.config.safe_yaml import short_repr
from recipe.errors import ConfigError


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the (lightly coerced) value or raise ConfigError."""
    origin = typing.get_origin(tp)
    bad = ConfigError(_BadValue(key, value, tp))  # the message is built only if raised and shown
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad
        return from_mapping(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise ConfigError(f"internal: unsupported annotation {tp!r} for '{key}'")


class _BadValue:
    """A "bad value" message formatted on demand, with the value's repr cut (a coercion builds one per check)."""

    def __init__(self, key: str, value: Any, tp: Any) -> None:
        self.key, self.value, self.tp = key, value, tp

    def __str__(self) -> str:
        return f"bad value for '{self.key}': {short_repr(self.value)} (expected {_type_name(self.tp)})"

    __repr__ = __str__


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, known: list[str], prefix: str) -> ConfigError:
    full = f"{prefix}{key}"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (allowed: {', '.join(sorted(known))})"
    return ConfigError(f"unknown key '{full}'{hint}")


def from_mapping(cls: type, data: dict, prefix: str = "") -> Any:
    fields_ = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields_:
            raise _unknown_key(key, list(fields_), f"{prefix}." if prefix else "")
        kwargs[key] = _coerce(value, fields_[key], f"{prefix}.{key}" if prefix else key)
    return cls(**kwargs)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_path(data: dict, path: list[str], value: Any) -> None:
    """Set ``path`` to ``value``; a mapping given for a mapping merges over it, as a ``--config`` file does.

    >>> data = {"stage1": {"learning_rate": 0.001, "optim": "sgd"}}
    >>> set_path(data, ["stage1"], {"max_steps": 2}); data
    {'stage1': {'learning_rate': 0.001, 'optim': 'sgd', 'max_steps': 2}}
    """
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    old = node.get(path[-1])
    merge = isinstance(value, dict) and isinstance(old, dict) and path[-1] != "params"
    node[path[-1]] = deep_merge(old, value) if merge else value
