"""Trainer sections pass TRL's own keys through: checked against the pinned TRL's SFTConfig /
GRPOConfig fields, refused where the recipe decides them, and the config as plain data unchanged for every preset
(config.yaml and the entries' fingerprints of older run directories still match)."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import yaml
from trl import GRPOConfig, SFTConfig

from recipe.config import core as C
from recipe.config import trl_source
from recipe.config.schema import RECIPE_SETS, TrainConfig
from recipe.store.fingerprint import migrate_recorded
from recipe.train.grpo import grpo_args
from recipe.train.sft import sft_args

ROOT = Path(__file__).resolve().parents[1]
# to_dict(resolve(...)) as the code at commit 3d77827 (before the pass-through) wrote it, per preset ("" = defaults)
BEFORE = json.loads((ROOT / "tests" / "data" / "config_dicts_3d77827.json").read_text())
BEFORE_OVERRIDES = ["stage2.learning_rate=1e-4", "stage1.save_steps=7", "warmup.enabled=true", "data.warmup_rows=[0,8]",
                    "warmup.max_steps=3", "stage3.epsilon_high=0.28"]


@pytest.mark.parametrize("trl_class", [SFTConfig, GRPOConfig])
def test_the_fields_read_from_source_are_the_installed_trls(trl_class):
    """The source reader (no import) finds the fields the imported dataclass has, in its order, with their types."""
    read = trl_source.fields_of(trl_class.__name__)
    assert list(read) == [f.name for f in dataclasses.fields(trl_class) if f.init]
    hints = typing.get_type_hints(trl_class)
    plain = {name: tp for name, tp in hints.items() if tp in (bool, int, float, str)}
    assert plain and all(read[name] == (tp,) for name, tp in plain.items() if name in read)
    assert (read["save_steps"], read["lr_scheduler_kwargs"], read["report_to"]) == \
        ((float,), (dict[str, typing.Any], str, type(None)), (type(None), str, list[str]))
    # a class YAML cannot write is left out of a union: ParallelismConfig | None takes null alone
    assert read["lr_scheduler_type"] == (str,) and read["parallelism_config"] == (type(None),)

@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(C.Config) if isinstance(getattr(C.Config(), f.name),
                                                                                          TrainConfig)])
def test_a_sections_fields_are_trls_recorded_keys_or_the_recipes_own(name):
    """A field named like a TRL field goes to TRL as it is (recorded); the recipe's own keys (max_length aside, which
    the recipe caps and sets itself) never shadow one, and no recorded key is one the recipe decides."""
    section = getattr(C.Config(), name)
    fields = trl_source.fields_of(section.TRL_CLASS)
    recorded = set(section.trl_keys())
    own = {f.name for f in dataclasses.fields(section)} - recorded - {"trl_args"}
    assert {"learning_rate", "max_steps", "save_steps"} <= recorded <= set(fields)
    assert not recorded & set(RECIPE_SETS) and own & set(fields) <= {"max_length"}


def _vllm_keys_moved(old: dict) -> dict:
    """The old code's dict with the vLLM keys in today's ``vllm`` section, right after ``model``;
    every other key, value and order as the old code wrote them. ``vllm.enabled`` is the switch of
    the config's backend (the two were equal wherever the backend was not unsloth or hf)."""
    model, run = dict(old["model"]), dict(old["run"])
    fast, hf = model.pop("fast_inference"), model.pop("hf_use_vllm")
    vllm = {"enabled": fast if model["backend"] == "unsloth" else hf,
            "gpu_memory_utilization": model.pop("gpu_memory_utilization"),
            **{key: run.pop(f"vllm_{key}") for key in ("mode", "server_base_url", "server_host", "server_port",
                                                      "server_timeout")}}
    out = {}
    for key, value in old.items():
        out[key] = {"model": model, "run": run}.get(key, value)
        if key == "model":
            out["vllm"] = vllm
    return out


def _correction_key_added(old: dict) -> dict:
    """The old code's dict with the GRPO sections' ``vllm_importance_sampling_correction`` (added since, default True:
    what TRL alone, the only backend those runs trained on, used) right after ``mask_truncated_completions``."""
    out = {}
    for key, value in old.items():
        if isinstance(value, dict) and "mask_truncated_completions" in value:
            value = {k: v for item in value.items() for k, v in
                     ([item, ("vllm_importance_sampling_correction", True)]
                      if item[0] == "mask_truncated_completions" else [item])}
        out[key] = value
    return out


def _concise_section_added(old: dict) -> dict:
    """The old code's dict with the ``baseline_concise`` section (added since, its defaults) after ``baseline_sft``."""
    out = {}
    for key, value in old.items():
        if key != "baseline_concise":  # a preset's change to it (below) keeps its place after baseline_sft
            out[key] = value
        if key == "baseline_sft":
            out["baseline_concise"] = {"length_weight": 1.0, **old.get("baseline_concise", {})}
    return out


