"""Every config value a hostile but realistic user tried is refused before anything loads, with one line naming the
key, the value and what is allowed: by the config itself, or (the values TRL checks) by TRL before the run directory
is made; the GRPO names the config reads early match the installed TRL's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe.cli import main
from recipe.config import core as C
from recipe.config import schema
from recipe.data.gsm8k import DataError
from recipe.run import orchestrator as run

# (override, key the message must name, text of what is allowed)
BAD_VALUES = [
    ("stage2.loss_type=bogus", "stage2.loss_type", "dapo"),
    ("stage2.scale_rewards=bogus", "stage2.scale_rewards", "group"),
    ("stage1.logging_steps=0", "stage1.logging_steps", ">= 1"),
    ("stage1.max_length=0", "stage1.max_length", ">= 1"),
    ("stage2.gradient_accumulation_steps=0", "stage2.gradient_accumulation_steps", ">= 1"),
    ("stage3.mining_batch_size=0", "stage3.mining_batch_size", ">= 1"),
    ("stage3.mining_max_new_tokens=0", "stage3.mining_max_new_tokens", ">= 1"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens", ">= 1"),
    ("eval.max_new_tokens=-1", "eval.max_new_tokens", ">= 1"),
    ("run.seed=-1", "run.seed", "[0, 4294967295]"),
    ("run.seed=99999999999999999999", "run.seed", "[0, 4294967295]"),
    ("model.lora_dropout=2", "model.lora_dropout", "[0, 1)"),
    ("model.lora_target_modules=[]", "model.lora_target_modules", "at least one"),
    ("stage2.rewards=[{name: gated_brevity, params: {wrong_reward: abc}}]",
     "stage2.rewards[0].params.wrong_reward", "float"),
    ("stage3.rewards=[{name: correctness, params: {correct: true}}]", "stage3.rewards[0].params.correct", "float"),
    ("stage3.rewards=[{name: cosine_length, params: {max_length: 2.5}}]",
     "stage3.rewards[0].params.max_length", "int"),
    ("stage2.rewards=[{name: correctness, params: {wrongg: 1}}]", "stage2.rewards[0].params.wrongg", "wrong"),
    ("stage1.num_train_epochs=0", "stage1.num_train_epochs", "> 0"),
    ("stage2.num_iterations=0", "stage2.num_iterations", ">= 1"),
    ("model.lora_alpha=0", "model.lora_alpha", "> 0"),
    ("stage1.max_steps=-5", "stage1.max_steps", "-1"),
    ("stage1.max_steps=0", "stage1.max_steps", "-1"),
    ("stage2.top_p=0", "stage2.top_p", "(0, 1]"),
    ("stage2.top_p=1.5", "stage2.top_p", "(0, 1]"),
    ("stage3.beta=-0.1", "stage3.beta", ">= 0"),
    ("stage2.epsilon=-1", "stage2.epsilon", ">= 0"),
    ("stage1.max_grad_norm=-1", "stage1.max_grad_norm", ">= 0"),
    ("eval.limit=0", "eval.limit", "-1 for the whole split"),
    ("eval.split=tset", "eval.split", "train, test"),
    ("vllm.server_timeout=-5", "vllm.server_timeout", "> 0"),
    ("vllm.server_timeout=0", "vllm.server_timeout", "> 0"),
]


@pytest.mark.parametrize("override, key, allowed", BAD_VALUES, ids=[b[0].split("=")[0] + "=" + b[0].split("=")[1][:20]
                                                                     for b in BAD_VALUES])
def test_bad_value_is_one_line_naming_key_value_and_allowed(override, key, allowed, tmp_path):
    with pytest.raises(C.ConfigError) as info:
        C.resolve(preset="smoke", overrides=[override])
    message = str(info.value)
    assert f"'{key}" in message and allowed in message, message
    assert "\n" not in message and len(message) < 1200
    # and through the CLI: one "error:" line, exit 2, no run directory created (nothing loaded)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run-all", "--preset", "smoke", "--output-dir", str(out), "--set", override])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], result.output
    assert not out.exists()


# values TRL's own config classes check (transformers' enums, warmup_steps): refused by TRL when a training command
# starts, before its run directory is made; `cotrecipe config` does not import TRL
TRL_CHECKED = [
    ("stage1.lr_scheduler_type=bogus", "stage1.lr_scheduler_type", "cosine"),
    ("stage1.optim=bogus", "stage1.optim", "adamw_torch"),
    ("stage3.optim=bogus", "stage3.optim", "adamw_torch"),
    ("stage1.warmup_steps=-1", "stage1.warmup_steps", "warmup_steps must be"),
    ("stage2.generation_batch_size=3", "stage2.generation_batch_size", "divisible"),
]


@pytest.mark.parametrize("override, key, allowed", TRL_CHECKED, ids=[b[0] for b in TRL_CHECKED])
def test_a_value_trl_refuses_is_one_line_naming_the_key(override, key, allowed, tmp_path):
    C.resolve(preset="smoke", overrides=[override])  # the config layer passes it on as it is
    out = tmp_path / "run"
    for command in (["run-all"], ["stage1"], ["baseline", "sft"]):
        result = CliRunner().invoke(main, [*command, "--preset", "smoke", "--output-dir", str(out), "--set", override])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: bad value for '{key}'") and allowed in lines[0], \
            result.output


def test_every_preset_still_validates():
    for name in C.preset_names():
        C.resolve(preset=name)


def test_defaults_and_good_edge_values_pass():
    C.resolve(preset="smoke", overrides=["stage1.warmup_steps=0.1", "run.seed=0", "run.seed=4294967295",
                                         "stage2.top_p=1", "model.lora_dropout=0.5", "eval.limit=-1", "eval.limit=3",
                                         "stage3.beta=0", "stage1.max_steps=-1",
                                         "stage2.rewards=[{name: gated_brevity, params: {wrong_reward: -3}}]"])


def test_the_grpo_names_match_the_installed_trl():
    """TRL checks loss_type and scale_rewards only once GRPO trains: the schema's lists are TRL's help text's."""
    from trl import GRPOConfig

    fields = GRPOConfig.__dataclass_fields__
    loss_help = fields["loss_type"].metadata["help"]
    listed = re.search(r"Supported values are (.*?)\. ", loss_help).group(1)
    assert sorted(schema.GRPO_LOSS_TYPES) == sorted(re.findall(r"'(\w+)'", listed))
    scale_help = fields["scale_rewards"].metadata["help"]
    assert all(f"'{v}'" in scale_help or f"{v}'" in scale_help for v in schema.GRPO_SCALE_REWARDS)


