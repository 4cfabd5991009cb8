"""The synthetic GSM8K-style generator: rows parse like GSM8K and their arithmetic is right."""

from __future__ import annotations

import operator
import random
import re

import pytest

from recipe.data import parse_rows
from recipe.synthetic import TEMPLATES, _Rationale, synthetic_row, synthetic_rows

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
# "<<a op b=r>>r" with integer operands: checked with the operator module, never evaluated as text.
ANNOTATED = re.compile(r"<<(\d+)([-+*/])(\d+)=(-?\d+)>>(-?\d+)")


def check_row(row: dict[str, str]) -> tuple[int, int]:
    """Assert one row is self-consistent; return (number of steps, answer)."""
    *lines, final = row["answer"].split("\n")
    assert final.startswith("#### ")
    answer = int(final[len("#### ") :])
    results = []
    for line in lines:
        found = ANNOTATED.findall(line)
        assert len(found) == 1, line
        a, op, b, result, visible = found[0]
        assert OPS[op](int(a), int(b)) == int(result), line
        assert visible == result, line
        results.append(int(result))
    assert results[-1] == answer, row
    assert row["question"].endswith("?")
    return len(lines), answer


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.__name__)
def test_every_template_is_consistent(template):
    rng = random.Random(7)
    for _ in range(300):
        rationale = _Rationale()
        question = template(rng, rationale)
        row = {"question": question, "answer": "\n".join(rationale.lines) + f"\n#### {rationale.result}"}
        n_steps, answer = check_row(row)
        assert 2 <= n_steps <= 6
        assert answer > 0


def test_synthetic_row_uses_every_template():
    rng = random.Random(1)
    questions = [synthetic_row(rng)["question"] for _ in range(500)]
    keywords = ["buys", "an hour", "children", "years old", "saves", "miles per hour", "bakery"]
    for word in keywords:
        assert any(word in q for q in questions), word
    assert len(keywords) == len(TEMPLATES)


def test_rows_parse_without_bad_rows_and_answers_match():
    rows = synthetic_rows(2000, seed=3)
    problems, report = parse_rows(rows, "syn")
    assert report.n_bad == 0 and report.n_ok == 2000
    for row, problem in zip(rows, problems, strict=True):
        _, answer = check_row(row)
        assert problem.answer == str(answer)
        assert not any("<<" in step or ">>" in step for step in problem.steps)
        # the visible result of the last step (annotation stripped) is the final answer
        assert re.findall(r"-?\d+", problem.steps[-1])[-1] == problem.answer


def test_step_counts_cover_two_to_six():
    counts = {len(r["answer"].split("\n")) - 1 for r in synthetic_rows(3000, seed=0)}
    assert counts == {2, 3, 4, 5, 6}


def test_same_seed_same_rows_different_seed_different_rows():
    assert synthetic_rows(200, seed=11) == synthetic_rows(200, seed=11)
    a, b = synthetic_rows(200, seed=11), synthetic_rows(200, seed=12)
    assert a != b
    assert len({r["question"] for r in a} & {r["question"] for r in b}) < 20


def test_questions_are_varied():
    rows = synthetic_rows(1000, seed=5)
    assert len({r["question"] for r in rows}) > 950
    openings = {" ".join(r["question"].split()[1:3]) for r in rows}
    assert len(openings) >= 7


def test_row_count_edge_cases():
    assert synthetic_rows(0, seed=1) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        synthetic_rows(-1, seed=1)
