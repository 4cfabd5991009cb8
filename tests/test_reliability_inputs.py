"""Every input of issue 24 gets a clear answer through the CLI: the default config and every preset validate; values
that used to be accepted silently are refused naming the key; a ``--set`` section merges over the preset; YAML
duplicates, ``run.device=cuda`` without CUDA, a byte order mark, and the broken inputs that used to end in a traceback
(rows all dropped for length, unknown LoRA targets, a deleted adapter file, a damaged failures.jsonl, a malformed or
truncated evaluation) each get one ``error:`` line or are handled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from recipe import fsio
from recipe.cli import main
from recipe.config import core as C
from recipe.config import limits as config_limits
from recipe.errors import ConfigError
from recipe.fsio import read_json, read_jsonl
from recipe.models.generation import to_device
from recipe.run import orchestrator as run
from recipe.store import rundir
from recipe.train import stage3
from recipe.train.sft import sft_args

BOM = b"\xef\xbb\xbf"


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.endswith("\n"), repr(result.output)
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: "), result.output
    return line


# --------------------------------------------------------------------------------------------------------------------
# The defaults, the presets and config values
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", [None, *C.preset_names()])
def test_the_default_config_and_every_preset_validate_through_the_cli(preset, tmp_path):
    result = cli("config", *(["--preset", preset] if preset else []))
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    for name in ("stage2", "stage3"):  # the rule the defaults broke: whole groups of completions per step
        st = shown[name]
        assert (st["per_device_train_batch_size"] * st["gradient_accumulation_steps"]) % st["num_generations"] == 0
    # what `config` prints is itself a valid config that resolves to the same thing
    (tmp_path / "shown.yaml").write_text(result.output, encoding="utf-8")
    again = cli("config", "--config", str(tmp_path / "shown.yaml"))
    assert again.exit_code == 0 and again.output == result.output, again.output


@pytest.mark.parametrize("override, key, allowed", [
    ("stage2.rewards=[{weight: 1.0}]", "stage2.rewards[0].name", "needs a name"),
    ("stage3.rewards=[{params: {}}]", "stage3.rewards[0].name", "gated_brevity"),
    ("stage1.max_steps=99999999999999999999", "stage1.max_steps", "64 bits"),
    ("stage2.save_steps=18446744073709551616", "stage2.save_steps", "64 bits"),
    ("data.stage3_rows=[0, 99999999999999999999]", "data.stage3_rows[1]", "64 bits"),
    ("model.name_or_path=", "model.name_or_path", "must not be empty"),
    ("data.source=", "data.source", "must not be empty"),
    ("data.answer_label=", "data.answer_label", "must not be empty"),
    ("data.mask_token=", "data.mask_token", "must not be empty"),
    ("run.output_dir=", "run.output_dir", "must not be empty"),
    ("data.source=synthetic:0", "data.source", "N rows > 0"),
    ("data.source=synthetic:abc", "data.source", "synthetic:N"),
    ("data.eval_source=synthetic:5:1", "data.eval_source", "S >= 2"),
    ("run.report_to=[bogus_tracker]", "run.report_to", "tensorboard, trackio, wandb"),
    ("run.report_to=[none, wandb]", "run.report_to", "alone"),
    ("run.report_to=[]", "run.report_to", "tensorboard"),
])
def test_a_value_once_accepted_silently_is_refused_naming_the_key(override, key, allowed, tmp_path, monkeypatch):
    line = one_error_line(cli("config", "--preset", "smoke", "--set", override))
    assert f"'{key}'" in line and allowed in line, line
    monkeypatch.chdir(tmp_path)  # and no command that trains gets as far as creating a run directory
    one_error_line(cli("run-all", "--preset", "smoke", "--set", f"run.output_dir={tmp_path / 'run'}", "--set",
                       override))
    assert list(tmp_path.iterdir()) == []


def test_an_empty_output_dir_option_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in ("run-all", "stage1", "eval"):
        line = one_error_line(cli(command, "--preset", "smoke", "--output-dir", ""))
        assert "'--output-dir'" in line and "must not be empty" in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written to the default run.output_dir


def test_good_values_still_pass():
    C.resolve(preset="smoke", overrides=["run.report_to=[tensorboard, wandb]", "run.report_to=[all]",
                                         "data.source=synthetic:20:2:verbose", "data.eval_source=",
                                         "stage1.max_steps=9223372036854775807"])


def test_the_report_to_list_is_the_installed_transformers_list():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert sorted(config_limits.REPORT_INTEGRATIONS) == sorted(INTEGRATION_TO_CALLBACK)


def test_a_set_section_merges_over_the_preset_like_a_config_file(tmp_path):
    by_set = yaml.safe_load(cli("config", "--preset", "smoke", "--set", "stage1={max_steps: 2}").output)
    (tmp_path / "over.yaml").write_text("stage1:\n  max_steps: 2\n", encoding="utf-8")
    by_file = yaml.safe_load(cli("config", "--preset", "smoke", "--config", str(tmp_path / "over.yaml")).output)
    preset = yaml.safe_load(cli("config", "--preset", "smoke").output)
    assert by_set == by_file
    assert by_set["stage1"] == {**preset["stage1"], "max_steps": 2}
    assert by_set["stage1"]["learning_rate"] == 1e-3  # the preset's, not the built-in default 1e-5


@pytest.mark.parametrize("text, key, lines", [
    ("stage1:\n  max_steps: 2\n  learning_rate: 1.0e-3\n  max_steps: 3\n", "stage1.max_steps", (2, 4)),
    ("stage1:\n  max_steps: 2\nrun:\n  seed: 1\nstage1:\n  optim: sgd\n", "stage1", (1, 5)),
    ("stage2:\n  rewards:\n    - name: correctness\n      weight: 1\n      name: format\n", "stage2.rewards[0].name",
     (3, 5)),
])
def test_a_duplicate_yaml_key_or_section_is_refused_naming_it_and_both_lines(text, key, lines, tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    line = one_error_line(cli("config", "--preset", "smoke", "--config", str(path)))
    assert f"'{key}' twice (lines {lines[0]} and {lines[1]})" in line and "dup.yaml" in line, line


def test_run_device_cuda_without_cuda_is_refused_naming_what_was_found(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    for args in (["stage1", "--output-dir", str(out)], ["eval", "--output-dir", str(tmp_path / "ev")]):
        line = one_error_line(cli(*args, "--preset", "smoke", "--set", "run.device=cuda"))
        assert "run.device=cuda" in line and f"torch {torch.__version__}" in line and "run.device=cpu" in line, line
    assert not out.exists() and not (tmp_path / "ev").exists()
    # and where training and generation pick their device (a child process, the Python API): refused too
    cfg = C.resolve(preset="smoke", overrides=["run.device=cuda"])
    for call in (lambda: sft_args(cfg, str(tmp_path / "t")), lambda: to_device(torch.nn.Linear(1, 1), "cuda")):
        with pytest.raises(ConfigError, match=r"run.device=cuda but torch .* run.device=cpu"):
            call()


# --------------------------------------------------------------------------------------------------------------------
# Files: a byte order mark, a broken run directory
# --------------------------------------------------------------------------------------------------------------------


def test_a_byte_order_mark_does_not_cost_the_first_row(tmp_path, cache_dir):
    rows = [{"completion": "Step 1: 2 + 2 = 4\nFinal Answer: 4", "answer": "#### 4"},
            {"completion": "Final Answer: 7", "answer": "#### 8"}]
    gens = tmp_path / "gens.jsonl"
    gens.write_bytes(BOM + b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    result = cli("score", "--input", str(gens))
    assert result.exit_code == 0, result.output
    assert "rows: 2 (scored 2, skipped 0)" in result.output and "50.00% (1/2)" in result.output, result.output
    data = tmp_path / "test.jsonl"
    problems = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(3)]
    data.write_bytes(BOM + b"".join(json.dumps(p).encode() + b"\n" for p in problems))
    out = tmp_path / "eval"
    result = cli("eval", "--preset", "smoke", "--set", f"model.cache_dir={cache_dir}", "--set",
                 f"data.eval_source={data}", "--set", "eval.max_new_tokens=4", "--limit", "-1", "--output-dir",
                 str(out))
    assert result.exit_code == 0, result.output
    assert [row["question"] for row in read_jsonl(out / rundir.GENERATIONS)] == [p["question"] for p in problems]


def _base_eval_run(run_dir: Path, cache_dir: Path) -> None:
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                               "eval.limit=3", "eval.max_new_tokens=4"])
    fsio.write_text(run_dir / rundir.CONFIG_FILE, C.dump_yaml(cfg))


def test_a_truncated_or_malformed_evaluation_is_redone(tmp_path, cache_dir, caplog):
    run_dir = tmp_path / "run"
    _base_eval_run(run_dir, cache_dir)
    folder = rundir.eval_dir(run_dir, "base")
    assert cli("eval", "--run", str(run_dir), "--stage", "base").exit_code == 0
    good_rows = read_jsonl(folder / rundir.GENERATIONS)
    assert len(good_rows) == 3
    mtime = (folder / rundir.RESULTS).stat().st_mtime_ns
    assert cli("eval", "--run", str(run_dir), "--stage", "base").exit_code == 0  # intact: kept
    assert (folder / rundir.RESULTS).stat().st_mtime_ns == mtime
    damages = {
        "truncated at a line end": lambda: (folder / rundir.GENERATIONS).write_text(
            json.dumps(good_rows[0]) + "\n", encoding="utf-8"),
        "torn mid-line": lambda: (folder / rundir.GENERATIONS).write_bytes(
            (folder / rundir.GENERATIONS).read_bytes()[:-40]),
        "results.json a list": lambda: (folder / rundir.RESULTS).write_text("[1, 2]", encoding="utf-8"),
        "results.json torn": lambda: (folder / rundir.RESULTS).write_text('{"metrics": {"n', encoding="utf-8"),
    }
    for what, damage in damages.items():
        damage()
        caplog.clear()
        result = cli("eval", "--run", str(run_dir), "--stage", "base")
        assert result.exit_code == 0 and "Traceback" not in result.output, (what, result.output)
        assert "is broken" in caplog.text and "evaluating it again" in caplog.text, what
        assert read_jsonl(folder / rundir.GENERATIONS) == good_rows, what
        assert isinstance(read_json(folder / rundir.RESULTS), dict), what


def _fake_trainers(monkeypatch, trained: list[str]) -> None:
    """Each entry's trainer writes a small adapter folder (config + weights), as peft saves one."""
    def make(name):
        def train(cfg, entry_dir, init_from):
            trained.append(name)
            model = entry_dir / rundir.MODEL_DIR
            fsio.write_text(model / "adapter_config.json", json.dumps({"r": 8}))
            fsio.write_bytes(model / "adapter_model.safetensors", _safetensors())
            return {"output": str(model), "metrics": {}}
        return train

    monkeypatch.setattr(run, "TRAINERS", {name: make(name) for name in run.ENTRIES})


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\0" * 8


