"""The configuration: every key with its type, default, limits and doc (:mod:`.schema`); loading, merging and the
checks that span keys (:mod:`.core`); TRL's keys read from its source, never imported (:mod:`.trl_source`); YAML with
the guards PyYAML lacks (:mod:`.safe_yaml`); the registry of a run's entries, plain data read by every layer above
(:mod:`.entries`). May import: ``recipe.rewards``, ``recipe.data``, ``recipe.dist``, ``recipe.errors``; never the
model, training, evaluation or run layers (they read a resolved ``Config``).
"""

from recipe.config.core import Config, ConfigError, ModelConfig, resolve

__all__ = ["Config", "ConfigError", "ModelConfig", "resolve"]
