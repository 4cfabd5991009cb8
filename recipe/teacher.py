"""Teacher rationales: GSM8K's own gold solutions (default) or a file of teacher-model solutions.

The paper distils DeepSeek-R1-Distill-Qwen-14B rationales; ``data.teacher`` points at such a file (``.jsonl`` /
``.json`` / ``.parquet``) whose rows hold ``question`` (or ``id``) and ``rationale`` (or ``solution`` / ``answer``)
in any of the usual shapes: "Step k: ..." lines, plain lines, a GSM8K-style ``#### N`` ending, an "Answer:" line.
The gold final answer is kept either way: rewards and mining compare against the dataset's answer, never the
teacher's. Problems the file does not cover keep their gold rationale and are counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from recipe.data import DataError, Problem, read_rows, strip_annotations

_STEP_PREFIX = re.compile(r"^\s*(?:[-*•]\s*)?(?:step\s*\d+\s*[:.)]\s*)?", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*(?:####|(?:the\s+)?(?:final\s+)?answer\s*(?:is|:))", re.IGNORECASE)
_TEXT_KEYS = ("rationale", "solution", "answer", "completion")


def rationale_steps(text: str) -> tuple[str, ...]:
    """Steps of a teacher rationale: one per non-empty line, "Step k:" prefixes and answer lines dropped.

    >>> rationale_steps("Step 1: 3 * 4 = <<3*4=12>>12 apples.\\nStep 2: 12 + 1 = 13.\\nFinal Answer: 13")
    ('3 * 4 = 12 apples.', '12 + 1 = 13.')
    >>> rationale_steps("#### 5")
    ()
    """
    steps = []
    for line in strip_annotations(text).splitlines():
        if not line.strip() or _ANSWER_LINE.match(line):
            continue
        step = _STEP_PREFIX.sub("", line, count=1).strip()
        if step:
            steps.append(step)
    return tuple(steps)


def _row_text(row: dict) -> str | None:
    for key in _TEXT_KEYS:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def load_teacher(path: str) -> dict[str, tuple[str, ...]]:
    """``{question or id: steps}`` from a teacher file; a row with neither key or no text is an error naming it."""
    table: dict[str, tuple[str, ...]] = {}
    for i, row in enumerate(read_rows(path, strict=True), start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i} is not an object")
        key = row.get("question") or row.get("id")
        text = _row_text(row)
        if not isinstance(key, str) or text is None:
            raise DataError(f"{path}: row {i} needs 'question' (or 'id') and one of {', '.join(_TEXT_KEYS)}")
        steps = rationale_steps(text)
        if steps:
            table[key.strip()] = steps
    return table


def apply_teacher(problems: Sequence[Problem], teacher: str) -> tuple[list[Problem], int]:
    """Replace each problem's steps with the teacher's when ``teacher`` is a file; returns (problems, n_replaced).

    >>> p = Problem("train-0", "Q?", ("gold step.",), "4")
    >>> apply_teacher([p], "gold")
    ([Problem(id='train-0', question='Q?', steps=('gold step.',), answer='4')], 0)
    """
    if teacher == "gold":
        return list(problems), 0
    table = load_teacher(teacher)
    out, replaced = [], 0
    for problem in problems:
        steps = table.get(problem.question.strip()) or table.get(problem.id)
        if steps:
            out.append(replace(problem, steps=steps))
            replaced += 1
        else:
            out.append(problem)
    return out, replaced