def test_a_deleted_adapter_file_retrains_the_stage_and_is_never_a_hub_id(tmp_path, monkeypatch, caplog, cache_dir):
    trained: list[str] = []
    _fake_trainers(monkeypatch, trained)
    run_dir = tmp_path / "run"
    args = ["run-all", "--preset", "smoke", "--output-dir", str(run_dir), "--set", "eval.enabled=false"]
    assert cli(*args).exit_code == 0
    (run_dir / "stage1" / "model" / "adapter_model.safetensors").unlink()
    trained.clear()
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert trained == ["stage1", "stage2", "stage3"]  # the broken stage and what starts from it
    assert "missing adapter_model.safetensors" in caplog.text
    # handed to a model load directly (eval --adapter, stage --from), the folder is named, never looked up online
    (run_dir / "stage2" / "model" / "adapter_model.safetensors").unlink()
    line = one_error_line(cli("eval", "--preset", "smoke", "--set", f"model.cache_dir={cache_dir}", "--adapter",
                              str(run_dir / "stage2" / "model"), "--output-dir", str(tmp_path / "ev")))
    assert "stage2/model" in line and "missing adapter_model.safetensors" in line, line


def test_a_damaged_failures_file_is_mined_again(tmp_path, monkeypatch, caplog):
    mined: list[int] = []

    def fake_mining(cfg, problems, init_from, model, tokenizer):
        mined.append(len(problems))
        return []  # no persistent failures: the stage hands its starting weights on, nothing to train

    monkeypatch.setattr(stage3, "mine_failures", fake_mining)
    args = ["stage3", "--preset", "smoke", "--set", "eval.enabled=false"]
    for content, remined in ((b"", False), (b'{"id": "train-1", "question": "Q?"}\n', True),
                             (b"\x00garbage\n", True), (b"[1, 2]\n", True)):
        run_dir = tmp_path / f"run{len(mined)}-{len(content)}"
        (run_dir / "stage3").mkdir(parents=True)
        (run_dir / "stage3" / stage3.FAILURES).write_bytes(content)  # left by a stage 3 interrupted after mining
        caplog.clear()
        before = len(mined)
        result = cli(*args, "--output-dir", str(run_dir))
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        assert (len(mined) > before) == remined, content
        if remined:
            assert "line 1" in caplog.text and "mining the failures again" in caplog.text, caplog.text
        assert rundir.is_done(rundir.load_manifest(run_dir), "stage3")


