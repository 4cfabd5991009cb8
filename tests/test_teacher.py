"""Teacher rationales from a file replace the gold steps of the problems they cover; the gold answer stays."""

from __future__ import annotations

import json

import pytest

from recipe import config as C
from recipe.data import DataError, Problem, load_gsm8k
from recipe.stages.common import train_problems
from recipe.teacher import apply_teacher, load_teacher, rationale_steps


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
        load_teacher(str(path))


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
