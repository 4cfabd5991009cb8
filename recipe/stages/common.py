"""What the three stages share: the train slice, reward objects, checkpoints, metrics, the finished-model folder."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from pathlib import Path

from recipe import data as data_mod
from recipe.config import Config, GRPOStageConfig

log = logging.getLogger("recipe")

TRAINER_DIR = "trainer"  # TRL output_dir inside a stage folder: checkpoints and logs
MODEL_DIR = "model"  # the stage's finished weights (adapter or full model), written once, atomically


def train_problems(cfg: Config, stage: str) -> list[data_mod.Problem]:
    """The configured ``[start, end)`` slice of the train split for ``stage``."""
    problems, report = data_mod.load_gsm8k(cfg.data.source, split="train", strict=cfg.data.strict,
                                           annotations=cfg.data.annotations)
    if report.n_bad:
        log.warning(report.summary())
    start, end = getattr(cfg.data, f"{stage}_rows")
    problems = data_mod.slice_rows(problems, start, end)
    if cfg.data.teacher != "gold":
        from recipe.teacher import apply_teacher

        problems, replaced = apply_teacher(problems, str(Path(cfg.data.teacher).expanduser()))
        log.info("%s: teacher rationales from %s for %d of %d problems (the rest keep gold)", stage,
                 cfg.data.teacher, replaced, len(problems))
    return problems


def make_rewards(st: GRPOStageConfig) -> list:
    """Reward objects from the config; the stage's ``length_unit`` fills any reward that takes a unit."""
    from recipe.rewards import build_reward

    rewards = []
    for spec in st.rewards:
        params = dict(spec.params)
        reward = build_reward(spec.name, **params)
        sig = inspect.signature(type(reward).__init__).parameters
        if "unit" in sig and "unit" not in params:
            reward = build_reward(spec.name, **params, unit=st.length_unit)
        rewards.append(reward)
    return rewards


def last_checkpoint(trainer_dir: Path) -> str | None:
    """The newest *complete* TRL checkpoint (its trainer_state.json is written last), or None."""
    if not trainer_dir.is_dir():
        return None
    done = [p for p in trainer_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.split("-")[-1])))


def summarise_log(log_history: list[dict]) -> dict:
    """First/last values of the interesting logged metrics (loss, reward, completion length)."""
    keys = ("loss", "reward", "completions/mean_length", "mean_token_accuracy", "entropy")
    out: dict = {}
    for key in keys:
        values = [row[key] for row in log_history if key in row]
        if values:
            out[f"{key}_first"] = values[0]
            out[f"{key}_last"] = values[-1]
    rewards = {k for row in log_history for k in row if k.startswith("rewards/") and k.endswith("/mean")}
    for key in sorted(rewards):
        values = [row[key] for row in log_history if key in row]
        out[f"{key}_last"] = values[-1]
    steps = [row.get("step") for row in log_history if "step" in row]
    if steps:
        out["steps"] = max(steps)
    train = [row for row in log_history if "train_runtime" in row]
    if train:
        out["train_runtime_s"] = train[-1]["train_runtime"]
    return out


def trainer_config_summary(args) -> dict:
    """The effective trainer settings worth recording in the manifest."""
    keys = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "warmup_steps", "lr_scheduler_type", "weight_decay", "optim", "seed",
            "bf16", "fp16", "use_cpu", "max_length", "completion_only_loss", "num_generations",
            "max_completion_length", "temperature", "top_p", "beta", "epsilon", "loss_type", "scale_rewards",
            "num_iterations", "reward_weights", "use_vllm")
    return {k: getattr(args, k) for k in keys if hasattr(args, k)}


def record_rows(rows: list[dict]) -> dict:
    """Dataset facts for the manifest: size and a content hash (resume must see the same data)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
    return {"n_rows": len(rows), "sha256": digest.hexdigest()}


def train_and_save(trainer, tokenizer, stage_dir: Path, rows: list[dict], args) -> dict:
    """Train (resuming from the newest complete checkpoint), save the weights atomically, return the stage record."""
    from recipe import model as model_mod
    from recipe.fsio import write_json

    resume = last_checkpoint(stage_dir / TRAINER_DIR)
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    model_mod.save(trainer.model, tokenizer, stage_dir / MODEL_DIR)
    write_json(stage_dir / "trainer_log.json", trainer.state.log_history)
    return {
        "output": str(stage_dir / MODEL_DIR),
        "resumed_from": resume,
        "data": record_rows(rows),
        "metrics": summarise_log(trainer.state.log_history),
        "trainer_config": trainer_config_summary(args),
    }


def train_sft(cfg: Config, model, tokenizer, rows: list[dict], stage_dir: Path) -> dict:
    """TRL SFTTrainer on the rows' prompt/completion pairs (loss on the completion), then :func:`train_and_save`.
    Used by stage 1 and the SFT baseline, both with the stage-1 budget."""
    from trl import SFTTrainer

    from recipe import model as model_mod
    from recipe.config import sft_args

    args = sft_args(cfg, str(stage_dir / TRAINER_DIR))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data_mod.to_dataset([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]),
        processing_class=tokenizer,
        peft_config=model_mod.trainer_peft_config(model, cfg.model),
    )
    return train_and_save(trainer, tokenizer, stage_dir, rows, args)


def train_grpo(cfg: Config, stage: str, model, tokenizer, rows: list[dict], stage_dir: Path) -> dict:
    """TRL GRPOTrainer on ``rows`` with the stage's rewards (stages 2 and 3), then :func:`train_and_save`."""
    from trl import GRPOTrainer

    from recipe import model as model_mod
    from recipe.config import grpo_args

    args = grpo_args(cfg, stage, str(stage_dir / TRAINER_DIR))
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=make_rewards(getattr(cfg, stage)),
        args=args,
        train_dataset=data_mod.to_dataset(rows),
        processing_class=tokenizer,
        peft_config=model_mod.trainer_peft_config(model, cfg.model),
    )
    try:
        return train_and_save(trainer, tokenizer, stage_dir, rows, args)
    finally:
        model_mod.release_engine()  # the GRPO stage's vLLM engine (if any) goes before the next stage or eval
