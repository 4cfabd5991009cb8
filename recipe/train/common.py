"""What the stages share: the train slice, the teacher columns of a row, reward objects, the trainers, checkpoints,
metrics and the finished-model folder. A stage module reads rows -> model -> trainer -> result and calls in here."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trl import GRPOTrainer, SFTTrainer

from recipe import dist
from recipe.config.core import Config, GRPOStageConfig
from recipe.data import gsm8k as data_mod
from recipe.errors import ConfigError, Interrupted, RunError
from recipe.fsio import write_json
from recipe.models import model as model_mod
from recipe.models.integrity import checkpoint_problem
from recipe.rewards import CutAfterAnswer, build_reward, reward_params
from recipe.store.rundir import MODEL_DIR, TRAINER_DIR, TRAINER_LOG
from recipe.teacher.format import render_target
from recipe.teacher.rationales import apply_teacher
from recipe.train import objective, sft_tokenise
from recipe.train.epochs import redraw_each_epoch
from recipe.train.trl_args import grpo_args, sft_args

log = logging.getLogger("recipe")

# The seam for extra TrainerCallbacks (logging, profiling, fault injection): "package.module:function", called with
# the entry's name, returns the callbacks to add. Read in the process that trains, so a run's child processes
# inherit it. The test suite's SIGKILL-right-after-a-checkpoint lives in tests/fault_injection.py.
CALLBACKS_ENV = "COTRECIPE_TRAINER_CALLBACKS"

RowsForEpoch = Callable[[int], list[dict]]  # epoch -> that epoch's rows (stage 1's shuffles/masks, stage 2's masks)


# --------------------------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------------------------


def train_problems(cfg: Config, stage: str) -> list[data_mod.Problem]:
    """The configured ``[start, end)`` slice of the train split for ``stage``, with the configured teacher."""
    problems, report = data_mod.load_gsm8k(cfg.data.source, split="train", strict=cfg.data.strict,
                                           annotations=cfg.data.annotations)
    if report.n_bad:
        log.warning(report.summary())
    start, end = getattr(cfg.data, f"{stage}_rows")
    problems = data_mod.slice_rows(problems, start, end)
    if cfg.data.teacher != "gold":
        latex = cfg.data.teacher_latex if stage == "stage1" else "keep"  # the authors' [math] swap: stage 1 only
        problems, replaced = apply_teacher(problems, str(Path(cfg.data.teacher).expanduser()), latex)
        log.info("%s: teacher rationales from %s for %d of %d problems (the rest keep gold)", stage,
                 cfg.data.teacher, replaced, len(problems))
    return problems


def teacher_fields(problem: data_mod.Problem, answer_label: str,
                   with_thinking: bool = True) -> tuple[str, dict[str, Any]]:
    """The rendered teacher solution and the row columns every stage carries (the rewards read them). The solution
    is the authors' three-part target (:func:`recipe.teacher.format.render_target`: the teacher's thinking part
    first when it has one, then the steps, then the answer line); ``with_thinking=False`` leaves the thinking out.
    ``teacher_steps`` counts the real steps only."""
    thinking = problem.thinking if with_thinking else ""
    solution = render_target(problem.steps, problem.answer, thinking, answer_label)
    fields = {
        "id": problem.id,
        "answer": problem.answer,
        "teacher_steps": len(problem.steps),
        "teacher_words": len(solution.split()),
    }
    return solution, fields


def question_only_picks(n: int, seed: int, share: float) -> list[bool]:
    """Which of ``n`` rows show the question alone (``stageN.question_only_share``, not in the paper), each with
    chance ``share``. Drawn from a generator of their own (seeded from ``seed``), so a stage's shuffles and masks are
    the same at any share, and stages 1 and 2 pick the same way for the same seed.

    >>> question_only_picks(4, seed=0, share=0.0), question_only_picks(4, seed=0, share=1.0)
    ([False, False, False, False], [True, True, True, True])
    """
    rng = random.Random(f"question-only-{seed}")
    return [rng.random() < share for _ in range(n)]


def add_token_lengths(rows: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """New rows with ``teacher_tokens``: the teacher solution's length in ``tokenizer`` (``teacher_solution``,
    or ``completion`` for stage-1 rows), tokenised in one batched call without special tokens.

    >>> words = lambda texts, add_special_tokens: {"input_ids": [t.split() for t in texts]}
    >>> add_token_lengths([{"id": "t-0", "teacher_solution": "Step 1: a = 1.\\nFinal Answer: 1"}], words)
    [{'id': 't-0', 'teacher_solution': 'Step 1: a = 1.\\nFinal Answer: 1', 'teacher_tokens': 8}]
    """
    texts = []
    for row in rows:
        text = row["teacher_solution"] if "teacher_solution" in row else row.get("completion")
        if not isinstance(text, str):
            raise KeyError(f"row {row.get('id')!r} has neither 'teacher_solution' nor 'completion'")
        texts.append(text)
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [{**row, "teacher_tokens": len(tok)} for row, tok in zip(rows, ids, strict=True)]


def fingerprint_rows(rows: list[dict]) -> dict:
    """Dataset facts for the manifest: size and a content hash (resume must see the same data)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
    return {"n_rows": len(rows), "sha256": digest.hexdigest()}


