"""Training rows redrawn every epoch: stage 1's shuffle and mask and stage 2's mask are drawn anew for each pass.

The authors' collator draws a new permutation and mask every time it reads a row, so each of stage 1's epochs sees
other jumbles of the same problem. Here epoch ``e`` reads the rows a builder makes with seed ``run.seed + e``:
seeded (a rerun or a resumed run sees the same sequence) and different from epoch to epoch.

How it plugs into TRL (1.14.2): the trainer is built as usual on epoch 0's dataset (for SFT already tokenised the
trainer's way, :mod:`recipe.train.sft_tokenise`, as every later epoch's is); its ``train_dataset`` is swapped for an
:class:`EpochRows` that serves the current epoch's rows, and an :class:`EpochSwitch` callback moves it to the next
epoch at ``on_epoch_begin``, which ``Trainer`` calls before it iterates that epoch's dataloader (also for the epoch a
resumed run restarts in). Rows are read in the main process (``dataloader_num_workers=0``,
:mod:`recipe.train.trl_args`). A dataset transform cannot do this: SFTTrainer
prepares its dataset once, up front, and refuses a ``with_transform`` dataset.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset
from transformers import TrainerCallback

from recipe.errors import DataError

log = logging.getLogger("recipe")


class EpochRows(Dataset):
    """A map-style dataset whose rows are ``build(epoch)`` for the current epoch (built on first use, one epoch held
    at a time). Its length is epoch 0's (the trainer sized its schedule by it): a redrawn epoch that kept fewer rows
    (a new mask can make a prompt too long for ``max_length``) serves its rows again from the start to fill it, one
    that kept more serves its first ones; either is logged.

    >>> data = EpochRows(lambda epoch: [f"row-0-epoch-{epoch}"])
    >>> data[0], data.set_epoch(2), data[0]
    ('row-0-epoch-0', None, 'row-0-epoch-2')
    >>> data = EpochRows(lambda epoch: ["a", "b", "c"][: 3 - epoch])
    >>> data.set_epoch(1); len(data), [data[i] for i in range(len(data))]
    (3, ['a', 'b', 'a'])
    """

    def __init__(self, build: Callable[[int], Any], first: Any = None):
        self.build = build
        self.epoch = 0
        self._rows = build(0) if first is None else first
        self._n = len(self._rows)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self._n:
            raise IndexError(f"row {index} of {self._n}")
        return self._rows[index % len(self._rows)]

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        rows = self.build(epoch)
        if len(rows) == 0:
            raise DataError(f"epoch {epoch} kept no training row (every redrawn prompt fills max_length); raise the "
                            f"section's max_length")
        if len(rows) != self._n:
            how = "repeating its first rows" if len(rows) < self._n else f"using its first {self._n}"
            log.warning("epoch %d kept %d training rows after the length check, epoch 0 %d: %s to keep the schedule",
                        epoch, len(rows), self._n, how)
        self._rows, self.epoch = rows, epoch


class EpochSwitch(TrainerCallback):
    """Moves an :class:`EpochRows` to the epoch the trainer is about to run."""

    def __init__(self, rows: EpochRows):
        self.rows = rows

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the float progress so far: exactly e at the start of epoch e, e + fraction after a resume
        self.rows.set_epoch(math.floor((state.epoch or 0.0) + 1e-6))


def redraw_each_epoch(trainer: Any, build: Callable[[int], Any]) -> EpochRows:
    """Serve ``trainer`` the rows of ``build(epoch)`` for each epoch; epoch 0 keeps the dataset it was built with."""
    rows = EpochRows(build, first=trainer.train_dataset)
    trainer.train_dataset = rows
    trainer.add_callback(EpochSwitch(rows))
    return rows
