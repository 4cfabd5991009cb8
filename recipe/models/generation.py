"""The one generation seam: evaluation, stage-3 mining and ``teach``'s ``hf:`` teacher all call :func:`generate`,
and :func:`choose_decoder` is the one place that decides how the rows are made:

- ``vllm``: the model carries the vLLM engine this process holds (loaded with ``vllm.enabled`` on unsloth,
  :func:`recipe.models.unsloth_backend.engine_of`); every request the seam takes is one the engine serves (greedy or
  sampled, ``n`` answers, seeded, the stop texts and rule), so nothing falls back. :mod:`recipe.models.vllm_generation`;
- ``hf_pruned``: greedy, one answer per prompt, ``prune`` on and a model whose greedy decoding is a bare argmax
  (:func:`recipe.models.hf_generation.plain_greedy`): finished rows leave the batch as it goes;
- ``hf_generate``: everything else (sampling, several answers, a logits-processing generation config, a model loaded
  through Unsloth without an engine): HF ``generate`` with a per-row stopping criterion.

All three return the same :class:`Generation` rows (tested against each other). Callers reach :func:`generate` as a
module attribute (``generation.generate(...)``), so a test can observe every call at this one seam.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from recipe.data.prompts import ANSWER_LABEL
from recipe.data.stopping import STOP_TEXTS, cut_after_answer
from recipe.models import unsloth_backend
from recipe.models.devices import check_device
from recipe.models.hf_generation import (
    Generation,
    StopAfterAnswerLine,
    eos_ids_of,
    generate_hf,
    plain_greedy,
)
from recipe.models.vllm_generation import generate_vllm

log = logging.getLogger(__name__)

# names callers and tests import from the seam (the rows, the stop rule's pieces, the device move)
__all__ = ["STOP_TEXTS", "Decoder", "Generation", "StopAfterAnswerLine", "choose_decoder", "cut_after_answer",
           "eos_ids_of", "generate", "plain_greedy", "to_device"]

VLLM, HF_PRUNED, HF_GENERATE = "vllm", "hf_pruned", "hf_generate"


@dataclass(frozen=True)
class Decoder:
    """The decoder :func:`generate` runs (not the model backend, which loaded the model)."""

    name: str  # VLLM, HF_PRUNED or HF_GENERATE
    engine: Any = None  # the vllm.LLM when name is VLLM


def choose_decoder(model, *, temperature: float = 0.0, num_return_sequences: int = 1,
                   prune: bool = True) -> Decoder:
    """Which decoder :func:`generate` runs for this model and request (see the module doc); the only place that
    decides it."""
    engine = unsloth_backend.engine_of(model)
    if engine is not None:
        return Decoder(VLLM, engine)
    if prune and temperature <= 0 and num_return_sequences == 1 and plain_greedy(model):
        return Decoder(HF_PRUNED)
    return Decoder(HF_GENERATE)


def to_device(model, device: str = "auto"):
    """Models load on the CPU (4-bit ones excepted); generation runs on CUDA when there is one and it is allowed."""
    check_device(device)  # run.device=cuda without CUDA is refused, never generated on the CPU
    if device == "cpu" or not torch.cuda.is_available() or getattr(model, "hf_device_map", None):
        return model
    return model.to("cuda")


def generate(model, tokenizer, prompts: list[str], *, adapter: str | None = None, max_new_tokens: int = 512,
             batch_size: int = 16, temperature: float = 0.0, top_p: float = 1.0, num_return_sequences: int = 1,
             seed: int = 0, stop_at_answer: bool = True, stop_texts: Sequence[str] = (),
             answer_label: str = ANSWER_LABEL, stop_rule: str = "answer_line", progress=None,
             prune: bool = True) -> list[list[Generation]]:
    """Generate for every prompt; returns one list of ``num_return_sequences`` generations per prompt.

    With ``stop_at_answer`` a row stops after its ``answer_label`` line, or as soon as it writes one of ``stop_texts``
    (the evaluation protocol passes ``["Question:"]``: a base model that starts a new problem is done); the text is
    cut there, while ``n_tokens`` counts every generated token (as the paper's length does). ``stop_rule="paper"``
    stops and cuts by the authors' evaluation rule instead (:mod:`recipe.data.stopping`). ``progress`` is called with
    the number of prompts done after each batch. ``adapter``: the adapter folder the model was loaded from (a LoRA
    request when vLLM generates; the hf decoders have it on the model already). ``batch_size`` and ``prune`` are the
    hf decoders' (vLLM schedules its own batches). The decoder is :func:`choose_decoder`'s."""
    decoder = choose_decoder(model, temperature=temperature, num_return_sequences=num_return_sequences, prune=prune)
    request = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                   num_return_sequences=num_return_sequences, seed=seed, stop_at_answer=stop_at_answer,
                   stop_texts=stop_texts, answer_label=answer_label, stop_rule=stop_rule, progress=progress)
    if decoder.name == VLLM:
        log.info("generating %d prompts through vLLM%s", len(prompts), f" with LoRA {adapter}" if adapter else "")
        return generate_vllm(decoder.engine, tokenizer, prompts, adapter=adapter, eos_ids=eos_ids_of(model, tokenizer),
                             **request)
    return generate_hf(model, tokenizer, prompts, pruned=decoder.name == HF_PRUNED, batch_size=batch_size, **request)
