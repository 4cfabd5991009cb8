"""Loading, merging and checking the configuration: defaults (:mod:`recipe.config.schema`), then a preset, then a
``--config`` file, then ``key=value`` overrides; every error is one line naming the key, the value and what is allowed.
Nothing here imports TRL: a trainer section's TRL keys are named and typed from TRL's source
(:mod:`recipe.config.trl_source`) and their values checked by TRL where it is imported (:func:`recipe.train.trainer.built`).

>>> resolve(preset="smoke", overrides=["stage2.learning_rate=1e-4"]).stage2.learning_rate
0.0001
>>> resolve(preset="smoke", overrides=["stage2.lerning_rate=1"])
Traceback (most recent call last):
...
recipe.errors.ConfigError: unknown key 'stage2.lerning_rate' (did you mean 'stage2.learning_rate'?)
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml

from recipe import dist
from recipe.config.safe_yaml import MAX_BYTES, load_mapping, short_repr
from recipe.config.safe_yaml import load as load_yaml
from recipe.config.schema import (
    BASELINES,
    RECIPE_SETS,
    REPORT_INTEGRATIONS,
    TRAINER_SECTIONS,
    BaselineConciseConfig,
    BaselineGRPOConfig,
    BaselineSFTConfig,
    Bool,
    Config,
    DataConfig,
    EvalConfig,
    Float,
    GRPOStageConfig,
    Int,
    ModelConfig,
    RewardSpec,
    RunConfig,
    Stage1Config,
    Stage2Config,
    Stage3Config,
    Str,
    TrainConfig,
    VllmConfig,
    WarmupConfig,
)
from recipe.config.trl_source import fields_of
from recipe.data.synthetic import SOURCE_FORMS, parse_source
from recipe.errors import ConfigError
from recipe.rewards import REWARDS, build_reward

__all__ = ["BASELINES", "BaselineConciseConfig", "BaselineGRPOConfig", "BaselineSFTConfig", "Config", "ConfigError",
           "DataConfig", "EvalConfig", "GRPOStageConfig", "ModelConfig", "RewardSpec", "RunConfig", "Stage1Config",
           "Stage2Config", "Stage3Config", "TrainConfig", "VllmConfig", "WarmupConfig", "build", "diff_keys",
           "dump_yaml", "from_dict", "parse_override", "preset_names", "preset_summary", "preset_text", "resolve",
           "to_dict", "validate"]


def preset_names() -> list[str]:
    folder = resources.files("recipe") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown preset '{name}' ({hint}available: {', '.join(names)})")
    return (resources.files("recipe") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")


def preset_summary(name: str) -> str:
    """The preset's one-line description (its ``description:`` key)."""
    return str((yaml.safe_load(preset_text(name)) or {}).get("description", "")).strip()


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value) with the value read as YAML (text that is not YAML stays text).

    >>> parse_override("stage2.temperature=0.7"), parse_override("run.report_to=[tensorboard]")
    ((['stage2', 'temperature'], 0.7), (['run', 'report_to'], ['tensorboard']))
    """
    key, eq, raw = item.partition("=")
    if not eq:
        raise ConfigError(f"override '{item}' must look like key.path=value")
    if not key.strip():
        raise ConfigError(f"override '{item}' has an empty key")
    key = key.strip()
    value = load_yaml(raw, f"--set {key}", ConfigError, if_invalid=raw) if raw.strip() else ""
    return key.split("."), value


def resolve(preset: str | None = None, config_file: str | Path | None = None,
            overrides: list[str] | tuple[str, ...] = (), recorded: Callable[[dict], dict] | None = None) -> Config:
    """Defaults, then the preset, then a YAML file, then ``--set`` overrides; checked. ``recorded`` reads the file as
    a run directory's record, in today's spelling (:func:`recipe.store.fingerprint.migrate_recorded`)."""
    data = load_mapping(preset_text(preset), f"preset '{preset}'", ConfigError) if preset else {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path, "rb") as fh:
                text = fh.read(MAX_BYTES + 1)  # load() refuses an oversized one
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        given = load_mapping(text, str(path), ConfigError)
        data = deep_merge(data, recorded(given) if recorded else given)
    for item in overrides:
        set_path(data, *parse_override(item))
    return from_dict(data)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        merge = isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params"
        out[key] = deep_merge(out[key], value) if merge else value
    return out


def set_path(data: dict, path: list[str], value: Any) -> None:
    """Set ``path`` to ``value``; a mapping given for a mapping merges over it, as a ``--config`` file does."""
    node = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    old = node.get(path[-1])
    merge = isinstance(value, dict) and isinstance(old, dict) and path[-1] != "params"
    node[path[-1]] = deep_merge(old, value) if merge else value


# Plain data -> Config: pydantic checks each key; its first error in the data's own order becomes one line

_LIMIT_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short",
                 "string_pattern_mismatch")


def from_dict(data: dict) -> Config:
    cfg = build(data)
    validate(cfg)
    return cfg


def build(data: dict) -> Config:
    """Plain data -> :class:`Config`, each key checked on its own type and limits (:func:`validate` does the rest).
    The keys are read in the data's order, so the problem named is the first a reader meets."""
    values = {}
    for key, value in data.items():
        if key in TRAINER_SECTIONS:
            values[key] = _section(_fields(Config)[key], value, key)
        else:
            values[key] = getattr(_check(Config, {key: value}, ""), key)
    return Config(**values)


