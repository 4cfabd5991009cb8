"""Stage 1's epochs drawn anew, read by TRL's own SFTTrainer in one pass (recipe/train/sft.py, recipe/train/rows.py):
on the tiny model, the batches the trainer's dataloader feeds step by step are, row by row, what TRL makes of each
epoch's rows on its own (an SFTTrainer given that epoch's prompt/completion rows alone), epoch after epoch, each in
the order drawn for it; and rows TRL drops for length are reported."""

from __future__ import annotations

import logging

import pytest
from trl import SFTTrainer

from recipe.config import core as C
from recipe.data import gsm8k as data_mod
from recipe.models import model as model_mod
from recipe.train import stage1
from recipe.train.rows import epoch_order, train_problems
from recipe.train.sft import build_sft_trainer, pairs, sft_args

N_ROWS = 12  # per epoch; the smoke preset's batch is 4 rows, so an epoch is 3 steps
MAX_LENGTH = 300  # the stage-1 prompts of the smoke data are 257-347 tiny-model tokens: some fill it, most are cut


def config(cache_dir, *extra: str):
    return C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", *extra])


def rows_for(cfg):
    return stage1.rows_for_epoch(cfg, data_mod.slice_rows(train_problems(cfg, "stage1"), 0, N_ROWS))


def trl_alone(cfg, rows, out_dir) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` of each row as TRL's SFTTrainer prepares ``rows`` given to it alone, in order (TRL's
    own shuffle off, whatever the section says)."""
    model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=cfg.run.seed)
    trainer = SFTTrainer(model=model, args=sft_args(cfg, str(out_dir), shuffle_dataset=False), train_dataset=pairs(rows),
                         processing_class=tokenizer, peft_config=model_mod.trainer_peft_config(model, cfg.model))
    return [(r["input_ids"], r["labels"]) for r in trainer.train_dataset]


def fed(trainer) -> list[list[tuple[list[int], list[int]]]]:
    """Per step, the ``(input_ids, labels)`` of each row the trainer's dataloader feeds, padding taken off."""
    steps = []
    for batch in trainer.get_train_dataloader():
        rows = []
        for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(),
                                     batch["attention_mask"].tolist(), strict=True):
            n = sum(mask)
            rows.append((ids[:n], labels[:n]))
        steps.append(rows)
    return steps


@pytest.mark.parametrize("extra", [(), ("stage1.shuffle_dataset=true", "stage1.eos_token='<|im_end|>'")])
def test_each_step_feeds_what_trl_makes_of_that_epochs_rows_in_the_epochs_order(cache_dir, tmp_path, extra):
    cfg = config(cache_dir, "stage1.max_steps=-1", "stage1.num_train_epochs=2", *extra)
    build = rows_for(cfg)
    model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=cfg.run.seed)
    trainer = build_sft_trainer(cfg, model, tokenizer, build(0), tmp_path / "new", rows_for_epoch=build)
    assert trainer.args.num_train_epochs == 1.0 and len(trainer.train_dataset) == 2 * N_ROWS
    expected = []
    for epoch in (0, 1):
        alone = trl_alone(cfg, build(epoch), tmp_path / f"alone{epoch}")
        expected += [alone[i] for i in epoch_order(N_ROWS, cfg.run.seed, epoch)]
    steps = fed(trainer)
    batch = cfg.stage1.per_device_train_batch_size
    assert [len(step) for step in steps] == [batch] * (2 * N_ROWS // batch)
    assert [row for step in steps for row in step] == expected
    assert expected[:N_ROWS] != expected[N_ROWS:]  # epoch 1 is a new draw, not epoch 0 again


def test_max_steps_draws_the_epochs_it_needs(cache_dir, tmp_path):
    cfg = config(cache_dir, "stage1.max_steps=7")  # 7 steps x 4 rows = 28 rows: 3 epochs of 12
    build = rows_for(cfg)
    model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=cfg.run.seed)
    trainer = build_sft_trainer(cfg, model, tokenizer, build(0), tmp_path / "new", rows_for_epoch=build)
    assert len(trainer.train_dataset) == 3 * N_ROWS and trainer.args.max_steps == 7
    prompts = [r["prompt"] for r in trainer.train_dataset]
    assert sorted(prompts[2 * N_ROWS:]) == sorted(r["prompt"] for r in build(2))


@pytest.mark.parametrize("override, keys", [("stage1.per_device_train_batch_size=1000000000", "max_steps x"),
                                            ("stage1.num_train_epochs=100000", "num_train_epochs")])
def test_a_pass_over_the_drawn_rows_limit_is_refused_before_any_row_is_drawn(cache_dir, tmp_path, override, keys):
    cfg = config(cache_dir, override, *(["stage1.max_steps=-1"] if "epochs" in keys else []))
    drawn = []
    with pytest.raises(C.ConfigError, match=rf"^'stage1': {keys}.* asks for [\d,]+ epochs of its {N_ROWS} rows, "
                                            r"over the 1,000,000 rows"):
        build_sft_trainer(cfg, None, None, rows_for(cfg)(0), tmp_path, rows_for_epoch=lambda e: drawn.append(e))
    assert drawn == []


def test_rows_dropped_for_length_are_counted_as_trl_drops_them(cache_dir, tmp_path, caplog):
    cfg = config(cache_dir, f"stage1.max_length={MAX_LENGTH}")
    rows = rows_for(cfg)(0)
    dropped = len(rows) - len(trl_alone(cfg, rows, tmp_path / "alone"))
    assert dropped > 0
    model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=cfg.run.seed)
    with caplog.at_level(logging.WARNING, logger="recipe"):
        build_sft_trainer(cfg, model, tokenizer, rows, tmp_path / "new")
    assert f"{dropped} of {len(rows)} training rows were dropped for length" in caplog.text
    assert f"stage1.max_length (now {MAX_LENGTH})" in caplog.text
