"""YAML for config files and ``--set`` values: PyYAML's ``SafeLoader`` plus the guards it does not give, each failure
one line naming the file or flag. A key given twice is refused (YAML keeps the last value silently); a key must be a
line of text; the bytes must be UTF-8 and at most a megabyte; nesting and aliases are bounded (a few hundred bytes of
nested aliases expand to billions of values once a reader walks them).
"""

from __future__ import annotations

from typing import Any

import yaml

from recipe.errors import short_repr

MAX_BYTES = 1_000_000  # a config is a few kB
MAX_DEPTH = 32  # the schema nests 3 levels; reward params a few more
MAX_NODES = 100_000  # values after alias expansion
_TEXT_TAGS = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge")


class _Refused(Exception):
    """A guard's refusal, raised as the caller's error type with the origin in front."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that tracks where it is (the dotted key) while composing: depth, expanded size, duplicate and
    non-text keys are refused there, before any Python value is built."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._path: list[str] = []
        self._count = 0  # values composed, an alias counted as the values under its anchor
        self._sizes: dict[str, int] = {}  # anchor -> values under it

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        event, before = self.peek_event(), self._count
        if isinstance(parent, yaml.MappingNode) and isinstance(index, yaml.Node):
            self._path.append(f".{index.value}" if "".join(self._path) else str(index.value))
        else:
            self._path.append(f"[{index}]" if isinstance(parent, yaml.SequenceNode) else "")
        if len(self._path) > MAX_DEPTH:
            raise _Refused(f"is refused: nested deeper than {MAX_DEPTH} levels")
        node = super().compose_node(parent, index)
        self._path.pop()
        alias = isinstance(event, yaml.AliasEvent)
        self._count += self._sizes.get(event.anchor, 1) if alias else 1
        if event.anchor and not alias:
            self._sizes[event.anchor] = self._count - before
        if self._count > MAX_NODES:
            raise _Refused(f"is refused: expands to over {MAX_NODES:,} values (aliases counted each time they are used)")
        return node

    def compose_mapping_node(self, anchor):  # noqa: ANN001 - PyYAML's signature
        node = super().compose_mapping_node(anchor)
        where, lines = "".join(self._path), {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag not in _TEXT_TAGS or not key.value.isprintable() \
                    or len(key.value) > 80:
                raise _Refused(f"has a key that is not a short line of text at {where or 'the top'}: "
                               f"{short_repr(getattr(key, 'value', key))}")
            if key.tag != _TEXT_TAGS[1] and key.value in lines:
                raise _Refused(f"gives the key '{where + '.' if where else ''}{key.value}' twice (lines "
                               f"{lines[key.value]} and {key.start_mark.line + 1}); keep one")
            lines[key.value] = key.start_mark.line + 1
        return node


def load(text: str | bytes, origin: str, error: type[Exception] = ValueError, lenient: bool = False) -> Any:
    """The YAML value of ``text`` (``None`` for an empty document), or ``error`` with one line naming ``origin``.
    ``lenient``: text that is not YAML at all is returned as it is (a guard still refuses)."""
    if len(text) > MAX_BYTES:
        raise error(f"{origin} is over {MAX_BYTES:,} bytes, more than a config may hold")
    try:
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        return yaml.load(text, Loader=_Loader)  # its reader refuses non-printable characters
    except UnicodeDecodeError as exc:
        raise error(f"{origin} is not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start})") from None
    except _Refused as exc:
        raise error(f"{origin} {exc}") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a scalar its tag cannot read (`!!int x`, 5,000 digits)
        if lenient:
            return text
        raise error(f"{origin} is not valid YAML: {' '.join(str(exc).split())[:300]}") from None


def load_mapping(text: str | bytes, origin: str, error: type[Exception] = ValueError) -> dict:
    """:func:`load` for a whole config document: a mapping (empty for an empty document)."""
    data = load(text, origin, error)
    if data is not None and not isinstance(data, dict):
        raise error(f"{origin} must hold a mapping at the top level, got {type(data).__name__}")
    return data or {}
