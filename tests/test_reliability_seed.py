"""Reproducibility (issue 11, item 9): on the CPU, the same seed gives byte-identical stage-1 adapter weights (the
LoRA initialisation, data order and masking are all seeded) and another seed gives different ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe.config import core as C
from recipe.run import orchestrator as run


def stage1_adapter(cache_dir: Path, run_dir: Path, seed: int) -> bytes:
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                               f"run.seed={seed}", "stage1.max_steps=2", "stage1.save_steps=2",
                                               "eval.enabled=false"])
    run.run_one(cfg, "stage1")
    return (run_dir / "stage1" / "model" / "adapter_model.safetensors").read_bytes()


@pytest.mark.slow  # three short stage-1 trainings: ~20-30 s of CPU
def test_same_seed_same_adapter_bytes_other_seed_differs(cache_dir, tmp_path):
    first = stage1_adapter(cache_dir, tmp_path / "a", seed=7)
    again = stage1_adapter(cache_dir, tmp_path / "b", seed=7)
    other = stage1_adapter(cache_dir, tmp_path / "c", seed=8)
    assert first == again
    assert first != other
