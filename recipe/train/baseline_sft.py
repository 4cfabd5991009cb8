"""The SFT-distillation baseline (entry ``baseline-sft``): plain SFT on the FULL teacher rationales, no curriculum.

Same problems as the curriculum trains on (the stage-1 and stage-2 slices together), same trainer budget as stage 1
(:func:`recipe.train.trl_args.sft_args`), same LoRA settings, from the base model. The prompt is the evaluation prompt
itself, the completion the ordered teacher solution, so the baseline is trained directly for the evaluation format.
It is an entry of the run like a stage (:data:`recipe.run.orchestrator.ENTRIES`): manifest record, resume, config check,
``eval/baseline-sft`` and a report row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from recipe.config.core import Config
from recipe.data import prompts
from recipe.data.gsm8k import Problem
from recipe.models import model as model_mod
from recipe.train.common import train_problems, train_sft

log = logging.getLogger("recipe")


def build_rows(problems: Sequence[Problem], answer_label: str = prompts.ANSWER_LABEL) -> list[dict]:
    """Prompt = the evaluation prompt; completion = newline + the full ordered teacher solution.

    >>> row = build_rows([Problem("train-0", "Q?", ("a = 1.", "b = a + 1 = 2."), "2")])[0]
    >>> row["prompt"].endswith("Reasoning:"), row["completion"]
    (True, '\\nStep 1: a = 1.\\nStep 2: b = a + 1 = 2.\\nFinal Answer: 2')
    """
    return [{"id": p.id, "prompt": prompts.eval_prompt(p.question, answer_label),
             "completion": prompts.COMPLETION_PREFIX + prompts.render_solution(p.steps, p.answer, answer_label),
             "answer": p.answer}
            for p in problems]


def run(cfg: Config, entry_dir: Path, init_from: str | None = None) -> dict:
    rows = build_rows(train_problems(cfg, "stage1") + train_problems(cfg, "stage2"), cfg.data.answer_label)
    log.info("baseline: SFT on %d full teacher rationales (stage-1 budget: max_steps=%d, epochs=%g)", len(rows),
             cfg.stage1.max_steps, cfg.stage1.num_train_epochs)
    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed)
    return train_sft(cfg, model, tokenizer, rows, entry_dir)