def _preset_changes(old: dict, preset: str) -> dict:
    """The presets' own changes since: ``demo`` starts from a cached warm student and trains a few steps per stage,
    ``proof`` is the demo with the budget sweep's allocation and every baseline on 250 problems; ``smoke`` writes
    its report without figures."""
    if preset == "proof":  # re-chosen from the budget sweep: the demo's settings, stage 2 longer, every baseline
        return _with(_preset_changes(BEFORE["demo"], "demo"), PROOF_CHANGES, C.resolve(preset="proof"))
    out = dict(old)
    if preset.startswith("smoke"):
        out["eval"] = {**old["eval"], "figures": False}
    if preset == "demo":  # a cached warm student on the mixed teacher, fewer steps, 50 problems, two entries at once
        out = _with(out, DEMO_CHANGES, C.resolve(preset="demo"))
    return out


def _with(old: dict, changes: dict, prose: C.Config) -> dict:
    """``old`` with ``changes`` ("section.key": value) and ``prose``'s description and report note (what a preset
    says it shows: prose, not plain data)."""
    out = dict(old)
    for key, value in changes.items():
        section, name = key.split(".")
        out[section] = {**out.get(section, {}), name: value}
    out["description"], out["run"] = prose.description, {**out["run"], "report_note": prose.run.report_note}
    return out


DEMO_CHANGES = {
    "data.source": "synthetic:2000:2:mixed", "data.warmup_rows": [1000, 1400],
    "warmup.enabled": True, "warmup.learning_rate": 5e-4, "warmup.max_steps": 60, "warmup.max_length": 384,
    "warmup.save_steps": 30,
    "stage1.learning_rate": 5e-5, "stage1.max_steps": 4, "stage1.per_device_train_batch_size": 2,
    "stage1.gradient_accumulation_steps": 2, "stage1.question_only_share": 0.75, "stage1.save_steps": 2,
    "stage2.learning_rate": 1e-3, "stage2.max_steps": 3, "stage2.per_device_train_batch_size": 2,
    "stage2.gradient_accumulation_steps": 4, "stage2.max_completion_length": 160, "stage2.question_only_share": 0.5,
    "stage2.save_steps": 1,
    "stage3.learning_rate": 1e-4, "stage3.max_steps": 1, "stage3.per_device_train_batch_size": 2,
    "stage3.gradient_accumulation_steps": 4,
    "stage3.max_completion_length": 160, "stage3.mining_max_new_tokens": 192, "stage3.mining_limit": 12,
    "stage3.mining_batch_size": 12, "stage3.save_steps": 1,
    "eval.limit": 50, "eval.batch_size": 50, "eval.max_new_tokens": 192, "run.parallel_entries": 2,
}


PROOF_CHANGES = {  # against the demo's
    "data.eval_source": "synthetic:400:2", "stage2.max_steps": 6, "baseline_sft.budget": "tokens", "eval.limit": 250,
    "run.output_dir": "runs/proof", "run.baselines": ["sft", "grpo", "concise"],
    "baseline_grpo.learning_rate": 1e-4, "baseline_concise.learning_rate": 1e-4,
}


def _stage3_prompt_key_added(old: dict) -> dict:
    """The old code's dict with ``stage3.prompt`` (added since, default the paper's rewrite prompt) last in stage 3."""
    return {**old, "stage3": {**old["stage3"], "prompt": "rewrite"}}


def _baseline_rates_added(old: dict) -> dict:
    """The old code's dict with the RL baselines' ``learning_rate`` (added since, default "stage2": what they trained
    with) last in their sections."""
    out = dict(old)
    for section in ("baseline_grpo", "baseline_concise"):
        out[section] = {**old[section], "learning_rate": old[section].get("learning_rate", "stage2")}
    return out


def _figures_key_added(old: dict) -> dict:
    """The old code's dict with ``eval.figures`` (added since, default true: reports drew their figures) last."""
    return {**old, "eval": {**old["eval"], "figures": old["eval"].get("figures", True)}}


@pytest.mark.parametrize("preset", sorted(BEFORE))
def test_plain_data_is_what_the_code_before_the_pass_through_wrote(preset):
    if preset == "smoke+overrides":
        cfg = C.resolve(preset="smoke", overrides=BEFORE_OVERRIDES)
    else:
        cfg = C.resolve(preset=preset or None)
    # same keys, values and order: config.yaml comes out byte for byte as before, the vLLM keys in their new section
    # and the GRPO sections' importance-sampling switch, the concise baseline's section and the RL baselines'
    # learning rates added
    expected = _baseline_rates_added(_stage3_prompt_key_added(_figures_key_added(_concise_section_added(
        _correction_key_added(_vllm_keys_moved(_preset_changes(BEFORE[preset], preset)))))))
    assert C.dump_yaml(cfg) == yaml.safe_dump(expected, sort_keys=False, default_flow_style=None, width=120)
    # and a config.yaml written by the old code (its old vLLM keys too) reads back, as a record, to the same config
    assert C.from_dict(yaml.safe_load(C.dump_yaml(cfg))) == cfg
    assert C.from_dict(migrate_recorded(_preset_changes(BEFORE[preset], preset))) == cfg


