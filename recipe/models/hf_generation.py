"""The hf decoder behind :func:`recipe.models.generation.generate`: left padding, greedy or sampled, stop after the
answer line, and the rows both decoders return (:class:`Generation`, :func:`make_generation`).

The answer line is ``data.answer_label`` followed by something with a digit
(:func:`recipe.data.stopping.answer_line_pattern`); ``STOP_TEXTS`` end a row that starts a new problem. Pruned greedy
decoding drops finished rows from the batch as it goes (:func:`_greedy_pruned`; on the CPU with a LoRA merged into the
weights for the call, :func:`recipe.models.speedups.merged_lora`); the rest runs HF ``generate`` (on
unsloth that is Unsloth's patched fast decoding). Which one runs, or vLLM (:mod:`recipe.models.vllm_generation`), is
decided by :func:`recipe.models.generation.choose_decoder`, not here. The pruned loop is our own code kept over HF
``generate`` because it measured faster with the same tokens (``bench/prune.py``: 1.40x on 100 dev problems, docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from recipe.data.prompts import ANSWER_LABEL
from recipe.data.stopping import cut_finished, is_finished
from recipe.models.speedups import cache_with_room, decode_step, merged_lora, positions_of

TAIL_TOKENS = 48  # how many trailing tokens are decoded to look for the answer line; far longer than the line


@dataclass
class Generation:
    prompt: str
    text: str  # the completion, cut right after the final-answer line
    n_tokens: int  # generated tokens of the student's tokenizer (pad/eos excluded)
    truncated: bool  # hit max_new_tokens without ending
    raw: str = ""  # every generated token decoded, uncut (what the authors' checker reads)


class StopAfterAnswerLine(StoppingCriteria):
    """Per-row stop once ``<answer_label> ...<digit>...\\n`` has been generated (``rule="answer_line"``) or the
    authors' answer test holds (``rule="paper"``, :func:`recipe.data.stopping.paper_answer_done`), or any of
    ``stop_texts``."""

    def __init__(self, tokenizer, prompt_len: int, stop_texts: Sequence[str] = (), answer_label: str = ANSWER_LABEL,
                 rule: str = "answer_line"):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.stop_texts = tuple(stop_texts)
        self.answer_label = answer_label
        self.rule = rule

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, max(self.prompt_len, input_ids.shape[1] - TAIL_TOKENS):]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [is_finished(t, self.rule, self.stop_texts, self.answer_label) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def eos_ids_of(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus any the model's generation config lists (e.g. a chat model's end-of-turn token)."""
    ids = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for tok in config_eos if isinstance(config_eos, list) else [config_eos]:
        if isinstance(tok, int) and tok not in ids:
            ids.append(tok)
    return [t for t in ids if t is not None]


_PROCESSING_KEYS = {  # generation-config settings that change greedy logits; with any of them set, HF generate runs
    "repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "min_length": (None, 0),
    "min_new_tokens": (None, 0), "bad_words_ids": (None,), "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "sequence_bias": (None,), "encoder_repetition_penalty": (None, 1.0), "exponential_decay_length_penalty": (None,),
}


def plain_greedy(model) -> bool:
    """Whether greedy decoding of ``model`` is a bare argmax (no logits processors from its generation config), so
    :func:`_greedy_pruned` writes exactly what HF ``generate`` writes. Models loaded through Unsloth (its own patched
    forward and decoding) keep HF ``generate``."""
    if getattr(getattr(model, "config", None), "unsloth_version", None):
        return False
    config = getattr(model, "generation_config", None)
    return all(getattr(config, key, None) in allowed for key, allowed in _PROCESSING_KEYS.items())


