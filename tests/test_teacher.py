"""Teacher rationales from a file replace the gold steps of the problems they cover; the gold answer stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipe.config import core as C
from recipe.data.gsm8k import Problem, load_gsm8k
from recipe.data.prompts import render_solution
from recipe.errors import DataError
from recipe.teacher.format import Rationale, render_target
from recipe.teacher.rationales import (
    apply_teacher,
    load_teacher_rationales,
    parse_teacher_text,
    problem_target,
    rationale_steps,
)
from recipe.train.rows import train_problems


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("Step 1: a = 2.\nStep 2: b = 4.\nAnswer: 4", ("a = 2.", "b = 4.")),  # the paper's target format
        ("She has 3 * 4 = <<3*4=12>>12.\n#### 12", ("She has 3 * 4 = 12.",)),  # GSM8K style, annotation stripped
        ("- first\n- second\n\nThe answer is 7.", ("first", "second")),  # bullets, prose answer line
        ("step 3) x\nFinal Answer: 1", ("x",)),
        ("", ()),
    ],
)
def test_rationale_steps(text, steps):
    assert rationale_steps(text) == steps


def test_apply_teacher_replaces_covered_problems_only(tmp_path):
    problems = [Problem("train-0", "Q zero?", ("gold 0.",), "1"), Problem("train-1", "Q one?", ("gold 1.",), "2")]
    path = tmp_path / "teacher.jsonl"
    path.write_text(json.dumps({"question": "Q one?", "rationale": "Step 1: long teacher step.\nAnswer: 999"}) + "\n")
    out, replaced = apply_teacher(problems, str(path))
    assert replaced == 1
    assert out[0] == problems[0]
    assert out[1].steps == ("long teacher step.",) and out[1].answer == "2"  # gold answer kept, not the teacher's


def test_bad_teacher_rows_are_named(tmp_path):
    path = tmp_path / "teacher.jsonl"
    path.write_text(json.dumps({"question": "Q?"}) + "\n")
    with pytest.raises(DataError, match="row 1"):
        load_teacher_rationales(str(path))


def test_config_checks_the_teacher_path_and_stages_use_it(tmp_path):
    with pytest.raises(C.ConfigError, match="data.teacher"):
        C.resolve(preset="smoke", overrides=[f"data.teacher={tmp_path / 'missing.jsonl'}"])
    problems, _ = load_gsm8k("synthetic:400", split="train")
    target = problems[0]
    path = tmp_path / "teacher.jsonl"
    path.write_text(json.dumps({"id": target.id, "solution": "Step 1: teacher one.\nStep 2: teacher two."}) + "\n")
    cfg = C.resolve(preset="smoke", overrides=[f"data.teacher={path}"])
    stage1 = train_problems(cfg, "stage1")
    assert stage1[0].steps == ("teacher one.", "teacher two.") and stage1[0].answer == target.answer
    assert stage1[1].steps == problems[1].steps


# ------------------------------------------------------------------------------------------------------------------
# The authors' format: "Thinking…" part + "Step N:" blocks + "Answer: N"
# ------------------------------------------------------------------------------------------------------------------

AUTHORS_FILE = Path(__file__).parent / "data" / "teach_stage3_samples.json"  # our own rows in their released shape


def test_authors_file_loads_with_thinking_apart_and_only_real_steps():
    rows = json.loads(AUTHORS_FILE.read_text())
    table = load_teacher_rationales(str(AUTHORS_FILE))
    first, second = (table[row["question"]] for row in rows)
    # the old reader made every thinking paragraph a step: 3 + 3 + answer-tail lines; the real steps are 3 and 3
    assert len(first.steps) == 3 and len(second.steps) == 3
    assert first.thinking.startswith("First, find how many marbles") and "Thinking" not in first.thinking
    assert not any("First, find" in step for step in first.steps)
    # a step's continuation line joins it; the inline answer after the last step is cut off
    assert first.steps[2] == "Marbles left: \\[ 21 - 5 = 16 \\]" and first.answer == "16"
    # the teacher's text is read, never the student's failed "response"
    assert second.steps[0].startswith("Train tickets") and second.answer == "36"
    assert "\\boxed{36}" in second.thinking  # an "Answer**" line inside the thinking stays thinking


def test_latex_option_replaces_math_in_steps_only():
    table = load_teacher_rationales(str(AUTHORS_FILE), latex="math")
    rationale = next(iter(table.values()))
    assert rationale.steps[0] == "Marbles at the start: 3 bags with 7 each: [math]"
    assert rationale.steps[2] == "Marbles left: [math]"
    kept = load_teacher_rationales(str(AUTHORS_FILE))
    assert next(iter(kept.values())).thinking == rationale.thinking


def test_three_part_target_round_trips_and_gold_stays_unchanged():
    rationale = parse_teacher_text("Thinking…\nAdd them.\n\nStep 1: 2 + 2 = 4.\nStep 2: Done.\n\nAnswer: 4")
    target = render_target(rationale.steps, "4", rationale.thinking)
    assert target == "Thinking…\nAdd them.\n\nStep 1: 2 + 2 = 4.\nStep 2: Done.\nFinal Answer: 4"
    assert parse_teacher_text(target) == rationale
    gold = Problem("t-0", "Q?", ("a = 1.",), "1")
    assert problem_target(gold) == render_solution(gold.steps, gold.answer)  # no thinking: the old target exactly


def test_think_tags_become_the_thinking_part():
    rationale = parse_teacher_text("<think>\nhmm, 6 * 7\n</think>\nStep 1: 6 * 7 = 42.\nFinal Answer: 42")
    assert rationale == Rationale("hmm, 6 * 7", ("6 * 7 = 42.",), "42")


def test_thinking_without_steps_is_not_a_rationale():
    rationale = parse_teacher_text("Thinking…\nFirst this.\n\nThen that.\n\nAnswer: 3")
    assert rationale.steps == () and not rationale.parsed


def test_apply_teacher_carries_thinking_for_the_stage_targets():
    rows = json.loads(AUTHORS_FILE.read_text())
    problems = [Problem(f"train-{i}", row["question"], ("gold.",), row["gold_answer"]) for i, row in enumerate(rows)]
    out, replaced = apply_teacher(problems, str(AUTHORS_FILE))
    assert replaced == 2 and [len(p.steps) for p in out] == [3, 3]
    assert all(p.thinking for p in out) and all(not p.thinking for p in problems)
    target = problem_target(out[0])
    assert target.startswith("Thinking…\nFirst, find") and target.endswith("Step 3: Marbles left: \\[ 21 - 5 = 16 \\]"
                                                                             "\nFinal Answer: 16")