def test_attributes_and_replace_read_trls_keys_and_ours():
    cfg = C.resolve(preset="smoke", overrides=["stage2.learning_rate=1e-4", "stage1.save_steps=7"])
    assert (cfg.stage2.learning_rate, cfg.stage1.save_steps, cfg.stage2.epsilon_high) == (1e-4, 7, 0.2)
    changed = cfg.stage2.replace(max_steps=17, enabled=False)
    assert (changed.max_steps, changed.enabled, changed.rewards) == (17, False, cfg.stage2.rewards)
    assert cfg.stage2.max_steps != 17 and cfg.stage2.enabled  # a copy
    with pytest.raises(AttributeError, match="no key 'top_k'"):
        _ = cfg.stage2.top_k  # not set: not recorded


def test_any_trl_field_reaches_the_trainer_arguments(tmp_path):
    cfg = C.resolve(preset="smoke", overrides=["run.device=cpu", "stage2.top_k=5", "stage3.repetition_penalty=1.1",
                                               "stage1.neftune_noise_alpha=5", "warmup.lr_scheduler_kwargs={}",
                                               "stage2.learning_rate=1e-4"])
    g2, g3 = grpo_args(cfg, "stage2", str(tmp_path)), grpo_args(cfg, "stage3", str(tmp_path))
    assert (g2.top_k, g2.learning_rate, g3.repetition_penalty, g3.top_k) == (5, 1e-4, 1.1, 0)
    assert sft_args(cfg, str(tmp_path)).neftune_noise_alpha == 5
    # the recipe's own explicit values reach TRL too (Unsloth's dapo override must never fill them)
    assert (g2.epsilon_high, g2.mask_truncated_completions, g2.log_completions) == (0.2, False, True)
    assert g2.save_steps == cfg.stage2.save_steps and g3.num_generations == cfg.stage3.num_generations


@pytest.mark.parametrize(("override", "message"), [
    ("stage2.lerning_rate=1", "unknown key 'stage2.lerning_rate' (did you mean 'stage2.learning_rate'?)"),
    ("stage3.mining_limt=1", "unknown key 'stage3.mining_limt' (did you mean 'stage3.mining_limit'?)"),
    ("stage1.xyzzy=1", "unknown key 'stage1.xyzzy' (the recipe's keys: enabled, mask_prob, max_length, "
                       "question_only_share; or a field of TRL's SFTConfig)"),
    ("stage1.num_generations=4", "unknown key 'stage1.num_generations'"),  # a GRPOConfig field, not SFTConfig's
    ("stage2.seed=3", "'stage2.seed' is set by the recipe, not per section: use 'run.seed'"),
    ("stage1.bf16=true", "'stage1.bf16' is set by the recipe, not per section: use 'model.dtype'"),
    ("stage2.use_vllm=true", "'stage2.use_vllm' is set by the recipe"),
    ("stage2.reward_weights=[1]", "use 'rewards[].weight'"),
    ("warmup.output_dir=x", "use 'run.output_dir'"),
    ("stage2.remove_unused_columns=true", "'stage2.remove_unused_columns' is set by the recipe, not per section: "
                                          "the recipe sets it"),
    ("stage2.top_k=abc", "bad value for 'stage2.top_k': 'abc' (expected int)"),
    ("stage2.epsilon_high=null", "bad value for 'stage2.epsilon_high': None"),  # recorded keys keep a value
    ("stage2.top_k=null", "bad value for 'stage2.top_k': None (expected int)"),  # TRL's top_k is a plain int
    ("stage2.min_p=.inf", "bad value for 'stage2.min_p': inf (expected float | NoneType)"),  # finite, as ours
    ("stage2.trl_args={}", "unknown key 'stage2.trl_args'"),
    ("stage2=3", "bad value for 'stage2': 3 (expected mapping)"),
])
def test_bad_section_keys_are_one_line_errors(override, message):
    with pytest.raises(C.ConfigError) as err:
        C.resolve(preset="smoke", overrides=[override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_trl_field_that_takes_null_takes_it():
    cfg = C.resolve(preset="smoke", overrides=["stage2.min_p=null", "stage1.save_steps=2.0"])
    assert "min_p" in cfg.stage2.trl_args and cfg.stage2.min_p is None  # TRL 1.14.2: float | None
    assert type(cfg.stage1.save_steps) is float  # TRL's float next to our integer default
    assert C.resolve(preset="smoke", overrides=["stage1.save_steps=9"]).stage1.save_steps == 9  # an int stays one