def test_eval_split_of_a_folder_is_checked_by_the_data_check(tmp_path):
    """A folder source may hold other splits: config accepts the name, the pre-load data check refuses a missing
    file naming it."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"question": "Q?", "answer": "a = 1.\\n#### 1"}\n', encoding="utf-8")
    cfg = C.resolve(preset="smoke", overrides=[f"data.source={folder}", "data.eval_source=", "eval.split=tset"])
    with pytest.raises(DataError, match="tset"):
        run.check_data(cfg, [], eval_split=True)


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the data check")


@pytest.mark.parametrize("override, message", [
    ("data.stage2_rows=[300, 100000]", r"data.stage2_rows \[300, 100000\) does not fit"),
    ("data.source={empty}", "empty"),
])
def test_data_is_checked_before_any_model_loads(override, message, tmp_path, monkeypatch):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    monkeypatch.setattr("recipe.models.model.load", _no_model)
    cfg = C.resolve(preset="smoke", overrides=[f"run.output_dir={tmp_path / 'run'}", override.format(empty=empty)])
    with pytest.raises(DataError, match=message):
        run.run_all(cfg)
    result = CliRunner().invoke(main, ["stage2", "--preset", "smoke", "--output-dir", str(tmp_path / "r2"),
                                       "--set", override.format(empty=empty)])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output and not Path(tmp_path / "r2" / "stage2" / "model").exists()
