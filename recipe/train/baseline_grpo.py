"""The plain-GRPO baseline (entry ``baseline-grpo``): what a user runs instead of the curriculum — GRPO straight from
the base model on the training questions with a correctness reward, no teacher and no SFT.

- **Rows**: the questions of the stage-1 and stage-2 slices (the problems the curriculum learns from), in the
  evaluation prompt frame with the question only — no teacher step, solution or mask anywhere in a prompt. Columns
  for the reward: the gold ``answer``; with ``baseline_grpo.reward=correctness+brevity`` also ``teacher_steps`` /
  ``teacher_words`` (counts, never text), because stage 2's length budget is 35 words per teacher step.
- **Reward**: ``correctness`` (1 right / 0 wrong) or ``correctness+brevity`` (stage 2's own reward list, by default
  the paper's gated reward: -2 wrong, -1 bad format, else 1 + step bonus + length term).
- **Budget**: as many sampled completions as stages 2 and 3 together (:func:`matched_budget`), spent with stage 2's
  batch: its ``max_steps`` is the matched count divided by stage 2's completions per step, rounded up. Stage 3's
  part uses its mined rows when ``<run>/stage3/failures.jsonl`` exists, else its configured slice (an upper bound).
  The manifest record's ``budget`` says which.
- **Trainer**: stage 2's section as it is (LoRA, optimizer, lr schedule, generation settings), only ``max_steps``
  and ``rewards`` replaced, through the same :func:`recipe.train.grpo.train_grpo`: checkpoints, resume, metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recipe.config.schema import Config, GRPOStageConfig, RewardSpec
from recipe.data import prompts
from recipe.data.gsm8k import Problem
from recipe.errors import RunError
from recipe.fsio import read_jsonl
from recipe.models import model as model_mod
from recipe.train.grpo import completions_per_step, refuse_base_reference, train_grpo
from recipe.train.rows import train_problems
from recipe.train.stage3 import FAILURES

log = logging.getLogger("recipe")


def build_rows(problems: Sequence[Problem], answer_label: str = prompts.ANSWER_LABEL,
               brevity: bool = False) -> list[dict[str, Any]]:
    """Prompt = the evaluation prompt with the question only; the reward columns are the gold answer (and, for the
    brevity term, the teacher's step and word counts).

    >>> row = build_rows([Problem("train-0", "Q?", ("a = 1.", "b = a + 1 = 2."), "2")])[0]
    >>> sorted(row), "a = 1." in row["prompt"]
    (['answer', 'id', 'prompt'], False)
    >>> build_rows([Problem("train-0", "Q?", ("a = 1.", "b = a + 1 = 2."), "2")], brevity=True)[0]["teacher_steps"]
    2
    """
    rows = []
    for p in problems:
        row: dict[str, Any] = {"id": p.id, "prompt": prompts.eval_prompt(p.question, answer_label), "answer": p.answer}
        if brevity:
            solution = prompts.render_solution(p.steps, p.answer, answer_label)
            row.update(teacher_steps=len(p.steps), teacher_words=len(solution.split()))
        rows.append(row)
    return rows


def sampled_completions(st: GRPOStageConfig, n_rows: int) -> int:
    """Completions a GRPO stage samples: ``max_steps`` x its per-step batch, or with ``max_steps=-1`` every row
    ``num_generations`` times per epoch. A stage without rows trains nothing (stage 3 with no failures)."""
    if not st.enabled or n_rows <= 0:
        return 0
    if st.max_steps > 0:
        return round(st.max_steps * completions_per_step(st))
    return math.ceil(st.num_train_epochs * n_rows * st.num_generations)


def matched_budget(cfg: Config, n_stage2: int, n_stage3: int, stage3_source: str) -> dict[str, Any]:
    """The baseline's step count: stages 2+3's sampled completions, spent with stage 2's batch (rounded up).

    ``n_stage2``/``n_stage3`` are the rows each stage trains on; ``stage3_source`` says where stage 3's came from.
    """
    c2 = sampled_completions(cfg.stage2, n_stage2)
    c3 = sampled_completions(cfg.stage3, n_stage3)
    per_step = completions_per_step(cfg.stage2)
    if c2 + c3 <= 0:
        raise RunError("baseline grpo: stages 2 and 3 sample no completions in this config (both disabled or no "
                       "rows), so there is no budget to match; enable stage2 or give it rows")
    steps = math.ceil((c2 + c3) / per_step)
    return {
        "max_steps": steps,
        "completions": round(steps * per_step),
        "target_completions": c2 + c3,
        "stage2_completions": c2,
        "stage3_completions": c3,
        "stage3_rows": n_stage3,
        "stage3_rows_from": stage3_source,
        "completions_per_step": per_step,
        "how": "stage2 + stage3 sampled completions (max_steps x per_device_train_batch_size x "
               "gradient_accumulation_steps / num_iterations, or rows x num_generations x epochs when max_steps=-1), "
               "divided by stage 2's completions per step, rounded up",
    }


def stage3_rows(cfg: Config, run_dir: Path) -> tuple[int, str]:
    """Stage 3's training rows: its mined failures when mining has run in this run directory, else its configured
    mining slice (the most it could mine)."""
    if not cfg.stage3.enabled:
        return 0, "stage 3 disabled"
    mined = run_dir / "stage3" / FAILURES
    if mined.is_file():
        return len(read_jsonl(mined)), f"mined ({mined.name})"
    n = len(train_problems(cfg, "stage3"))
    if cfg.stage3.mining_limit > 0:
        n = min(n, cfg.stage3.mining_limit)
    return n, "configured (stage 3 not mined yet: its whole mining slice)"


def with_stage2(cfg: Config, max_steps: int, rewards: Sequence[RewardSpec], learning_rate: float | str) -> Config:
    """Stage 2's trainer settings with ``max_steps``, ``rewards`` and ``learning_rate`` ("stage2": its own) replaced
    (and enabled)."""
    rate = cfg.stage2.learning_rate if learning_rate == "stage2" else learning_rate
    return dataclasses.replace(cfg, stage2=cfg.stage2.replace(max_steps=max_steps, rewards=list(rewards), enabled=True,
                                                              learning_rate=rate))


def baseline_config(cfg: Config, max_steps: int) -> Config:
    """Stage 2's trainer settings with the matched ``max_steps``, the baseline's reward and its learning rate."""
    rewards = [RewardSpec("correctness")] if cfg.baseline_grpo.reward == "correctness" else cfg.stage2.rewards
    return with_stage2(cfg, max_steps, rewards, cfg.baseline_grpo.learning_rate)


def train_matched(cfg: Config, entry_dir: Path, init_from: str | None,
                  configure: Callable[[Config, int], Config], brevity: bool = False, what: str = "") -> dict:
    """GRPO on the stage-1/2 questions (:func:`build_rows`) at stages 2+3's sampled completions
    (:func:`matched_budget`), through stage 2's section as ``configure(cfg, max_steps)`` gives it, from ``init_from``
    (None: the base model) into ``entry_dir``; the record with its ``budget``."""
    refuse_base_reference(cfg, "stage2", init_from)  # the baseline trains with stage 2's section
    stage2_problems = train_problems(cfg, "stage2")
    rows = build_rows(train_problems(cfg, "stage1") + stage2_problems, cfg.data.answer_label, brevity)
    budget = matched_budget(cfg, len(stage2_problems), *stage3_rows(cfg, entry_dir.parent))
    log.info("baseline: GRPO (%s) on %d questions, %d steps = %d sampled completions (stages 2+3: %d + %d)",
             what, len(rows), budget["max_steps"], budget["completions"], budget["stage2_completions"],
             budget["stage3_completions"])

    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed,
                                      for_grpo=True, vllm_cfg=cfg.vllm)

    result = train_grpo(configure(cfg, budget["max_steps"]), "stage2", model, tokenizer, rows, entry_dir,
                        init_from=init_from)
    return {**result, "budget": budget}


def run(cfg: Config, entry_dir: Path, init_from: str | None = None) -> dict:
    return train_matched(cfg, entry_dir, init_from, baseline_config,
                         brevity=cfg.baseline_grpo.reward == "correctness+brevity",
                         what=f"plain, {cfg.baseline_grpo.reward}")
