"""Score any generations file (jsonl): extracted answer, correctness and reward values per row.

Bad rows never stop a run: a malformed JSON line, a row that is not an object, a missing
field or an unreadable gold answer is recorded with its 1-based line number and skipped,
and every other row is still scored.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipe.answers import answers_match, extract_answer, gold_from_gsm8k
from recipe.rewards import build_reward, completion_text

__all__ = ["ScoreSummary", "format_summary", "score_file"]

# Row columns handed to rewards when present (the stage datasets' teacher statistics).
_REWARD_COLUMNS = ("teacher_steps", "teacher_words", "teacher_tokens", "teacher_solution")
_MAX_LISTED_BAD_LINES = 20


@dataclass
class ScoreSummary:
    """What :func:`score_file` found. ``accuracy`` is a fraction of the scored rows."""

    n_rows: int = 0
    n_scored: int = 0
    n_correct: int = 0
    accuracy: float = 0.0
    mean_words: float = 0.0
    n_unreadable: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    reward_means: dict[str, float] = field(default_factory=dict)
    output_path: str | None = None

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access, e.g. ``summary["accuracy"]``."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


def _gold(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"gold answer must be text or a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"gold answer {value!r} is not a finite number")
    return gold_from_gsm8k(value if isinstance(value, str) else repr(value))


def _read_rows(
    lines: Iterable[str], completion_field: str, answer_field: str, summary: ScoreSummary
) -> list[tuple[dict, str, str]]:
    """(row, completion text, gold) for every usable line; problems go to ``summary.bad_lines``."""
    rows = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        summary.n_rows += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            summary.bad_lines.append((line_no, f"invalid JSON: {err.msg} (column {err.colno})"))
            continue
        if not isinstance(row, dict):
            summary.bad_lines.append((line_no, f"expected a JSON object, got {type(row).__name__}"))
            continue
        missing = [f for f in (completion_field, answer_field) if f not in row]
        if missing:
            summary.bad_lines.append((line_no, f"missing field(s) {missing} (has {sorted(row)})"))
            continue
        completion = row[completion_field]
        if not isinstance(completion, (str, list)):
            summary.bad_lines.append((line_no, f"field {completion_field!r} is not text"))
            continue
        try:
            gold = _gold(row[answer_field])
        except ValueError as err:
            summary.bad_lines.append((line_no, f"field {answer_field!r}: {err}"))
            continue
        rows.append((row, completion_text(completion), gold))
    return rows


def _reward_columns(rows: list[tuple[dict, str, str]], golds: list[str]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {"answer": golds}
    for key in _REWARD_COLUMNS:
        if any(key in row for row, _, _ in rows):
            columns[key] = [row.get(key) for row, _, _ in rows]
    return columns


def _write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def score_file(
    input_path: str | os.PathLike[str],
    completion_field: str = "completion",
    answer_field: str = "answer",
    output_path: str | os.PathLike[str] | None = None,
    rewards: Sequence[str] = ("correctness", "format"),
) -> ScoreSummary:
    """Score a jsonl of generations; optionally write each scored row with its scores.

    Gold may be a GSM8K rationale ending in "#### 72" or a bare number. Each written row is
    the original object plus ``extracted_answer``, ``correct`` and ``reward_<name>`` for each
    name in ``rewards`` (any of :data:`recipe.rewards.REWARDS`, default parameters; a row's
    ``prompt`` and teacher columns are passed through). The output is written atomically.
    """
    path = Path(input_path)
    if not path.is_file():
        raise FileNotFoundError(f"no generations file at {path}")
    reward_fns = {name: build_reward(name) for name in rewards}  # unknown names fail before reading
    summary = ScoreSummary()
    with open(path, encoding="utf-8") as fh:
        rows = _read_rows(fh, completion_field, answer_field, summary)
    texts = [text for _, text, _ in rows]
    golds = [gold for _, _, gold in rows]
    preds = [extract_answer(t) for t in texts]
    correct = [answers_match(p, g) for p, g in zip(preds, golds)]
    columns = _reward_columns(rows, golds)
    prompts = [row.get("prompt") if isinstance(row.get("prompt"), str) else "" for row, _, _ in rows]
    scores = {name: fn(prompts=prompts, completions=texts, **columns) for name, fn in reward_fns.items()}

    n = len(rows)
    summary.n_scored = n
    summary.n_correct = sum(correct)
    summary.accuracy = summary.n_correct / n if n else 0.0
    summary.mean_words = sum(len(t.split()) for t in texts) / n if n else 0.0
    summary.n_unreadable = sum(p is None for p in preds)
    summary.reward_means = {name: sum(v) / n if n else 0.0 for name, v in scores.items()}
    if output_path is not None:
        records = (
            {**row, "extracted_answer": preds[i], "correct": correct[i]}
            | {f"reward_{name}": values[i] for name, values in scores.items()}
            for i, (row, _, _) in enumerate(rows)
        )
        _write_jsonl_atomic(Path(output_path), records)
        summary.output_path = str(output_path)
    return summary


def format_summary(summary: ScoreSummary) -> str:
    """Human-readable summary for the command line.

    >>> print(format_summary(ScoreSummary(n_rows=3, n_scored=2, n_correct=1, accuracy=0.5, mean_words=12.0,
    ...                                   bad_lines=[(2, "invalid JSON: Expecting value (column 1)")])))
    rows: 3 (scored 2, skipped 1)
    accuracy: 50.00% (1/2)
    unreadable answers: 0
    mean words: 12.0
    skipped lines:
      line 2: invalid JSON: Expecting value (column 1)
    """
    lines = [
        f"rows: {summary.n_rows} (scored {summary.n_scored}, skipped {len(summary.bad_lines)})",
        f"accuracy: {100 * summary.accuracy:.2f}% ({summary.n_correct}/{summary.n_scored})",
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
