"""Every user-facing error type of the package, in one module so that any layer can raise them without importing
the layer that does the work. The CLI (and a run's child process) turns each of :data:`KNOWN_ERRORS` into one
``error: ...`` line and exit status 2; anything else is a bug and keeps its traceback.

Import an error from here (``from recipe.errors import DataError``), not from a module that raises it. Beside them,
:func:`short_repr`: how a message shows a user's value, bounded whatever its size.
"""

from __future__ import annotations

import reprlib
from typing import Any


class ConfigError(ValueError):
    """A configuration problem, phrased so the user can fix it."""


class RunError(RuntimeError):
    """A run directory problem (changed config, unfinished entry, missing output, ...), phrased so the user can fix
    it."""


class EvalError(RuntimeError):
    """An evaluation problem (missing stage, no data, unusable option), phrased so the user can fix it."""


class ModelError(RuntimeError):
    """A model cannot be found, converted or loaded; the message says what to do."""


class PrecisionError(ValueError):
    """A dtype the config asks for that this machine cannot use."""


class EngineError(RuntimeError):
    """A second vLLM engine was asked for while one is still held."""


class WeightsError(RunError):
    """An adapter names a different base repository than the one this run loads everywhere (a one-line CLI error)."""


class DataError(ValueError):
    """A dataset could not be loaded or parsed; the message names the file, row or line."""


class BadRow(DataError):
    """One row is unusable; ``reason`` says why and ``row_id`` (when known) which row."""

    def __init__(self, reason: str, row_id: str | None = None):
        self.reason = reason
        self.row_id = row_id
        super().__init__(f"{row_id}: {reason}" if row_id else reason)

    def __reduce__(self):
        return type(self), (self.reason, self.row_id)


class TeachError(DataError):
    """A bad ``teach`` option or cache file; the message names it."""


class TeacherServerError(RuntimeError):
    """The server refuses every request (bad key, URL or model): the run stops with this one line."""


class ScoreError(DataError):
    """``cotrecipe score`` cannot go on (missing input, output would overwrite it, nothing scored)."""


class PlanError(ValueError):
    """No model dimensions for the configured model; the message says how to give them."""


class ExportError(RuntimeError):
    """An export cannot be done as asked; the message says what to do."""


# What the CLI reports as one line (subclasses included: BadRow, TeachError, ScoreError are DataErrors, WeightsError
# is a RunError).
KNOWN_ERRORS = (ConfigError, DataError, ModelError, RunError, EvalError, PlanError, ExportError)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the work; ``where`` says where in the user's words (the entry, the step, what is kept).
    A KeyboardInterrupt, so that everything that cleans up after one (``except BaseException``) still does."""

    def __init__(self, where: str = ""):
        self.where = where
        super().__init__(where)


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _repr.maxlong = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, in time bounded whatever the value's size.

    >>> short_repr("x" * 1000)[:12], len(short_repr("x" * 1000)) <= 83, short_repr([1, [2, [3, [4]]]])
    ("'xxxxxxxxxxx", True, '[1, [2, [3, [...]]]]')
    """
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
