"""Error types of the run machinery, in a module of their own so that any layer can raise them without importing
the layer that defines the work (the README's "Run directory" section says what each refers to)."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run directory problem (changed config, unfinished entry, missing output, ...), phrased so the user can fix
    it."""


class EvalError(RuntimeError):
    """An evaluation problem (missing stage, no data, unusable option), phrased so the user can fix it."""
