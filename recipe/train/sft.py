"""The SFT trainer kind (stage 1, the SFT baseline, the warm-up): its ``SFTConfig`` built from the config in one
call (:func:`sft_args`), TRL's ``SFTTrainer`` on prompt-completion rows with the loss on the completion, and the
rows it drops for length reported.

The trainer prepares the dataset itself (tokenising, the completion mask, truncation to ``max_length``, dropping a
row whose prompt alone fills it). With rows drawn anew each epoch (:func:`recipe.train.rows.seeded_epochs`) the
epochs are one dataset read once, in order: ``train_sampling_strategy="sequential"`` (transformers' ``Trainer``
then uses a ``SequentialSampler``) and ``shuffle_dataset=False`` (TRL does not shuffle the prepared dataset)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from trl import SFTConfig, SFTTrainer

from recipe import dist
from recipe.config.core import Config, check
from recipe.data import gsm8k as data_mod
from recipe.models import model as model_mod
from recipe.store.rundir import TRAINER_DIR
from recipe.train.rows import RowsForEpoch, epochs_to_draw, seeded_epochs
from recipe.train.trainer import built, common_args, train_and_save

log = logging.getLogger("recipe")

Section = Literal["stage1", "warmup"]
IN_ORDER = {"train_sampling_strategy": "sequential", "shuffle_dataset": False}  # read the dataset as given


def sft_args(cfg: Config, output_dir: str, section: Section = "stage1", for_check: bool = False,
             **decided: Any) -> SFTConfig:
    """TRL SFTConfig for stage 1 (and the SFT baseline, on stage 1's budget) or the warm-up (its own section):
    prompt-completion data, loss on the completion only. ``decided``: keys the recipe sets for this training
    (the epoch layout), over the section's; ``for_check``: as :func:`recipe.train.trainer.common_args`."""
    st = getattr(cfg, section)
    config = built(SFTConfig, section, st, {
        **common_args(cfg, st, output_dir, for_check),
        "max_length": min(st.max_length, cfg.model.max_seq_length),
        "completion_only_loss": True,
        "packing": False,
        "dataset_num_proc": None,
        **decided,
    })
    smoothing = getattr(config, "label_smoothing_factor", 0)
    chunked = getattr(config, "loss_type", None) == "chunked_nll"  # TRL's default when loss_type is unset
    check(not (smoothing and chunked), f"{section}.label_smoothing_factor", smoothing, "TRL 1.14.2's SFTTrainer fails "
          f"on its first step with label smoothing under its chunked loss, the default: set {section}.loss_type=nll "
          "with it")
    return config


def rows_per_step(cfg: Config, section: Section) -> int:
    """Rows one optimizer step reads, over every process."""
    st = getattr(cfg, section)
    return st.per_device_train_batch_size * st.gradient_accumulation_steps * dist.world_size()


def check_length_drops(cfg: Config, n_rows: int, n_kept: int, prompts: Sequence[str], tokenizer: Any,
                       section: Section = "stage1") -> None:
    """A row whose prompt alone fills ``max_length`` (``min(<section>.max_length, model.max_seq_length)``; no completion
    token left to learn) is dropped by TRL's SFTTrainer: say how many went, and when none is left, stop with the
    shortest prompt's length and the keys to raise."""
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


def pairs(rows: Sequence[dict]) -> Any:
    """The rows' prompt/completion columns as a ``datasets.Dataset`` (what the trainer reads of them)."""
    return data_mod.to_dataset([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])


def build_sft_trainer(cfg: Config, model, tokenizer, rows: list[dict], entry_dir: Path,
                      rows_for_epoch: RowsForEpoch | None = None, section: Section = "stage1") -> SFTTrainer:
    """TRL SFTTrainer on the rows' prompt/completion pairs (loss on the completion); rows dropped for length are
    reported (:func:`check_length_drops`). With ``rows_for_epoch`` (epoch -> rows; epoch 0 must give ``rows``) every
    epoch trains on its own rows: the epochs :func:`recipe.train.rows.epochs_to_draw` asks for, one after another,
    read in one pass in order."""
    decided: dict[str, Any] = {}
    if rows_for_epoch is not None:
        st = getattr(cfg, section)
        epochs, share = epochs_to_draw(st, len(rows), rows_per_step(cfg, section), section)
        rows = seeded_epochs(lambda e: rows if e == 0 else rows_for_epoch(e), epochs, cfg.run.seed)
        decided = {**IN_ORDER, "num_train_epochs": share}
        log.info("%s: %d epochs of %d rows drawn anew, read in one pass", section, epochs, len(rows) // epochs)
    trainer = SFTTrainer(
        model=model,
        args=sft_args(cfg, str(entry_dir / TRAINER_DIR), section, **decided),
        train_dataset=pairs(rows),
        processing_class=tokenizer,
        peft_config=model_mod.trainer_peft_config(model, cfg.model),
    )
    check_length_drops(cfg, len(rows), len(trainer.train_dataset), [r["prompt"] for r in rows], tokenizer, section)
    return trainer


def train_sft(cfg: Config, model, tokenizer, rows: list[dict], entry_dir: Path,
              rows_for_epoch: RowsForEpoch | None = None, section: Section = "stage1",
              max_steps: int | None = None) -> dict:
    """:func:`build_sft_trainer`, then :func:`recipe.train.trainer.train_and_save`. Used by stage 1 and the SFT
    baseline, both with the stage-1 section (``max_steps``: the baseline's budget in its place), and by the warm-up
    (``section``)."""
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, **{section: getattr(cfg, section).replace(max_steps=max_steps)})
    trainer = build_sft_trainer(cfg, model, tokenizer, rows, entry_dir, rows_for_epoch, section)
    return train_and_save(trainer, tokenizer, entry_dir, rows)
