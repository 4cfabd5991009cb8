"""Stage 3 — internalisation: persistent failures and targeted rewriting.

1. Mining: the stage-2 model answers every problem of the stage-3 slice ``mining_k`` times (paper: once, greedy) with
   the evaluation prompt. A problem is a *persistent failure* when its fraction of correct answers is
   <= ``failure_threshold`` (default 0: never right). They are written to ``stage3/failures.jsonl``.
2. Rewriting: the prompt shows the problem and the teacher's solution and asks for a much shorter rewrite ending in
   "Final Answer:"; GRPO with correctness + compression-ratio reward (response length / teacher length).
No failures: the stage records that and hands the stage-2 weights on unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from recipe import data as data_mod
from recipe import model as model_mod
from recipe import prompts
from recipe.answers import answers_match, extract_answer
from recipe.config import Config
from recipe.evaluate import STOP_TEXTS
from recipe.fsio import read_jsonl, write_jsonl
from recipe.generation import generate, to_device
from recipe.stages.common import (
    train_grpo,
    train_problems,
)

log = logging.getLogger("recipe")
FAILURES = "failures.jsonl"


def mine_failures(cfg: Config, problems: list[data_mod.Problem], init_from: str | None) -> list[dict]:
    """Answer each problem ``mining_k`` times with the stage-2 model; keep the persistent failures."""
    from tqdm.auto import tqdm

    st = cfg.stage3
    if st.mining_limit > 0:
        problems = problems[: st.mining_limit]
    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=False, seed=cfg.run.seed)
    model = to_device(model, cfg.run.device)
    prompt_texts = [prompts.eval_prompt(p.question, answer_label=cfg.data.answer_label) for p in problems]
    with tqdm(total=len(problems), desc="stage 3: mining failures", unit="problem") as bar:
        generations = generate(model, tokenizer, prompt_texts, max_new_tokens=st.mining_max_new_tokens,
                               batch_size=st.mining_batch_size, temperature=st.mining_temperature,
                               num_return_sequences=st.mining_k, seed=cfg.run.seed, stop_texts=STOP_TEXTS,
                               progress=bar.update)
    failures = []
    for problem, gens in zip(problems, generations):
        correct = [answers_match(extract_answer(g.text), problem.answer) for g in gens]
        fraction = sum(correct) / len(correct)
        if fraction <= st.failure_threshold:
            failures.append({**problem.to_dict(), "correct_fraction": fraction,
                             "student_outputs": [g.text for g in gens]})
    del model
    return failures


def run(cfg: Config, stage_dir: Path, init_from: str | None = None) -> dict:
    stage_dir.mkdir(parents=True, exist_ok=True)
    problems = train_problems(cfg, "stage3")
    failures_path = stage_dir / FAILURES
    if failures_path.is_file():  # mining finished before an interruption: never redo it
        failures = read_jsonl(failures_path)
    else:
        failures = mine_failures(cfg, problems, init_from)
        write_jsonl(failures_path, failures)
    mined = {"mined": len(problems) if cfg.stage3.mining_limit <= 0 else min(len(problems), cfg.stage3.mining_limit),
             "failures": len(failures)}
    log.info("stage 3: %d persistent failures out of %d problems", mined["failures"], mined["mined"])
    if not failures:
        return {"output": init_from, "data": {"n_rows": 0}, "metrics": {**mined, "skipped": "no failures"},
                "trainer_config": {}}

    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed,
                                      for_grpo=True)
    failed = [data_mod.Problem.from_dict(f) for f in failures]
    rows = data_mod.add_token_lengths(data_mod.build_stage3(failed, answer_label=cfg.data.answer_label), tokenizer)
    result = train_grpo(cfg, "stage3", model, tokenizer, rows, stage_dir)
    result["metrics"] = {**mined, **result["metrics"]}
    return result