# --------------------------------------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------------------------------------


def make_rewards(st: GRPOStageConfig, answer_label: str, tokenizer: Any = None) -> list:
    """Reward objects from the config. Parameters a spec leaves unset are filled from the run: ``unit`` from the
    stage's ``length_unit``, ``answer_label`` from ``data.answer_label``. With the stage's ``cut_after_answer`` (on by
    default) each reward reads a completion only up to its first answer line (:class:`recipe.rewards.CutAfterAnswer`;
    ``tokenizer`` recounts the tokens of a cut completion)."""
    rewards = []
    for spec in st.rewards:
        accepted = reward_params(spec.name)
        defaults = {"unit": st.length_unit, "answer_label": answer_label}
        params = {**{k: v for k, v in defaults.items() if k in accepted}, **spec.params}
        reward = build_reward(spec.name, **params)
        cut_label = params.get("answer_label", answer_label)  # cut where this reward reads the answer
        rewards.append(CutAfterAnswer(reward, cut_label, tokenizer) if st.cut_after_answer else reward)
    return rewards


# --------------------------------------------------------------------------------------------------------------------
# Trainers
# --------------------------------------------------------------------------------------------------------------------


def _step(path: Path) -> int:
    tail = path.name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def last_checkpoint(trainer_dir: Path) -> str | None:
    """The newest *intact* TRL checkpoint, or None. A checkpoint whose trainer_state.json (written last) is missing
    is unfinished and ignored; one whose state, weights, optimizer, scheduler or rng state does not load
    (:func:`recipe.models.integrity.checkpoint_problem`) is renamed ``.damaged-checkpoint-N`` (out of TRL's sight) with a
    warning, and the previous intact one is used."""
    if not trainer_dir.is_dir():
        return None
    found = sorted((p for p in trainer_dir.glob("checkpoint-*") if p.is_dir() and _step(p) >= 0), key=_step,
                   reverse=True)
    for path in found:
        if not (path / "trainer_state.json").is_file():
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        aside = path.with_name(f".damaged-{path.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)
        log.warning("checkpoint %s is damaged (%s): moved to %s; falling back to the previous intact checkpoint",
                    path, problem, aside.name)
    return None


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
    """The effective trainer settings worth recording in the manifest. Pass the *trainer's* ``args`` (read back
    after construction): Unsloth's patched configs may change values on the way in (see ``recipe.models.unsloth_backend``)."""
    keys = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "warmup_steps", "lr_scheduler_type", "weight_decay", "optim", "seed",
            "bf16", "fp16", "use_cpu", "max_length", "completion_only_loss", "num_generations",
            "max_completion_length", "temperature", "top_p", "beta", "epsilon", "epsilon_high",
            "mask_truncated_completions", "vllm_importance_sampling_correction", "loss_type", "scale_rewards",
            "num_iterations", "reward_weights", "use_vllm")
    return {k: getattr(args, k) for k in keys if hasattr(args, k)}


