"""The warm-up entry: SFT on its own slice, LoRA merged into the weights, and that merged model is the base
of everything after it — the base row, stage 1, the baselines — while the manifest keeps the config as given."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from recipe.config import core as C
from recipe.errors import ConfigError, RunError
from recipe.fsio import read_json
from recipe.models import model as model_mod
from recipe.run import orchestrator as run
from recipe.store import rundir

QUICK = ("stage2.max_completion_length=16", "stage3.max_completion_length=16", "stage3.mining_limit=8",
         "stage3.mining_max_new_tokens=16", "stage2.log_completions=false", "stage3.log_completions=false")
WARM = ("warmup.enabled=true", "data.warmup_rows=[160, 200]", "warmup.max_steps=2", "warmup.save_steps=1",
        "warmup.per_device_train_batch_size=4", "warmup.max_length=384", "warmup.learning_rate=1e-3")


def smoke(cache_dir, run_dir, *extra: str) -> C.Config:
    return C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}", *QUICK,
                                                *extra])


def test_warmup_is_merged_and_becomes_the_base_of_every_entry(cache_dir, tmp_path):
    cfg = smoke(cache_dir, tmp_path / "run", *WARM, "stage1.max_steps=1", "stage2.max_steps=1", "stage3.enabled=false",
                "run.baselines=[sft]", "eval.limit=4", "eval.max_new_tokens=8", "eval.stages=[base, stage1]")
    run_dir = run.run_all(cfg)
    manifest = rundir.load_manifest(run_dir)
    stages = manifest["entries"]
    assert {n: stages[n]["status"] for n in ("warmup", "stage1", "stage2", "baseline-sft")} == dict.fromkeys(
        ("warmup", "stage1", "stage2", "baseline-sft"), "done")
    merged = run_dir / "warmup" / "merged"
    assert rundir.absolute(run_dir, stages["warmup"]["output"]) == str(merged)
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    # the warm-up trained on its own slice, and every other entry records the warm-up section it depends on
    assert stages["warmup"]["data"]["n_rows"] == 40
    assert stages["stage1"]["config"]["warmup"]["max_steps"] == 2
    assert "warmup" not in rundir.entry_config(smoke(cache_dir, tmp_path / "x"), run.ENTRIES["stage1"])
    # the manifest keeps the configured model; training and evaluation used the merged one
    assert stages["stage1"]["config"]["model"]["name_or_path"] == "builtin:tiny-qwen2"
    for name in ("stage1", "baseline-sft"):
        adapter_cfg = read_json(run_dir / name / "model" / "adapter_config.json")
        assert adapter_cfg["base_model_name_or_path"] == str(merged)
    base_eval = read_json(run_dir / "eval" / "base" / "results.json")
    assert base_eval["model"]["name_or_path"] == str(merged)

    # merged weights = tiny model + the warm-up's adapter (the merge is exact in float32)
    ids = torch.tensor([[5, 9, 17, 33, 2, 41]])
    base_path = model_mod.resolve_model_path(cfg.model)
    with torch.no_grad():
        reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path),
                                              str(run_dir / "warmup" / "model")).eval()(ids).logits
        warm = AutoModelForCausalLM.from_pretrained(str(merged)).eval()(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base_path).eval()(ids).logits
    assert torch.allclose(warm, reference, atol=1e-4)
    assert not torch.allclose(warm, plain, atol=1e-4)  # the warm-up changed the model

    # the same command resumes: nothing left to train
    assert run.run_all(cfg) == run_dir
    assert rundir.load_manifest(run_dir)["entries"]["warmup"]["ended"] == stages["warmup"]["ended"]


def test_a_stage_alone_refuses_to_start_before_the_warmup(cache_dir, tmp_path):
    cfg = smoke(cache_dir, tmp_path / "run", *WARM, "eval.enabled=false")
    with pytest.raises(RunError, match="warm-up .* is not finished"):
        run.run_one(cfg, "stage1")


def test_warmup_slice_must_not_overlap_and_must_be_valid():
    with pytest.raises(ConfigError, match="data.warmup_rows"):
        C.resolve(preset="smoke", overrides=["warmup.enabled=true", "data.warmup_rows=[5, 5]"])
    C.resolve(preset="smoke", overrides=["data.warmup_rows=[5, 5]"])  # unused while the warm-up is off
    with pytest.raises(ConfigError, match="warmup.learning_rate"):
        C.resolve(preset="smoke", overrides=["warmup.enabled=true", "data.warmup_rows=[160, 200]",
                                             "warmup.learning_rate=0"])


def test_sft_baseline_token_budget_matches_the_curriculums_tokens(cache_dir, tmp_path):
    cfg = smoke(cache_dir, tmp_path / "run", "stage1.max_steps=2", "stage2.max_steps=1", "stage3.enabled=false",
                "run.baselines=[sft]", "baseline_sft.budget=tokens", "eval.enabled=false",
                "stage1.per_device_train_batch_size=2", "stage1.gradient_accumulation_steps=2")  # 4 rows a step
    run_dir = run.run_all(cfg)
    record = rundir.load_manifest(run_dir)["entries"]["baseline-sft"]
    spent = record["budget"]["curriculum_tokens"]
    logs = {s: read_json(run_dir / s / "trainer_log.json") for s in ("stage1", "stage2")}
    assert spent == {s: int(float([r["num_tokens"] for r in h if "num_tokens" in r][-1])) for s, h in logs.items()}
    steps = record["budget"]["max_steps"]
    assert record["metrics"]["steps"] == steps and steps > 2  # more than stage 1's 2 steps: GRPO's tokens count too
    done = [r["num_tokens"] for r in read_json(run_dir / "baseline-sft" / "trainer_log.json") if "num_tokens" in r]
    # as many tokens as the curriculum, up to the rows' lengths around their mean and the last step's rounding up
    assert 0.8 * sum(spent.values()) <= float(done[-1]) <= 1.25 * sum(spent.values()), (done[-1], spent)


def test_a_run_recorded_before_the_baseline_budget_key_resumes(cache_dir, tmp_path):
    cfg = smoke(cache_dir, tmp_path / "run", "eval.enabled=false")
    entry = run.ENTRIES["baseline-sft"]
    recorded = rundir.entry_config(cfg, entry)
    del recorded["baseline_sft"]  # what a run written before the key holds
    assert rundir.with_legacy_keys(recorded, rundir.entry_config(cfg, entry)) == rundir.entry_config(cfg, entry)
    tokens = smoke(cache_dir, tmp_path / "run", "eval.enabled=false", "baseline_sft.budget=tokens")
    assert rundir.with_legacy_keys(recorded, rundir.entry_config(tokens, entry)) != rundir.entry_config(tokens, entry)


def test_sft_baseline_step_budget_trains_that_many_steps_without_the_stages(cache_dir, tmp_path):
    cfg = smoke(cache_dir, tmp_path / "run", "stage1.enabled=false", "stage2.enabled=false", "stage3.enabled=false",
                "run.baselines=[sft]", "baseline_sft.budget=3", "eval.enabled=false")
    run_dir = run.run_all(cfg)
    record = rundir.load_manifest(run_dir)["entries"]["baseline-sft"]
    assert record["budget"] == {"mode": "steps", "max_steps": 3} and record["metrics"]["steps"] == 3


@pytest.mark.parametrize("value", ["0", "-2", "true", "1.5", "many"])
def test_a_bad_sft_baseline_budget_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"'baseline_sft.budget'.*'stage1'.*'tokens'"):
        C.resolve(preset="smoke", overrides=[f"baseline_sft.budget={value}"])
