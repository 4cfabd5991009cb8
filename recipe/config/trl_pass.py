"""TRL's own arguments in a trainer section: a key that is a field of the pinned TRL class (``SFTConfig`` for stage 1
and the warm-up, ``GRPOConfig`` for stages 2-3) is type-checked against that field and passed through as it is; the
recipe's own keys are the section's dataclass fields; anything else is an unknown key with a did-you-mean drawn from
both. TRL's fields that the recipe sets itself are refused, naming the key that decides them.

The fields are read from the installed TRL's source (:mod:`recipe.config.trl_source`): resolving a config never imports
TRL, which would load transformers before unsloth on the GPU backend.

>>> from recipe.config.schema import Stage2Config
>>> section_from_mapping(Stage2Config, {"learning_rate": "1e-4", "top_k": 50}, "stage2").trl_args["top_k"]
50
>>> section_from_mapping(Stage2Config, {"lerning_rate": 1}, "stage2")
Traceback (most recent call last):
...
recipe.errors.ConfigError: unknown key 'stage2.lerning_rate' (did you mean 'stage2.learning_rate'?)
>>> section_from_mapping(Stage2Config, {"seed": 1}, "stage2")
Traceback (most recent call last):
...
recipe.errors.ConfigError: 'stage2.seed' is set by the recipe, not per section: use 'run.seed'
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import operator
from typing import Annotated, Any

from recipe.config.schema import TRL_LIMITS
from recipe.config.trl_source import fields_of as trl_fields
from recipe.config.typed import from_mapping
from recipe.errors import ConfigError

# TRL fields the recipe decides itself -> where to say it instead (None: set by the recipe, no key)
RECIPE_SETS: dict[str, str | None] = {
    "output_dir": "run.output_dir", "overwrite_output_dir": "run.output_dir", "seed": "run.seed",
    "data_seed": "run.seed", "full_determinism": "run.seed", "report_to": "run.report_to", "use_cpu": "run.device",
    "no_cuda": "run.device", "bf16": "model.dtype", "fp16": "model.dtype", "bf16_full_eval": "model.dtype",
    "fp16_full_eval": "model.dtype", "half_precision_backend": "model.dtype",
    "gradient_checkpointing": "model.gradient_checkpointing", "model_init_kwargs": "model",
    "max_length": None, "reward_weights": "rewards[].weight", "resume_from_checkpoint": None,
    "save_strategy": None, "remove_unused_columns": None, "completion_only_loss": None, "packing": None,
    "dataset_num_proc": None, "dataloader_num_workers": None, "disable_tqdm": None,
    "ddp_find_unused_parameters": None, "accelerator_config": None,
    "use_vllm": "vllm.enabled", "vllm_mode": "vllm.mode", "vllm_gpu_memory_utilization": "vllm.gpu_memory_utilization",
    **{f"vllm_server_{k}": f"vllm.server_{k}" for k in ("base_url", "host", "port", "timeout")},
}


def annotation(arms: tuple[Any, ...], recipe_default: Any = None) -> tuple[Any, bool]:
    """The checkable annotation of a field's plain types, and whether it takes ``null``. A field the recipe records
    with an integer default keeps integers integers where TRL's type is float (``save_steps: 50``)."""
    kept = [arm for arm in arms if arm is not type(None)]
    if float in kept and int not in kept and type(recipe_default) is int:
        kept.insert(kept.index(float), int)
    return (functools.reduce(operator.or_, kept) if kept else Any), type(None) in arms


def _checked(cls: type, key: str, value: Any, prefix: str) -> Any:
    recorded = cls.TRL_DEFAULTS.get(key)
    tp, nullable = annotation(trl_fields(cls.TRL_CLASS)[key], recorded)
    if value is None and nullable and key not in cls.TRL_DEFAULTS:  # the recorded keys keep a value
        return None
    if key in TRL_LIMITS:
        tp = Annotated[tp, TRL_LIMITS[key]]
    holder = dataclasses.make_dataclass("TRLField", [(key, tp, dataclasses.field(default=None))])
    return getattr(from_mapping(holder, {key: value}, prefix), key)


def section_from_mapping(cls: type, data: dict, prefix: str) -> Any:
    """A trainer section (a :class:`~recipe.config.schema.TrainConfig`) from plain data: own keys through
    :func:`~recipe.config.typed.from_mapping`, TRL's checked one by one and kept in ``trl_args``."""
    own_names = [f.name for f in dataclasses.fields(cls) if f.name != "trl_args"]
    trl_names = trl_fields(cls.TRL_CLASS)
    own, passed = {}, {}
    for key, value in data.items():
        if key in own_names:
            own[key] = value
        elif key in RECIPE_SETS and key in trl_names:
            instead = RECIPE_SETS[key]
            hint = f"use '{instead}'" if instead else "the recipe sets it"
            raise ConfigError(f"'{prefix}.{key}' is set by the recipe, not per section: {hint}")
        elif key in trl_names:
            passed[key] = _checked(cls, key, value, prefix)
        else:
            known = own_names + [n for n in trl_names if n not in RECIPE_SETS]
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)  # YAML keys may be any scalar
            hint = (f"did you mean '{prefix}.{close[0]}'?" if close else
                    f"the recipe's keys: {', '.join(sorted(own_names))}; or a field of TRL's {cls.TRL_CLASS}")
            raise ConfigError(f"unknown key '{prefix}.{key}' ({hint})")
    section = from_mapping(cls, own, prefix)
    return dataclasses.replace(section, trl_args={**section.trl_args, **passed})
