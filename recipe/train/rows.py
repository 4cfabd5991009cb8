"""Training rows: the configured slice of the train split with its teacher, the teacher columns every stage's rows
carry, and the rows of several epochs drawn anew one after another.

Epochs drawn anew (:func:`seeded_epochs`): the authors' collator draws a new permutation and mask every time it reads
a row, so each of stage 1's epochs sees other jumbles of the same problem and each of stage 2's other masks. Here
epoch ``e`` is the rows a stage's builder makes with seed ``run.seed + e``, in an order drawn for that epoch, and the
epochs follow one another in ONE dataset that the trainer reads in one pass, in order (:mod:`.sft`, :mod:`.grpo`
switch the trainer's own shuffling off for it). Seeded: a rerun or a resumed run reads the same sequence. The
trainer prepares that dataset itself, as it prepares any other."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from recipe.config.schema import Config, TrainConfig
from recipe.data import gsm8k as data_mod
from recipe.errors import ConfigError
from recipe.teacher.format import render_target
from recipe.teacher.rationales import apply_teacher

log = logging.getLogger("recipe")

RowsForEpoch = Callable[[int], list[dict]]  # epoch -> that epoch's rows (stage 1's shuffles/masks, stage 2's masks)


def train_problems(cfg: Config, stage: str) -> list[data_mod.Problem]:
    """The configured ``[start, end)`` slice of the train split for ``stage``, with the configured teacher."""
    problems, report = data_mod.load_gsm8k(cfg.data.source, split="train", strict=cfg.data.strict,
                                           annotations=cfg.data.annotations)
    if report.n_bad:
        log.warning(report.summary())
    start, end = getattr(cfg.data, f"{stage}_rows")
    problems = data_mod.slice_rows(problems, start, end)
    if cfg.data.teacher != "gold":
        latex = cfg.data.teacher_latex if stage == "stage1" else "keep"  # the authors' [math] swap: stage 1 only
        problems, replaced = apply_teacher(problems, str(Path(cfg.data.teacher).expanduser()), latex)
        log.info("%s: teacher rationales from %s for %d of %d problems (the rest keep gold)", stage,
                 cfg.data.teacher, replaced, len(problems))
    return problems


def teacher_fields(problem: data_mod.Problem, answer_label: str,
                   with_thinking: bool = True) -> tuple[str, dict[str, Any]]:
    """The rendered teacher solution and the row columns every stage carries (the rewards read them). The solution
    is the authors' three-part target (:func:`recipe.teacher.format.render_target`: the teacher's thinking part
    first when it has one, then the steps, then the answer line); ``with_thinking=False`` leaves the thinking out.
    ``teacher_steps`` counts the real steps only."""
    thinking = problem.thinking if with_thinking else ""
    solution = render_target(problem.steps, problem.answer, thinking, answer_label)
    fields = {
        "id": problem.id,
        "answer": problem.answer,
        "teacher_steps": len(problem.steps),
        "teacher_words": len(solution.split()),
    }
    return solution, fields


def question_only_picks(n: int, seed: int, share: float) -> list[bool]:
    """Which of ``n`` rows show the question alone (``stageN.question_only_share``, not in the paper), each with
    chance ``share``. Drawn from a generator of their own (seeded from ``seed``), so a stage's shuffles and masks are
    the same at any share, and stages 1 and 2 pick the same way for the same seed.

    >>> question_only_picks(4, seed=0, share=0.0), question_only_picks(4, seed=0, share=1.0)
    ([False, False, False, False], [True, True, True, True])
    """
    rng = random.Random(f"question-only-{seed}")
    return [rng.random() < share for _ in range(n)]


def add_token_lengths(rows: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """New rows with ``teacher_tokens``: the teacher solution's length in ``tokenizer`` (``teacher_solution``,
    or ``completion`` for stage-1 rows), tokenised in one batched call without special tokens.

    >>> words = lambda texts, add_special_tokens: {"input_ids": [t.split() for t in texts]}
    >>> add_token_lengths([{"id": "t-0", "teacher_solution": "Step 1: a = 1.\\nFinal Answer: 1"}], words)
    [{'id': 't-0', 'teacher_solution': 'Step 1: a = 1.\\nFinal Answer: 1', 'teacher_tokens': 8}]
    """
    texts = []
    for row in rows:
        text = row["teacher_solution"] if "teacher_solution" in row else row.get("completion")
        if not isinstance(text, str):
            raise KeyError(f"row {row.get('id')!r} has neither 'teacher_solution' nor 'completion'")
        texts.append(text)
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [{**row, "teacher_tokens": len(tok)} for row, tok in zip(rows, ids, strict=True)]


MAX_DRAWN_ROWS = 1_000_000  # rows one pass holds at once: ~2 GB of stage-1 text; the paper's stage 1 draws 10,000


def epochs_to_draw(st: TrainConfig, n_rows: int, rows_per_step: float, section: str = "stage1") -> tuple[int, float]:
    """How many epochs of ``n_rows`` rows one pass must hold, and the trainer's ``num_train_epochs`` for that pass.
    With ``max_steps`` > 0: enough epochs for ``max_steps`` steps of ``rows_per_step`` rows, and 1 (``max_steps``
    ends the pass); else ``ceil(num_train_epochs)`` epochs, and the share of them to train (1 for whole epochs).
    More than :data:`MAX_DRAWN_ROWS` rows is a :class:`~recipe.errors.ConfigError` naming ``section``'s keys: the
    pass is held in memory, and a batch of 10^9 rows would fill it before training starts.

    >>> from types import SimpleNamespace as NS
    >>> epochs_to_draw(NS(max_steps=10, num_train_epochs=1.0), 16, 4), epochs_to_draw(NS(max_steps=3, num_train_epochs=1.0), 16, 4)
    ((3, 1.0), (1, 1.0))
    >>> epochs_to_draw(NS(max_steps=-1, num_train_epochs=2.0), 16, 4), epochs_to_draw(NS(max_steps=-1, num_train_epochs=1.5), 16, 4)
    ((2, 1.0), (2, 0.75))
    """
    if st.max_steps > 0:
        epochs, share = max(1, math.ceil(st.max_steps * rows_per_step / max(1, n_rows))), 1.0
        keys = "max_steps x per_device_train_batch_size x gradient_accumulation_steps"
    else:
        epochs = max(1, math.ceil(st.num_train_epochs))
        share, keys = st.num_train_epochs / epochs, "num_train_epochs"
    if epochs * n_rows > MAX_DRAWN_ROWS:
        raise ConfigError(f"'{section}': {keys} asks for {epochs:,} epochs of its {n_rows:,} rows, over the "
                          f"{MAX_DRAWN_ROWS:,} rows one training pass may hold; lower them")
    return epochs, share


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order epoch ``epoch`` reads its ``n`` rows in: a permutation from a generator of its own.

    >>> sorted(epoch_order(5, seed=0, epoch=1)) == list(range(5)), epoch_order(5, 0, 0) != epoch_order(5, 0, 1)
    (True, True)
    """
    order = list(range(n))
    random.Random(f"epoch-order-{seed}-{epoch}").shuffle(order)
    return order


def seeded_epochs(build: RowsForEpoch, epochs: int, seed: int) -> list[dict]:
    """Epoch 0's rows, then epoch 1's, ... up to ``epochs``: epoch ``e`` is ``build(e)`` in :func:`epoch_order`."""
    out: list[dict] = []
    for epoch in range(epochs):
        rows = build(epoch)
        out.extend(rows[i] for i in epoch_order(len(rows), seed, epoch))
    return out
