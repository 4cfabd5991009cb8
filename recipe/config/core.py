"""Loading, merging and checking the configuration: defaults (:mod:`recipe.config.schema`), then a preset, then a
``--config`` file, then ``key=value`` overrides; every error is one line naming the key, the value and what is allowed.
Nothing here imports TRL: a trainer section's TRL keys are named and typed from TRL's source
(:mod:`recipe.config.trl_source`) and their values checked by TRL where it is imported (:func:`recipe.train.trainer.built`).
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
from pydantic.fields import FieldInfo

from recipe import dist
from recipe.config.safe_yaml import MAX_BYTES, load_mapping
from recipe.config.safe_yaml import load as load_yaml
from recipe.config.schema import RECIPE_SETS, REPORT_INTEGRATIONS, Bool, Config, Float, Int, Str, TrainConfig
from recipe.config.trl_source import fields_of
from recipe.data.synthetic import SOURCE_FORMS, parse_source
from recipe.errors import ConfigError, short_repr
from recipe.rewards import REWARDS


def preset_names() -> list[str]:
    folder = resources.files("recipe") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    names = preset_names()
    if name not in names:
        hint = _did_you_mean(name, names)
        raise ConfigError(f"unknown preset '{name}' ({hint + ' ' if hint else ''}available: {', '.join(names)})")
    return (resources.files("recipe") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")


def preset_summary(name: str) -> str:
    """The preset's one-line description (its ``description:`` key)."""
    return str(load_mapping(preset_text(name), name).get("description", "")).strip()


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value) with the value read as YAML (text that is not YAML stays text)."""
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"override '{item}' must look like key.path=value")
    key = key.strip()
    value = load_yaml(raw, f"--set {key}", ConfigError, lenient=True) if raw.strip() else ""
    return key.split("."), value


def resolve(preset: str | None = None, config_file: str | Path | None = None,
            overrides: list[str] | tuple[str, ...] = (), recorded: Callable[[dict], dict] | None = None) -> Config:
    """Defaults, then the preset, then a YAML file, then ``--set`` overrides, each merged over the last; checked.
    ``recorded`` reads the file as a run directory's record, in today's spelling
    (:func:`recipe.store.fingerprint.migrate_recorded`)."""
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
        path_, value = parse_override(item)
        data = deep_merge(data, functools.reduce(lambda inner, part: {part: inner}, reversed(path_), value))
    return from_dict(data)


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on ``base``: a mapping given for a mapping merges into it (a reward's ``params`` is replaced whole)."""
    out = dict(base)
    for key, value in over.items():
        merge = isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params"
        out[key] = deep_merge(out[key], value) if merge else value
    return out


