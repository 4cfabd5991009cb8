"""A GRPO step in micro-batches (TRL's ``gradient_accumulation_steps``, which sets ``steps_per_generation``): the
``proof`` preset samples the same 2 groups of 4 completions per step as one batch of 8 did, and trains on them the
same way, in a quarter of the activation memory: two rows per forward and backward (``bench/memory.py`` measures the
memory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe.cli import main
from recipe.config import core as C
from recipe.eval.costs import sampled_completions
from recipe.train.baseline_grpo import completions_per_step
from recipe.train.grpo import grpo_args

ONE_BATCH = ["stage2.per_device_train_batch_size=8", "stage2.gradient_accumulation_steps=1"]


@pytest.mark.parametrize("stage", ["stage2", "stage3"])
def test_the_proof_preset_samples_two_groups_of_four_per_step_and_trains_on_two_at_a_time(stage, tmp_path):
    cfg = C.resolve(preset="proof")
    args = grpo_args(cfg, stage, str(tmp_path))
    assert (args.generation_batch_size, args.num_generations) == (8, 4)  # sampled together: 2 prompts x 4
    assert (args.per_device_train_batch_size, args.steps_per_generation) == (2, 4)  # 2 rows per forward/backward
    assert completions_per_step(getattr(cfg, stage)) == 8  # the plain-GRPO baseline's budget counts the same
    record = {"metrics": {"steps": 40}, "processes": 1,
              "trainer_config": {k: getattr(args, k) for k in ("num_generations", "per_device_train_batch_size",
                                                               "gradient_accumulation_steps", "num_iterations")}}
    assert sampled_completions(record) == 320  # the report's cost section: 40 steps x 8


def _stage2_log(cache_dir: Path, out: Path, *sets: str) -> list[dict]:
    """Two GRPO steps of the proof preset's shapes (2 prompts x 4 completions) on the tiny model, rewarded by length
    alone so that every group has advantages; the trainer's logged rows."""
    base = [f"model.cache_dir={cache_dir}", "model.name_or_path=builtin:tiny-qwen2", "model.max_seq_length=512",
            "warmup.enabled=false", "stage2.max_steps=2", "stage2.max_completion_length=24",
            "stage2.rewards=[{name: length_only}]", "stage2.log_completions=false"]
    args = ["stage2", "--preset", "proof", "--output-dir", str(out)]
    for item in (*base, *sets):
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    log = json.loads((out / "stage2" / "trainer_log.json").read_text())
    return [row for row in log if "loss" in row and "train_runtime" not in row]


@pytest.mark.slow  # ~30 s: three two-step GRPO runs on the tiny model
def test_micro_batches_and_checkpointing_train_like_one_batch(cache_dir, tmp_path):
    whole = _stage2_log(cache_dir, tmp_path / "whole", *ONE_BATCH, "model.gradient_checkpointing=false")
    micro = _stage2_log(cache_dir, tmp_path / "micro", "model.gradient_checkpointing=false")
    ckpt = _stage2_log(cache_dir, tmp_path / "ckpt", "model.gradient_checkpointing=true")
    assert len(whole) == len(micro) == len(ckpt) == 2
    assert whole[0]["grad_norm"] > 0  # the groups had advantages: a gradient to compare
    for other in (micro, ckpt):
        # step 1 samples from the same weights with the same generator: the same completions, the same rewards
        for key in ("completions/mean_length", "completions/max_length", "reward", "reward_std"):
            assert other[0][key] == whole[0][key], key
        # bf16 autocast rounds a batch of 2 and a batch of 8 a little differently: equal to 1 %
        for step in range(2):
            for key in ("loss", "grad_norm", "entropy"):
                assert other[step][key] == pytest.approx(whole[step][key], rel=1e-2, abs=1e-6), (step, key)