def extra_callbacks(entry: str) -> list:
    """The callbacks :data:`CALLBACKS_ENV` names for ``entry`` (none when it is unset); a bad value is a one-line
    :class:`RunError` naming the variable."""
    spec = os.environ.get(CALLBACKS_ENV, "").strip()
    if not spec:
        return []
    module, sep, attr = spec.partition(":")
    if not (sep and module and attr):
        raise RunError(f"{CALLBACKS_ENV}={spec!r}: expected 'package.module:function'")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise RunError(f"{CALLBACKS_ENV}={spec!r}: {exc}") from exc
    return list(factory(entry))


def stopped_at(entry: str, state: Any, trainer_dir: Path) -> str:
    """Where Ctrl-C stopped ``entry``'s training, in words: its step (TRL's ``TrainerState``) and the newest saved
    checkpoint (its ``trainer_state.json`` is written last), which the next run resumes from."""
    saved = [p for p in trainer_dir.glob("checkpoint-*") if _step(p) >= 0 and (p / "trainer_state.json").is_file()]
    newest = max(saved, key=_step, default=None)
    keep = (f"the same command resumes it from {newest.name}" if newest is not None else
            "no checkpoint was saved yet: the same command starts it again")
    return f"{entry} at step {state.global_step} of {state.max_steps}; {keep}"


def train_and_save(trainer, tokenizer, stage_dir: Path, rows: list[dict]) -> dict:
    """Train (resuming from the newest complete checkpoint), save the weights atomically, return the entry record."""
    resume = last_checkpoint(stage_dir / TRAINER_DIR)
    if resume:
        log.info("resuming from %s", resume)
    for callback in extra_callbacks(stage_dir.name):
        trainer.add_callback(callback)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt as exc:
        raise Interrupted(stopped_at(stage_dir.name, trainer.state, stage_dir / TRAINER_DIR)) from exc
    state_dict = dist.full_state_dict(trainer)  # ZeRO-3 only: a collective, so every rank calls it
    if dist.is_main():
        model_mod.save(trainer.model, tokenizer, stage_dir / MODEL_DIR, state_dict=state_dict)
        write_json(stage_dir / TRAINER_LOG, trainer.state.log_history)
    dist.barrier()  # the next entry (on every rank) loads the weights rank 0 just wrote
    return {
        "output": str(stage_dir / MODEL_DIR),
        "resumed_from": resume,
        "data": fingerprint_rows(rows),
        "metrics": summarise_log(trainer.state.log_history),
        "trainer_config": trainer_config_summary(trainer.args),  # what the trainer holds, not what we passed
        "weights": model_mod.weights_record(trainer.model),
    }


def sft_dataset(rows: Sequence[Mapping[str, Any]], tokenizer: Any, args) -> Any:
    """The rows' prompt/completion pairs as SFTTrainer's processed dataset for ``args``
    (:func:`recipe.train.sft_tokenise.tokenise`: the trainer's own tokenisation, done here), rows dropped for length
    left out. The trainer takes it as it is (it has ``input_ids`` and ``labels``), bar its ``shuffle_dataset``."""
    return data_mod.to_dataset(sft_tokenise.tokenise(rows, tokenizer, args))


def build_sft_trainer(cfg: Config, model, tokenizer, rows: list[dict], stage_dir: Path,
                      rows_for_epoch: RowsForEpoch | None = None, section: str = "stage1") -> SFTTrainer:
    """TRL SFTTrainer on the rows' prompt/completion pairs (loss on the completion), tokenised as the trainer would
    (:func:`sft_dataset`); rows dropped for length are reported (:func:`check_length_drops`). With ``rows_for_epoch``
    (epoch -> rows; epoch 0 must give ``rows``) every epoch trains on its own rows, tokenised the same way and, with
    ``shuffle_dataset``, shuffled as the trainer shuffled epoch 0's (:func:`recipe.train.epochs.redraw_each_epoch`)."""
    args = sft_args(cfg, str(stage_dir / TRAINER_DIR), section)
    first = sft_dataset(rows, tokenizer, args)
    check_length_drops(cfg, len(rows), len(first), [r["prompt"] for r in rows], tokenizer, section)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=first,
        processing_class=tokenizer,
        peft_config=model_mod.trainer_peft_config(model, cfg.model),
    )
    if rows_for_epoch is not None:
        redraw_each_epoch(trainer, lambda epoch: sft_tokenise.shuffled_like_trl(
            sft_dataset(rows_for_epoch(epoch), tokenizer, args), args))
    return trainer