def _did_you_mean(name: Any, known: typing.Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"did you mean '{prefix}{close[0]}'?" if close else ""


# Plain data -> Config: the data is walked in its own order, so the problem named is the first a reader meets; each
# value is checked by pydantic against its field's type and limits, and its first error becomes one line

_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_LIMITS = (*_BOUNDS, "too_short", "string_pattern_mismatch", "value_error")  # pydantic's errors of a value's limits
_adapter = functools.cache(pydantic.TypeAdapter)  # one per type: building one costs ~1 ms


def from_dict(data: dict) -> Config:
    """Plain data -> :class:`Config`: each key checked on its own type and limits, then across keys."""
    cfg = checked(Config, data)
    validate(cfg)
    return cfg


def checked(tp: Any, value: Any, key: str = "") -> Any:
    """``value`` validated as ``tp`` (a section: a dataclass, built from a mapping), or the one-line error for its
    first bad key. A trainer section keeps the other fields of its TRL class in ``trl_args``."""
    cls = _bare(tp)
    if dataclasses.is_dataclass(cls) and isinstance(value, dict):
        known, trl = _keys(cls), fields_of(cls.TRL_CLASS) if issubclass(cls, TrainConfig) else {}
        out = {}
        for name, item in value.items():
            where = f"{key}.{name}" if key else str(name)
            if name in RECIPE_SETS and name in trl and name not in known:
                hint = f"use '{RECIPE_SETS[name]}'" if RECIPE_SETS[name] else "the recipe sets it"
                raise ConfigError(f"'{where}' is set by the recipe, not per section: {hint}")
            if name not in known:
                own = sorted(n for n in known if n not in trl or n in RECIPE_SETS)
                hint = _did_you_mean(name, known, f"{key}." if key else "") or (
                    f"the recipe's keys: {', '.join(own)}; or a field of TRL's {cls.TRL_CLASS}" if trl else
                    f"allowed: {', '.join(own)}")
                raise ConfigError(f"unknown key '{where}' ({hint})")
            out[name] = checked(known[name], item, where)
        value = cls().replace(**out) if trl else out  # TRL's other keys into trl_args
    elif typing.get_origin(cls) is list and isinstance(value, list):
        value = [checked(typing.get_args(cls)[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    try:
        return _adapter(tp).validate_python(value)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
    error = next((e for e in errors if e["type"] in _LIMITS), errors[0])  # a union's: the limit it missed
    check(False, key, value, _allowed(tp, error))


@functools.cache
def _keys(cls: type) -> dict[str, Any]:
    """A section's keys and their strict types: its fields, then (a trainer section) its TRL class's other fields."""
    hints = typing.get_type_hints(cls, include_extras=True)
    keys = {f.name: _strict(hints[f.name]) for f in dataclasses.fields(cls) if f.name != "trl_args"}
    trl = fields_of(cls.TRL_CLASS) if issubclass(cls, TrainConfig) else {}
    trl = {k: _strict(typing.Union[v]) for k, v in trl.items() if k not in keys}  # noqa: UP007 (from a tuple)
    return keys | {k: v for k, v in trl.items() if k not in RECIPE_SETS}


def _strict(tp: Any) -> Any:
    """A plain type (TRL's, a reward's) as the schema's strict one (no "3" for 3, a float may be text)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_strict(a) for a in args)]  # noqa: UP007 (built from a tuple)
    if origin in (list, dict):
        return Annotated[origin[tuple(_strict(a) for a in args)], pydantic.Strict()]
    return {bool: Bool, int: Int, float: Float, str: Str}.get(tp, tp)


def _bare(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _allowed(tp: Any, error: dict) -> str:
    """What a key allows, after pydantic's ``error``: the limit it missed (its ``Field``'s description, else the
    bound: "must be >= 1"), the reason a value was refused, or its type in words."""
    described = [m.description for m in typing.get_args(tp)[1:] if isinstance(m, FieldInfo) and m.description]
    if error["type"] == "value_error":
        return short_repr(str(error["ctx"]["error"]))
    if described and error["type"] in _LIMITS:
        return described[0]
    if error["type"] in _BOUNDS:
        return f"must be {_BOUNDS[error['type']]} {next(iter(error['ctx'].values()))}"
    return f"expected {_type_name(tp)}"


def _type_name(tp: Any) -> str:
    tp, origin = _bare(tp), typing.get_origin(_bare(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return "mapping" if dataclasses.is_dataclass(tp) else getattr(tp, "__name__", str(tp))


# What one key's type and limits cannot say

INT64 = (-(2**63), 2**63 - 1)  # torch, numpy and the trainers hold counts in int64


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Unless ``ok``: the one-line error naming ``key``, its value and what is allowed."""
    if not ok:
        raise ConfigError(f"bad value for '{key}': {short_repr(value)} ({allowed})")


def validate(cfg: Config) -> None:
    """Keys that depend on each other, on files or on the machine's launch; reward parameters; every integer within
    64 bits. TRL's own checks of its keys run where TRL is imported."""
    for name in ("stage1", "stage2", "stage3", *(("warmup",) if cfg.warmup.enabled else ())):
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
            check(spec.name in REWARDS, f"{name}.rewards[{i}].name", spec.name,
                  f"{'' if spec.name else 'every reward needs a name; '}allowed: {', '.join(sorted(REWARDS))}")
            checked(REWARDS[spec.name], spec.params, f"{name}.rewards[{i}].params")  # its fields' types; it builds
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
    # entries side by side: child processes of one run-all on the CPU (recipe.run.parallel)
    n, key = cfg.run.parallel_entries, "run.parallel_entries"
    check(n == 1 or not dist.is_distributed(), key, n, "entries side by side are child processes of one run-all, "
          "not of a multi-process launch (WORLD_SIZE > 1): set it to 1")
    check(n == 1 or cfg.run.process_per_entry is not False, key, n, "entries side by side each run in a child "
          "process: set run.process_per_entry to auto or true, or this to 1")
    check(n == 1 or cfg.run.device != "cuda", key, n, "entries side by side are for CPU runs: set it to 1 with "
          "run.device=cuda")
    for key in ("source", "eval_source"):  # a synthetic source's form (a file or folder is checked when it loads)
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
    check(bool(report) and all(item in REPORT_INTEGRATIONS or (item in ("all", "none") and len(report) == 1)
                               for item in report), "run.report_to", report, allowed)
    _check_int64(to_dict(cfg), "")


def _check_int64(value: Any, key: str) -> None:
    if isinstance(value, dict | list):
        for name, item in value.items() if isinstance(value, dict) else enumerate(value):
            _check_int64(item, f"{key}[{name}]" if isinstance(value, list) else f"{key}.{name}" if key else name)
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
