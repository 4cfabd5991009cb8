"""Typed configuration: one schema, YAML presets, ``key=value`` overrides, fix-it errors.

Everything the recipe can be told lives in the dataclasses of :mod:`recipe.config.schema` (re-exported here); their
defaults are the ONE place a default is written. A preset is a partial YAML mapping over these defaults. Validation happens here, before any model or dataset
is touched, and every error names the key, the bad value and what is allowed.

The TRL trainer arguments are built from this schema in :mod:`recipe.train.trl_args`.

>>> cfg = resolve(preset="smoke", overrides=["stage2.learning_rate=1e-4"])
>>> cfg.stage2.learning_rate
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
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

import recipe.config.limits as config_limits
import recipe.config.renamed as renamed
import recipe.config.safe_yaml as safe_yaml
import recipe.config.trl_pass as trl_pass
from recipe import dist
from recipe.config.entries import EVAL_STAGES
from recipe.config.limits import check
from recipe.config.schema import (  # noqa: F401  (re-exported: recipe.config.core.ModelConfig etc. keep working)
    BASELINES,
    TRAINER_SECTIONS,
    BaselineConciseConfig,
    BaselineGRPOConfig,
    BaselineSFTConfig,
    Config,
    DataConfig,
    EvalConfig,
    GRPOStageConfig,
    ModelConfig,
    RewardSpec,
    RunConfig,
    Stage1Config,
    Stage2Config,
    Stage3Config,
    TrainConfig,
    VllmConfig,
    WarmupConfig,
)
from recipe.config.typed import deep_merge, from_mapping, set_path
from recipe.errors import ConfigError

# --------------------------------------------------------------------------------------------------------------------
# Presets, files and overrides
# --------------------------------------------------------------------------------------------------------------------


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
    data = yaml.safe_load(preset_text(name)) or {}
    return str(data.get("description", "")).strip()


def _load_yaml(text: str | bytes, origin: str) -> dict:
    return safe_yaml.load_mapping(text, origin, ConfigError)  # bounded size, depth and aliases; text keys only


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value) with the value read as YAML.

    >>> parse_override("stage2.temperature=0.7")
    (['stage2', 'temperature'], 0.7)
    >>> parse_override("run.report_to=[tensorboard]")
    (['run', 'report_to'], ['tensorboard'])
    """
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    value = safe_yaml.load(raw, f"--set {key}", ConfigError, if_invalid=raw) if raw.strip() else ""
    safe_yaml.check_text_keys(value, f"--set {key}", ConfigError)
    return key.split("."), value


