"""A tiny, seeded Qwen2 model with its own byte-level BPE tokenizer, built locally in about a second.

It exists so that the whole recipe (SFT, GRPO, evaluation) can run end to end on a CPU with no model hub. The
weights are random, so the model writes nonsense, but every tensor shape, tokenizer call and chat template path is
the real one. :func:`build_tiny_qwen2` caches its result: a folder whose ``cotrecipe_tiny.json`` records the same
build settings is reused, anything else is rebuilt in a temporary folder and moved into place in one step.

>>> corpus_lines([{"question": "Tom has 2 pens. How many?", "answer": "He has 2 * 1 = <<2*1=2>>2.\\n#### 2"}])
['Tom has 2 pens. How many?', 'Step 1: He has 2 * 1 = 2.', 'Final Answer: 2']
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from recipe.data.synthetic import synthetic_rows
from recipe.fsio import replace_dir

SPEC_FILE = "cotrecipe_tiny.json"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN, IM_START, IM_END]  # ids 0..3 in this order
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_ANNOTATION = re.compile(r"<<[^<>]*>>")


def corpus_lines(rows: Iterable[dict]) -> list[str]:
    """GSM8K-style rows -> the lines the tokenizer is trained on (question, ``Step k:`` lines, final answer).

    Calculator annotations are dropped as text; nothing is evaluated.

    >>> corpus_lines([{"question": "Q?", "answer": "a = 1.\\nb = 2.\\n#### 3"}])[1:]
    ['Step 1: a = 1.', 'Step 2: b = 2.', 'Final Answer: 3']
    """
    lines: list[str] = []
    for row in rows:
        *steps, final = row["answer"].strip().splitlines()
        lines.append(row["question"])
        lines += [f"Step {i}: {_ANNOTATION.sub('', step).strip()}" for i, step in enumerate(steps, 1)]
        lines.append(f"Final Answer: {final.removeprefix('####').strip()}")
    return lines


def default_texts(seed: int = 0, n_rows: int = 400) -> list[str]:
    """Synthetic GSM8K-style problems rendered as training lines, plus the chat markers and mask token."""
    return list(_default_texts(seed, n_rows))


@functools.lru_cache(maxsize=4)
def _default_texts(seed: int, n_rows: int) -> tuple[str, ...]:
    """Built once per process and arguments (~10 ms each time otherwise): every load of the built-in model hashes
    them to check its cached folder (:func:`build_tiny_qwen2`)."""
    return (*corpus_lines(synthetic_rows(n_rows, seed=seed)), "[MASK]", "system user assistant")


def _is_complete(folder: Path) -> bool:
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    return (
        (folder / "config.json").is_file()
        and any((folder / w).is_file() for w in weights)
        and (folder / "tokenizer.json").is_file()
        and (folder / "tokenizer_config.json").is_file()
    )


def _read_spec(folder: Path) -> dict | None:
    try:
        return json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _train_tokenizer(texts: Sequence[str], vocab_size: int, max_length: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # The exact pipeline transformers' Qwen2Tokenizer rebuilds when AutoTokenizer loads the folder (NFC, Qwen's
    # split regex with single digits, byte-level), so the merges learnt here are the ones applied after reload.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def _build(spec: dict, texts: Sequence[str], folder: Path) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = _train_tokenizer(texts, spec["vocab_size"], spec["max_position_embeddings"])
    eos, pad, im_end = tokenizer.convert_tokens_to_ids([EOS_TOKEN, PAD_TOKEN, IM_END])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_layers"],
        num_attention_heads=spec["num_heads"],
        num_key_value_heads=spec["num_kv_heads"],
        max_position_embeddings=spec["max_position_embeddings"],
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(spec["seed"])
        model = Qwen2ForCausalLM(config).to(torch.float32)
    # Plain completions end with <|endoftext|>, chat turns with <|im_end|>: stop at either.
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=[eos, im_end], pad_token_id=pad)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def build_tiny_qwen2(
    out_dir: str | os.PathLike,
    texts: Sequence[str] | None = None,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
) -> Path:
    """Build (or reuse) a tiny random Qwen2ForCausalLM plus tokenizer in ``out_dir``; return its path.

    Same arguments -> byte-identical weights and tokenizer. ``texts`` defaults to :func:`default_texts`.
    The folder loads with ``AutoModelForCausalLM`` / ``AutoTokenizer``; its tokenizer has eos ``<|endoftext|>``,
    a separate pad ``<|pad|>`` and a ChatML chat template.
    """
    out = Path(out_dir).expanduser().resolve()
    texts = list(default_texts(seed) if texts is None else texts)
    spec = {
        "seed": seed, "vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers,
        "num_heads": num_heads, "num_kv_heads": num_kv_heads, "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "texts_sha256": hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest(),
    }
    if _is_complete(out) and _read_spec(out) == spec:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        _build(spec, texts, tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
