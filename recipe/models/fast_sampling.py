"""GRPO sampling on the hf backend made cheaper without changing what is sampled: the LoRA merged into the base
weights for a generation call (:func:`merged_lora`), and each distinct prompt row prefilled once
(:func:`generate_shared_prefill`).

LoRA merged into the base weights for the duration of a generation call, the base weights restored bit for bit.

A ``PeftModel`` generating token by token runs, in every adapted linear layer, the base matmul plus the two LoRA
matmuls, a scale and an add; with the adapter merged (``W + scale * B @ A``) it runs the base matmul alone.
:func:`merged_lora` merges through peft's own layer API, ``merge(safe_merge=True)`` on every LoRA layer (pinned peft
0.21.2: ``LoraLayer.merge`` with ``safe_merge`` writes ``W.clone() + delta`` into a new tensor and sets it as the base
weight's ``.data``, leaving the original tensor untouched), and on exit calls each layer's ``unmerge`` (peft's
merged-state bookkeeping) and then puts each original tensor back: a subtraction ``(W + d) - d`` is not ``W`` in floating point,
so the weights a trainer keeps after the call are the very tensors it had before. The LoRA factors are only read.

HF ``generate`` with each distinct prompt row prefilled once.

GRPO samples ``num_generations`` completions of every prompt in one batch: TRL's ``RepeatSampler`` puts each prompt
in the batch that many times, and ``generate`` runs the whole padded prompt through the model for every row. On the
CPU the prompt's forward is a large share of the call (the proof's shapes: 16 rows of ~130-170 prompt tokens against
192 new tokens, ``bench/sampling.py``). :func:`generate_shared_prefill` runs the prompt (all but its last token) once
per distinct row, copies that KV cache to every row (the cache's own ``batch_select_indices``), and lets ``generate``
continue from it: it feeds only the uncached last token, so every step after the prefill is the one ``generate``
makes, with the same sampling and the same random draws. :func:`share_prefill` puts it behind a model's
``generate`` (what TRL calls) without touching the trainer.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import DynamicCache


def _unmerged_layers(model: torch.nn.Module) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer) and not m.merged and m.active_adapters]


@contextlib.contextmanager
def merged_lora(model) -> Iterator[None]:
    """Within the block, ``model``'s active LoRA adapters are merged into its base weights; after it (also on an
    error) the base weights are the original tensors again. ``model``: a ``PeftModel`` or the module tree it adapts (the
    LoRA layers sit in it); one without unmerged LoRA layers is left alone."""
    layers = _unmerged_layers(model)
    if not layers:
        yield
        return
    saved = []
    for layer in layers:
        base = layer.get_base_layer()
        saved.append((base, base.weight.data, None if getattr(base, "bias", None) is None else base.bias.data))
    try:
        with torch.no_grad():
            for layer in layers:
                layer.merge(safe_merge=True)
        yield
    finally:
        with torch.no_grad():
            for layer in layers:
                if layer.merged:
                    layer.unmerge()
            for base, weight, bias in saved:
                base.weight.data = weight
                if bias is not None:
                    base.bias.data = bias


def merge_for_generate(model):
    """Run ``model.generate`` (an instance attribute over the class's method) inside :func:`merged_lora`; returns
    ``model``. The LoRA layers are looked up at each call, so a plain model that a trainer adapts later (TRL's
    ``peft_config``) is covered. Calling it twice wraps once."""
    if getattr(model.generate, "_merges_lora", False):
        return model
    plain = model.generate

    @functools.wraps(plain)
    def generate(*args, **kwargs):
        with merged_lora(model):
            return plain(*args, **kwargs)

    generate._merges_lora = True
    model.generate = generate
    return model


def _distinct_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The index of each distinct (ids, mask) row's first occurrence, and for every row the index of its distinct
    row among those."""
    rows = torch.cat([input_ids, attention_mask.to(input_ids.dtype)], dim=1)
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    firsts = torch.ones_like(order, dtype=torch.bool)
    firsts[1:] = inverse[order][1:] != inverse[order][:-1]
    first_rows = order[firsts]  # first occurrence of each distinct row, in the order of ``torch.unique``
    return first_rows, inverse


@torch.no_grad()
def generate_shared_prefill(generate, model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                            **kwargs):
    """``generate(input_ids=..., attention_mask=..., **kwargs)`` with the prompt prefilled once per distinct row.
    ``generate`` is the model's own (unwrapped) method; ``model`` the module whose forward fills the cache. Falls back to
    a plain call when no row repeats, a cache is passed in, or the prompt is a single token."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if kwargs.get("past_key_values") is not None or input_ids.shape[1] < 2:
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    first_rows, inverse = _distinct_rows(input_ids, attention_mask)
    if len(first_rows) == len(input_ids):
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    ids, mask = input_ids[first_rows, :-1], attention_mask[first_rows, :-1]
    cache = DynamicCache(config=getattr(model, "config", None))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    cache.batch_select_indices(inverse.to(input_ids.device))
    return generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **kwargs)


def share_prefill(model):
    """Route ``model.generate`` (an instance attribute over the class's method) through
    :func:`generate_shared_prefill`; returns ``model``. Calling it twice wraps once."""
    if getattr(model.generate, "_shares_prefill", False):
        return model
    plain = model.generate
    # the module generate's steps run: a PeftModel generates through its base model, never through its own forward
    # (which a trainer's accelerator may have wrapped in autocast), so the prefill must not either
    forward = model.get_base_model() if hasattr(model, "get_base_model") else model

    @functools.wraps(plain)
    def generate(*args, **kwargs):
        if args:  # positional input_ids, as some callers pass them
            kwargs["input_ids"], args = args[0], args[1:]
        if args or "input_ids" not in kwargs:
            return plain(*args, **kwargs)
        return generate_shared_prefill(plain, forward, **kwargs)

    generate._shares_prefill = True
    model.generate = generate
    return model
