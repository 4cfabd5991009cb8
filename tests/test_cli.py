"""The click CLI: presets, config, score, and clean one-line errors."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from recipe.cli import main
from tests.helpers import cli, one_error_line


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_presets_lists_each_with_a_line():
    result = run("presets")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert {"smoke", "demo", "paper", "qwen2.5-3b-t4"} <= set(names)
    assert all(len(line.split()) > 2 for line in lines)


def test_config_prints_resolved_yaml_with_overrides():
    result = run("config", "--preset", "smoke", "--set", "stage2.temperature=0.5", "--set", "run.seed=3")
    assert result.exit_code == 0
    data = yaml.safe_load(result.output)
    assert data["stage2"]["temperature"] == 0.5 and data["run"]["seed"] == 3
    assert data["model"]["name_or_path"] == "builtin:tiny-qwen2"


def test_bad_override_is_one_clear_error():
    result = CliRunner().invoke(main, ["config", "--preset", "smoke", "--set", "stage1.mask_prb=0.5"])
    assert result.exit_code == 2
    assert "unknown key 'stage1.mask_prb'" in result.output and "mask_prob" in result.output
    assert "Traceback" not in result.output


def test_preset_typo_is_one_clear_error():
    result = CliRunner().invoke(main, ["run-all", "--preset", "smoek", "--output-dir", "x"])
    assert result.exit_code == 2
    assert "unknown preset 'smoek'" in result.output and "Traceback" not in result.output


def test_score_command(tmp_path):
    src = tmp_path / "gen.jsonl"
    rows = [
        {"completion": "Step 1: 6*12=72\nFinal Answer: 72", "answer": "Natalia sold 72.\n#### 72"},
        {"completion": "Step 1: guess\nFinal Answer: 5", "answer": "7"},
        {"completion": "I don't know", "answer": "3"},
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n{broken json\n" + json.dumps(rows[2]) + "\n")
    out = tmp_path / "scored.jsonl"
    result = run("score", "--input", str(src), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "line 3" in result.output  # the malformed line is reported by number
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in scored] == [True, False, False]
    assert "33.3" in result.output  # accuracy 1/3 of the readable rows


def test_strict_stops_at_the_first_bad_row_naming_it(tmp_path):
    data = tmp_path / "train.jsonl"
    good = {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = 5\n#### 5"}
    rows = [good] * 3 + [{"question": "Broken?", "answer": "no final answer line"}] + [good] * 300
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(main, ["stage1", "--preset", "smoke", "--strict", "--output-dir", str(tmp_path / "r"),
                                       "--set", f"data.source={data}", "--set", f"model.cache_dir={tmp_path}"])
    assert result.exit_code == 2, result.output
    assert "train-3" in result.output and "Traceback" not in result.output


def test_an_empty_output_dir_option_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in ("run-all", "stage1", "eval"):
        line = one_error_line(cli(command, "--preset", "smoke", "--output-dir", ""))
        assert "'--output-dir'" in line and "must not be empty" in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written to the default run.output_dir