def _section(cls: type, data: Any, prefix: str) -> TrainConfig:
    """A trainer section: its fields, and any other field of its TRL class kept in ``trl_args`` (typed from TRL's
    source); a TRL field the recipe decides names the key that does."""
    if not isinstance(data, dict):
        raise ConfigError(f"bad value for '{prefix}': {short_repr(data)} (expected mapping)")
    trl = fields_of(cls.TRL_CLASS)
    own = [f.name for f in dataclasses.fields(cls) if f.name != "trl_args"]
    mine, passed = {}, {}
    for key, value in data.items():
        if key in own:
            mine[key] = value
            _check(cls, {key: value}, prefix)
        elif key in trl and key in RECIPE_SETS:
            hint = f"use '{RECIPE_SETS[key]}'" if RECIPE_SETS[key] else "the recipe sets it"
            raise ConfigError(f"'{prefix}.{key}' is set by the recipe, not per section: {hint}")
        elif key in trl:
            passed[key] = _check(_strict(typing.Union[trl[key]]), value, f"{prefix}.{key}")  # noqa: UP007
        else:
            known = own + [n for n in trl if n not in RECIPE_SETS and n not in own]
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = (f"did you mean '{prefix}.{close[0]}'?" if close else
                    f"the recipe's keys: {', '.join(sorted(n for n in own if n not in trl or n in RECIPE_SETS))}; "
                    f"or a field of TRL's {cls.TRL_CLASS}")
            raise ConfigError(f"unknown key '{prefix}.{key}' ({hint})")
    return _check(cls, {**mine, "trl_args": passed}, prefix)


