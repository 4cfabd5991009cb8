"""Fault injection for the resume tests, through the public callback seam of ``recipe.train.common``
(``COTRECIPE_TRAINER_CALLBACKS``): a run started with :func:`kill_after_save_env` SIGKILLs the process that trains
``entry`` right after its checkpoint ``step`` is complete on disk, so the kill lands at a known point. Nothing of
this ships in the package."""

from __future__ import annotations

import os
import signal

from transformers import TrainerCallback

from recipe.train.common import CALLBACKS_ENV

KILL_AFTER_SAVE_ENV = "COTRECIPE_KILL_AFTER_SAVE"  # "<entry>:<step>", e.g. "stage2:2"


class KillAfterSave(TrainerCallback):
    """SIGKILL this process once checkpoint ``step`` is on disk."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):  # called after the checkpoint folder is complete
        if state.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def callbacks(entry: str) -> list[TrainerCallback]:
    """The seam's factory: a :class:`KillAfterSave` for the entry :data:`KILL_AFTER_SAVE_ENV` names, else none.

    >>> os.environ[KILL_AFTER_SAVE_ENV] = "stage2:2"
    >>> [type(c).__name__ for c in callbacks("stage2")], callbacks("stage1")
    (['KillAfterSave'], [])
    >>> del os.environ[KILL_AFTER_SAVE_ENV]
    """
    name, _, step = os.environ.get(KILL_AFTER_SAVE_ENV, "").partition(":")
    return [KillAfterSave(int(step))] if name == entry and step.isdigit() else []


def kill_after_save_env(entry_and_step: str) -> dict[str, str]:
    """The environment that arms the kill in every process of a run (child processes inherit it)."""
    return {CALLBACKS_ENV: "tests.fault_injection:callbacks", KILL_AFTER_SAVE_ENV: entry_and_step}
