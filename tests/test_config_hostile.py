"""Hostile but realistic config values, through the loader and the CLI: each is refused before anything loads, with
one line naming the key, the value and what is allowed: by the config itself, or (the values TRL checks) by TRL
before the run directory is made; the GRPO names the config reads early match the installed TRL's; the
default config and every preset validate; a ``--set`` section merges over the preset; a duplicate YAML key is named
with both its lines; fuzzed config files and overrides raise nothing but :class:`ConfigError`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from recipe.cli import main
from recipe.config import core as C
from recipe.config import schema
from recipe.config.core import ConfigError, parse_override, resolve
from recipe.config.trl_source import fields_of
from recipe.train.grpo import grpo_args
from recipe.train.sft import sft_args
from tests.fuzz_strategies import FUZZ, JSON_VALUE, json_line, temp_file
from tests.helpers import cli, one_error_line

# --------------------------------------------------------------------------------------------------------------------
# Values refused naming the key; presets and good edge values pass
# --------------------------------------------------------------------------------------------------------------------


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
    ("eval.limit=0", "eval.limit", "-1 or a positive count"),
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
    ("stage2.log_level=bogus", "stage2.log_level", "passive"),  # transformers reads it only when a trainer is built
    ("stage1.truncation_mode=middle", "stage1.truncation_mode", "keep_end"),
    ("stage1.adam_beta1=-0.5", "stage1.adam_beta1", "optimizer or learning-rate schedule: Invalid beta"),
    ("stage2.lr_scheduler_kwargs={a: 1}", "stage2.lr_scheduler_kwargs", "unexpected keyword argument 'a'"),
    ("stage1.optim_args=bogus", "stage1.optim_args", "optimizer"),
    ("stage1.label_smoothing_factor=0.1", "stage1.label_smoothing_factor", "stage1.loss_type=nll"),
    ("stage2.top_k=-1", "stage2.top_k", "strictly positive"),  # transformers refused it at the first generation
    ("stage3.min_p=2.0", "stage3.min_p", "[0, 1]"),
    ("stage2.repetition_penalty=0", "stage2.repetition_penalty", "strictly positive"),
]


@pytest.mark.parametrize("override, key, allowed", TRL_CHECKED, ids=[b[0] for b in TRL_CHECKED])
def test_a_value_trl_refuses_is_one_line_naming_the_key_before_the_run_directory(override, key, allowed, tmp_path):
    C.resolve(preset="smoke", overrides=[override])  # the config layer passes it on as it is
    out = tmp_path / "run"
    for command in (["run-all"], ["stage1"], ["baseline", "sft"]):
        result = CliRunner().invoke(main, [*command, "--preset", "smoke", "--output-dir", str(out), "--set", override])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: bad value for '{key}'") and allowed in lines[0], \
            result.output
        assert not out.exists()


WRONG = ["-1", "0", "bogus", "1000000000", "true", "[]", "{}", "-0.5", "[bogus]", "{a: 1}"]


@pytest.mark.slow
@pytest.mark.parametrize("section, trl_class", [("stage1", "SFTConfig"), ("stage2", "GRPOConfig")])
def test_every_trl_key_given_a_wrong_value_is_refused_in_one_line_or_built(section, trl_class, tmp_path):
    """Each field of the section's TRL class, set to each of a few wrong values, passes the config and TRL's own
    checks or is refused by them in one ConfigError line; nothing else escapes (``parallelism_config`` once raised
    an AttributeError in GRPOConfig, ``deepspeed`` without the package a PackageNotFoundError)."""
    def build(cfg):
        return sft_args(cfg, str(tmp_path), section, True) if section == "stage1" else \
            grpo_args(cfg, section, str(tmp_path), True)

    outcomes = {"config": 0, "trl": 0, "built": 0}
    for key in fields_of(trl_class):
        for value in [] if key in schema.RECIPE_SETS else WRONG:
            try:
                cfg = C.resolve(preset="smoke", overrides=[f"{section}.{key}={value}"])
            except ConfigError as exc:
                outcomes["config"] += 1
                assert "\n" not in str(exc), (key, value)
                continue
            try:
                build(cfg)
                outcomes["built"] += 1
            except ConfigError as exc:
                outcomes["trl"] += 1
                assert "\n" not in str(exc) and f"'{section}" in str(exc), (key, value, str(exc))
    assert all(outcomes.values()), outcomes  # each way is taken: the loop reached TRL


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


# --------------------------------------------------------------------------------------------------------------------
# Through the CLI: the defaults, every preset, values once accepted silently, --set sections, YAML duplicates
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
    ("data.source=synthetic:1000001", "data.source", "at most 1,000,000"),  # drawn before anything trains
    ("stage2.parallelism_config={a: 1}", "stage2.parallelism_config", "NoneType"),  # a class YAML cannot spell
    ("stage1.eval_strategy=steps", "stage1.eval_strategy", "use 'eval'"),  # TRL's needs an eval set; eval.* is ours
    ("stage2.eval_on_start=true", "stage2.eval_on_start", "use 'eval'"),
    ("stage1.dataloader_persistent_workers=true", "stage1.dataloader_persistent_workers", "the recipe sets it"),
    ("stage1.assistant_only_loss=true", "stage1.assistant_only_loss", "the recipe sets it"),
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


def test_good_values_still_pass():
    C.resolve(preset="smoke", overrides=["run.report_to=[tensorboard, wandb]", "run.report_to=[all]",
                                         "data.source=synthetic:20:2:verbose", "data.eval_source=",
                                         "stage1.max_steps=9223372036854775807"])


def test_the_report_to_list_is_the_installed_transformers_list():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert sorted(schema.REPORT_INTEGRATIONS) == sorted(INTEGRATION_TO_CALLBACK)


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


# --------------------------------------------------------------------------------------------------------------------
# Fuzzed config files and overrides
# --------------------------------------------------------------------------------------------------------------------


YAML_TEXT = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(["run:", " seed:", " 7", "&a", "*a", "[", "]", "{", "}", ":", "-", "\n", "  ", "x",
                              "stage2:", " temperature: ", "nan", ".inf", "1e999", "!!python/object", "<<: *a",
                              "!!int ", "!!timestamp 2020-13-01", "1" * 4400,
                              "model:", "\t", "'", '"', "#", "\xff", "\ud800"]), max_size=40)
    .map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass")),
    JSON_VALUE.map(json_line),
)


@FUZZ
@given(YAML_TEXT)
def test_fuzz_config_file_only_raises_config_error(payload: bytes) -> None:
    with temp_file("cfg.yaml", payload) as path:
        _resolve_file(path)


def _resolve_file(path: Path) -> None:
    try:
        resolve(preset="smoke", config_file=path)
    except ConfigError as exc:
        assert "\n" not in str(exc).strip() or "did you mean" in str(exc)


OVERRIDE_KEY = st.one_of(st.text(max_size=20), st.sampled_from(["run", "run.seed", "stage2", "stage2.rewards",
                                                                 "model.lora_target_modules", "eval.limit", "data"]))


@FUZZ
@given(OVERRIDE_KEY, st.one_of(st.text(max_size=60), YAML_TEXT.map(lambda b: b.decode("utf-8", "replace"))))
def test_fuzz_override_only_raises_config_error(key: str, raw: str) -> None:
    try:
        parse_override(f"{key}={raw}")
        resolve(preset="smoke", overrides=[f"{key}={raw}"])
    except ConfigError:
        pass
