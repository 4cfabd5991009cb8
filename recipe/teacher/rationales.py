"""Teacher rationales: GSM8K's own gold solutions (default) or a file of teacher-model solutions.

The paper distils DeepSeek-R1-Distill-Qwen-14B rationales; ``data.teacher`` points at such a file (``.jsonl`` /
``.json`` / ``.parquet``) whose rows hold ``question`` (or ``id``) and the rationale text under ``teacher_cot``
(the authors' released ``stage3_error_samples.json``), ``rationale``, ``solution``, ``answer`` or ``completion``.
The text is split by :func:`recipe.teacher.format.parse_rationale_text` into a thinking part, the real ``Step N:``
steps and an answer; ``cotrecipe teach`` writes such files. The gold final answer is kept either way: rewards and
mining compare against the dataset's answer, never the teacher's. Problems the file does not cover keep their gold
rationale and are counted.

:func:`apply_teacher` puts the thinking part into ``Problem.thinking``; :func:`problem_target` renders the three-part
target (the stages render it through :func:`recipe.train.rows.teacher_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from recipe.data.gsm8k import Problem, read_rows, strip_annotations
from recipe.data.prompts import ANSWER_LABEL
from recipe.errors import DataError
from recipe.teacher.format import Latex, Rationale, parse_rationale_text, render_target

TEXT_KEYS = ("teacher_cot", "rationale", "solution", "answer", "completion")


def parse_teacher_text(text: str, latex: Latex = "keep") -> Rationale:
    """Thinking + real steps + teacher answer of one rationale, GSM8K calculator annotations removed.

    >>> parse_teacher_text("Thinking…\\nAdd.\\n\\nStep 1: 3 * 4 = <<3*4=12>>12.\\nAnswer: 12")
    Rationale(thinking='Add.', steps=('3 * 4 = 12.',), answer='12')
    """
    return parse_rationale_text(strip_annotations(text), latex=latex)


def rationale_steps(text: str) -> tuple[str, ...]:
    """The real steps of a teacher rationale ("Step k:" blocks; otherwise one per non-empty line); thinking and
    answer lines dropped.

    >>> rationale_steps("Step 1: 3 * 4 = <<3*4=12>>12 apples.\\nStep 2: 12 + 1 = 13.\\nFinal Answer: 13")
    ('3 * 4 = 12 apples.', '12 + 1 = 13.')
    >>> rationale_steps("#### 5")
    ()
    """
    return parse_teacher_text(text).steps


def _row_text(row: Mapping) -> str | None:
    for key in TEXT_KEYS:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def load_teacher_rationales(path: str, latex: Latex = "keep") -> dict[str, Rationale]:
    """``{question or id: Rationale}`` from a teacher file; rows without steps are skipped, a row with no key or
    no text is an error naming it."""
    table: dict[str, Rationale] = {}
    for i, row in enumerate(read_rows(path, strict=True), start=1):
        if not isinstance(row, Mapping):
            raise DataError(f"{path}: row {i} is not an object")
        key = row.get("question") or row.get("id")
        text = _row_text(row)
        if not isinstance(key, str) or text is None:
            raise DataError(f"{path}: row {i} needs 'question' (or 'id') and one of {', '.join(TEXT_KEYS)}")
        rationale = parse_teacher_text(text, latex)
        if rationale.steps:
            table[key.strip()] = rationale
    return table


def _lookup(table: Mapping[str, Rationale], problem: Problem) -> Rationale | None:
    return table.get(problem.question.strip()) or table.get(problem.id)


def apply_teacher(problems: Sequence[Problem], teacher: str, latex: Latex = "keep") -> tuple[list[Problem], int]:
    """Replace each problem's steps with the teacher's when ``teacher`` is a file; returns (problems, n_replaced).
    The thinking part goes into ``Problem.thinking``.

    >>> p = Problem("train-0", "Q?", ("gold step.",), "4")
    >>> apply_teacher([p], "gold")
    ([Problem(id='train-0', question='Q?', steps=('gold step.',), answer='4', thinking='')], 0)
    """
    if teacher == "gold":
        return list(problems), 0
    table = load_teacher_rationales(teacher, latex)
    out, replaced = [], 0
    for problem in problems:
        rationale = _lookup(table, problem)
        if rationale is None:
            out.append(problem)
            continue
        out.append(replace(problem, steps=rationale.steps, thinking=rationale.thinking))
        replaced += 1
    return out, replaced


def problem_target(problem: Problem, answer_label: str = ANSWER_LABEL, thinking: str | None = None) -> str:
    """The text a stage trains on / shows for ``problem``: the three-part target with the thinking part
    (``thinking``, else ``problem.thinking``), the gold answer on the answer line.

    >>> problem_target(Problem("t-0", "Q?", ("a = 1.",), "1"), thinking="Think.")
    'Thinking…\\nThink.\\n\\nStep 1: a = 1.\\nFinal Answer: 1'
    """
    if thinking is None:
        thinking = problem.thinking
    return render_target(problem.steps, problem.answer, thinking, answer_label)
