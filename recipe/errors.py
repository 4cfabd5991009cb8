"""User-facing error types shared across layers, in a module of their own so that any layer can raise them without
importing the layer that does the work (the CLI turns each into one ``error: ...`` line)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, phrased so the user can fix it."""


class RunError(RuntimeError):
    """A run directory problem (changed config, unfinished entry, missing output, ...), phrased so the user can fix
    it."""


class EvalError(RuntimeError):
    """An evaluation problem (missing stage, no data, unusable option), phrased so the user can fix it."""
