"""Score any generations file (jsonl): extracted answer, correctness and reward values per row.

Bad rows never stop a run: a line that is not UTF-8 or not JSON (too deep, an integer over
Python's digit limit, a lone surrogate), a row that is not an object, a missing field, a
completion that is not text or an unreadable gold answer is recorded with its 1-based line
number and skipped, and every other row is still scored. Lines are split on ``\n`` only (a
bare ``\r``, U+2028 or U+0085 inside a row is data). ``NaN``/``Infinity`` literals in input rows
are read as ``null``, so every written row is valid JSON. Zero scored rows is a
:class:`ScoreError`, and so are a missing input and ``--output`` naming the input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipe.data.answers import answers_match, extract_answer, gold_answer
from recipe.errors import ScoreError
from recipe.eval.official_checker import official_prediction, official_verdict
from recipe.fsio import parse_jsonl_line, strip_bom, write_jsonl
from recipe.rewards import build_reward, completion_text

__all__ = ["CHECKERS", "ScoreSummary", "format_summary", "score_file"]

CHECKERS = ("ours", "official")
# Row columns handed to rewards when present (the stage datasets' teacher statistics).
_REWARD_COLUMNS = ("teacher_steps", "teacher_words", "teacher_tokens", "teacher_solution")
_MAX_LISTED_BAD_LINES = 20
_STDIN_NAMES = ("-", "/dev/stdin")


@dataclass
class ScoreSummary:
    """What :func:`score_file` found. ``accuracy`` is a fraction of the scored rows, by ``checker``."""

    n_rows: int = 0
    n_scored: int = 0
    n_correct: int = 0
    accuracy: float = 0.0
    mean_words: float = 0.0
    n_unreadable: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    reward_means: dict[str, float] = field(default_factory=dict)
    output_path: str | None = None
    checker: str = "ours"

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access, e.g. ``summary["accuracy"]``."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


def _message_text_ok(message: Any) -> bool:
    if not isinstance(message, dict):
        return False
    content = message.get("content")
    if isinstance(content, list):
        return all(isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in content)
    return isinstance(content, str)


def _completion(value: Any) -> str | None:
    """Text of a plain or chat completion, or None when any message's content is not text."""
    if isinstance(value, str):
        return value
    messages = [value] if isinstance(value, dict) else value
    if not isinstance(messages, list) or not messages or not all(map(_message_text_ok, messages)):
        return None
    return completion_text(messages)


def _official_gold_field(value: Any) -> str:
    """The gold as the authors' parser sees it: a GSM8K field as is, a bare number behind ``####``."""
    text = value if isinstance(value, str) else str(value)
    return text if "####" in text else f"#### {text.strip()}"


def _parse_line(raw: bytes, completion_field: str, answer_field: str) -> tuple[dict, str, str] | str:
    """(row, completion text, gold) for one line, or the reason it is skipped."""
    row, reason = parse_jsonl_line(raw)
    if reason is not None:
        return reason
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    missing = [f for f in (completion_field, answer_field) if f not in row]
    if missing:
        return f"missing field(s) {missing} (has {sorted(row)[:20]})"
    completion = _completion(row[completion_field])
    if completion is None:
        return f"field {completion_field!r} is not text (nor chat messages whose content is text)"
    try:
        gold = gold_answer(row[answer_field])
    except ValueError as err:
        return f"field {answer_field!r}: {err}"
    return row, completion, gold


def _read_rows(
    lines: Iterable[bytes], completion_field: str, answer_field: str, summary: ScoreSummary
) -> list[tuple[dict, str, str]]:
    """(row, completion text, gold) for every usable line; problems go to ``summary.bad_lines``."""
    rows = []
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        summary.n_rows += 1
        parsed = _parse_line(raw, completion_field, answer_field)
        if isinstance(parsed, str):
            summary.bad_lines.append((line_no, parsed))
        else:
            rows.append(parsed)
    return rows


def _read_input(input_path: str | os.PathLike[str]) -> list[bytes]:
    """The input's lines, split on ``\\n`` only; ``-`` or ``/dev/stdin`` reads standard input."""
    name = os.fspath(input_path)
    try:
        if name in _STDIN_NAMES:
            data = sys.stdin.buffer.read()
        else:
            path = Path(name)
            if not path.exists():
                raise ScoreError(f"no generations file at {path}")
            if path.is_dir():
                raise ScoreError(f"{path} is a folder, expected a generations .jsonl file")
            if path.is_char_device() or path.is_block_device():  # /dev/zero would be read until memory runs out
                raise ScoreError(f"{path} is a device, expected a generations .jsonl file")
            data = path.read_bytes()
    except OSError as err:
        raise ScoreError(f"cannot read {name}: {err.strerror or err}") from None
    return strip_bom(data).split(b"\n")  # a byte order mark is not part of the first row


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    if os.fspath(a) in _STDIN_NAMES:
        return False
    pa, pb = Path(a), Path(b)
    try:
        return pa.resolve() == pb.resolve() or (pb.exists() and pa.samefile(pb))
    except OSError:
        return False


def _reward_columns(rows: list[tuple[dict, str, str]], golds: list[str]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {"answer": golds}
    for key in _REWARD_COLUMNS:
        if any(key in row for row, _, _ in rows):
            columns[key] = [row.get(key) for row, _, _ in rows]
    return columns


def score_file(
    input_path: str | os.PathLike[str],
    completion_field: str = "completion",
    answer_field: str = "answer",
    output_path: str | os.PathLike[str] | None = None,
    rewards: Sequence[str] = ("correctness", "format"),
    checker: str = "ours",
) -> ScoreSummary:
    """Score a jsonl of generations; optionally write each scored row with its scores.

    Gold may be a GSM8K rationale ending in "#### 72" or a bare number. Each written row is
    the original object plus ``extracted_answer``, ``correct`` and ``reward_<name>`` for each
    name in ``rewards`` (any of :data:`recipe.rewards.REWARDS`, default parameters; a row's
    ``prompt`` and teacher columns are passed through). ``checker="official"`` makes
    ``extracted_answer``/``correct``/``accuracy`` the authors' verdicts
    (:mod:`recipe.eval.official_checker`); rewards always use ours. The output is written atomically
    through :func:`recipe.fsio.write_jsonl`.
    """
    if checker not in CHECKERS:
        raise ScoreError(f"unknown checker {checker!r}; choose from {', '.join(CHECKERS)}")
    if output_path is not None and _same_file(input_path, output_path):
        raise ScoreError(f"--output {output_path} is the input file; choose another path (nothing was written)")
    reward_fns = {name: build_reward(name) for name in rewards}  # unknown names fail before reading
    summary = ScoreSummary(checker=checker)
    rows = _read_rows(_read_input(input_path), completion_field, answer_field, summary)
    if not rows:
        first = f" (line {summary.bad_lines[0][0]}: {summary.bad_lines[0][1]})" if summary.bad_lines else ""
        raise ScoreError(f"no rows scored in {os.fspath(input_path)}: {summary.n_rows} non-blank rows, "
                         f"{len(summary.bad_lines)} skipped{first}")
    texts = [text for _, text, _ in rows]
    golds = [gold for _, _, gold in rows]
    if checker == "official":
        preds = [official_prediction(t) or None for t in texts]
        correct = [official_verdict(t, _official_gold_field(row[answer_field])) for row, t, _ in rows]
    else:
        preds = [extract_answer(t) for t in texts]
        correct = [answers_match(p, g) for p, g in zip(preds, golds)]
    columns = _reward_columns(rows, golds)
    prompts = [row.get("prompt") if isinstance(row.get("prompt"), str) else "" for row, _, _ in rows]
    scores = {name: fn(prompts=prompts, completions=texts, **columns) for name, fn in reward_fns.items()}

    n = len(rows)
    summary.n_scored = n
    summary.n_correct = sum(correct)
    summary.accuracy = summary.n_correct / n
    summary.mean_words = sum(len(t.split()) for t in texts) / n
    summary.n_unreadable = sum(p is None for p in preds)
    summary.reward_means = {name: sum(v) / n for name, v in scores.items()}
    if output_path is not None:
        records = (
            {**row, "extracted_answer": preds[i], "correct": correct[i]}
            | {f"reward_{name}": values[i] for name, values in scores.items()}
            for i, (row, _, _) in enumerate(rows)
        )
        try:
            write_jsonl(output_path, records)
        except OSError as err:
            raise ScoreError(f"cannot write {os.fspath(output_path)}: {err.strerror or err}") from None
        summary.output_path = str(output_path)
    return summary


def format_summary(summary: ScoreSummary) -> str:
    """Human-readable summary for the command line.

    >>> print(format_summary(ScoreSummary(n_rows=3, n_scored=2, n_correct=1, accuracy=0.5, mean_words=12.0,
    ...                                   bad_lines=[(2, "not valid JSON (Expecting value, column 1)")])))
    rows: 3 (scored 2, skipped 1)
    accuracy: 50.00% (1/2)
    unreadable answers: 0
    mean words: 12.0
    skipped lines:
      line 2: not valid JSON (Expecting value, column 1)
    """
    lines = [
        f"rows: {summary.n_rows} (scored {summary.n_scored}, skipped {len(summary.bad_lines)})",
        f"accuracy{' (official checker)' if summary.checker == 'official' else ''}: "
        f"{100 * summary.accuracy:.2f}% ({summary.n_correct}/{summary.n_scored})",
        f"unreadable answers: {summary.n_unreadable}",
        f"mean words: {summary.mean_words:.1f}",
    ]
    lines += [f"reward {name}: mean {mean:.4f}" for name, mean in summary.reward_means.items()]
    if summary.output_path:
        lines.append(f"per-row scores: {summary.output_path}")
    if summary.bad_lines:
        lines.append("skipped lines:")
        lines += [f"  line {no}: {msg}" for no, msg in summary.bad_lines[:_MAX_LISTED_BAD_LINES]]
        if len(summary.bad_lines) > _MAX_LISTED_BAD_LINES:
            lines.append(f"  ... and {len(summary.bad_lines) - _MAX_LISTED_BAD_LINES} more")
    return "\n".join(lines)
