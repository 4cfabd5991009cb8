"""The configuration: every key with its type, default, limits and doc (:mod:`.schema`); loading, merging and the
checks that span keys (:mod:`.core`); the names and types of TRL's keys read from its source, never imported
(:mod:`.trl_source`); YAML with the guards PyYAML lacks (:mod:`.safe_yaml`); the registry of a run's entries
(:mod:`.entries`).

Owns: presets, ``--config`` / ``--set`` merging, validation with one-line errors that name the key.
May import: ``recipe.rewards`` (reward names), ``recipe.data`` (data source forms), ``recipe.dist``,
``recipe.errors``. Its registry of run entries (:mod:`.entries`, plain data) is read by every layer above.
Never the model loading, training, evaluation or run layers: they all read a resolved ``Config``.

The public entry points are importable from here: ``from recipe.config import resolve, Config``.
"""

from recipe.config.core import Config, ConfigError, ModelConfig, resolve

__all__ = ["Config", "ConfigError", "ModelConfig", "resolve"]