# --------------------------------------------------------------------------------------------------------------------
# Training inputs that used to end in a traceback (tiny model)
# --------------------------------------------------------------------------------------------------------------------


def test_unknown_lora_targets_are_one_line_listing_the_models_modules(tmp_path, cache_dir):
    line = one_error_line(cli("stage1", "--preset", "smoke", "--output-dir", str(tmp_path / "run"), "--set",
                              f"model.cache_dir={cache_dir}", "--set",
                              "model.lora_target_modules=[q_proj, nonexistent_proj]"))
    assert "model.lora_target_modules" in line and "'nonexistent_proj'" in line, line
    assert "q_proj" in line.split("named:")[1] and "down_proj" in line.split("named:")[1], line
    assert not (tmp_path / "run" / "stage1" / "trainer").exists()  # stopped before training


def test_rows_all_dropped_for_length_are_one_line_with_count_shortest_and_keys(tmp_path, cache_dir):
    line = one_error_line(cli("stage1", "--preset", "smoke", "--output-dir", str(tmp_path / "run"), "--set",
                              f"model.cache_dir={cache_dir}", "--set", "stage1.max_length=1", "--set",
                              "model.max_seq_length=16"))
    assert "64 of 64 training rows were dropped for length" in line, line
    assert "the shortest prompt is" in line and "stage1.max_length (now 1)" in line, line
    assert "model.max_seq_length (now 16)" in line, line
