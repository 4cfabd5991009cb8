"""The limits of every config key that types alone cannot express, checked by :func:`recipe.config.core.validate` before
anything loads: the enums transformers accepts (read from its installed source, :mod:`recipe.config.trl_source`: importing it here
would load it before unsloth), TRL's GRPO enums (copied from its help text, checked by tests), ranges, and
reward parameters by their fields' types. Every error names the key, the value and what is allowed.

>>> check_reward_params("stage2.rewards[0]", type("Spec", (), {"name": "correctness", "params": {"wrong": "abc"}}))
Traceback (most recent call last):
...
recipe.errors.ConfigError: bad value for 'stage2.rewards[0].params.wrong': 'abc' (expected a finite float)
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import recipe.config.safe_yaml as safe_yaml
from recipe.config.trl_source import enum_values
from recipe.data.synthetic import SOURCE_FORMS, parse_source
from recipe.errors import ConfigError
from recipe.rewards import REWARDS, build_reward


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Unless ``ok``: the one-line error naming ``key``, its value and what is allowed."""
    if not ok:
        raise ConfigError(f"bad value for '{key}': {safe_yaml.short_repr(value)} ({allowed})")


LR_SCHEDULERS = enum_values("SchedulerType")  # read from the installed transformers' source, not imported
OPTIMIZERS = enum_values("OptimizerNames")
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
GRPO_SCALE_REWARDS = ("group", "batch", "none")
# transformers 5.17's integrations (integrations.integration_utils.INTEGRATION_TO_CALLBACK), plus its "all" / "none"
REPORT_INTEGRATIONS = ("azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow",
                       "mlflow", "neptune", "swanlab", "tensorboard", "trackio", "wandb")
REPORT_SPECIAL = ("all", "none")  # each only on its own
# text keys that must hold something (an empty one silently fell back to a default or matched nothing)
NON_EMPTY = ("model.name_or_path", "model.cache_dir", "data.source", "data.teacher", "data.answer_label",
             "data.mask_token", "run.output_dir")
_HUB_SPLITS = ("train", "test")  # the splits of openai/gsm8k and of synthetic data
_PARAM_TYPES = {"float": (int, float), "int": (int,), "str": (str,), "bool": (bool,)}


def check_reward_params(key: str, spec: Any) -> None:
    """The reward must be named; each parameter must exist and have its field's type; then the reward must build."""
    names = ", ".join(sorted(REWARDS))
    check(bool(spec.name), f"{key}.name", spec.name, f"every reward needs a name; allowed: {names}")
    check(spec.name in REWARDS, f"{key}.name", spec.name, f"allowed: {names}")
    fields_ = {f.name: f for f in dataclasses.fields(REWARDS[spec.name])}
    for param, value in spec.params.items():
        if param not in fields_:
            close = difflib.get_close_matches(param, list(fields_), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"unknown key '{key}.params.{param}' ({hint}allowed: {', '.join(sorted(fields_))})")
        ftype = str(fields_[param].type)
        allowed = _PARAM_TYPES.get(ftype)
        if allowed is not None:
            ok = isinstance(value, allowed) and (ftype == "bool" or not isinstance(value, bool))
            ok = ok and (not isinstance(value, float) or value == value and abs(value) != float("inf"))
            check(ok, f"{key}.params.{param}", value, f"expected a finite {ftype}")
    try:
        build_reward(spec.name, **spec.params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value for '{key}.params': {safe_yaml.short_repr(spec.params)} "
                          f"({safe_yaml.short_repr(str(exc))})") from None


def validate_trainer_keys(cfg: Any) -> None:
    """The trainer keys whose values are names transformers / TRL look up, so nothing fails after the model loads."""
    for name in ("stage1", "stage2", "stage3", *(("warmup",) if cfg.warmup.enabled else ())):
        st = getattr(cfg, name)
        check(st.lr_scheduler_type in LR_SCHEDULERS, f"{name}.lr_scheduler_type", st.lr_scheduler_type,
              f"allowed: {', '.join(LR_SCHEDULERS)}")
        check(st.optim in OPTIMIZERS, f"{name}.optim", st.optim, f"allowed: {', '.join(OPTIMIZERS)}")
    for name in ("stage2", "stage3"):
        st = getattr(cfg, name)
        check(st.loss_type in GRPO_LOSS_TYPES, f"{name}.loss_type", st.loss_type,
              f"allowed: {', '.join(GRPO_LOSS_TYPES)}")
        check(st.scale_rewards in GRPO_SCALE_REWARDS, f"{name}.scale_rewards", st.scale_rewards,
              f"allowed: {', '.join(GRPO_SCALE_REWARDS)}")
    check(cfg.stage3.mining_limit == -1 or cfg.stage3.mining_limit >= 1, "stage3.mining_limit",
          cfg.stage3.mining_limit, "a positive count, or -1 for the whole slice")


def validate_model_eval_run(cfg: Any) -> None:
    budget = cfg.baseline_sft.budget
    check(not isinstance(budget, int) or budget >= 1, "baseline_sft.budget", budget,
          "stage1, tokens, or a positive number of steps")
    ev = cfg.eval
    check(ev.limit == -1 or ev.limit >= 1, "eval.limit", ev.limit,
          "a positive count, or -1 for the whole split (as --limit)")
    source = cfg.data.eval_source or cfg.data.source
    if source in ("synthetic", "openai/gsm8k") or source.startswith("synthetic:"):  # others: the pre-load data check
        # synthetic sources also have a `dev` split (its own seed): settings are tuned there, never on `test`
        splits = _HUB_SPLITS if source == "openai/gsm8k" else (*_HUB_SPLITS, "dev")
        check(ev.split in splits, "eval.split", ev.split,
              f"allowed for {safe_yaml.short_repr(source)}: {', '.join(splits)}")
    validate_text_and_sources(cfg)
    _check_int64(cfg, "")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _check_int64(value: Any, key: str) -> None:
    """Every integer in the config fits 64 bits (torch, numpy and the trainers hold counts in int64); a key with its
    own range (``run.seed``) has it checked as it is read."""
    if hasattr(value, "as_dict"):  # a trainer section: TRL's keys beside the recipe's own
        _check_int64(value.as_dict(), key)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _check_int64(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_int64(item, f"{key}[{i}]")
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_int64(item, f"{key}.{name}")
    elif isinstance(value, int) and not isinstance(value, bool):
        check(INT64_MIN <= value <= INT64_MAX, key, value, f"beyond 64 bits: must be in [{INT64_MIN}, {INT64_MAX}]")


def validate_text_and_sources(cfg: Any) -> None:
    """Keys that must not be empty, synthetic sources, and the ``run.report_to`` integrations."""
    for key in NON_EMPTY:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        check(bool(value.strip()), key, value, "must not be empty")
    for key in ("data.source", "data.eval_source"):
        source = getattr(cfg.data, key.split(".")[1])
        if source == "synthetic" or source.startswith("synthetic:"):
            try:
                parse_source(source, 1)
            except ValueError:
                check(False, key, source, f"expected {SOURCE_FORMS}")
    report = cfg.run.report_to
    allowed = f"allowed: {', '.join(REPORT_INTEGRATIONS)}; or [all] / [none] alone"
    check(bool(report), "run.report_to", report, allowed)
    for item in report:
        check(item in REPORT_INTEGRATIONS or (item in REPORT_SPECIAL and len(report) == 1), "run.report_to", item,
               allowed)
