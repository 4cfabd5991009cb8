"""What one training of an entry does with either trainer kind (:mod:`.sft`, :mod:`.grpo`): the TRL arguments both
kinds share, extra callbacks, resuming from the newest intact checkpoint, and the finished-model folder with the
entry's record (weights, trainer log, metrics, the effective trainer settings)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, get_scheduler

from recipe import dist
from recipe.config.core import check
from recipe.config.schema import Config, TrainConfig
from recipe.errors import ConfigError, Interrupted
from recipe.fsio import write_json
from recipe.models import model as model_mod
from recipe.models.devices import check_device
from recipe.models.integrity import checkpoint_problem
from recipe.models.precision import for_device as precision_for
from recipe.store.rundir import MODEL_DIR, TRAINER_DIR, TRAINER_LOG

log = logging.getLogger("recipe")

CallbackFactory = Callable[[str], list]  # the entry's name -> TrainerCallbacks to add to its trainer

FACTORIES: list[CallbackFactory] = []  # what install_callbacks added, in order


def install_callbacks(factory: CallbackFactory) -> None:
    """Add ``factory``'s callbacks to every trainer this process builds from now on (logging, profiling, fault
    injection); it is called with the entry's name. A process that wants them installs them before it trains: the
    test suite's entry module (``python -m tests.fault_injection``) does so, then calls the CLI or the run child."""
    FACTORIES.append(factory)


def extra_callbacks(entry: str) -> list:
    """The callbacks the installed factories (:func:`install_callbacks`) give for ``entry``; none by default."""
    return [callback for factory in FACTORIES for callback in factory(entry)]


def common_args(cfg: Config, st: TrainConfig, output_dir: str, for_check: bool = False) -> dict:
    """The arguments of both TRL configs: the section's own TRL keys as the config gives them, and what the recipe
    decides itself (output folder, seed, device, precision, checkpointing, the data layout);
    :data:`recipe.config.schema.RECIPE_SETS` refuses those keys in a section. ``for_check``: built only so that TRL
    checks the section's keys (on the CPU, precision left to TRL), in a process that must not set up a GPU."""
    if for_check:
        use_cpu, flags = True, {}
    else:
        check_device(cfg.run.device)  # run.device=cuda without CUDA is refused, never trained on the CPU
        use_cpu = cfg.run.device == "cpu" or not torch.cuda.is_available()
        # the same decision model.load follows (recipe/models/precision.py)
        flags = precision_for(cfg.model.dtype, cfg.run.device, cfg.model.cpu_autocast).trainer_flags()
    return dict(
        **st.trl_keys(),
        output_dir=output_dir,
        save_strategy="steps",
        seed=cfg.run.seed,
        report_to=[r for r in cfg.run.report_to if r != "none"] or "none",
        use_cpu=use_cpu,
        **flags,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        dataloader_num_workers=0,
        disable_tqdm=False,
        # several processes (DDP): LoRA and full fine-tuning use every trainable weight, so skip DDP's unused-weight scan
        ddp_find_unused_parameters=False if dist.is_distributed() else None,
        **dist.trainer_kwargs(use_cpu),
    )


def built(trl_class: Any, section: str, st: TrainConfig, kwargs: dict) -> Any:
    """``trl_class(**kwargs)``; when TRL refuses, one :class:`~recipe.errors.ConfigError` line naming the section's key
    it refuses: the first whose value, left to TRL's default, makes TRL accept the rest (else the section, with TRL's
    words). First a key whose field lists its ``choices`` (for TRL's command line) is checked against them: transformers
    reads some only once a trainer runs (``log_level``: a KeyError when the trainer is built)."""
    name = getattr(trl_class, "__name__", "TRL")
    fields = getattr(trl_class, "__dataclass_fields__", {})
    for key, value in st.trl_keys().items():
        choices = list(fields[key].metadata.get("choices") or ()) if key in fields else []
        check(not choices or value is None or value in choices, f"{section}.{key}", value,
              f"TRL's {name}: one of {', '.join(map(str, choices))}")
    try:
        return _made(trl_class, kwargs)
    except (ValueError, TypeError, ImportError) as exc:  # ImportError: deepspeed named, not installed
        refusal = exc
    for key in st.trl_keys():
        try:
            _made(trl_class, {k: v for k, v in kwargs.items() if k != key})
        except (ValueError, TypeError, ImportError):
            continue
        check(False, f"{section}.{key}", kwargs[key], f"TRL's {name}: {_one_line(refusal)}")
    raise ConfigError(f"'{section}': TRL's {name} refuses it: {_one_line(refusal)}")