def _strict(tp: Any) -> Any:
    """A plain type read from TRL's source as the schema's strict one (no "3" for 3, a float may be text)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_strict(a) for a in args)]  # noqa: UP007 (built from a tuple)
    if origin in (list, dict):
        return Annotated[origin[tuple(_strict(a) for a in args)], pydantic.Strict()]
    return {bool: Bool, int: Int, float: Float, str: Str}.get(tp, tp)


@functools.cache
def _adapter(tp: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(tp)


def _check(tp: Any, data: Any, prefix: str) -> Any:
    try:
        return _adapter(tp).validate_python(data)
    except pydantic.ValidationError as exc:
        found = [_locate(tp, data, prefix, err["loc"], err["type"]) for err in exc.errors(include_url=False)]
        raise min(found, key=lambda item: item[0])[1] from None


def _bare(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


@functools.cache
def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _locate(tp: Any, value: Any, key: str, loc: tuple, kind: str) -> tuple[list[int], ConfigError]:
    """Pydantic's error location -> (its place in the data's own order, the one-line error). The location is followed
    through sections and lists; a union or a plain value stops it, and that whole value is the bad one."""
    order = []
    for part in loc:
        if dataclasses.is_dataclass(_bare(tp)) and isinstance(value, dict):
            order.append(list(value).index(part) if part in value else len(value))
            known = {k: v for k, v in _fields(_bare(tp)).items() if k != "trl_args"}
            if part not in known:
                close, where = difflib.get_close_matches(str(part), list(known), n=1), f"{key}." if key else ""
                hint = f"did you mean '{where}{close[0]}'?" if close else f"allowed: {', '.join(sorted(known))}"
                return order, ConfigError(f"unknown key '{where}{part}' ({hint})")
            tp, value, key = known[part], value[part], f"{key}.{part}" if key else part
        elif typing.get_origin(_bare(tp)) is list and isinstance(value, list) and isinstance(part, int):
            order.append(part)
            tp, value, key = typing.get_args(_bare(tp))[0], value[part], f"{key}[{part}]"
        else:
            break
    allowed = _allowed(tp) if kind in _LIMIT_ERRORS else f"expected {_type_name(tp)}"
    return order, ConfigError(f"bad value for '{key}': {short_repr(value)} ({allowed})")


def _allowed(tp: Any) -> str:
    """What a key's limits allow: its ``Field``'s description, else its bounds ("must be in (0, 1]")."""
    infos = [m for m in typing.get_args(tp)[1:] if isinstance(m, pydantic.fields.FieldInfo)]
    described = [info.description for info in infos if info.description]
    if described:
        return described[0]
    bound = {k: getattr(c, k) for info in infos for c in info.metadata for k in ("ge", "gt", "le", "lt") if hasattr(c, k)}
    if not bound:  # a union: one of its members' limits
        return f"expected {_type_name(tp)}"
    if len(bound) == 2:
        low, high = ("[" if "ge" in bound else "("), ("]" if "le" in bound else ")")
        return f"must be in {low}{bound.get('ge', bound.get('gt'))}, {bound.get('le', bound.get('lt'))}{high}"
    name, symbol = next((k, sym) for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in bound)
    return f"must be {symbol} {bound[name]}"


def _type_name(tp: Any, limits: bool = False) -> str:
    """The type in words; ``limits``: with its limits (a member of a union, whose error names no member)."""
    if limits and typing.get_origin(tp) is Annotated and any(
            isinstance(m, pydantic.fields.FieldInfo) and m.metadata for m in typing.get_args(tp)[1:]):
        return f"{_type_name(_bare(tp))} that {_allowed(tp)}"
    tp, origin = _bare(tp), typing.get_origin(_bare(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a, limits=True) for a in typing.get_args(tp))
    return "mapping" if dataclasses.is_dataclass(tp) else getattr(tp, "__name__", str(tp))


# What one key's type and limits cannot say

INT64 = (-(2**63), 2**63 - 1)  # torch, numpy and the trainers hold counts in int64
_PARAM_TYPES = {"float": (int, float), "int": (int,), "str": (str,), "bool": (bool,)}


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Unless ``ok``: the one-line error naming ``key``, its value and what is allowed."""
    if not ok:
        raise ConfigError(f"bad value for '{key}': {short_repr(value)} ({allowed})")


def validate(cfg: Config) -> None:
    """Keys that depend on each other, on files or on the machine's launch; counts where -1 means "all"; reward
    parameters; every integer within 64 bits. TRL's own checks of its keys run where TRL is imported."""
    for name in ("stage1", "stage2", "stage3", *(("warmup",) if cfg.warmup.enabled else ())):
        st = getattr(cfg, name)
        check(st.max_steps == -1 or st.max_steps >= 1, f"{name}.max_steps", st.max_steps,
              "use -1 for epochs or a positive count")
        rows = getattr(cfg.data, f"{name}_rows")
        check(len(rows) == 2 and rows[0] >= 0 and (rows[1] == -1 or rows[1] > rows[0]), f"data.{name}_rows", rows,
              "expected [start, end) with 0 <= start < end, end -1 for 'to the end'")
    for name in ("stage2", "stage3"):
        st = getattr(cfg, name)
        problem = dist.generation_batch_error(name, st.per_device_train_batch_size, st.gradient_accumulation_steps,
                                              st.num_generations)  # processes: the launcher's WORLD_SIZE, else 1
        if problem:
            raise ConfigError(problem)
        for i, spec in enumerate(st.rewards):
            check_reward_params(f"{name}.rewards[{i}]", spec)
    check(cfg.stage3.mining_limit == -1 or cfg.stage3.mining_limit >= 1, "stage3.mining_limit",
          cfg.stage3.mining_limit, "a positive count, or -1 for the whole slice")
    check(cfg.eval.limit == -1 or cfg.eval.limit >= 1, "eval.limit", cfg.eval.limit,
          "a positive count, or -1 for the whole split (as --limit)")
    if cfg.data.teacher != "gold":
        check(Path(cfg.data.teacher).expanduser().is_file(), "data.teacher", cfg.data.teacher,
              "'gold' or an existing .jsonl/.json/.parquet file of teacher rationales")
    problem = dist.launch_error(cfg.model.backend, cfg.model.load_in_4bit)  # accelerate launch / torchrun
    if problem:
        raise ConfigError(problem)
    if cfg.vllm.mode == "server":
        check(cfg.model.backend == "hf" and cfg.vllm.enabled, "vllm.mode", cfg.vllm.mode,
              "server mode is TRL's vLLM on the hf backend: set model.backend=hf and vllm.enabled=true "
              "(Unsloth's engine is always colocated)")
    _check_parallel_entries(cfg)
    _check_sources(cfg)
    _check_int64(to_dict(cfg), "")


