"""LoRA merged into the base weights for the duration of a generation call, the base weights restored bit for bit.

A ``PeftModel`` generating token by token runs, in every adapted linear layer, the base matmul plus the two LoRA
matmuls, a scale and an add; with the adapter merged (``W + scale * B @ A``) it runs the base matmul alone.
:func:`merged_lora` merges through peft's own layer API, ``merge(safe_merge=True)`` on every LoRA layer (pinned peft
0.21.2: ``LoraLayer.merge`` with ``safe_merge`` writes ``W.clone() + delta`` into a new tensor and sets it as the base
weight's ``.data``, leaving the original tensor untouched), and on exit calls each layer's ``unmerge`` (peft's
merged-state bookkeeping) and then puts each original tensor back: a subtraction ``(W + d) - d`` is not ``W`` in floating point,
so the weights a trainer keeps after the call are the very tensors it had before. The LoRA factors are only read.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from peft.tuners.tuners_utils import BaseTunerLayer


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
