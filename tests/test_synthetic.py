"""The synthetic GSM8K-style generator: rows parse like GSM8K and their arithmetic is right."""

from __future__ import annotations

import operator
import random
import re

import pytest

from recipe.data.gsm8k import load_gsm8k, parse_rows
from recipe.data.synthetic import MIXED_CHECK_SHARE, TEMPLATES, _Rationale, synthetic_row, synthetic_rows
from recipe.errors import DataError

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


# ---------------------------------------------------------------- the verbose teacher style

def _words(row: dict[str, str]) -> int:
    """Words of the rationale as the student sees it (calculator annotations stripped, '#### N' line dropped)."""
    *lines, _ = row["answer"].split("\n")
    return len(re.sub(r"<<[^>]*>>", "", " ".join(lines)).split())


@pytest.mark.parametrize("max_steps", [2, None])
def test_verbose_has_at_least_2_5_times_the_words(max_steps):
    terse = synthetic_rows(400, seed=21, max_steps=max_steps)
    verbose = synthetic_rows(400, seed=21, max_steps=max_steps, style="verbose")
    ratio = sum(map(_words, verbose)) / sum(map(_words, terse))
    assert ratio >= 2.5, ratio
    # every single row is longer too, not just the average
    assert all(_words(v) >= 2 * _words(t) for t, v in zip(terse, verbose, strict=True))


def test_verbose_keeps_questions_and_answers():
    terse = synthetic_rows(300, seed=4, max_steps=3)
    verbose = synthetic_rows(300, seed=4, max_steps=3, style="verbose")
    assert [r["question"] for r in verbose] == [r["question"] for r in terse]
    assert [r["answer"].rsplit("#### ", 1)[1] for r in verbose] == [r["answer"].rsplit("#### ", 1)[1] for r in terse]


def test_verbose_is_deterministic_per_seed():
    assert synthetic_rows(100, seed=8, style="verbose") == synthetic_rows(100, seed=8, style="verbose")
    assert synthetic_rows(100, seed=8, style="verbose") != synthetic_rows(100, seed=9, style="verbose")


def test_verbose_arithmetic_and_checks_are_exact():
    """Each calculation line carries the terse step's annotation; each check line undoes it exactly."""
    check = re.compile(r"double-check that: (\d+) ([-+*/]) (\d+) = (\d+), which matches")
    for terse, verbose in zip(synthetic_rows(500, seed=2), synthetic_rows(500, seed=2, style="verbose"), strict=True):
        *lines, final = verbose["answer"].split("\n")
        calc_lines = [line for line in lines if "<<" in line]
        assert ANNOTATED.findall(" ".join(calc_lines)) == ANNOTATED.findall(terse["answer"])
        checks = [check.search(line) for line in lines if "double-check" in line]
        assert len(checks) == len(calc_lines) and all(checks)
        for (a, op, b, result, _), found in zip(ANNOTATED.findall(terse["answer"]), checks, strict=True):
            r, inverse, b2, a2 = found.groups()
            assert (r, b2, a2) == (result, b, a)
            assert inverse == {"+": "-", "-": "+", "*": "/", "/": "*"}[op]
            assert OPS[inverse](int(r), int(b2)) == int(a2)
        assert lines[0].startswith("Let me think") and verbose["question"].rsplit(". ", 1)[-1] in lines[0]
        assert lines[-1] == f"So the final answer is {final[len('#### '):]}."


def test_verbose_rows_parse_with_the_same_answers():
    verbose = synthetic_rows(300, seed=6, max_steps=2, style="verbose")
    problems, report = parse_rows(verbose, "syn")
    assert report.n_bad == 0
    assert [p.answer for p in problems] == [r["answer"].rsplit("#### ", 1)[1] for r in verbose]
    assert all(len(p.steps) == 6 for p in problems)  # preamble + (calc, check) x 2 + closing line
    assert not any("<<" in step for p in problems for step in p.steps)


def test_style_is_checked_and_selectable_from_the_source():
    with pytest.raises(ValueError, match="unknown synthetic teacher style 'chatty'"):
        synthetic_rows(3, seed=1, style="chatty")
    verbose, _ = load_gsm8k("synthetic:20:2:verbose", split="train")
    terse, _ = load_gsm8k("synthetic:20:2", split="train")
    assert [p.question for p in verbose] == [p.question for p in terse]
    assert all(len(v.steps) > len(t.steps) for v, t in zip(verbose, terse, strict=True))
    with pytest.raises(DataError, match="synthetic:N"):
        load_gsm8k("synthetic:20:verbose:2", split="train")


def test_mixed_teacher_is_the_verbose_one_with_some_checks_left_out():
    verbose = synthetic_rows(400, seed=8, max_steps=2, style="verbose")
    mixed = synthetic_rows(400, seed=8, max_steps=2, style="mixed")
    assert mixed == synthetic_rows(400, seed=8, max_steps=2, style="mixed")  # deterministic
    checks = 0
    for v, m in zip(verbose, mixed, strict=True):
        assert m["question"] == v["question"]
        assert m["answer"].rsplit("#### ", 1)[1] == v["answer"].rsplit("#### ", 1)[1]
        v_lines, m_lines = v["answer"].splitlines(), m["answer"].splitlines()
        # every mixed line is a verbose line, in order; only checks are ever left out
        assert [line for line in v_lines if line in m_lines] == m_lines
        assert all(line.startswith("Let me double-check") for line in v_lines if line not in m_lines)
        checks += sum(line.startswith("Let me double-check") for line in m_lines)
    share = checks / (2 * len(mixed))  # two calculations, two checks in every verbose row
    assert abs(share - MIXED_CHECK_SHARE) < 0.06
    problems, _ = load_gsm8k("synthetic:30:2:mixed", split="train")
    assert {len(p.steps) for p in problems} <= {4, 5, 6} and len({len(p.steps) for p in problems}) > 1