def check_reward_params(key: str, spec: RewardSpec) -> None:
    """The reward must be named; each parameter must exist and have its field's type; then the reward must build."""
    names = ", ".join(sorted(REWARDS))
    check(bool(spec.name), f"{key}.name", spec.name, f"every reward needs a name; allowed: {names}")
    check(spec.name in REWARDS, f"{key}.name", spec.name, f"allowed: {names}")
    fields_ = {f.name: str(f.type) for f in dataclasses.fields(REWARDS[spec.name])}
    for param, value in spec.params.items():
        if param not in fields_:
            close = difflib.get_close_matches(param, list(fields_), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"unknown key '{key}.params.{param}' ({hint}allowed: {', '.join(sorted(fields_))})")
        allowed = _PARAM_TYPES.get(fields_[param])
        if allowed is not None:
            ok = isinstance(value, allowed) and (fields_[param] == "bool" or not isinstance(value, bool))
            ok = ok and (not isinstance(value, float) or value == value and abs(value) != float("inf"))
            check(ok, f"{key}.params.{param}", value, f"expected a finite {fields_[param]}")
    try:
        build_reward(spec.name, **spec.params)
    except (TypeError, ValueError) as exc:
        check(False, f"{key}.params", spec.params, short_repr(str(exc)))


def _check_parallel_entries(cfg: Config) -> None:
    """``run.parallel_entries`` > 1 runs entries as child processes of one run-all on the CPU (recipe.run.parallel)."""
    n, key = cfg.run.parallel_entries, "run.parallel_entries"
    check(n == 1 or not dist.is_distributed(), key, n, "entries side by side are child processes of one run-all, "
          "not of a multi-process launch (WORLD_SIZE > 1): set it to 1")
    check(n == 1 or cfg.run.process_per_entry is not False, key, n, "entries side by side each run in a child "
          "process: set run.process_per_entry to auto or true, or this to 1")
    check(n == 1 or cfg.run.device != "cuda", key, n, "entries side by side are for CPU runs: set it to 1 with "
          "run.device=cuda")


def _check_sources(cfg: Config) -> None:
    """Synthetic sources and their splits (a file or folder is checked when the data loads), and the trackers."""
    for key in ("source", "eval_source"):
        source = getattr(cfg.data, key)
        if source == "synthetic" or source.startswith("synthetic:"):
            try:
                parse_source(source, 1)
            except ValueError:
                check(False, f"data.{key}", source, f"expected {SOURCE_FORMS}")
    source = cfg.data.eval_source or cfg.data.source
    if source in ("synthetic", "openai/gsm8k") or source.startswith("synthetic:"):
        # synthetic sources also have a `dev` split (its own seed): settings are tuned there, never on `test`
        splits = ("train", "test") if source == "openai/gsm8k" else ("train", "test", "dev")
        check(cfg.eval.split in splits, "eval.split", cfg.eval.split, f"allowed for {short_repr(source)}: "
              f"{', '.join(splits)}")
    report, allowed = cfg.run.report_to, f"allowed: {', '.join(REPORT_INTEGRATIONS)}; or [all] / [none] alone"
    check(bool(report), "run.report_to", report, allowed)
    for item in report:
        check(item in REPORT_INTEGRATIONS or (item in ("all", "none") and len(report) == 1), "run.report_to", item,
              allowed)


def _check_int64(value: Any, key: str) -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            _check_int64(item, f"{key}.{name}" if key else name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_int64(item, f"{key}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool):
        check(INT64[0] <= value <= INT64[1], key, value, f"beyond 64 bits: must be in [{INT64[0]}, {INT64[1]}]")


# Config -> plain data


def to_dict(value: Any) -> Any:
    """The config as plain data (what ``config.yaml`` holds); a trainer section's TRL keys after ``enabled``."""
    if isinstance(value, TrainConfig):
        value = value.as_dict()
    elif dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: to_dict(item) for key, item in value.items()}
    return [to_dict(item) for item in value] if isinstance(value, list) else copy.deepcopy(value)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)


def diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts.

    >>> diff_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}})
    ['a.c']
    """
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += diff_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys
