"""Stage 2 — brevity: GRPO on masked completion.

Some of the teacher's steps are masked in place (no shuffle): ``max(min_masked, int(mask_ratio * steps))``, capped at
steps - 1. The student sees the question and the partial solution and writes a complete solution. TRL's GRPOTrainer
samples ``num_generations`` completions per prompt and optimises the clipped, prompt-conditioned GRPO objective on the
configured reward (default: the paper's gated reward — wrong answer -2, bad format -1, else 1 + step bonus + length
term against 35 words per teacher step).
"""

from __future__ import annotations

from pathlib import Path

from recipe import data as data_mod
from recipe import model as model_mod
from recipe.config import Config
from recipe.stages.common import (
    train_grpo,
    train_problems,
)


def build_rows(cfg: Config, tokenizer=None) -> list[dict]:
    problems = train_problems(cfg, "stage2")
    rows = data_mod.build_stage2(problems, seed=cfg.run.seed, min_masked=cfg.stage2.min_masked,
                                 mask_ratio=cfg.stage2.mask_ratio, mask_token=cfg.data.mask_token,
                                 answer_label=cfg.data.answer_label)
    return data_mod.add_token_lengths(rows, tokenizer) if tokenizer is not None else rows


def run(cfg: Config, stage_dir: Path, init_from: str | None = None) -> dict:
    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed,
                                      for_grpo=True)
    return train_grpo(cfg, "stage2", model, tokenizer, build_rows(cfg, tokenizer), stage_dir)
