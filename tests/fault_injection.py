"""Fault injection for the resume and Ctrl-C tests, through the public callback seam of ``recipe.train.trainer``
(:func:`~recipe.train.trainer.install_callbacks`). ``python -m tests.fault_injection ARGS`` (:func:`command`) is
``cotrecipe ARGS`` with :func:`callbacks` installed, and every run child it starts is started the same way
(``python -m tests.fault_injection train|eval ...``, the run child's own arguments). Under it, a run given
:func:`kill_after_save_env` SIGKILLs the process that trains ``entry`` right after its checkpoint ``step`` is complete
on disk, so the kill lands at a known point; with :func:`ctrl_c_env` the process SIGINTs itself there instead; with
:func:`wait_for_ctrl_c_env` each named entry's process prints :data:`WAITING` at its step and blocks until a SIGINT
comes, so a test sends one when every process it names is there. Nothing of this ships in the package."""

from __future__ import annotations

import os
import signal
import sys
import threading

from transformers import TrainerCallback

from recipe import cli
from recipe.run import child, subrun
from recipe.train.trainer import install_callbacks

MODULE = "tests.fault_injection"
CHILD_COMMANDS = ("train", "eval")  # a run child's first argument (recipe.run.child)

KILL_AFTER_SAVE_ENV = "COTRECIPE_KILL_AFTER_SAVE"  # "<entry>:<step>", e.g. "stage2:2"
CTRL_C_AFTER_SAVE_ENV = "COTRECIPE_CTRL_C_AFTER_SAVE"  # "<entry>:<step>": SIGINT to itself after that checkpoint
WAIT_FOR_CTRL_C_ENV = "COTRECIPE_WAIT_FOR_CTRL_C"  # "<entry>:<step>,<entry>:<step>": block there until SIGINT
WAITING = "fault-injection: waiting for Ctrl-C:"  # + " <entry> <step>", printed (flushed) when it blocks
WAIT_LIMIT_S = 600.0  # a test that never sends the SIGINT fails after this instead of hanging


class KillAfterSave(TrainerCallback):
    """SIGKILL this process once checkpoint ``step`` is on disk."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):  # called after the checkpoint folder is complete
        if state.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class CtrlCAfterSave(TrainerCallback):
    """SIGINT this process (as Ctrl-C would) once checkpoint ``step`` is on disk."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class WaitForCtrlC(TrainerCallback):
    """At the end of step ``step``: print :data:`WAITING` and block until a SIGINT's KeyboardInterrupt ends the wait."""

    def __init__(self, entry: str, step: int):
        self.entry, self.step = entry, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            print(f"{WAITING} {self.entry} {self.step}", flush=True)
            threading.Event().wait(WAIT_LIMIT_S)  # a lock wait: the SIGINT handler's exception ends it
            raise RuntimeError(f"fault injection: no Ctrl-C came within {WAIT_LIMIT_S:.0f} s")


def _steps(variable: str, entry: str) -> list[int]:
    pairs = (item.partition(":") for item in os.environ.get(variable, "").split(","))
    return [int(step) for name, _, step in pairs if name == entry and step.isdigit()]


def callbacks(entry: str) -> list[TrainerCallback]:
    """The seam's factory: the callbacks the variables above arm for ``entry``, else none.

    >>> os.environ[KILL_AFTER_SAVE_ENV] = "stage2:2"
    >>> [type(c).__name__ for c in callbacks("stage2")], callbacks("stage1")
    (['KillAfterSave'], [])
    >>> del os.environ[KILL_AFTER_SAVE_ENV]
    """
    return ([KillAfterSave(step) for step in _steps(KILL_AFTER_SAVE_ENV, entry)]
            + [CtrlCAfterSave(step) for step in _steps(CTRL_C_AFTER_SAVE_ENV, entry)]
            + [WaitForCtrlC(entry, step) for step in _steps(WAIT_FOR_CTRL_C_ENV, entry)])


def kill_after_save_env(entry_and_step: str) -> dict[str, str]:
    """The environment that arms the kill in every process of a run started by :func:`command` (child processes
    inherit it)."""
    return {KILL_AFTER_SAVE_ENV: entry_and_step}


def ctrl_c_env(entry_and_step: str) -> dict[str, str]:
    """The environment that arms :class:`CtrlCAfterSave` (``"stage1:1"``)."""
    return {CTRL_C_AFTER_SAVE_ENV: entry_and_step}


def wait_for_ctrl_c_env(*entries_and_steps: str) -> dict[str, str]:
    """The environment that arms :class:`WaitForCtrlC` in each named entry's process (``"stage2:1"``, ...)."""
    return {WAIT_FOR_CTRL_C_ENV: ",".join(entries_and_steps)}


def command(*args: str) -> list[str]:
    """``cotrecipe ARGS`` with the fault-injection callbacks in this process and in the run children it starts."""
    return [sys.executable, "-m", MODULE, *args]


def arm() -> None:
    """Install :func:`callbacks` in this process, and start run children through this module (so they install them
    too)."""
    install_callbacks(callbacks)
    subrun.CHILD_MODULE = MODULE


def main(argv: list[str]) -> int:
    """A run child's arguments go to the run child's main, anything else to the CLI; both with :func:`arm`."""
    arm()
    if argv[:1] and argv[0] in CHILD_COMMANDS:
        return child.main(argv)
    return cli.main(args=argv, prog_name="cotrecipe")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
