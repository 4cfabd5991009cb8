"""Stage 3 — internalisation: persistent failures and targeted rewriting.

1. Mining: the stage-2 model answers every problem of the stage-3 slice ``mining_k`` times (paper: once, greedy, at
   most 400 new tokens) with the evaluation prompt and its stop rule. A problem is a *persistent failure* when its
   fraction of correct answers is <= ``failure_threshold`` (default 0: never right). They are written to
   ``stage3/failures.jsonl``. Answers are compared as numbers (the authors compared strings, so their failures
   include e.g. ``42.00`` for 42). The model that mines is the one the stage trains, loaded once
   (:func:`load_policy`): with ``vllm.enabled`` on unsloth its engine generates (the stage-2 adapter as a LoRA
   request) and then serves GRPO's rollouts, so the process builds one engine, as a GPU with room for one needs.
2. Rewriting: the prompt shows the problem and the teacher's solution (its thinking part included, as theirs) and
   asks for a much shorter rewrite ending in the answer label; GRPO with correctness + compression-ratio reward
   (response length / teacher length). With ``stage3.prompt: question`` (not in the paper) the prompt is the
   evaluation prompt, the question alone, with the same reward (the ratio is still taken against the teacher's
   solution): the student practises the mined problems where it is measured instead of rewriting a solution it is
   shown (docs/proof/README.md, "Stage 3, diagnosed").
No failures: the stage records that and hands the stage-2 weights on unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from recipe import dist
from recipe.config.core import Config
from recipe.data import prompts
from recipe.data.answers import answers_match, extract_answer
from recipe.data.gsm8k import Problem
from recipe.data.stopping import resolve_stop_rule
from recipe.fsio import read_jsonl, write_jsonl
from recipe.models import generation
from recipe.models import model as model_mod
from recipe.models.generation import STOP_TEXTS, to_device
from recipe.train.grpo import refuse_base_reference, train_grpo
from recipe.train.rows import add_token_lengths, teacher_fields, train_problems

log = logging.getLogger("recipe")
FAILURES = "failures.jsonl"


def load_policy(cfg: Config, init_from: str | None) -> tuple[Any, Any]:
    """The model stage 3 mines with and then trains (``for_grpo``: with ``vllm.enabled`` on unsloth it carries the
    engine GRPO generates with), and its tokenizer."""
    return model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed, for_grpo=True,
                          vllm_cfg=cfg.vllm)


def mine_failures(cfg: Config, problems: list[Problem], init_from: str | None, model: Any,
                  tokenizer: Any) -> list[dict]:
    """Answer each problem ``mining_k`` times with the stage-2 model (``model``, loaded from ``init_from`` by
    :func:`load_policy`); keep the persistent failures. Generation goes through the model's vLLM engine when it has
    one (``init_from``'s adapter as a LoRA request), else HF generate in eval mode; the model's mode is restored."""
    st = cfg.stage3
    if st.mining_limit > 0:
        problems = problems[: st.mining_limit]
    model = to_device(model, cfg.run.device)
    mine = dist.shard(problems)  # several processes: each answers every world_size-th problem
    prompt_texts = [prompts.eval_prompt(p.question, answer_label=cfg.data.answer_label) for _, p in mine]
    training = model.training
    model.eval()  # HF generate: no dropout (the vLLM engine does not read the module's mode)
    try:
        with tqdm(total=len(mine), desc="stage 3: mining failures", unit="problem", disable=not dist.is_main()) as bar:
            # the evaluation prompt's stop rule
            generations = generation.generate(model, tokenizer, prompt_texts,
                                              adapter=model_mod.adapter_folder(init_from),
                                              max_new_tokens=st.mining_max_new_tokens, batch_size=st.mining_batch_size,
                                              temperature=st.mining_temperature, num_return_sequences=st.mining_k,
                                              seed=cfg.run.seed, stop_texts=STOP_TEXTS,
                                              answer_label=cfg.data.answer_label, progress=bar.update,
                                              stop_rule=resolve_stop_rule(cfg.eval.stop_rule, "paper"))
    finally:
        model.train(training)
    failures = []
    for (index, problem), gens in zip(mine, generations):
        correct = [answers_match(extract_answer(g.text), problem.answer) for g in gens]
        fraction = sum(correct) / len(correct)
        if fraction <= st.failure_threshold:
            failures.append((index, {**problem.to_dict(), "correct_fraction": fraction,
                                     "student_outputs": [g.text for g in gens]}))
    return dist.gather_shards(failures)  # every rank's failures, in the slice's order


def read_failures(path: Path) -> list[dict] | None:
    """The failures mining wrote before an interruption, or None (with a warning naming the line) when the file is
    damaged: it is the run's own output, so mining is simply done again."""
    try:
        failures = read_jsonl(path)
        for line_no, row in enumerate(failures, start=1):
            try:
                Problem.from_dict(row)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path}: line {line_no} is not a mined failure ({type(exc).__name__}: "
                                 f"{str(exc)[:80]})") from None
    except (OSError, ValueError) as exc:
        log.warning("stage 3: %s; mining the failures again", str(exc)[:300])
        return None
    return failures


