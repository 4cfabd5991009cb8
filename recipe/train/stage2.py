"""Stage 2 — brevity: GRPO on masked completion.

Some of the teacher's steps are masked in place (no shuffle): ``max(min_masked, int(mask_ratio * steps))``, capped at
steps - 1. The student sees the question and the partial solution and writes a complete solution. TRL's GRPOTrainer
samples ``num_generations`` completions per prompt and optimises the clipped, prompt-conditioned GRPO objective on the
configured reward (default: the paper's gated reward — wrong answer -2, bad format -1, else 1 + step bonus + length
term against 35 words per teacher step). The mask is drawn anew for every epoch (seed ``run.seed + epoch``). With
``stage2.question_only_share`` > 0 (not in the paper; 0 by default) that share of prompts is the question alone in the
evaluation prompt, so a small student practises brevity where it is measured.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recipe.config.core import Config
from recipe.data.gsm8k import Problem
from recipe.data.prompts import ANSWER_LABEL, MASK_TOKEN, eval_prompt, stage2_prompt
from recipe.models import model as model_mod
from recipe.train.grpo import refuse_base_reference, train_grpo
from recipe.train.rows import add_token_lengths, question_only_picks, teacher_fields, train_problems


def mask_count(n_steps: int, min_masked: int = 3, mask_ratio: float = 0.5) -> int:
    """Steps hidden in stage 2: ``max(min_masked, floor(mask_ratio * n_steps))``, capped at ``n_steps - 1`` so
    at least one step stays visible.

    >>> [mask_count(n) for n in (1, 2, 3, 4, 6, 7, 9)]
    [0, 1, 2, 3, 3, 3, 4]
    """
    return max(0, min(max(min_masked, int(mask_ratio * n_steps)), n_steps - 1))


def build_rows(problems: Sequence[Problem], seed: int, min_masked: int = 3, mask_ratio: float = 0.5,
               mask_token: str = MASK_TOKEN, answer_label: str = ANSWER_LABEL,
               question_only_share: float = 0.0) -> list[dict[str, Any]]:
    """Masked completion (GRPO): steps in order, :func:`mask_count` random ones hidden (``masked_indices``,
    sorted). ``question_only_share``: the chance that a prompt is the question alone (``masked_indices`` empty),
    :func:`recipe.train.rows.question_only_picks`. Pure: seeds its own ``random.Random(seed)``.

    >>> row = build_rows([Problem("t-0", "Q?", ("a = 1.", "b = 2.", "c = 3."), "3")], seed=0)[0]
    >>> len(row["masked_indices"]), row["prompt"].count("- [MASK]"), row["teacher_words"]
    (2, 2, 18)
    >>> row = build_rows([Problem("t-0", "Q?", ("a = 1.", "b = 2."), "2")], seed=0, question_only_share=1.0)[0]
    >>> row["prompt"] == eval_prompt("Q?"), row["masked_indices"], row["teacher_steps"]
    (True, [], 2)
    """
    rng = random.Random(seed)
    rows = []
    for problem, alone in zip(problems, question_only_picks(len(problems), seed, question_only_share)):
        n = len(problem.steps)
        masked = sorted(rng.sample(range(n), mask_count(n, min_masked, mask_ratio)))
        hidden = set(masked)
        partial = [mask_token if i in hidden else step for i, step in enumerate(problem.steps)]
        solution, fields = teacher_fields(problem, answer_label, with_thinking=False)  # budget: real steps only
        if alone:
            prompt, masked = eval_prompt(problem.question, answer_label), []
        else:
            prompt = stage2_prompt(problem.question, partial, mask_token, answer_label)
        rows.append({
            **fields,
            "prompt": prompt,
            "teacher_solution": solution,
            "masked_indices": masked,
        })
    return rows


def rows_for_epoch(cfg: Config, problems: Sequence[Problem], tokenizer: Any) -> Callable[[int], list[dict[str, Any]]]:
    """Epoch -> that epoch's rows (with ``teacher_tokens``): a fresh mask per epoch, seeded ``run.seed + epoch``
    (the authors' collator redraws it at every read)."""
    st = cfg.stage2

    def build(epoch: int) -> list[dict[str, Any]]:
        rows = build_rows(problems, seed=cfg.run.seed + epoch, min_masked=st.min_masked, mask_ratio=st.mask_ratio,
                          mask_token=cfg.data.mask_token, answer_label=cfg.data.answer_label,
                          question_only_share=st.question_only_share)
        return add_token_lengths(rows, tokenizer)
    return build


def run(cfg: Config, entry_dir: Path, init_from: str | None = None) -> dict:
    refuse_base_reference(cfg, "stage2", init_from)
    problems = train_problems(cfg, "stage2")
    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed,
                                      for_grpo=True, vllm_cfg=cfg.vllm)
    rows_for = rows_for_epoch(cfg, problems, tokenizer)
    return train_grpo(cfg, "stage2", model, tokenizer, rows_for(0), entry_dir, rows_for_epoch=rows_for,
                      init_from=init_from)
