"""Reading local data files row by row: ``.jsonl`` / ``.json`` / ``.parquet`` into raw rows, where one unusable row
(not UTF-8, not JSON, nested too deeply, an over-long integer, a lone surrogate) is a :class:`BadRow` entry that the
caller counts and skips (or, ``strict``, an error naming it) instead of aborting the file.

>>> import tempfile, pathlib
>>> f = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
>>> _ = f.write_text('{"question": "a\\u2028b"}\\n{broken\\n', encoding="utf-8")
>>> rows = read_rows(f)
>>> rows[0]["question"] == "a\u2028b", isinstance(rows[1], BadRow)
(True, True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recipe.errors import BadRow, DataError
from recipe.fsio import iter_jsonl, strip_bom

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def _read_json_lines(path: Path, data: bytes, strict: bool) -> list[Any]:
    """Rows of JSON Lines ``data``, split on ``\\n`` only; an unusable line (not UTF-8, not JSON, too deep, an
    over-long integer, a lone surrogate) becomes a :class:`BadRow` entry, or raises naming it when ``strict``."""
    rows: list[Any] = []
    for lineno, value, reason in iter_jsonl(data):
        if reason is None:
            rows.append(value)
            continue
        message = f"{path}: line {lineno} is {reason}"
        if strict:
            raise DataError(message)
        rows.append(BadRow(message))
    return rows


def _clean_json_rows(path: Path, data: list[Any], strict: bool) -> list[Any]:
    """Rows of a JSON list with a lone surrogate anywhere become BadRow entries (or raise when ``strict``)."""
    rows: list[Any] = []
    for index, row in enumerate(data):
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            message = f"{path}: row {index} is not text (it holds a lone surrogate code point)"
            if strict:
                raise DataError(message) from None
            row = BadRow(message)
        rows.append(row)
    return rows


def _read_json(path: Path, raw: bytes, split: str, strict: bool) -> list[Any]:
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, parse_constant=lambda _: None)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _read_json_lines(path, raw, strict)  # JSON Lines saved with a .json suffix (bad rows then skipped)
    except (ValueError, RecursionError) as exc:  # a whole JSON document cannot skip one row
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:80]
        raise DataError(f"{path}: not usable JSON ({why})") from None
    if isinstance(data, Mapping) and isinstance(data.get(split), list):
        data = data[split]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (or JSON Lines), got {type(data).__name__}")
    return _clean_json_rows(path, data, strict)


def read_rows(path: str | Path, split: str = "train", strict: bool = False) -> list[Any]:
    """Raw rows of a local ``.jsonl`` / ``.json`` / ``.parquet`` file (unusable lines become BadRow entries
    unless ``strict``). An empty file is a :class:`DataError`."""
    path = Path(path)
    if path.suffix not in LOCAL_SUFFIXES:
        raise DataError(f"{path}: unsupported file type (expected one of {', '.join(LOCAL_SUFFIXES)})")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq  # heavy and only needed for parquet

            rows = pq.read_table(path).to_pylist()
        else:
            raw = strip_bom(path.read_bytes())  # a byte order mark is not part of the first row
            if not raw.strip():
                raise DataError(f"{path}: the file is empty (no rows)")
            rows = _read_json_lines(path, raw, strict) if path.suffix == ".jsonl" else _read_json(path, raw, split, strict)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise DataError(f"cannot read parquet file {path}: {exc}") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    if all(isinstance(row, BadRow) for row in rows):  # not one usable line: not a data file at all
        raise DataError(f"no usable row in {rows[0].reason}")
    return rows
