"""The SFT-distillation baseline: plain SFT on the FULL teacher rationales, no curriculum.

Same problems as the curriculum trains on (the stage-1 and stage-2 slices together), same trainer budget as stage 1
(:func:`recipe.config.sft_args`), same LoRA settings. The prompt is the evaluation prompt itself, the completion the
ordered teacher solution, so the baseline is trained directly for the evaluation format. Written into the run
directory::

    baseline-sft/trainer/        TRL checkpoints (resume points)
    baseline-sft/model/          finished weights
    baseline-sft/baseline.json   config it ran with, data hash, training metrics
    eval/sft-baseline/           results.json + generations.jsonl, a row of report.md
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from recipe import config as config_mod
from recipe import prompts
from recipe.config import Config
from recipe.evaluate import EvalError, evaluate_stage
from recipe.fsio import read_json, write_json, write_text

log = logging.getLogger("recipe")

BASELINE_DIR = "baseline-sft"
EVAL_NAME = "sft-baseline"


def baseline_rows(problems, answer_label: str = prompts.ANSWER_LABEL) -> list[dict]:
    """Prompt = the evaluation prompt; completion = newline + the full ordered teacher solution.

    >>> from recipe.data import Problem
    >>> row = baseline_rows([Problem("train-0", "Q?", ("a = 1.", "b = a + 1 = 2."), "2")])[0]
    >>> row["prompt"].endswith("Reasoning:"), row["completion"]
    (True, '\\nStep 1: a = 1.\\nStep 2: b = a + 1 = 2.\\nFinal Answer: 2')
    """
    return [{"id": p.id, "prompt": prompts.eval_prompt(p.question, answer_label),
             "completion": prompts.COMPLETION_PREFIX + prompts.render_solution(p.steps, p.answer, answer_label),
             "answer": p.answer}
            for p in problems]


def baseline_config(cfg: Config) -> dict:
    """The part of the config that determines the baseline's weights: the same as stage 1's (model, data, stage-1
    budget, seed)."""
    from recipe.curriculum import stage_config

    return stage_config(cfg, "stage1")


def _train(cfg: Config, out: Path, rows: list[dict]) -> dict:
    from recipe import model as model_mod
    from recipe.stages.common import train_sft

    model, tokenizer = model_mod.load(cfg.model, init_from=None, trainable=True, seed=cfg.run.seed)
    return train_sft(cfg, model, tokenizer, rows, out)


def run_sft_baseline(cfg: Config) -> list[Path]:
    """Train (unless ``baseline-sft/model`` exists), evaluate into ``eval/sft-baseline``, rebuild the report."""
    from recipe.report import build_report
    from recipe.stages.common import MODEL_DIR, train_problems

    run_dir = Path(cfg.run.output_dir).expanduser()
    out = run_dir / BASELINE_DIR
    record_path = out / "baseline.json"
    wanted = baseline_config(cfg)
    if not (run_dir / "config.yaml").is_file():  # a fresh folder: make it usable with `cotrecipe eval --run`
        write_text(run_dir / "config.yaml", config_mod.dump_yaml(cfg))
    if (out / MODEL_DIR).is_dir() and record_path.is_file():
        record = read_json(record_path)
        changed = config_mod.diff_keys(record.get("config", {}), wanted)
        if changed:
            raise EvalError(f"{out} was trained with a different config; changed keys: {', '.join(changed)}. "
                            f"Delete {out} to retrain, or restore those keys")
        log.info("baseline: %s exists; training skipped", out / MODEL_DIR)
    else:
        problems = train_problems(cfg, "stage1") + train_problems(cfg, "stage2")
        rows = baseline_rows(problems, cfg.data.answer_label)
        log.info("baseline: SFT on %d full teacher rationales (stage-1 budget: max_steps=%d, epochs=%g)", len(rows),
                 cfg.stage1.max_steps, cfg.stage1.num_train_epochs)
        record = {"config": wanted, **_train(cfg, out, rows),
                  "ended": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(record_path, record)
    evaluate_stage(cfg, run_dir, EVAL_NAME, str(out / MODEL_DIR), record.get("ended"))
    return build_report(run_dir)
