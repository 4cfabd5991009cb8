"""LoRA merged into the base weights for the duration of a generation call, the base weights restored bit for bit.

A ``PeftModel`` generating token by token runs, in every adapted linear layer, the base matmul plus the two LoRA
matmuls, a scale and an add; with the adapter merged (``W + scale * B @ A``) it runs the base matmul alone.
:func:`merged_lora` merges through peft's own ``merge_adapter(safe_merge=True)`` (pinned peft 0.21.2:
``LoraLayer.merge`` with ``safe_merge`` writes ``W.clone() + delta`` into a new tensor and sets it as the base weight's
``.data``, leaving the original tensor untouched) and on exit calls ``unmerge_adapter`` (peft's merged-state
bookkeeping) and then puts each original tensor back: a subtraction ``(W + d) - d`` is not ``W`` in floating point,
so the weights a trainer keeps after the call are the very tensors it had before. The LoRA factors are only read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer


def _unmerged_layers(model: PeftModel) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer) and not m.merged and m.active_adapters]


@contextlib.contextmanager
def merged_lora(model) -> Iterator[None]:
    """Within the block, ``model``'s active LoRA adapters are merged into its base weights; after it (also on an
    error) the base weights are the original tensors again. A model without unmerged LoRA layers is left alone."""
    layers = _unmerged_layers(model) if isinstance(model, PeftModel) else []
    if not layers:
        yield
        return
    saved = []
    for layer in layers:
        base = layer.get_base_layer()
        saved.append((base, base.weight.data, None if getattr(base, "bias", None) is None else base.bias.data))
    try:
        with torch.no_grad():
            model.merge_adapter(safe_merge=True)
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
