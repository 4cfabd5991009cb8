"""The configuration: every key with its type, default, limits and doc (:mod:`.schema`); loading, merging and the
checks that span keys (:mod:`.core`); TRL's keys read from its source, never imported (:mod:`.trl_source`); YAML with
the guards PyYAML lacks (:mod:`.safe_yaml`). May import: ``recipe.rewards``, ``recipe.data``, ``recipe.dist``,
``recipe.errors``, ``recipe.entries``; never the model, training, evaluation or run layers (they read a resolved
``Config``).
"""

from recipe.config.core import ConfigError, resolve
from recipe.config.schema import Config, ModelConfig

__all__ = ["Config", "ConfigError", "ModelConfig", "resolve"]
