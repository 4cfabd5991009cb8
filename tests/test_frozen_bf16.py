"""Frozen weights held as bfloat16 copies while training under CPU bf16 autocast
(:func:`recipe.models.precision.frozen_bf16`): the same numbers as plain autocast, the originals back afterwards."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file

from recipe.config import core as C
from recipe.fsio import read_json
from recipe.models import model as model_mod
from recipe.models.precision import Precision, frozen_bf16
from recipe.run import orchestrator as run

AUTOCAST = Precision("float32", bf16=True, fp16=False)


@pytest.fixture()
def lora_model(cache_dir):
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}"])
    model, tokenizer = model_mod.load(cfg.model, trainable=True)
    torch.manual_seed(0)
    model = get_peft_model(model, model_mod.lora_config(cfg.model))
    for name, param in model.named_parameters():  # LoRA B starts at zero: give the adapter an effect to compare
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model, tokenizer


def loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_frozen_copies_give_autocasts_loss_gradients_and_tokens(lora_model):
    model, tokenizer = lora_model
    batch = tokenizer(["Question: Tom has 3 apples and buys 4 more. How many?", "Reasoning: 3 + 4 = 7."],
                      return_tensors="pt", padding=True)
    loss, grads = loss_and_grads(model, batch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = model.generate(**batch, max_new_tokens=12, do_sample=False)
    with frozen_bf16(model, AUTOCAST) as swapped:
        assert swapped > 0
        loss_fz, grads_fz = loss_and_grads(model, batch)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            tokens_fz = model.generate(**batch, max_new_tokens=12, do_sample=False)
    assert torch.equal(loss, loss_fz)
    assert grads.keys() == grads_fz.keys() and grads and all("lora_" in n for n in grads)
    assert all(torch.equal(grads[n], grads_fz[n]) for n in grads)
    assert torch.equal(tokens, tokens_fz)


def test_only_frozen_linears_are_swapped_and_the_originals_come_back(lora_model):
    model, tokenizer = lora_model
    batch = tokenizer(["Question: 3 + 4?"], return_tensors="pt")
    base = model.get_base_model()
    before = {n: p for n, p in model.named_parameters()}
    frozen_linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad]
    assert base.lm_head.weight is base.model.embed_tokens.weight  # tied, as SmolLM2's
    with frozen_bf16(model, AUTOCAST) as swapped:
        assert swapped == len(frozen_linears)
        assert base.lm_head.weight.dtype == torch.bfloat16  # the output head gets its own copy ...
        assert base.model.embed_tokens.weight.dtype == torch.float32  # ... the embedding stays float32
        assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)
        assert all(m.weight.dtype == torch.bfloat16 for m in frozen_linears)
        logits = model(**batch).logits  # no autocast here: the model's forward runs under it
        assert logits.dtype == torch.bfloat16
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    assert base.lm_head.weight is base.model.embed_tokens.weight  # tied again
    assert "forward" not in vars(base) and model(**batch).logits.dtype == torch.float32


@pytest.mark.parametrize("precision", [Precision("float32", bf16=False, fp16=False),
                                       Precision("bfloat16", bf16=True, fp16=False)])
def test_nothing_is_swapped_without_cpu_autocast(lora_model, precision):
    model, _ = lora_model
    before = {n: (p, p.dtype) for n, p in model.named_parameters()}
    with frozen_bf16(model, precision) as swapped:
        assert swapped == 0
        assert {n: (p, p.dtype) for n, p in model.named_parameters()} == before


def test_a_grpo_stage_trains_under_autocast_with_frozen_copies(cache_dir, tmp_path, caplog):
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={tmp_path / 'run'}",
                                               "model.cpu_autocast=bfloat16", "stage1.max_steps=1",
                                               "stage2.max_steps=2", "stage3.enabled=false", "eval.enabled=false"])
    with caplog.at_level("INFO", logger="recipe"):
        run_dir = run.run_all(cfg)
    assert any("frozen linear weights held as bfloat16 copies" in r.getMessage() for r in caplog.records)
    weights = load_file(str(run_dir / "stage2" / "model" / "adapter_model.safetensors"))
    assert weights and all(t.dtype == torch.float32 for t in weights.values())
    assert all(torch.isfinite(t).all() for t in weights.values())
    log = read_json(run_dir / "stage2" / "trainer_log.json")
    assert sum("reward" in row for row in log) == 2
