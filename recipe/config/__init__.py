"""The configuration: one typed schema with each key's limits (:mod:`.schema`), loading, merging and validation
(:mod:`.core`), the checks that span keys or name libraries' values (:mod:`.limits`), TRL's own keys passed through a
trainer section (:mod:`.trl_pass`) against the fields of the installed TRL read from its source (:mod:`.trl_source`),
the pydantic machinery under it (:mod:`.typed`), the bounded YAML reader every file goes through (:mod:`.safe_yaml`),
the keys that moved, still read in their old spelling (:mod:`.renamed`), and the registry of a run's entries
(:mod:`.entries`).

Owns: presets, ``--config`` / ``--set`` merging, validation with one-line errors that name the key.
May import: ``recipe.rewards`` (reward names), ``recipe.data`` (data source forms), ``recipe.dist``,
``recipe.errors``, Its own registry of run entries (:mod:`.entries`, plain data: the ``run.baselines`` keys and ``eval.stages`` names)
is read by every layer above.
Never the model loading, training, evaluation or run layers: they all read a resolved ``Config``.

The public entry points are importable from here: ``from recipe.config import resolve, Config``.
"""

from recipe.config.core import (  # noqa: F401  (the package's public face)
    BASELINES,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    Stage1Config,
    Stage2Config,
    Stage3Config,
    VllmConfig,
    WarmupConfig,
    dump_yaml,
    from_dict,
    parse_override,
    preset_names,
    preset_text,
    resolve,
    to_dict,
    validate,
)
from recipe.errors import ConfigError  # noqa: F401
