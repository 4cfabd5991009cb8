"""SFT rows tokenised the way TRL's ``SFTTrainer`` prepares them, so the recipe hands the trainer a processed dataset
(every epoch, epoch 0 included) and never calls its private ``_prepare_dataset``.

What TRL 1.14.2 does to a non-conversational prompt-completion dataset with the recipe's settings
(``completion_only_loss=True``, ``packing=False``, a ``max_length``; :func:`recipe.train.trl_args.sft_args`), step by
step in ``SFTTrainer._prepare_dataset`` (trl/trainer/sft_trainer.py), and here in :func:`tokenise`:

1. the EOS string (``args.eos_token``, else the tokenizer's) is appended to a completion that does not already end
   with it;
2. ``prompt`` and ``prompt + completion`` are tokenised (the tokenizer's own call, special tokens as it adds them);
   the completion starts where the two token lists stop agreeing (usually right after the prompt's tokens);
3. ``labels`` are the ids with every prompt token set to -100 (the ``completion_mask`` column is dropped);
4. ``input_ids`` and ``labels`` are cut to ``max_length`` (``truncation_mode``: keep the start or the end);
5. a row left with no label (``keep_start`` and a prompt that alone fills ``max_length``) is dropped;
6. only ``input_ids`` and ``labels`` are kept under ``use_liger_kernel``; with ``shuffle_dataset`` the dataset is
   shuffled with ``args.seed`` (left to the caller: the trainer shuffles what it is given, see
   :func:`shuffled_like_trl`).

Given a dataset that has ``input_ids`` TRL skips steps 1-2, and one that also has ``labels`` skips step 3; steps 4-5
leave this output as it is (it is already cut and filtered) and TRL's shuffle still applies, so the trainer's
``train_dataset`` is the one the trainer used to build itself (tests/test_sft_tokenise.py compares them row by row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

IGNORE = -100  # the label of a token without loss (transformers' and TRL's ignore index)


def common_prefix_length(ids: Sequence[int], other: Sequence[int]) -> int:
    """How many leading tokens ``ids`` and ``other`` share.

    >>> common_prefix_length([1, 2, 3], [1, 2, 4, 5]), common_prefix_length([1, 2], [1, 2, 3])
    (2, 2)
    """
    n = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        n += 1
    return n


def with_eos(completion: str, eos: str) -> str:
    """``completion`` ending with ``eos`` (appended only when it does not already end with it).

    >>> with_eos("Final Answer: 2", "<|endoftext|>"), with_eos("2<|endoftext|>", "<|endoftext|>")
    ('Final Answer: 2<|endoftext|>', '2<|endoftext|>')
    """
    return completion if completion.endswith(eos) else completion + eos


def cut(values: list, max_length: int | None, mode: str) -> list:
    """``values`` cut to ``max_length`` (``keep_start``: the first ones, ``keep_end``: the last ones).

    >>> cut([1, 2, 3], 2, "keep_start"), cut([1, 2, 3], 2, "keep_end"), cut([1, 2, 3], None, "keep_start")
    ([1, 2], [2, 3], [1, 2, 3])
    """
    if max_length is None:
        return values
    if mode == "keep_start":
        return values[:max_length]
    if mode == "keep_end":
        return values[-max_length:]
    raise ValueError(f"truncation_mode={mode!r}: expected 'keep_start' or 'keep_end'")


def _check_settings(args: Any) -> None:
    """The settings this mirrors; anything else is TRL preparation the recipe does not use (and does not copy)."""
    wrong = {key: getattr(args, key) for key, want in (("completion_only_loss", True), ("packing", False))
             if getattr(args, key) is not want}
    if wrong:
        raise ValueError(f"sft_tokenise mirrors TRL's preparation for completion_only_loss=True and packing=False "
                         f"only, got {wrong}")


def tokenise(rows: Sequence[Mapping[str, Any]], tokenizer: Any, args: Any) -> list[dict[str, Any]]:
    """Prompt-completion ``rows`` as TRL's SFTTrainer prepares them for ``args`` (an ``SFTConfig``; steps 1-5 and the
    liger column choice of the module doc), in order, rows dropped for length left out. Each row:
    ``prompt``, ``completion`` (with the EOS), ``input_ids``, ``labels``; only the last two under
    ``use_liger_kernel``. Text prompts only (the recipe's rows); the tokenizer is called as TRL calls it.

    >>> words = lambda text: {"input_ids": [len(w) for w in text.split()]}
    >>> class Args:
    ...     completion_only_loss, packing, max_length, truncation_mode = True, False, 4, "keep_start"
    ...     eos_token, use_liger_kernel = " EOS", False
    >>> [r["labels"] for r in tokenise([{"prompt": "a bb", "completion": " ccc"}], words, Args)]
    [[-100, -100, 3, 3]]
    >>> tokenise([{"prompt": "a bb ccc dddd", "completion": " e"}], words, Args)  # the prompt fills max_length
    []
    """
    _check_settings(args)
    eos = args.eos_token or tokenizer.eos_token
    out = []
    for row in rows:
        prompt, completion = row["prompt"], with_eos(row["completion"], eos)
        if not isinstance(prompt, str):
            raise ValueError(f"row {row.get('id')!r}: sft_tokenise takes text prompts, got {type(prompt).__name__}")
        prompt_ids = tokenizer(text=prompt)["input_ids"]
        ids = list(tokenizer(text=prompt + completion)["input_ids"])
        start = common_prefix_length(prompt_ids, ids)
        labels = [IGNORE] * start + ids[start:]
        ids, labels = cut(ids, args.max_length, args.truncation_mode), cut(labels, args.max_length,
                                                                           args.truncation_mode)
        if all(label == IGNORE for label in labels):
            continue  # no token to learn: TRL drops the row
        text = {} if args.use_liger_kernel else {"prompt": prompt, "completion": completion}
        out.append({**text, "input_ids": ids, "labels": labels})
    return out


def shuffled_like_trl(dataset: Any, args: Any) -> Any:
    """``dataset`` (a ``datasets.Dataset``) shuffled as the trainer shuffles a dataset it is given: with ``args.seed``
    when ``args.shuffle_dataset`` is on (and ``dataset_kwargs`` does not skip its preparation), else as it is."""
    skipped = bool((args.dataset_kwargs or {}).get("skip_prepare_dataset", False))
    return dataset.shuffle(seed=args.seed) if args.shuffle_dataset and not skipped else dataset
