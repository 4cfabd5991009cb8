"""Stage 1 — structure: SFT on masked shuffled reconstruction.

Each teacher rationale is split into steps; the steps are shuffled (always) and, with probability
``stage1.mask_prob``, one is replaced by the mask token. The student reads the question and the jumbled steps and must
write the full, ordered, complete solution (the teacher's thinking part first when the teacher file has one). With
``stage1.question_only_share`` > 0 (not in the paper; 0 by default) that share of rows shows the question alone, in
the evaluation prompt, with the same target: a small student (135M) does not carry reconstruction over to solving
from the question (measured in the README's proof run). The shuffle, the mask and the question-only draw are made
anew for every epoch (:func:`rows_for_epoch`). Prompt-completion rows go to TRL's SFTTrainer, which puts the loss on the
completion only (``completion_only_loss=True`` in :func:`recipe.train.sft.sft_args`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recipe.config.core import Config
from recipe.data.gsm8k import Problem
from recipe.data.prompts import ANSWER_LABEL, COMPLETION_PREFIX, MASK_TOKEN, eval_prompt, stage1_prompt
from recipe.models import model as model_mod
from recipe.train.rows import question_only_picks, teacher_fields, train_problems
from recipe.train.sft import train_sft


def build_rows(problems: Sequence[Problem], seed: int, mask_prob: float = 0.7, mask_token: str = MASK_TOKEN,
               answer_label: str = ANSWER_LABEL, question_only_share: float = 0.0) -> list[dict[str, Any]]:
    """Masked shuffled reconstruction (SFT): steps always shuffled (a uniform permutation, which may be the
    identity), and with probability ``mask_prob`` one random position of the shuffled list replaced by the mask
    (``masked_index``, -1 when none). Masking a uniform position after shuffling hides a uniformly chosen step,
    the same distribution as the paper's mask-then-shuffle. The completion is the full ordered teacher solution
    (:func:`recipe.train.rows.teacher_fields`: thinking part, real steps, answer line).
    ``question_only_share``: the chance that a row instead shows only the question (the evaluation prompt, no steps:
    ``shuffled`` empty), :func:`recipe.train.rows.question_only_picks`.
    Pure: the call seeds its own ``random.Random(seed)``, so the same inputs give the same rows in any process.

    >>> row = build_rows([Problem("t-0", "Q?", ("a = 1.", "b = 2."), "2")], seed=0, mask_prob=1.0)[0]
    >>> row["shuffled"][row["masked_index"]], row["completion"]
    ('[MASK]', '\\nStep 1: a = 1.\\nStep 2: b = 2.\\nFinal Answer: 2')
    >>> row = build_rows([Problem("t-0", "Q?", ("a = 1.",), "1")], seed=0, question_only_share=1.0)[0]
    >>> row["prompt"] == eval_prompt("Q?"), row["shuffled"], row["completion"]
    (True, [], '\\nStep 1: a = 1.\\nFinal Answer: 1')
    """
    rng = random.Random(seed)
    rows = []
    for problem, alone in zip(problems, question_only_picks(len(problems), seed, question_only_share)):
        shuffled = list(problem.steps)
        rng.shuffle(shuffled)
        masked_index = -1
        if rng.random() < mask_prob:
            masked_index = rng.randrange(len(shuffled))
            shuffled[masked_index] = mask_token
        solution, fields = teacher_fields(problem, answer_label)
        if alone:
            prompt, shuffled, masked_index = eval_prompt(problem.question, answer_label), [], -1
        else:
            prompt = stage1_prompt(problem.question, shuffled, mask_token, answer_label)
        rows.append({
            **fields,
            "prompt": prompt,
            "completion": COMPLETION_PREFIX + solution,
            "shuffled": shuffled,
            "masked_index": masked_index,
        })
    return rows


def rows_for_epoch(cfg: Config, problems: Sequence[Problem]) -> Callable[[int], list[dict[str, Any]]]:
    """Epoch -> that epoch's rows: a fresh shuffle and mask per epoch, seeded ``run.seed + epoch`` (the authors'
    collator redraws them at every read)."""
    def build(epoch: int) -> list[dict[str, Any]]:
        return build_rows(problems, seed=cfg.run.seed + epoch, mask_prob=cfg.stage1.mask_prob,
                          mask_token=cfg.data.mask_token, answer_label=cfg.data.answer_label,
                          question_only_share=cfg.stage1.question_only_share)
    return build


def run(cfg: Config, entry_dir: Path, init_from: str | None = None) -> dict:
    rows_for = rows_for_epoch(cfg, train_problems(cfg, "stage1"))
    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed,
                                      vllm_cfg=cfg.vllm)
    return train_sft(cfg, model, tokenizer, rows_for(0), entry_dir, rows_for_epoch=rows_for)
