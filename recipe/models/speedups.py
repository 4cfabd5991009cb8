"""The hf backend on the CPU made cheaper without changing what it computes: grouped key/value heads read in place by
the attention (:func:`sdpa_gqa_forward`, every CPU load), and for GRPO sampling the LoRA merged into the base weights
for a generation call (:func:`merged_lora`), each distinct prompt row prefilled once (:func:`generate_shared_prefill`)
and finished rows dropped from the batch (:func:`generate_pruned`); every decoding loop here writes each step's key
and value into a cache with room for the tokens to come (:func:`cache_with_room`).

Grouped-query attention without copying the KV cache each step.

Models with fewer key/value heads than query heads (SmolLM2-135M: 9 query heads, 3 key/value heads; Qwen2.5 the
same way) run transformers' ``sdpa`` attention (``integrations/sdpa_attention.py``, pinned 5.17.0) through
``repeat_kv`` -- a copy of every layer's whole key and value cache, ``num_key_value_groups`` times over, at every
decoding step -- unless ``use_gqa_in_sdpa`` holds, which on a CPU asks for ``attention_mask is None``: never true for a
left-padded batch, so every GRPO sampling call and every evaluation batch paid it. torch's own
``scaled_dot_product_attention(..., enable_gqa=True)`` reads the grouped heads in place. Profiled on a 16-row GRPO
call (one core): those copies were ~30 % of the call's CPU time; one layer's decode attention over 330 cached tokens
7.2 ms -> 0.97 ms with a bit-identical output (``bench/sampling.py`` times the whole call).

:data:`NAME` is registered with transformers' ``AttentionInterface`` (and its mask interface, with sdpa's mask) and
:func:`use_on_cpu` switches a loaded model to it; the CPU path runs :func:`sdpa_gqa_forward`, anything else (a GPU
tensor, a position bias, a model without grouped heads) runs transformers' sdpa function unchanged. The choice is not
saved: transformers drops ``_attn_implementation_internal`` from a saved ``config.json``.

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
makes, with the same sampling and the same random draws.

A KV cache with room for the tokens to come (:func:`cache_with_room`).

transformers' ``DynamicCache`` (pinned 5.17.0, ``DynamicLayer.update``) appends each step's key and value with
``torch.cat``: a copy of the layer's whole cache at every decoding step, so a call's copying grows with the square of
its length. Profiled on the proof's 16-row GRPO call (one core, with the speed-ups above): ``aten::cat`` took 11.6 s
of 61.5 s of CPU. :class:`RoomyLayer` keeps each layer's keys and values in a buffer with room for ``room`` more
tokens and writes a step in place; what it returns (and what ``keys``/``values`` hold) is a view of the filled part,
the same values in the same layout, so the attention computes the same numbers (tested: the same tokens as
``generate``). Anything that replaces ``keys`` from outside (cropping keeps the buffer; beam reordering, a repeat)
makes the next update copy into a new buffer.

Finished rows dropped from the batch (:func:`generate_pruned`).

``generate`` keeps every row in the batch until the last one ends: one completion that runs to
``max_completion_length`` makes all ``num_generations`` x prompts rows decode to it, the finished ones writing padding.
:func:`generate_pruned` is the same sampling loop with each distinct prompt prefilled once and a row leaving the batch
(its KV cache, mask and position) when it writes an EOS. The distribution is transformers' own: the generation config
is merged with the model's by ``generate``'s own preparation and the logits processors and warpers are the ones
``generate`` builds (``_prepare_generation_config``, ``_prepare_special_tokens``, ``_get_logits_processor`` of pinned
transformers 5.17.0; private methods, called rather than copied). The draws are the same too: ``torch.multinomial``
on the CPU consumes the same random numbers per row whatever the row holds, so each step still draws for all rows (a
finished row's draw is thrown away, as ``generate`` throws it away by writing padding), and the rows still writing get
the tokens ``generate`` gives them under the same seed (tested against ``generate`` with rows ending at different
steps). A call ``generate_pruned`` does not cover (beams, several sequences per row, returned scores, stop strings,
extra arguments, a cache passed in) goes to ``generate``. :func:`fast_generate` puts it behind a model's ``generate``
(what TRL calls) without touching the trainer.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AttentionInterface, DynamicCache, GenerationConfig, LogitsProcessorList
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "sdpa_gqa_cpu"


def sdpa_gqa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, position_bias: torch.Tensor | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention with the key/value heads passed grouped (``enable_gqa=True``) on the CPU; the
    causal flag as transformers sets it (only without a mask, only for more than one query position)."""
    if (getattr(module, "num_key_value_groups", 1) == 1 or query.device.type != "cpu" or position_bias is not None
            or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, position_bias=position_bias, **kwargs)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = query.shape[2] > 1 and attention_mask is None and causal
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, is_causal=causal,
                                                           enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa_gqa_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_on_cpu(model) -> bool:
    """Switch a CPU model that runs ``sdpa`` with grouped key/value heads to :data:`NAME`; returns whether it did."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if (config is None or getattr(config, "_attn_implementation", None) != "sdpa" or not heads or kv_heads >= heads
            or next(model.parameters()).device.type != "cpu"):
        return False
    model.set_attn_implementation(NAME)
    return config._attn_implementation == NAME


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


class RoomyLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are the filled part of a buffer with room for ``room`` more tokens: a
    decoding step writes in place instead of copying the whole cache (the module's docstring)."""

    def __init__(self, room: int):
        super().__init__()
        self.room = room
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, add = self.get_seq_length(), key_states.shape[-2]
        keys, values = self._buffers or (None, None)
        if keys is None or n + add > keys.shape[-2] or self.keys.data_ptr() != keys.data_ptr() \
                or self.keys.shape[0] != keys.shape[0]:  # first update, full, or keys replaced from outside
            shape = (*key_states.shape[:-2], n + add + self.room, key_states.shape[-1])
            keys, values = key_states.new_empty(shape), value_states.new_empty(shape)
            if n:
                keys[..., :n, :], values[..., :n, :] = self.keys, self.values
            self._buffers = keys, values
        keys[..., n:n + add, :], values[..., n:n + add, :] = key_states, value_states
        self.keys, self.values = keys[..., :n + add, :], values[..., :n + add, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        n = self.get_seq_length()
        if n and self._buffers is not None:
            keys, values = (buffer[indices, ...] for buffer in self._buffers)
            self._buffers = keys, values
            self.keys, self.values = keys[..., :n, :], values[..., :n, :]
        else:
            super().batch_select_indices(indices)


def cache_with_room(model, room: int) -> DynamicCache:
    """The ``DynamicCache`` transformers builds for ``model``, its full-attention layers :class:`RoomyLayer` with room
    for ``room`` tokens (the call's new tokens): a sliding-window or other layer kind stays as it is."""
    cache = DynamicCache(config=getattr(model, "config", None))
    if cache.layer_class_to_replicate is DynamicLayer:  # no config: layers made as the model first writes them
        cache.layer_class_to_replicate = functools.partial(RoomyLayer, room)
    cache.layers = [RoomyLayer(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Each token's position in its left-padded row (padding at 0): what the prefill of a pruned loop passes."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def decode_step(model, cache, token: torch.Tensor, mask: torch.Tensor, last: torch.Tensor,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of a loop that drops finished rows: the rows ``keep`` selects (all when None) stay in the cache, mask
    and positions, and ``token`` (one per remaining row) is fed at the next position. Returns the next logits, mask and
    last positions. Both pruned loops run it: :func:`generate_pruned` here and greedy evaluation's
    :func:`recipe.models.hf_generation._greedy_pruned`."""
    if keep is not None:
        cache.batch_select_indices(keep)
        mask, last = mask[keep], last[keep]
    mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    last = last + 1
    logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=last[:, None], past_key_values=cache,
                   use_cache=True).logits[:, -1, :]
    return logits, mask, last


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
    config = kwargs.get("generation_config")
    cache = cache_with_room(model, getattr(config, "max_new_tokens", None) or 256)
    positions = positions_of(mask)
    model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    cache.batch_select_indices(inverse.to(input_ids.device))
    return generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **kwargs)


def _prunable(config: GenerationConfig, kwargs: dict) -> bool:
    """Whether :func:`generate_pruned` samples what ``generate`` samples for this (prepared) config: one sequence per
    row without beams, scores or stop strings, ended by EOS (padding after it), nothing passed beside the inputs."""
    return (not kwargs and config.num_beams in (None, 1) and config.num_return_sequences in (None, 1)
            and not config.return_dict_in_generate and config.stop_strings is None and config.max_time is None
            and config.guidance_scale in (None, 1.0) and config.cache_implementation is None
            and config.max_new_tokens is not None and config.eos_token_id is not None
            and config.pad_token_id is not None)


@torch.no_grad()
def generate_pruned(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    generation_config: GenerationConfig | None = None, **kwargs) -> torch.Tensor | None:
    """``model.generate(input_ids=..., attention_mask=..., generation_config=...)``'s ids (prompt + completions, each
    row padded after its EOS to the longest) with each distinct prompt row prefilled once and finished rows dropped
    from the batch; None when the call is one it does not cover (the caller runs ``generate``)."""
    config, extra = model._prepare_generation_config(generation_config)
    if not _prunable(config, {**extra, **kwargs}):
        return None
    rows, width = input_ids.shape
    model._prepare_special_tokens(config, True, device=input_ids.device, batch_size=rows)
    processors = model._get_logits_processor(
        generation_config=config, input_ids_seq_length=width, encoder_input_ids=input_ids,
        prefix_allowed_tokens_fn=None, logits_processor=LogitsProcessorList(), device=input_ids.device, model_kwargs={})
    eos, pad = config._eos_token_tensor.reshape(-1), config._pad_token_tensor
    first_rows, inverse = _distinct_rows(input_ids, attention_mask)
    positions = positions_of(attention_mask)
    cache = cache_with_room(model, config.max_new_tokens)
    logits = model(input_ids=input_ids[first_rows], attention_mask=attention_mask[first_rows],
                   position_ids=positions[first_rows], past_key_values=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    cache.batch_select_indices(inverse)
    logits, active, mask, last, ids = logits[inverse], torch.arange(rows), attention_mask, positions[:, -1], input_ids
    for step in range(config.max_new_tokens):
        scores = processors(ids[active], logits.to(torch.float32))
        if config.do_sample:
            probs = torch.softmax(scores, dim=-1)
            if len(active) < rows:  # every row draws, as in generate; a finished row's draw is discarded
                probs = torch.zeros(rows, probs.shape[1], dtype=probs.dtype).index_fill_(1, pad.reshape(1), 1.0) \
                    .index_copy_(0, active, probs)
            token = torch.multinomial(probs, num_samples=1).squeeze(1)[active]
        else:
            token = scores.argmax(-1)
        ids = torch.cat([ids, torch.full((rows, 1), int(pad), dtype=ids.dtype).index_copy_(0, active, token[:, None])],
                        dim=1)
        going = ~torch.isin(token, eos)
        if not going.any() or step == config.max_new_tokens - 1:
            break
        keep = None if going.all() else going.nonzero().squeeze(1)
        if keep is not None:
            active, token = active[keep], token[keep]
        logits, mask, last = decode_step(model, cache, token, mask, last, keep)
    return ids


def fast_generate(model):
    """Route ``model.generate`` (an instance attribute over the class's method) through :func:`generate_pruned`, or
    for a call it does not cover through :func:`generate_shared_prefill`; returns ``model``. Calling it twice wraps
    once."""
    if getattr(model.generate, "_fast", False):
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
        if kwargs.get("attention_mask") is None:
            kwargs["attention_mask"] = torch.ones_like(kwargs["input_ids"])
        if not kwargs["input_ids"].is_cuda:
            pruned = generate_pruned(forward, **kwargs)
            if pruned is not None:
                return pruned
        return generate_shared_prefill(plain, forward, **kwargs)

    generate._fast = True
    model.generate = generate
    return model
