"""Grouped key/value heads read in place on the CPU (:mod:`recipe.models.speedups`): what every hf load on the CPU
runs, computing what transformers' sdpa attention computes without copying the cache."""

from __future__ import annotations

import json

import torch
from transformers.integrations import sdpa_attention

from recipe.config import core as C
from recipe.models import model as model_mod
from recipe.models import speedups as attention

PROMPTS = ["Question: Tom has 3 apples and buys 4 more. How many?\nReasoning:", "Question: 2+2?"]


def _load(cache_dir):
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}"])
    model, tokenizer = model_mod.load(cfg.model, trainable=False, seed=0)
    tokenizer.padding_side = "left"
    return model, tokenizer, tokenizer(PROMPTS, return_tensors="pt", padding=True)


def test_a_cpu_load_reads_grouped_heads_in_place_and_computes_what_sdpa_computes(cache_dir, monkeypatch):
    model, tokenizer, batch = _load(cache_dir)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # the tiny model groups its heads
    assert model.config._attn_implementation == attention.NAME
    assert bool((batch["attention_mask"] == 0).any())  # left padding: the mask transformers' sdpa path copies for
    copies = []
    real = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda x, n: copies.append(x.shape) or real(x, n))
    results = {}
    for name in (attention.NAME, "sdpa"):
        model.set_attn_implementation(name)
        copies.clear()
        with torch.no_grad():
            logits = model(**batch).logits
            ids = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        results[name] = (logits, ids, len(copies))
    ours, theirs = results[attention.NAME], results["sdpa"]
    assert ours[2] == 0 and theirs[2] > 0  # no key/value copy in ours; sdpa copies every layer's cache
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[1], theirs[1])


def test_training_gradients_match_sdpa(cache_dir):
    model, _, batch = _load(cache_dir)
    model.requires_grad_(True)
    grads = {}
    for name in (attention.NAME, "sdpa"):
        model.set_attn_implementation(name)
        model.zero_grad()
        out = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100))
        out.loss.backward()
        grads[name] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert grads[attention.NAME]
    for ours, theirs in zip(grads[attention.NAME], grads["sdpa"]):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_the_choice_is_not_saved_with_the_model(cache_dir, tmp_path):
    model, _, _ = _load(cache_dir)
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert attention.NAME not in json.dumps(saved)


def test_a_model_without_grouped_heads_keeps_sdpa(cache_dir):
    model, _, _ = _load(cache_dir)
    model.set_attn_implementation("sdpa")
    model.config.num_key_value_heads = model.config.num_attention_heads
    assert attention.use_on_cpu(model) is False
    assert model.config._attn_implementation == "sdpa"