# torch's own optimizers, which a trainer makes from its arguments alone (others need the model or another package)
_TORCH_OPTIMS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop")


def _made(trl_class: Any, kwargs: dict) -> Any:
    """``trl_class(**kwargs)``, and for torch's own optimizers the optimizer and learning-rate schedule a trainer
    makes from it, made once on a stand-in weight: torch and transformers check the betas, ``adam_epsilon``,
    ``optim_args`` and ``lr_scheduler_kwargs`` only there, when training starts."""
    args = trl_class(**kwargs)
    if getattr(args, "optim", None) in _TORCH_OPTIMS:
        try:
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
            optimizer = optimizer_cls([torch.nn.Parameter(torch.zeros(1))], **optimizer_kwargs)
            get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(10),
                          num_training_steps=10, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"its optimizer or learning-rate schedule: {exc}") from exc
    return args


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 600 else text[:597] + "..."


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


def stopped_at(entry: str, state: Any, trainer_dir: Path) -> str:
    """Where Ctrl-C stopped ``entry``'s training, in words: its step (TRL's ``TrainerState``) and the newest saved
    checkpoint (its ``trainer_state.json`` is written last), which the next run resumes from."""
    saved = [p for p in trainer_dir.glob("checkpoint-*") if _step(p) >= 0 and (p / "trainer_state.json").is_file()]
    newest = max(saved, key=_step, default=None)
    keep = (f"the same command resumes it from {newest.name}" if newest is not None else
            "no checkpoint was saved yet: the same command starts it again")
    return f"{entry} at step {state.global_step} of {state.max_steps}; {keep}"


def fingerprint_rows(rows: list[dict]) -> dict:
    """Dataset facts for the manifest: size and a content hash (resume must see the same data)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
    return {"n_rows": len(rows), "sha256": digest.hexdigest()}


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


def train_and_save(trainer, tokenizer, entry_dir: Path, rows: list[dict]) -> dict:
    """Train (resuming from the newest complete checkpoint), save the weights atomically, return the entry record;
    ``rows`` are the ones the record fingerprints."""
    resume = last_checkpoint(entry_dir / TRAINER_DIR)
    if resume:
        log.info("resuming from %s", resume)
    for callback in extra_callbacks(entry_dir.name):
        trainer.add_callback(callback)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt as exc:
        raise Interrupted(stopped_at(entry_dir.name, trainer.state, entry_dir / TRAINER_DIR)) from exc
    state_dict = dist.full_state_dict(trainer)  # ZeRO-3 only: a collective, so every rank calls it
    if dist.is_main():
        model_mod.save(trainer.model, tokenizer, entry_dir / MODEL_DIR, state_dict=state_dict)
        write_json(entry_dir / TRAINER_LOG, trainer.state.log_history)
    dist.barrier()  # the next entry (on every rank) loads the weights rank 0 just wrote
    return {
        "output": str(entry_dir / MODEL_DIR),
        "resumed_from": resume,
        "data": fingerprint_rows(rows),
        "metrics": summarise_log(trainer.state.log_history),
        "trainer_config": trainer_config_summary(trainer.args),  # what the trainer holds, not what we passed
        "weights": model_mod.weights_record(trainer.model),
    }
