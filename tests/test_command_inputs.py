"""Hostile inputs to the commands beside a run (report, eval, teach, doctor, score), through the CLI: a damaged file
the command reads, a file where a folder is expected, a value that would crash deep in a library or run without
bound, an output that is not the tool's. Each answers in one ``error:`` line naming what is wrong (exit 2) and
writes nothing, or handles the input. Hand-made files only: nothing here trains or loads a model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from recipe.fsio import write_json, write_text
from tests.helpers import cli, one_error_line
from tests.test_report import put


# --- report: a damaged trainer log or invocation log leaves that part out, with a warning naming the file --------
@pytest.mark.parametrize("damage", [b"", b'[{"step": 1, "loss": 2', b"\xff\xfe not json"])
def test_report_with_a_damaged_trainer_log_still_writes_the_report(tmp_path, caplog, damage):
    run_dir = tmp_path / "run"
    put(run_dir, "base", 0.5, 100.0)
    put(run_dir, "stage1", 0.6, 90.0)
    (run_dir / "stage1").mkdir()
    (run_dir / "stage1" / "trainer_log.json").write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="recipe"):
        result = cli("report", "--run", str(run_dir), "--no-figures")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == str(run_dir / "report.md")  # --no-figures: no images
    assert "## Training curves" not in (run_dir / "report.md").read_text(encoding="utf-8")  # the one log is unreadable
    assert str(run_dir / "stage1" / "trainer_log.json") in caplog.text


def test_report_with_a_torn_invocation_log_keeps_its_good_lines(tmp_path):
    run_dir = tmp_path / "run"
    put(run_dir, "base", 0.5, 100.0)
    good = {"done_before": [], "wall_s": 120.0, "started": "t0", "ended": "t1", "parallel_entries": 1}
    write_text(run_dir / "run_all.jsonl", json.dumps(good) + '\n{"done_before": ["sta')  # killed mid-append
    result = cli("report", "--run", str(run_dir), "--no-figures")
    assert result.exit_code == 0, result.output
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert md.count("- `run-all` from an empty run directory: 2.0 min wall (t0 to t1)") == 1


# --- eval --run: a damaged config.yaml is refused instead of evaluating with the defaults ------------------------
@pytest.mark.parametrize(("text", "says"), [
    ("", "is empty"),
    ("model:\n  name_or_path: builtin:tiny-qwen2\nrun:\n  output_dir: x\neval: {limit: 4, batch_s", "is cut off"),
    ("model:\n  name_or_path: builtin:tiny-qwen2\n  backend: hf\n", "has no run section"),
])
def test_eval_run_refuses_a_damaged_config_yaml(tmp_path, text, says):
    run_dir = tmp_path / "run"
    write_text(run_dir / "config.yaml", text)
    one_error_line(cli("eval", "--run", str(run_dir)), f"{run_dir / 'config.yaml'} {says}")
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]  # nothing evaluated, nothing written


# --- eval: a file where a folder is expected, damaged adapter weights -------------------------------------------
def test_eval_output_dir_that_is_a_file_is_refused_before_evaluating(tmp_path):
    mine = tmp_path / "results"
    mine.write_text("my notes\n")
    one_error_line(cli("eval", "--preset", "smoke", "--limit", "2", "--output-dir", str(mine)),
                   f"--output-dir {mine} is a file", "nothing was evaluated")
    assert mine.read_text() == "my notes\n"


@pytest.mark.parametrize(("name", "payload", "says"), [
    ("adapter_model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"", "adapter_model.safetensors is "),
    ("adapter_config.json", b'{"peft_type": "LO', "adapter_config.json is not valid JSON"),
])
def test_eval_adapter_with_damaged_files_is_one_line(tmp_path, cache_dir, name, payload, says):
    adapter = tmp_path / "adapter"
    write_json(adapter / "adapter_config.json", {"peft_type": "LORA", "r": 4})
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(adapter / "adapter_model.safetensors"))
    (adapter / name).write_bytes(payload)
    result = cli("eval", "--preset", "smoke", "--set", f"model.cache_dir={cache_dir}", "--limit", "2",
                 "--adapter", str(adapter), "--output-dir", str(tmp_path / "out"))
    one_error_line(result, f"init_from '{adapter}'", says)
    assert not (tmp_path / "out").exists()


# --- teach: option values that hung, crashed or meant something else; an output that is not a teacher file -------
@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--limit", "0", "'--limit': 0 (must be >= 1)"),  # read as "every problem"
    ("--limit", "-3", "'--limit': -3 (must be >= 1)"),  # read as "all but the last 3"
    ("--concurrency", "0", "'--concurrency': 0 (must be >= 1)"),
    ("--retries", "-1", "'--retries': -1 (must be >= 0)"),
    ("--batch-size", "0", "'--batch-size': 0 (must be >= 1)"),  # a range() traceback
    ("--max-new-tokens", "-5", "'--max-new-tokens': -5 (must be >= 1)"),
    ("--timeout", "nan", "'--timeout': nan"),  # a socket ValueError traceback
    ("--timeout", "-1", "'--timeout': -1.0"),
    ("--temperature", "inf", "'--temperature': inf"),
])
def test_teach_refuses_a_bad_option_value_before_doing_anything(tmp_path, flag, value, says):
    out = tmp_path / "teacher.jsonl"
    result = cli("teach", "--preset", "smoke", "--source", "openai:http://127.0.0.1:9/v1", "--model", "m",
                 "--output", str(out), "--limit", "2", flag, value)
    one_error_line(result, f"bad value for {says}")
    assert list(tmp_path.iterdir()) == []


def test_teach_never_replaces_a_file_it_did_not_write(tmp_path):
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes, not a teacher file\n")
    one_error_line(cli("teach", "--preset", "smoke", "--limit", "3", "--output", str(notes)),
                   f"--output {notes} holds a file teach did not write", "nothing was written")
    assert notes.read_text() == "my notes, not a teacher file\n"

    teacher = tmp_path / "teacher.jsonl"
    assert cli("teach", "--preset", "smoke", "--limit", "3", "--output", str(teacher)).exit_code == 0
    again = cli("teach", "--preset", "smoke", "--limit", "2", "--output", str(teacher))  # its own file: rewritten
    assert again.exit_code == 0, again.output
    assert len(teacher.read_text().splitlines()) == 2
    before = teacher.read_bytes()
    one_error_line(cli("teach", "--preset", "smoke", "--source", f"file:{teacher}", "--output", str(teacher)),
                   f"--output {teacher} is the --source file")
    assert teacher.read_bytes() == before


# --- doctor and score: a value or an input that would never finish ----------------------------------------------
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_doctor_refuses_a_bad_import_timeout(value):
    one_error_line(cli("doctor", "--preset", "smoke", "--import-timeout", value),
                   "bad value for '--import-timeout'")


@pytest.mark.skipif(not Path("/dev/zero").is_char_device(), reason="needs /dev/zero")
def test_score_refuses_a_device_instead_of_reading_it_forever():
    one_error_line(cli("score", "--input", "/dev/zero"), "/dev/zero is a device")
