"""Atomic file writes: a crash (even SIGKILL) leaves either the old file or the new one, never half of one.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_json(d / "m.json", {"a": 1}); read_json(d / "m.json")
{'a': 1}
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A file handle on a temporary file next to ``path``; on a clean exit it is flushed, fsynced and moved over
    ``path``, on an error it is removed (``path`` untouched).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_open(p, "w") as fh:
    ...     _ = fh.write("x")
    >>> p.read_text()
    'x'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:  # mkstemp makes 0600; a written file gets the mode open() would give it
            os.fchmod(fd, 0o666 & ~_umask())
        except OSError:  # a filesystem without modes (some FUSE / SMB mounts): keep what it gave
            pass
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; set straight back
    os.umask(mask)
    return mask


# Filesystem failures a user can fix (full disk, read-only or missing location, a file where a folder should be).
USER_FS_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                            errno.EEXIST, errno.EISDIR, errno.ENOENT, errno.EFBIG})


def os_error_line(exc: OSError) -> str | None:
    """One line naming the path and the cause of a filesystem failure a user can fix, or None for other errors.

    >>> os_error_line(OSError(errno.ENOSPC, "No space left on device", "runs/x/manifest.json"))
    'cannot write runs/x/manifest.json: No space left on device (ENOSPC); free space, then run the same command again'
    """
    if exc.errno not in USER_FS_ERRNOS:
        return None
    path = exc.filename if exc.filename is not None else "a file"
    code = errno.errorcode.get(exc.errno, str(exc.errno))
    hint = {errno.ENOSPC: "; free space, then run the same command again",
            errno.EDQUOT: "; free space, then run the same command again",
            errno.EROFS: "; choose a writable --output-dir",
            errno.EEXIST: "; a file is in the way of a folder: move it or choose another path",
            errno.ENOTDIR: "; a file is in the way of a folder: move it or choose another path"}.get(exc.errno, "")
    verb = "access" if exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM) else "write"
    return f"cannot {verb} {path}: {exc.strerror or exc} ({code}){hint}"


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(payload)


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """One JSON object per line; ``rows`` may be a generator (streamed, never held in memory as one string)."""
    with atomic_open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def parse_jsonl_line(raw: bytes) -> tuple[Any, str | None]:
    """(value, None) for one JSON Lines line, or (None, reason) when it is unusable.

    Unusable: not UTF-8, not JSON, an integer over Python's 4,300-digit limit, nesting too deep, or
    a lone surrogate (``"\\ud800"``, which no UTF-8 writer or tokenizer accepts). ``NaN``, ``Infinity``
    and floats beyond range read as None, so whatever is read can be written back as valid JSON.

    >>> parse_jsonl_line(b'{"a": NaN}'), parse_jsonl_line(b'{"a": "\\ud800"}')[1]
    (({'a': None}, None), 'not text (it holds a lone surrogate code point)')
    """
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
    try:
        value = json.loads(line, parse_constant=lambda _: None, parse_float=_finite_or_none)
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg}, column {err.colno})"
    except ValueError as err:  # an integer over sys.get_int_max_str_digits() digits
        return None, f"not valid JSON ({str(err)[:60]})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return None, "not text (it holds a lone surrogate code point)"
    except (ValueError, RecursionError):  # pragma: no cover - what json.loads returns dumps back
        return None, "cannot be written back as JSON"
    return value, None


def iter_jsonl(data: bytes) -> Iterator[tuple[int, Any, str | None]]:
    """(1-based line number, value, reason) for each non-blank line; lines split on ``\\n`` only
    (a bare ``\\r``, U+2028 or U+0085 inside a row is data, as JSON allows). A leading UTF-8 byte order mark (as
    Windows editors write) is not part of the first row.

    >>> [value for _, value, _ in iter_jsonl(b'\\xef\\xbb\\xbf{"a": 1}\\n{"a": 2}\\n')]
    [{'a': 1}, {'a': 2}]
    """
    for line_no, raw in enumerate(strip_bom(data).split(b"\n"), start=1):
        if raw.strip():
            yield (line_no, *parse_jsonl_line(raw))


def strip_bom(data: bytes) -> bytes:
    """``data`` without a leading UTF-8 byte order mark."""
    return data.removeprefix(b"\xef\xbb\xbf")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON Lines file; an unusable line raises ValueError naming the file and line."""
    rows = []
    for line_no, value, reason in iter_jsonl(Path(path).read_bytes()):
        if reason is not None:
            raise ValueError(f"{path}: line {line_no} is {reason}")
        rows.append(value)
    return rows


def replace_dir(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> None:
    """Move a fully written ``tmp_dir`` into place as ``final_dir`` (replacing an old one)."""
    final_dir = Path(final_dir)
    if final_dir.exists():
        trash = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final_dir, trash)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