def train_sft(cfg: Config, model, tokenizer, rows: list[dict], stage_dir: Path,
              rows_for_epoch: RowsForEpoch | None = None, section: str = "stage1") -> dict:
    """:func:`build_sft_trainer`, then :func:`train_and_save`. Used by stage 1 and the SFT baseline, both with the
    stage-1 budget, and by the warm-up (``section``)."""
    trainer = build_sft_trainer(cfg, model, tokenizer, rows, stage_dir, rows_for_epoch, section)
    return train_and_save(trainer, tokenizer, stage_dir, rows)


def check_length_drops(cfg: Config, n_rows: int, n_kept: int, prompts: Sequence[str], tokenizer: Any,
                       section: str = "stage1") -> None:
    """A row whose prompt alone fills ``max_length`` (``min(<section>.max_length, model.max_seq_length)``; no completion
    token left to learn) is dropped, by TRL's SFTTrainer rule (:func:`recipe.train.sft_tokenise.tokenise`): say how
    many went, and when none is left, stop with the shortest prompt's length and the keys to raise."""
    dropped = n_rows - n_kept
    if dropped <= 0:
        return
    values = {f"{section}.max_length": getattr(cfg, section).max_length, "model.max_seq_length": cfg.model.max_seq_length}
    limit = min(values.values())
    shortest = min(len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"])
    low = [k for k, v in values.items() if v <= shortest] or [k for k, v in values.items() if v == limit]
    what = (f"{dropped} of {n_rows} training rows were dropped for length: the prompt alone fills max_length {limit} "
            f"tokens (the shortest prompt is {shortest} tokens); raise "
            f"{' and '.join(f'{k} (now {values[k]})' for k in low)} above {shortest}")
    if n_kept == 0:
        raise data_mod.DataError(f"no training row left: {what}")
    log.warning(what)


def train_grpo(cfg: Config, stage: str, model, tokenizer, rows: list[dict], stage_dir: Path,
               rows_for_epoch: RowsForEpoch | None = None, init_from: str | None = None) -> dict:
    """TRL GRPOTrainer on ``rows`` with the stage's rewards (stages 2 and 3), then :func:`train_and_save`. With
    ``rows_for_epoch`` (epoch -> rows; epoch 0 must give ``rows``) every epoch reads its own rows. ``init_from``:
    what the model was loaded from; the record's ``kl_reference`` is read from the built trainer
    (:mod:`recipe.train.objective`), which refuses a base-model reference for a stage that starts from an adapter."""
    args = grpo_args(cfg, stage, str(stage_dir / TRAINER_DIR))
    try:  # the GRPO stage's vLLM engine (if any) goes before the next stage or eval, also when building fails
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=make_rewards(getattr(cfg, stage), cfg.data.answer_label, tokenizer),
            args=args,
            train_dataset=data_mod.to_dataset(rows),
            processing_class=tokenizer,
            peft_config=model_mod.trainer_peft_config(model, cfg.model),
        )
        reference = objective.kl_reference(trainer, objective.starts_from_adapter(init_from))
        if reference == objective.BASE_NOT_START:
            raise ConfigError(f"{stage}.beta={args.beta}: this trainer's KL reference is the base model with adapters "
                              f"disabled, not this stage's starting adapter ({init_from}); set {stage}.beta=0")
        if rows_for_epoch is not None:
            redraw_each_epoch(trainer, lambda epoch: data_mod.to_dataset(rows_for_epoch(epoch)))
        return {**train_and_save(trainer, tokenizer, stage_dir, rows), "kl_reference": reference}
    finally:
        model_mod.release_engine()
