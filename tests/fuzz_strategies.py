"""Bounded, deterministic fuzzing's building blocks, shared by the test files that fuzz their module (config loader,
data readers, ``score``, rewards): hostile text, scalars and JSON values, JSONL lines and files, reward completions.

Each fuzz test runs a fixed, derandomized set of hypothesis examples (:data:`FUZZ`), as many as the loaded profile
says (tests/conftest.py: ``quick`` for the README's command, ``deep`` for CI's second step). The only
exceptions allowed are the project's own one-line error types; rewards always return one finite float per completion.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HOSTILE_TEXT = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "1e999", "3½", "7²", "\ud800", "\u2028", "\x85", "\r",
                     "Final Answer: ", "####", "\\boxed{", "Step 1:", "1,000", "-0", "1/0", "٣"]),
)
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([10**400, -(10**400), 2**1023, 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True), HOSTILE_TEXT,
)
JSON_VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
COMPLETION_TEXT = st.lists(HOSTILE_TEXT | st.integers().map(str), max_size=8).map("".join)
COMPLETION = st.one_of(
    COMPLETION_TEXT,
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["assistant", "user"]), "content": JSON_VALUE}),
             max_size=3),
    JSON_VALUE,
)


def json_line(value) -> bytes:
    """``value`` as one JSON line's bytes (lone surrogates kept)."""
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except ValueError:  # integers over Python's digit limit: write them as raw digits
        return b"9" * 5000


JSONL_LINE = st.one_of(st.binary(max_size=80), JSON_VALUE.map(json_line),
                       st.fixed_dictionaries({"question": JSON_VALUE, "answer": JSON_VALUE}).map(json_line),
                       st.fixed_dictionaries({"completion": COMPLETION, "answer": SCALAR}).map(json_line),
                       st.sampled_from([b"[" * 5000 + b"]" * 5000, b'{"a": NaN}', b"\xff\xfe", b""]))
JSONL_FILE = st.lists(JSONL_LINE, max_size=6).map(b"\n".join)


@contextmanager
def temp_file(name: str, payload: bytes) -> Iterator[Path]:
    """``payload`` written to a file named ``name`` in a fresh temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        path = Path(folder) / name
        path.write_bytes(payload)
        yield path
