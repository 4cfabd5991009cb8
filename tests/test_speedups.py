"""Sampling speed-ups that must not change what is sampled (``bench/sampling.py`` measures them): LoRA merged into the
weights for a generation call, the duplicated GRPO prompts prefilled once, finished rows dropped and a KV cache with
room for the coming tokens (:mod:`recipe.models.speedups`)."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from transformers import GenerationConfig
from transformers.cache_utils import DynamicLayer

from recipe.config import core as C
from recipe.models import generation
from recipe.models import model as model_mod
from recipe.models.speedups import RoomyLayer, cache_with_room, fast_generate, merged_lora

PROMPTS = ["Question: Tom has 3 apples and buys 4 more. How many?\nReasoning:",
           "Question: A box holds 12 pens; 5 are taken.\nReasoning:"]


@pytest.fixture()
def policy(cache_dir):
    """The tiny model with a LoRA whose B factors are non-zero (a fresh LoRA's are zero: merging would change
    nothing)."""
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}"])
    model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=0)
    model = get_peft_model(model, model_mod.lora_config(cfg.model))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5, generator=gen)
    tokenizer.padding_side = "left"
    return model, tokenizer


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_merged_lora_computes_the_adapted_model_and_restores_the_very_same_weights(policy):
    model, tokenizer = policy
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    before = _weights(model)
    pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        adapted = model(**batch).logits
        with model.disable_adapter():
            plain = model(**batch).logits
        with merged_lora(model):
            merged = model(**batch).logits
            changed = [n for n, p in model.named_parameters() if "base_layer" in n and not torch.equal(p, before[n])]
    assert changed  # inside the block the base weights carry the adapter ...
    assert not torch.allclose(adapted, plain, atol=1e-3)  # ... which changes the model's output ...
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)  # ... and the merged model computes it
    after = dict(model.named_parameters())
    for name, value in before.items():  # after it: bit for bit, the same tensors
        assert torch.equal(after[name], value), name
        assert after[name].data_ptr() == pointers[name], name
    assert not any(getattr(m, "merged", False) for m in model.modules())


def test_merged_lora_restores_the_weights_when_the_call_fails(policy):
    model, _ = policy
    before = _weights(model)
    with pytest.raises(RuntimeError, match="boom"), merged_lora(model):
        raise RuntimeError("boom")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not any(getattr(m, "merged", False) for m in model.modules())


def test_merged_greedy_evaluation_writes_the_same_tokens_through_the_seam(policy):
    model, tokenizer = policy
    model.eval()
    kwargs = dict(max_new_tokens=12, batch_size=2, temperature=0.0, stop_texts=generation.STOP_TEXTS)
    plain = generation.generate(model, tokenizer, PROMPTS, **kwargs)
    with merged_lora(model):
        merged = generation.generate(model, tokenizer, PROMPTS, **kwargs)
    assert [(g[0].raw, g[0].n_tokens) for g in merged] == [(g[0].raw, g[0].n_tokens) for g in plain]
    assert any(g[0].n_tokens for g in plain)


def _trl_call(model, tokenizer, repeats: int, **config):
    """The generate call TRL's GRPOTrainer makes on the hf path: each prompt ``repeats`` times in a row, left-padded,
    sampled, the PeftModel in train mode, no grad, a fixed seed."""
    enc = tokenizer([p for p in PROMPTS for _ in range(repeats)], return_tensors="pt", padding=True)
    gen_config = GenerationConfig(**{"max_new_tokens": 10, "do_sample": True, "temperature": 1.0, "top_p": 1.0,
                                     "top_k": 0, "pad_token_id": tokenizer.pad_token_id,
                                     "eos_token_id": [tokenizer.eos_token_id], "disable_compile": True, **config})
    model.train()
    torch.manual_seed(7)
    with torch.no_grad():
        return model.generate(**enc, generation_config=gen_config)


@pytest.mark.parametrize("repeats", [3, 1])
def test_prefilling_each_prompt_once_samples_the_same_tokens(policy, repeats):
    model, tokenizer = policy
    plain = _trl_call(model, tokenizer, repeats)
    shared = _trl_call(fast_generate(fast_generate(model)), tokenizer, repeats)
    assert plain.shape == shared.shape
    assert torch.equal(plain, shared)
    assert plain.shape[1] - enc_width(tokenizer, repeats) == 10  # no row ended: every step decoded all rows
    if repeats > 1:  # the same prompt still draws different completions: the rows are sampled independently
        assert len({tuple(row.tolist()) for row in plain[:repeats]}) > 1


def enc_width(tokenizer, repeats: int) -> int:
    return tokenizer([p for p in PROMPTS for _ in range(repeats)], return_tensors="pt", padding=True)["input_ids"].shape[1]


@pytest.mark.parametrize("sample", [True, False])
def test_rows_that_end_early_leave_the_batch_and_every_row_samples_what_generate_samples(policy, sample):
    """EOS ids chosen from a first call's tokens so that rows end at different steps: the pruned loop decodes fewer
    rows after each ends, yet every row (its tokens, its padding after EOS, the call's length) is what ``generate``
    writes under the same seed."""
    model, tokenizer = policy
    width = enc_width(tokenizer, 3)
    config = {} if sample else dict(do_sample=False, temperature=None, top_k=None, top_p=None)
    first = _trl_call(model, tokenizer, 3, **config)[:, width:]
    eos = [int(first[0, 1]), int(first[4, 4])]  # row 0 ends at its 2nd token at the latest, row 4 at its 5th
    plain = _trl_call(model, tokenizer, 3, eos_token_id=eos, **config)
    ends = [next((i for i, t in enumerate(row.tolist()) if t in eos), None) for row in plain[:, width:]]
    assert ends[0] is not None and ends[0] <= 1 and len(set(ends)) > 1  # rows end at different steps
    forwards = []
    hook = model.get_base_model().get_input_embeddings().register_forward_hook(
        lambda m, i, o: forwards.append(i[0].shape[0]))
    pruned = _trl_call(fast_generate(model), tokenizer, 3, eos_token_id=eos, **config)
    hook.remove()
    assert torch.equal(pruned, plain)
    assert forwards[0] == len(PROMPTS)  # the prefill: each distinct prompt once
    assert forwards[1:] == sorted(forwards[1:], reverse=True) and forwards[-1] < forwards[1]  # rows leave as they end


def test_prefilling_once_keeps_greedy_scores_and_the_merged_lora(policy):
    model, tokenizer = policy
    plain = _trl_call(model, tokenizer, 2, do_sample=False, temperature=None, top_k=None, top_p=None)
    with merged_lora(fast_generate(model)):
        both = _trl_call(model, tokenizer, 2, do_sample=False, temperature=None, top_k=None, top_p=None)
    assert torch.equal(plain, both)


def test_a_grpo_load_samples_the_same_tokens_faster_under_the_lora_trl_adds(cache_dir):
    """``model.load(for_grpo=True)`` on hf returns a model whose generate, reached through the PeftModel the TRL
    trainer wraps it in, runs the prompt once per distinct prompt with the LoRA merged, samples what a plain load
    samples, and leaves the weights as they were."""
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}"])
    sampled, prefill_rows = [], []
    for share in (True, False):
        model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=0, for_grpo=True, fast_sampling=share)
        peft_model = get_peft_model(model, model_mod.lora_config(cfg.model))  # what GRPOTrainer does with peft_config
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
        before = _weights(peft_model)
        tokenizer.padding_side = "left"
        rows, merged = [], []
        hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o, rows=rows: rows.append(i[0].shape))
        q_proj = peft_model.get_base_model().model.layers[0].self_attn.q_proj
        probe = q_proj.register_forward_hook(lambda m, i, o, seen=merged: seen.append(m.merged))
        sampled.append(_trl_call(peft_model, tokenizer, 4))
        hook.remove()
        probe.remove()
        prefill_rows.append(rows[0][0])
        assert all(merged) is share and any(merged) is share  # the LoRA merged for every forward, or never
        assert all(torch.equal(p, before[n]) for n, p in peft_model.named_parameters())
    assert prefill_rows == [len(PROMPTS), 4 * len(PROMPTS)]  # the first forward: 2 distinct prompts, not 8 rows
    assert torch.equal(sampled[0], sampled[1])


def test_a_roomy_layer_holds_what_a_dynamic_layer_holds_and_writes_each_step_in_place():
    gen = torch.Generator().manual_seed(0)
    roomy, plain = RoomyLayer(room=3), DynamicLayer()

    def both(op, *args):
        results = [getattr(layer, op)(*args) for layer in (roomy, plain)]
        assert torch.equal(roomy.keys, plain.keys) and torch.equal(roomy.values, plain.values), op
        return results

    def step(tokens: int):
        k, v = torch.randn(4, 2, tokens, 8, generator=gen), torch.randn(4, 2, tokens, 8, generator=gen)
        (rk, rv), (pk, pv) = both("update", k, v)
        assert torch.equal(rk, pk) and torch.equal(rv, pv)

    step(5)  # the prefill
    start = roomy.keys.data_ptr()
    for _ in range(3):  # within its room: written in place, the cache never copied
        step(1)
        assert roomy.keys.data_ptr() == start
    step(1)  # past its room: copied once into a larger buffer, the same values
    assert roomy.keys.shape[-2] == 9 and roomy.get_seq_length() == plain.get_seq_length() == 9
    both("batch_select_indices", torch.tensor([3, 1]))  # finished rows leave the batch
    step_rows = roomy.keys.shape[0]
    k, v = torch.randn(step_rows, 2, 1, 8, generator=gen), torch.randn(step_rows, 2, 1, 8, generator=gen)
    both("update", k, v)
    both("crop", -2)  # cropped from outside, then written again
    both("update", k, v)
    both("reorder_cache", torch.tensor([1, 0]))  # keys replaced from outside: the next update starts a new buffer
    both("update", k, v)
    assert roomy.get_seq_length() == 10


def test_a_cache_with_room_makes_roomy_layers_for_a_model_and_without_one(policy):
    model, _ = policy
    layers = cache_with_room(model.get_base_model(), 7).layers
    assert len(layers) == model.config.num_hidden_layers and all(type(x) is RoomyLayer for x in layers)
    lazy = cache_with_room(None, 7)  # no config: layers made as the model first writes them, with room too
    lazy.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 0)
    assert type(lazy.layers[0]) is RoomyLayer and lazy.layers[0].room == 7
