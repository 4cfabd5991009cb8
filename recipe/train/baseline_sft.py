"""The SFT-distillation baseline (entry ``baseline-sft``): plain SFT on the FULL teacher rationales, no curriculum.

Same problems as the curriculum trains on (the stage-1 and stage-2 slices together), same trainer settings as stage 1
(:func:`recipe.train.sft.sft_args`), same LoRA settings, from the base model. Budget (``baseline_sft.budget``):
stage 1's steps, or (``tokens``) as many steps as it takes to process as many tokens as the curriculum's finished
stages did (:func:`token_matched_steps`; TRL's ``num_tokens``, prompts and completions, which the orchestrator
reads from their trainer logs and passes in), or a number of steps chosen ahead (it then need not wait for the stages).
The prompt is the evaluation prompt itself, the completion the ordered teacher solution, so the baseline is trained
directly for the evaluation format.
It is an entry of the run like a stage (:data:`recipe.entries.ENTRIES`): manifest record, resume, config check,
``eval/baseline-sft`` and a report row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from recipe.config.core import Config
from recipe.data import prompts
from recipe.data.gsm8k import Problem
from recipe.errors import RunError
from recipe.models import model as model_mod
from recipe.train.rows import train_problems
from recipe.train.sft import rows_per_step, train_sft

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


def token_matched_steps(target_tokens: int, row_tokens: Sequence[int], batch: int) -> int:
    """Optimizer steps of ``batch`` rows (all the rows of one step: micro-batches x accumulation x processes) whose
    mean length is that of ``row_tokens`` to process ``target_tokens``.

    >>> token_matched_steps(10_000, [100, 150], batch=4)
    20
    """
    per_step = batch * sum(row_tokens) / len(row_tokens)
    return max(1, math.ceil(target_tokens / per_step))


def run(cfg: Config, entry_dir: Path, init_from: str | None = None,
        curriculum_tokens: Mapping[str, int] | None = None) -> dict:
    """Train the baseline into ``entry_dir``. ``curriculum_tokens``: the tokens each finished curriculum stage
    processed, which ``baseline_sft.budget=tokens`` matches (the orchestrator reads them from the run,
    :func:`recipe.run.orchestrator.entry_inputs`)."""
    rows = build_rows(train_problems(cfg, "stage1") + train_problems(cfg, "stage2"), cfg.data.answer_label)
    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed,
                                      vllm_cfg=cfg.vllm)
    budget = None
    if isinstance(cfg.baseline_sft.budget, int):
        budget = {"mode": "steps", "max_steps": cfg.baseline_sft.budget}
    elif cfg.baseline_sft.budget == "tokens":
        if not curriculum_tokens:
            raise RunError("baseline_sft.budget=tokens matches the curriculum's tokens, but no stage of "
                           f"{entry_dir.parent} has a trainer log yet; train the stages first (run-all does)")
        lengths = [len(ids) for ids in tokenizer([r["prompt"] + r["completion"] for r in rows],
                                                 add_special_tokens=False)["input_ids"]]
        # every process's micro-batches of stage 1's section, which it trains with (TRL's num_tokens sums them)
        steps = token_matched_steps(sum(curriculum_tokens.values()), lengths, rows_per_step(cfg, "stage1"))
        budget = {"mode": "tokens", "curriculum_tokens": dict(curriculum_tokens), "max_steps": steps}
    max_steps = budget["max_steps"] if budget else None
    log.info("baseline: SFT on %d full teacher rationales (max_steps=%d, epochs=%g; budget: %s)", len(rows),
             cfg.stage1.max_steps if max_steps is None else max_steps, cfg.stage1.num_train_epochs, budget or "stage 1's")
    result = train_sft(cfg, model, tokenizer, rows, entry_dir, max_steps=max_steps)
    return {**result, "budget": budget} if budget else result
