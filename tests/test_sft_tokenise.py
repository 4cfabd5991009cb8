"""The recipe tokenises SFT rows itself (recipe/train/sft_tokenise.py) instead of calling TRL's private
``SFTTrainer._prepare_dataset`` for each epoch's redraw. Proof that nothing changed: on the tiny model, an SFTTrainer
built the old way (raw prompt/completion rows, TRL tokenises) and the recipe's trainer hold the same rows, column by
column, the same rows dropped for length, for epoch 0 and for a redrawn epoch, under the TRL settings a config may
pass through (truncation side, EOS token, shuffling)."""

from __future__ import annotations

import logging

import pytest
from trl import SFTTrainer

from recipe.config import core as C
from recipe.data import gsm8k as data_mod
from recipe.models import model as model_mod
from recipe.train import common, sft_tokenise, stage1
from recipe.train.epochs import EpochRows
from recipe.train.trl_args import sft_args

MAX_LENGTH = 300  # the stage-1 prompts of the smoke data are 257-347 tiny-model tokens: some fill it, most are cut


def config(cache_dir, *extra: str):
    return C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"stage1.max_length={MAX_LENGTH}",
                                                *extra])


def trl_prepared(cfg, rows, out_dir):
    """``train_dataset`` of an SFTTrainer given the raw prompt/completion rows: TRL's own preparation (the old way)."""
    model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=cfg.run.seed)
    trainer = SFTTrainer(model=model, args=sft_args(cfg, str(out_dir), "stage1"),
                         train_dataset=data_mod.to_dataset([{"prompt": r["prompt"], "completion": r["completion"]}
                                                            for r in rows]),
                         processing_class=tokenizer, peft_config=model_mod.trainer_peft_config(model, cfg.model))
    return trainer.train_dataset


def recipe_trainer(cfg, rows, out_dir, rows_for_epoch=None):
    model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=cfg.run.seed)
    return common.build_sft_trainer(cfg, model, tokenizer, rows, out_dir, rows_for_epoch), tokenizer


def edge_rows(cfg, base: list[dict]) -> list[dict]:
    """Rows at the edges of TRL's rules, built on real stage-1 rows."""
    tokenizer = model_mod.load_tokenizer(model_mod.resolve_model_path(cfg.model))
    first = base[0]
    text = first["prompt"] * 2
    # a prompt one token short of max_length: exactly one completion token keeps its label
    short = next(text[:n] for n in range(len(text), 0, -1) if len(tokenizer(text[:n])["input_ids"]) == MAX_LENGTH - 1)
    return [
        {"prompt": first["prompt"] * 2, "completion": first["completion"]},  # the prompt alone fills max_length
        {"prompt": short, "completion": first["completion"]},
        {"prompt": base[1]["prompt"], "completion": base[1]["completion"] + tokenizer.eos_token},  # EOS already there
        {"prompt": base[2]["prompt"] + " Final Ans", "completion": "wer: 2"},  # " Ans" + "wer" is one token
        {"prompt": "Q?", "completion": " short"},  # nothing cut
    ]


def rows_of(dataset) -> list[dict]:
    return [dict(dataset[i]) for i in range(len(dataset))]


@pytest.mark.parametrize("extra", [(), ("stage1.truncation_mode=keep_end",), ("stage1.eos_token='<|im_end|>'",),
                                   ("stage1.shuffle_dataset=true",)])
def test_recipe_tokenisation_is_trls_row_by_row(cache_dir, tmp_path, extra):
    cfg = config(cache_dir, *extra)
    base = stage1.rows_for_epoch(cfg, data_mod.slice_rows(common.train_problems(cfg, "stage1"), 0, 24))(0)
    rows = base + edge_rows(cfg, base)
    old = trl_prepared(cfg, rows, tmp_path / "old")
    trainer, tokenizer = recipe_trainer(cfg, rows, tmp_path / "new")
    new = trainer.train_dataset
    assert new.column_names == old.column_names == ["prompt", "completion", "input_ids", "labels"]
    assert new.features == old.features
    assert rows_of(new) == rows_of(old)
    kept = {r["prompt"] for r in rows_of(old)}
    if "keep_end" in str(extra):
        assert len(old) == len(rows)  # the completion's end is kept: nothing is dropped
    else:
        assert 0 < len(rows) - len(old) < len(base) and rows[-5]["prompt"] not in kept  # the prompt-filled row
        (boundary,) = [r for r in rows_of(old) if r["prompt"] == rows[-4]["prompt"]]
        assert sum(label != -100 for label in boundary["labels"]) == 1  # one token short of max_length
    eos = "<|im_end|>" if "eos_token" in str(extra) else tokenizer.eos_token
    assert all(r["completion"].endswith(eos) and not r["completion"].endswith(eos * 2) for r in rows_of(old))
    assert all(len(r["input_ids"]) == len(r["labels"]) <= MAX_LENGTH for r in rows_of(old))


@pytest.mark.parametrize("extra", [(), ("stage1.shuffle_dataset=true",)])
def test_a_redrawn_epoch_is_what_trl_makes_of_that_epochs_rows(cache_dir, tmp_path, extra):
    cfg = config(cache_dir, "stage1.max_length=512", *extra)  # nothing dropped: every epoch keeps its row count
    rows_for = stage1.rows_for_epoch(cfg, data_mod.slice_rows(common.train_problems(cfg, "stage1"), 0, 16))
    trainer, _ = recipe_trainer(cfg, rows_for(0), tmp_path / "new", rows_for_epoch=rows_for)
    served = trainer.train_dataset
    assert isinstance(served, EpochRows)
    epoch0 = [served[i] for i in range(len(served))]
    served.set_epoch(1)
    epoch1 = [served[i] for i in range(len(served))]
    assert epoch0 == rows_of(trl_prepared(cfg, rows_for(0), tmp_path / "old0"))
    assert epoch1 == rows_of(trl_prepared(cfg, rows_for(1), tmp_path / "old1"))
    assert epoch0 != epoch1


def test_rows_dropped_for_length_are_counted_as_trl_drops_them(cache_dir, tmp_path, caplog):
    cfg = config(cache_dir)
    rows = stage1.rows_for_epoch(cfg, data_mod.slice_rows(common.train_problems(cfg, "stage1"), 0, 24))(0)
    dropped = len(rows) - len(trl_prepared(cfg, rows, tmp_path / "old"))
    assert dropped > 0
    with caplog.at_level(logging.WARNING, logger="recipe"):
        recipe_trainer(cfg, rows, tmp_path / "new")
    assert f"{dropped} of {len(rows)} training rows were dropped for length" in caplog.text
    assert f"stage1.max_length (now {MAX_LENGTH})" in caplog.text


def test_other_trl_preparations_are_refused_not_imitated(cache_dir, tmp_path):
    args = sft_args(config(cache_dir), str(tmp_path), "stage1")
    args.packing = True
    with pytest.raises(ValueError, match="packing"):
        sft_tokenise.tokenise([{"prompt": "Q?", "completion": " 1"}], None, args)
