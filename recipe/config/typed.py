"""Plain data -> typed dataclasses, checked against their annotations by pydantic: the machinery under
:mod:`recipe.config.core`.

Each dataclass of the schema gets a strict pydantic TypedDict of its fields (built once, cached); pydantic checks the
whole mapping in one pass and the dataclass is built from what it returns. Every error is a
:class:`~recipe.errors.ConfigError` naming the dotted key, the bad value and what is expected; an unknown key suggests
the nearest known one ("did you mean ...").

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
import functools
import types
import typing
from typing import Annotated, Any, Literal

import pydantic
import pydantic.fields
import typing_extensions  # pydantic reads a TypedDict only from here before Python 3.12

from recipe.config.safe_yaml import short_repr
from recipe.errors import ConfigError

# strict: no lax coercions ("3" -> 3, 1 -> True, 1.0 -> 1, tuple -> list); a float must be finite; unknown keys refused
_STRICT = pydantic.ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


def _float_from_text(value: Any) -> Any:
    """YAML 1.1 reads "1e-5" (no dot) as a string, and users type it that way: a text float is read with Python's
    ``float`` (pydantic's own reader is lax mode, which would also take ``True`` for a float)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # the strict float check refuses it, naming the key
    return value


_FLOAT = Annotated[float, pydantic.BeforeValidator(_float_from_text)]


_LIMIT_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short")


def _bare(tp: Any) -> Any:
    """The type under an ``Annotated`` one (its limits stripped)."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _allowed(tp: Any) -> str:
    """What a field's limits allow: its ``pydantic.Field``'s description, else its bounds ("must be in [0, 1)").

    >>> _allowed(Annotated[float, pydantic.Field(gt=0, le=1)]), _allowed(Annotated[int, pydantic.Field(ge=1)])
    ('must be in (0, 1]', 'must be >= 1')
    """
    infos = [m for m in typing.get_args(tp)[1:] if isinstance(m, pydantic.fields.FieldInfo)]
    described = [info.description for info in infos if info.description]
    if described:
        return described[0]
    bound = {k: getattr(c, k) for info in infos for c in info.metadata for k in ("ge", "gt", "le", "lt") if hasattr(c, k)}
    low = next(((f"[{bound[k]}" if k == "ge" else f"({bound[k]}", k) for k in ("ge", "gt") if k in bound), None)
    high = next(((f"{bound[k]}]" if k == "le" else f"{bound[k]})", k) for k in ("le", "lt") if k in bound), None)
    if low and high:
        return f"must be in {low[0]}, {high[0]}"
    name, symbol = next((k, sym) for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in bound)
    return f"must be {symbol} {bound[name]}"


def _type_name(tp: Any) -> str:
    tp = _bare(tp)
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


@functools.cache
def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _checked(tp: Any, owner: type) -> Any:
    """The pydantic type that checks a value of the schema annotation ``tp`` (a field of ``owner``); the limits of an
    ``Annotated`` one (``pydantic.Field(ge=1)``) apply to the type it checks."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return Annotated[(_checked(typing.get_args(tp)[0], owner), *typing.get_args(tp)[1:])]
    if tp in (bool, int, str, type(None)) or tp is Any or origin is Literal:
        return tp
    if tp is float:
        return _FLOAT
    if origin is list:
        return list[_checked(typing.get_args(tp)[0], owner)]
    if origin is dict:
        # Own rule kept: a dict field is checked only for being a dict (its keys are text already: safe_yaml refuses
        # others; reward params are checked by name and type in recipe.config.limits, with their own messages).
        return dict
    if origin in (typing.Union, types.UnionType):
        # The first arm that accepts the value wins, as written (pydantic's "smart" mode would prefer an exact type).
        # None is pydantic's "nullable" around the rest: no other arm accepts None.
        arms = tuple(_checked(a, owner) for a in typing.get_args(tp) if a is not type(None))
        union = typing.Union[arms]  # noqa: UP007 (built from a tuple of arms: `|` has no form for that)
        rest = arms[0] if len(arms) == 1 else Annotated[union, pydantic.Field(union_mode="left_to_right")]
        return typing.Optional[rest] if len(arms) < len(typing.get_args(tp)) else rest  # noqa: UP045 (as above)
    if dataclasses.is_dataclass(tp):
        return _section(tp)
    raise ConfigError(f"internal: unsupported annotation {tp!r} in {owner.__name__}")


@functools.cache
def _section(cls: type) -> Any:
    """A dataclass as a strict TypedDict of its fields (only the keys given), built into ``cls`` once checked; an
    instance of ``cls`` stands as it is."""
    shape = typing_extensions.TypedDict(
        f"{cls.__name__}Keys", {name: _checked(tp, cls) for name, tp in _fields(cls).items()}, total=False
    )
    shape.__pydantic_config__ = _STRICT

    def build(value: Any, check: pydantic.ValidatorFunctionWrapHandler) -> Any:
        return value if isinstance(value, cls) else cls(**check(value))

    return Annotated[shape, pydantic.WrapValidator(build)]


@functools.cache
def _adapter(cls: type) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(_section(cls))


def _unknown_key(key: Any, known: list[str], prefix: str) -> ConfigError:
    full = f"{prefix}{key}"
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (allowed: {', '.join(sorted(known))})"
    return ConfigError(f"unknown key '{full}'{hint}")


def _locate(cls: type, data: Any, prefix: str, loc: tuple, kind: str) -> tuple[list[int], ConfigError]:
    """Pydantic's error location -> (where it sits in ``data``'s own order, the one-line error for it).

    The location is followed through the schema's annotations while they are sections and lists; a union, a dict or a
    plain value stops it there (pydantic's further parts name union arms), and that whole value is the bad one."""
    tp, value, key, order = cls, data, prefix, []
    for part in loc:
        if dataclasses.is_dataclass(_bare(tp)) and isinstance(value, dict):
            keys = list(value)
            order.append(keys.index(part) if part in keys else len(keys))
            fields_ = _fields(_bare(tp))
            if part not in fields_:
                return order, _unknown_key(part, list(fields_), f"{key}." if key else "")
            tp, value, key = fields_[part], value[part], f"{key}.{part}" if key else part
        elif typing.get_origin(_bare(tp)) is list and isinstance(value, list) and isinstance(part, int):
            order.append(part)
            tp, value, key = typing.get_args(_bare(tp))[0], value[part], f"{key}[{part}]"
        else:
            break
    allowed = _allowed(tp) if kind in _LIMIT_ERRORS else f"expected {_type_name(tp)}"
    return order, ConfigError(f"bad value for '{key}': {short_repr(value)} ({allowed})")


def from_mapping(cls: type, data: dict, prefix: str = "") -> Any:
    try:
        return _adapter(cls).validate_python(data)
    except pydantic.ValidationError as exc:
        # pydantic lists every error, fields in schema order and unknown keys last; the one raised is the first in the
        # data's own order (as a reader goes down the file), the same one a key-by-key check stops at
        found = [_locate(cls, data, prefix, err["loc"], err["type"]) for err in exc.errors(include_url=False)]
        raise min(found, key=lambda item: item[0])[1] from None


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