def resolve(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Defaults, then the preset, then a YAML file, then ``--set`` overrides; validated. Each of the three sources
    may use a key's old spelling (:mod:`recipe.config.renamed`: moved, with a warning)."""
    sources: list[tuple[str, dict]] = []
    if preset:
        sources.append((f"preset '{preset}'", _load_yaml(preset_text(preset), f"preset '{preset}'")))
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        sources.append((str(path), _load_yaml(safe_yaml.read_bytes(path, ConfigError), str(path))))
    items = [parse_override(item) for item in overrides]
    command_line: dict = {}  # the overrides as one source, for the old keys they set
    for keys, value in items:
        set_path(command_line, keys, value)
    backend = renamed.backend_of(*(source for _, source in sources), command_line)
    data: dict = {}
    for origin, source in sources:
        data = deep_merge(data, renamed.migrate(source, origin, backend)[0])
    _, moved = renamed.migrate(command_line, "--set", backend)
    for keys, value in items:
        set_path(data, keys, value)
    renamed.drop_old(data)  # the overrides' old keys: their values go to the new places
    for key, value in moved.items():
        set_path(data, key.split("."), value)
    cfg = build(data)
    validate(cfg)
    return cfg


def build(data: dict) -> Config:
    """Plain data -> :class:`Config`, unvalidated: the trainer sections through :mod:`recipe.config.trl_pass` (TRL's
    keys pass through), everything else through :func:`~recipe.config.typed.from_mapping`. Old spellings of moved keys
    are read as the new ones (:mod:`recipe.config.renamed`)."""
    data = renamed.migrate(data, "config")[0]
    sections = {name: data[name] for name in TRAINER_SECTIONS if name in data}
    for name, value in sections.items():
        if not isinstance(value, dict):
            raise ConfigError(f"bad value for '{name}': {safe_yaml.short_repr(value)} (expected mapping)")
    try:
        cfg = from_mapping(Config, {k: v for k, v in data.items() if k not in sections})
    except ConfigError:
        _first_problem(data, sections)  # name the first problem in the data's own order, as a key-by-key check would
        raise
    built = {name: trl_pass.section_from_mapping(type(getattr(cfg, name)), value, name)
             for name, value in sections.items()}
    return dataclasses.replace(cfg, **built)


def _first_problem(data: dict, sections: dict) -> None:
    """Raise the error of the first top-level key (in the data's order) that is wrong; return if none alone is."""
    defaults = Config()
    for key, value in data.items():
        if key in sections:
            trl_pass.section_from_mapping(type(getattr(defaults, key)), value, key)
        else:
            from_mapping(Config, {key: value})


def from_dict(data: dict) -> Config:
    cfg = build(data)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """What the schema's types and limits cannot say: keys that depend on each other, files, the entries' names."""
    for name in ("stage1", "stage2", "stage3", *(("warmup",) if cfg.warmup.enabled else ())):
        st = getattr(cfg, name)
        check(st.max_steps == -1 or st.max_steps >= 1, f"{name}.max_steps", st.max_steps,
              "use -1 for epochs or a positive count")
        rows = getattr(cfg.data, f"{name}_rows")
        check(len(rows) == 2 and rows[0] >= 0 and (rows[1] == -1 or rows[1] > rows[0]), f"data.{name}_rows", rows,
              "expected [start, end) with 0 <= start < end, end -1 for 'to the end'")
    for name in ("stage2", "stage3"):
        st = getattr(cfg, name)
        batch_error = dist.generation_batch_error(name, st.per_device_train_batch_size, st.gradient_accumulation_steps,
                                                  st.num_generations)  # processes: the launcher's WORLD_SIZE, else 1
        if batch_error:
            raise ConfigError(batch_error)
        for i, spec in enumerate(st.rewards):
            config_limits.check_reward_params(f"{name}.rewards[{i}]", spec)
    if cfg.data.teacher != "gold":
        check(Path(cfg.data.teacher).expanduser().is_file(), "data.teacher", cfg.data.teacher,
              "'gold' or an existing .jsonl/.json/.parquet file of teacher rationales")
    launch_problem = dist.launch_error(cfg.model.backend, cfg.model.load_in_4bit)  # accelerate launch / torchrun
    if launch_problem:
        raise ConfigError(launch_problem)
    if cfg.vllm.mode == "server":
        check(cfg.model.backend == "hf" and cfg.vllm.enabled, "vllm.mode", cfg.vllm.mode,
              "server mode is TRL's vLLM on the hf backend: set model.backend=hf and vllm.enabled=true "
              "(Unsloth's engine is always colocated)")
    _check_parallel_entries(cfg)
    for s in cfg.eval.stages:
        check(s in EVAL_STAGES, "eval.stages", s, f"allowed: {', '.join(sorted(EVAL_STAGES))}")
    for b in cfg.run.baselines:
        check(b in BASELINES, "run.baselines", b, f"allowed: {', '.join(BASELINES)}")
    config_limits.validate_trainer_keys(cfg)
    config_limits.validate_model_eval_run(cfg)


def _check_parallel_entries(cfg: Config) -> None:
    """``run.parallel_entries`` > 1 runs entries as child processes of one run-all on the CPU (recipe.run.parallel)."""
    n, key = cfg.run.parallel_entries, "run.parallel_entries"
    check(n == 1 or not dist.is_distributed(), key, n, "entries side by side are child processes of one run-all, "
          "not of a multi-process launch (WORLD_SIZE > 1): set it to 1")
    check(n == 1 or cfg.run.process_per_entry is not False, key, n, "entries side by side each run in a child "
          "process: set run.process_per_entry to auto or true, or this to 1")
    check(n == 1 or cfg.run.device != "cuda", key, n, "entries side by side are for CPU runs: set it to 1 with "
          "run.device=cuda")


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)


def to_dict(cfg: Any) -> dict:
    """The config as plain data (what ``config.yaml`` holds); a trainer section's TRL keys sit beside its own."""
    if hasattr(cfg, "as_dict"):
        return cfg.as_dict()
    return {f.name: to_dict(value) if dataclasses.is_dataclass(value := getattr(cfg, f.name)) else copy.deepcopy(value)
            for f in dataclasses.fields(cfg)}


def diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts.

    >>> diff_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}})
    ['a.c']
    """
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys += diff_keys(a, b, name + ".")
        elif a != b:
            keys.append(name)
    return keys