def _greedy_pruned(model, tokenizer, enc, max_new_tokens: int, eos_ids: list[int],
                   done: Callable[[str], bool] | None) -> list[list[int]]:
    """Greedy decoding with a KV cache whose finished rows leave the batch: a row ends on EOS (kept, as HF keeps it)
    or when ``done`` holds for the tail of its generated text (what :class:`StopAfterAnswerLine` reads), and the cache,
    mask and positions of the rows still writing are index-selected. HF ``generate`` keeps finished rows in the batch
    until the last one ends, so one rambling row made the whole batch run to ``max_new_tokens``. Same prefill, same
    positions, same argmax: the same tokens as ``generate`` (tested against it)."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    positions = positions_of(mask)
    cache = cache_with_room(model, max_new_tokens)
    written: list[list[int]] = [[] for _ in range(ids.shape[0])]
    active = torch.arange(ids.shape[0], device=ids.device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1, :]
    last = positions[:, -1]
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1)
        rows = active.tolist()
        keep = []
        for k, (row, tok) in enumerate(zip(rows, nxt.tolist())):
            written[row].append(tok)
            if tok in eos_ids:
                continue
            if done is not None and done(tokenizer.decode(written[row][-TAIL_TOKENS:], skip_special_tokens=True)):
                continue
            keep.append(k)
        if not keep or step == max_new_tokens - 1:
            break
        index = torch.tensor(keep, device=ids.device) if len(keep) < len(rows) else None
        if index is not None:
            active, nxt = active[index], nxt[index]
        logits, mask, last = decode_step(model, cache, nxt, mask, last, index)
    return written


def make_generation(prompt: str, ids: Sequence[int], ended: bool, tokenizer, special: set, max_new_tokens: int,
                    done: Callable[[str], bool] | None, cut: Callable[[str], str] | None) -> Generation:
    """One row from its generated token ids (both decoders, :mod:`recipe.models.vllm_generation` too): special tokens
    dropped and not counted, the text cut by ``cut`` (the stop rule's :func:`recipe.data.stopping.cut_finished`), and
    ``truncated`` when ``max_new_tokens`` were written without EOS (``ended``) or a finished answer."""
    ids = [t for t in ids if t not in special]
    raw = tokenizer.decode(ids, skip_special_tokens=True)
    finished = ended or done is not None and done(raw + "\n")
    return Generation(prompt=prompt, text=cut(raw) if cut is not None else raw, n_tokens=len(ids),
                      truncated=len(ids) >= max_new_tokens and not finished, raw=raw)


@torch.no_grad()
def generate_hf(model, tokenizer, prompts: list[str], *, pruned: bool, max_new_tokens: int = 512,
                batch_size: int = 16, temperature: float = 0.0, top_p: float = 1.0, num_return_sequences: int = 1,
                seed: int = 0, stop_at_answer: bool = True, stop_texts: Sequence[str] = (),
                answer_label: str = ANSWER_LABEL, stop_rule: str = "answer_line",
                progress=None) -> list[list[Generation]]:
    """:func:`recipe.models.generation.generate` on the hf decoder: ``pruned`` (greedy, one answer per prompt, a
    plain-argmax model; the seam decides) drops finished rows from the batch as it goes (:func:`_greedy_pruned`, the
    same tokens as HF ``generate``); otherwise HF ``generate`` runs with :class:`StopAfterAnswerLine`."""
    if pruned and (temperature > 0 or num_return_sequences != 1):
        raise ValueError("pruned decoding is greedy with one answer per prompt; sampling runs HF generate")
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_ids = eos_ids_of(model, tokenizer)
    special = {tokenizer.pad_token_id, *eos_ids}
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    done = partial(is_finished, rule=stop_rule, stop_texts=stop_texts, answer_label=answer_label) \
        if stop_at_answer else None
    kwargs = dict(max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_ids)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    results: list[list[Generation]] = []
    # the pruned loop on the CPU runs with the LoRA merged, once for every batch: the same tokens, 1.06x
    # (bench/sampling.py)
    with merged_lora(model) if pruned and device.type == "cpu" else contextlib.nullcontext():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            prompt_len = enc["input_ids"].shape[1]
            if pruned:
                new = _greedy_pruned(model, tokenizer, enc, max_new_tokens, eos_ids, done)
            else:
                if stop_at_answer:
                    kwargs["stopping_criteria"] = StoppingCriteriaList(
                        [StopAfterAnswerLine(tokenizer, prompt_len, stop_texts, answer_label, stop_rule)])
                new = model.generate(**enc, **kwargs)[:, prompt_len:].tolist()
            for i, prompt in enumerate(chunk):
                rows = new[i * num_return_sequences:(i + 1) * num_return_sequences]
                results.append([make_generation(prompt, ids, any(t in special for t in ids) or pruned and
                                                len(ids) < max_new_tokens, tokenizer, special, max_new_tokens, done,
                                                partial(cut_finished, rule=stop_rule, stop_texts=stop_texts,
                                                        answer_label=answer_label) if stop_at_answer else None)
                                for ids in rows])
            if progress is not None:
                progress(len(chunk))
    return results
