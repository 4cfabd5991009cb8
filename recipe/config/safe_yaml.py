"""Bounded YAML loading for config files and ``--set`` values, and short value reprs for error lines.

``yaml.safe_load`` never runs code, but a hostile file can still hurt: a few hundred bytes of nested aliases
("billion laughs") expand to billions of nodes, 100,000 nested brackets overflow the stack, and a non-UTF-8 file
raises ``UnicodeDecodeError``. Here the size (bytes), the nesting depth and the expanded node count (aliases
counted each time they are used) are bounded before any Python object is built, and every failure is one line
raised as the caller's error type.

>>> load("a: {b: [1, 2]}", "x.yaml")
{'a': {'b': [1, 2]}}
>>> load("a: &x [1, 2]\\nb: *x", "x.yaml")
{'a': [1, 2], 'b': [1, 2]}
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "check_text_keys", "load", "load_mapping", "read_bytes", "short_repr"]

MAX_BYTES = 1_000_000  # a config is a few kB; a megabyte is far beyond any real one
MAX_DEPTH = 32  # the config schema nests 3 levels; reward params a few more
MAX_NODES = 100_000  # scalars, lists and mappings after alias expansion
_REPR_CHARS = 80

_repr = reprlib.Repr()
_repr.maxstring = _REPR_CHARS
_repr.maxother = _REPR_CHARS
_repr.maxlong = _REPR_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def short_repr(value: Any, limit: int = _REPR_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, in time bounded whatever the value's size.

    >>> short_repr("x" * 1000)[:12], len(short_repr("x" * 1000)) <= 83, short_repr([1, [2, [3, [4]]]])
    ("'xxxxxxxxxxx", True, '[1, [2, [3, [...]]]]')
    """
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Refused(Exception):
    """Internal: the document breaks a bound (converted to the caller's error type)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses over-deep nesting while composing and counts expanded nodes before constructing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes the document holds once aliases are expanded (each anchored node sized once, reused via ``memo``)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_NODES + 1  # a cycle (a node inside itself) counts as too big
    size = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [item for pair in node.value for item in pair]
    else:
        children = []
    for child in children:
        size += _expanded_size(child, memo)
        if size > MAX_NODES:
            break
    memo[key] = size
    return size


def _duplicate_key(node: yaml.Node, where: str, seen: set[int]) -> str | None:
    """The first mapping key given twice, as ``'dotted.key' twice (lines A and B)``, or None. YAML itself keeps the last
    value silently, so a duplicated key or section would drop what the user wrote first."""
    if id(node) in seen:  # an alias: its node is checked once
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                name = (key.tag, key.value)
                if name in lines:
                    return f"'{where}{key.value}' twice (lines {lines[name]} and {key.start_mark.line + 1})"
                lines[name] = key.start_mark.line + 1
            found = _duplicate_key(value, f"{where}{getattr(key, 'value', '?')}.", seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{where[:-1] if where else ''}[{i}].", seen)
            if found:
                return found
    return None


_RAISE = object()


def load(text: str | bytes, origin: str, error: type[Exception] = ValueError, if_invalid: Any = _RAISE) -> Any:
    """The YAML value of ``text`` (``None`` for an empty document), or ``error`` with one line naming ``origin``.

    ``if_invalid``, when given, is returned for text that is not YAML at all (a bound broken still raises).
    """
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise error(f"{origin} is over {MAX_BYTES:,} bytes, more than a config may hold")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{origin} is not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start})") from None
    if len(text) > MAX_BYTES:
        raise error(f"{origin} is over {MAX_BYTES:,} characters, more than a config may hold")
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader already refuses non-printable characters
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise _Refused(f"expands to over {MAX_NODES:,} values (aliases counted each time they are used)")
        duplicate = _duplicate_key(node, "", set())
        if duplicate:
            raise error(f"{origin} gives the key {duplicate}; keep one")
        return loader.construct_document(node)
    except _Refused as exc:
        raise error(f"{origin} is refused: {exc}") from None
    except RecursionError:
        raise error(f"{origin} is refused: aliases nest too deeply") from None
    except yaml.YAMLError as exc:
        if if_invalid is not _RAISE:
            return if_invalid
        raise error(f"{origin} is not valid YAML: {' '.join(str(exc).split())[:300]}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _non_text_key(value: Any, where: str) -> str | None:
    """Dotted path of the first mapping key that is not one line of text (YAML allows ``1:`` or ``.inf:`` as keys)."""
    if isinstance(value, dict):
        for key, child in value.items():
            if not isinstance(key, str) or not key.isprintable() or len(key) > _REPR_CHARS:
                return f"{where}{short_repr(key)}"
            found = _non_text_key(child, f"{where}{key}.")
            if found:
                return found
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found = _non_text_key(child, f"{where}[{i}].")
            if found:
                return found
    return None


def check_text_keys(value: Any, origin: str, error: type[Exception] = ValueError) -> Any:
    """``value`` unchanged when every mapping key inside it is text, else ``error`` naming the first other key."""
    bad_key = _non_text_key(value, "")
    if bad_key is not None:
        raise error(f"{origin}: key {bad_key} is not a short line of text")
    return value


def load_mapping(text: str | bytes, origin: str, error: type[Exception] = ValueError) -> dict:
    """:func:`load` for a config document: a mapping (empty for an empty document) whose keys are all text.

    >>> load_mapping("1: x", "cfg.yaml")
    Traceback (most recent call last):
    ...
    ValueError: cfg.yaml: key 1 is not a short line of text
    """
    data = load(text, origin, error)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{origin} must hold a mapping at the top level, got {type(data).__name__}")
    return check_text_keys(data, origin, error)


def read_bytes(path: str | Path, error: type[Exception] = ValueError) -> bytes:
    """A config file's bytes, at most ``MAX_BYTES + 1`` of them (so :func:`load` can refuse an oversized one)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read config file {path}: {exc.strerror or exc}") from None
