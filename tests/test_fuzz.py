"""Bounded, deterministic fuzzing (issue 11): config loader, data readers, ``score`` and every reward.

Each test runs a fixed number of derandomized hypothesis examples (a few seconds). The only exceptions allowed
are the project's own one-line error types; rewards always return one finite float per completion.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipe.config.core import ConfigError, parse_override, resolve
from recipe.data.gsm8k import DataError, load_gsm8k, parse_rows
from recipe.eval.scoring import ScoreError, score_file
from recipe.rewards import REWARDS, build_reward

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------- building blocks

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


def _line(value) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except ValueError:  # integers over Python's digit limit: write them as raw digits
        return b"9" * 5000


JSONL_LINE = st.one_of(st.binary(max_size=80), JSON_VALUE.map(_line),
                       st.fixed_dictionaries({"question": JSON_VALUE, "answer": JSON_VALUE}).map(_line),
                       st.fixed_dictionaries({"completion": COMPLETION, "answer": SCALAR}).map(_line),
                       st.sampled_from([b"[" * 5000 + b"]" * 5000, b'{"a": NaN}', b"\xff\xfe", b""]))
JSONL_FILE = st.lists(JSONL_LINE, max_size=6).map(b"\n".join)


@contextmanager
def _temp_file(name: str, payload: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        path = Path(folder) / name
        path.write_bytes(payload)
        yield path


# ---------------------------------------------------------------- config loader

YAML_TEXT = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(["run:", " seed:", " 7", "&a", "*a", "[", "]", "{", "}", ":", "-", "\n", "  ", "x",
                              "stage2:", " temperature: ", "nan", ".inf", "1e999", "!!python/object", "<<: *a",
                              "model:", "\t", "'", '"', "#", "\xff", "\ud800"]), max_size=40)
    .map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass")),
    JSON_VALUE.map(_line),
)


@FUZZ
@given(YAML_TEXT)
def test_fuzz_config_file_only_raises_config_error(payload: bytes) -> None:
    with _temp_file("cfg.yaml", payload) as path:
        _resolve_file(path)


def _resolve_file(path: Path) -> None:
    try:
        resolve(preset="smoke", config_file=path)
    except ConfigError as exc:
        assert "\n" not in str(exc).strip() or "did you mean" in str(exc)


OVERRIDE_KEY = st.one_of(st.text(max_size=20), st.sampled_from(["run", "run.seed", "stage2", "stage2.rewards",
                                                                 "model.lora_target_modules", "eval.limit", "data"]))


@FUZZ
@given(OVERRIDE_KEY, st.one_of(st.text(max_size=60), YAML_TEXT.map(lambda b: b.decode("utf-8", "replace"))))
def test_fuzz_override_only_raises_config_error(key: str, raw: str) -> None:
    try:
        parse_override(f"{key}={raw}")
        resolve(preset="smoke", overrides=[f"{key}={raw}"])
    except ConfigError:
        pass


# ---------------------------------------------------------------- data readers


@FUZZ
@given(JSONL_FILE, st.booleans(), st.sampled_from(["train.jsonl", "train.json"]))
def test_fuzz_data_readers_only_raise_data_error(payload: bytes, strict: bool, name: str) -> None:
    with _temp_file(name, payload) as path:
        try:
            problems, report = load_gsm8k(str(path), strict=strict)
        except DataError:
            return
    assert report.n_ok == len(problems) and report.n_ok + report.n_bad == report.n_total


@FUZZ
@given(st.lists(JSON_VALUE, max_size=6))
def test_fuzz_parse_rows_never_raises_without_strict(rows) -> None:
    problems, report = parse_rows(rows, "train")
    assert report.n_ok == len(problems)


# ---------------------------------------------------------------- score


@FUZZ
@given(JSONL_FILE, st.sampled_from(["ours", "official"]))
def test_fuzz_score_only_raises_score_error_and_writes_valid_json(payload: bytes, checker: str) -> None:
    with _temp_file("gen.jsonl", payload) as path:
        out = path.with_name("out.jsonl")
        try:
            summary = score_file(path, output_path=out, checker=checker)
        except ScoreError:
            return
        lines = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == summary.n_scored
    for line in lines:
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"bare {c}")))


# ---------------------------------------------------------------- rewards


@st.composite
def reward_batch(draw):
    n = draw(st.integers(1, 4))
    column = st.lists(SCALAR, min_size=n, max_size=n)
    kwargs = {
        "prompts": draw(st.lists(st.one_of(st.text(max_size=10), JSON_VALUE), min_size=n, max_size=n)),
        "completions": draw(st.lists(COMPLETION, min_size=n, max_size=n)),
        "answer": draw(column),
    }
    for key in ("teacher_steps", "teacher_words", "teacher_tokens", "teacher_solution"):
        if draw(st.booleans()):
            kwargs[key] = draw(column)
    if draw(st.booleans()):
        kwargs["completion_ids"] = draw(st.lists(st.lists(st.integers(0, 9), max_size=5), min_size=n, max_size=n))
    return kwargs


@FUZZ
@given(st.sampled_from(sorted(REWARDS)), reward_batch())
def test_fuzz_every_reward_returns_finite_floats(name: str, kwargs) -> None:
    reward = build_reward(name)
    values = reward(**kwargs)
    assert len(values) == len(kwargs["completions"])
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
