"""Stage 1 — structure: SFT on masked shuffled reconstruction.

Each teacher rationale is split into steps; the steps are shuffled (always) and, with probability
``stage1.mask_prob``, one is replaced by the mask token. The student reads the question and the jumbled steps and must
write the full, ordered, complete solution. Prompt-completion rows go to TRL's SFTTrainer, which puts the loss on the
completion only (``completion_only_loss=True`` in :func:`recipe.config.sft_args`).
"""

from __future__ import annotations

from pathlib import Path

from recipe import data as data_mod
from recipe import model as model_mod
from recipe.config import Config
from recipe.stages.common import (
    train_problems,
    train_sft,
)


def build_rows(cfg: Config) -> list[dict]:
    problems = train_problems(cfg, "stage1")
    return data_mod.build_stage1(problems, seed=cfg.run.seed, mask_prob=cfg.stage1.mask_prob,
                                 mask_token=cfg.data.mask_token, answer_label=cfg.data.answer_label)


def run(cfg: Config, stage_dir: Path, init_from: str | None = None) -> dict:
    rows = build_rows(cfg)
    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed)
    return train_sft(cfg, model, tokenizer, rows, stage_dir)