def build_rows(problems: Sequence[Problem], answer_label: str = prompts.ANSWER_LABEL,
               prompt: str = "rewrite") -> list[dict[str, Any]]:
    """Internalisation (GRPO). ``prompt="rewrite"`` (the paper): the teacher solution is shown and a much shorter
    rewrite is asked for; ``"question"``: the evaluation prompt, the question alone. Either way the row carries the
    teacher's solution and lengths, which the compression-ratio reward divides by.

    >>> row = build_rows([Problem("t-0", "Q?", ("a = 1.",), "1")])[0]
    >>> row["teacher_solution"], row["teacher_steps"]
    ('Step 1: a = 1.\\nFinal Answer: 1', 1)
    >>> build_rows([Problem("t-0", "Q?", ("a = 1.",), "1")], prompt="question")[0]["prompt"] == prompts.eval_prompt("Q?")
    True
    """
    rows = []
    for problem in problems:
        solution, fields = teacher_fields(problem, answer_label)
        if prompt == "question":
            text = prompts.eval_prompt(problem.question, answer_label)
        else:
            text = prompts.stage3_prompt(problem.question, solution, answer_label)
        rows.append({**fields, "prompt": text, "teacher_solution": solution})
    return rows


def run(cfg: Config, entry_dir: Path, init_from: str | None = None) -> dict:
    refuse_base_reference(cfg, "stage3", init_from)  # before mining: the stage could not train anyway
    entry_dir.mkdir(parents=True, exist_ok=True)
    problems = train_problems(cfg, "stage3")
    failures_path = entry_dir / FAILURES
    failures = read_failures(failures_path) if failures_path.is_file() else None  # mined before an interruption
    policy = None  # (model, tokenizer): loaded once, to mine and then to train
    if failures is None:
        policy = load_policy(cfg, init_from)
        failures = mine_failures(cfg, problems, init_from, *policy)
        dist.only_main(write_jsonl, failures_path, failures)  # then a barrier: every rank sees the file
    mined = {"mined": len(problems) if cfg.stage3.mining_limit <= 0 else min(len(problems), cfg.stage3.mining_limit),
             "failures": len(failures)}
    log.info("stage 3: %d persistent failures out of %d problems", mined["failures"], mined["mined"])
    if not failures:
        del policy
        model_mod.release_engine()  # the engine mining used (none held: nothing to do)
        return {"output": init_from, "data": {"n_rows": 0}, "metrics": {**mined, "skipped": "no failures"},
                "trainer_config": {}}

    rows = build_rows([Problem.from_dict(f) for f in failures], answer_label=cfg.data.answer_label,
                      prompt=cfg.stage3.prompt)
    model, tokenizer = policy or load_policy(cfg, init_from)
    del policy
    result = train_grpo(cfg, "stage3", model, tokenizer, add_token_lengths(rows, tokenizer), entry_dir,
                        init_from=init_from)
    result["metrics"] = {**mined, **result["metrics"]}
    return result
