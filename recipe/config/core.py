"""Typed configuration: one schema, YAML presets, ``key=value`` overrides, fix-it errors.

Everything the recipe can be told lives in the dataclasses below; their defaults are the ONE place a default is
written. A preset is a partial YAML mapping over these defaults. Validation happens here, before any model or dataset
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

import dataclasses
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from recipe import dist
from recipe.config import limits as config_limits
from recipe.config import safe_yaml
from recipe.config.typed import deep_merge, from_mapping, set_path
from recipe.errors import ConfigError

# --------------------------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    name_or_path: str = "Qwen/Qwen2.5-3B"  # hub id, local folder, or builtin:tiny-qwen2 | builtin:smollm2-135m
    backend: Literal["auto", "hf", "unsloth"] = "auto"
    load_in_4bit: bool = True  # only honoured on CUDA
    max_seq_length: int = 1024
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # CPU only: train float32 weights under bf16 autocast (TRL bf16=True with use_cpu); see recipe/models/precision.py
    cpu_autocast: Literal["none", "bfloat16"] = "none"
    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    gradient_checkpointing: bool = False
    fast_inference: bool = False  # unsloth backend: a vLLM engine for GRPO generation (stages 2-3 only)
    hf_use_vllm: bool = False  # hf backend: TRL's own colocated vLLM engine for GRPO (off unless asked for)
    gpu_memory_utilization: float = 0.6
    trust_remote_code: bool = False
    cache_dir: str = "~/.cache/cotrecipe"


@dataclass
class DataConfig:
    source: str = "openai/gsm8k"  # hub id | local .jsonl/.json/.parquet | folder with train/test files | synthetic[:N]
    eval_source: str = ""  # empty = same as source
    teacher: str = "gold"  # teacher rationales: "gold" (the dataset's own) or a .jsonl/.json/.parquet file of them
    annotations: Literal["strip", "keep"] = "strip"
    answer_label: str = "Final Answer:"
    mask_token: str = "[MASK]"
    strict: bool = False
    teacher_latex: Literal["keep", "math"] = "keep"  # stage 1 only: "math" replaces LaTeX spans by [math] (official)
    # Row ranges [start, end) of the train split; end -1 means "to the end". Disjoint by default (the `paper` preset
    # overlaps stage 3 with stage 2, as the authors' mining did).
    stage1_rows: list[int] = field(default_factory=lambda: [0, 2000])
    stage2_rows: list[int] = field(default_factory=lambda: [2000, 4000])
    stage3_rows: list[int] = field(default_factory=lambda: [4000, -1])
    warmup_rows: list[int] = field(default_factory=lambda: [0, 0])  # the warm-up's own slice (warmup.enabled)


@dataclass
class RewardSpec:
    name: str = ""  # required: a spec without a name is refused (allowed: recipe.rewards.REWARDS)
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Fields shared by every trainer stage (they map 1:1 to transformers TrainingArguments)."""

    enabled: bool = True
    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0.0  # >= 1: a step count; < 1: a fraction of the training steps
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    logging_steps: int = 1
    save_steps: int = 50  # a checkpoint every N steps: resume point after a crash
    save_total_limit: int = 2


@dataclass
class Stage1Config(TrainConfig):
    learning_rate: float = 1e-5
    mask_prob: float = 0.7
    max_length: int = 1024
    question_only_share: float = 0.0  # share of rows with the question alone (eval prompt); 0 = the paper


@dataclass
class GRPOStageConfig(TrainConfig):
    per_device_train_batch_size: int = 8  # a multiple of num_generations: one prompt's group per step
    num_generations: int = 8
    max_completion_length: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0  # KL coefficient; 0 means no reference model is kept
    epsilon: float = 0.2  # PPO-style clip range (lower side: ratio >= 1 - epsilon)
    # Upper clip (ratio <= 1 + epsilon_high). 0.2 = epsilon: the symmetric clip of the paper and of TRL alone. Passed
    # to TRL explicitly on both backends: with loss_type=dapo Unsloth's GRPOConfig puts 0.28 in an unset one.
    epsilon_high: float = 0.2
    # True drops every completion that reaches max_completion_length from the loss. False (ours, and TRL's): those
    # long completions stay in and take the brevity reward's penalty, which is what stages 2-3 train against.
    # Passed explicitly on both backends: with loss_type=dapo Unsloth's GRPOConfig turns an unset one on.
    mask_truncated_completions: bool = False
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    num_iterations: int = 1
    log_completions: bool = True
    num_completions_to_print: int = 2
    length_unit: Literal["words", "tokens"] = "words"
    cut_after_answer: bool = True  # rewards read a completion up to its first answer line (official truncation)
    rewards: list[RewardSpec] = field(default_factory=list)


@dataclass
class Stage2Config(GRPOStageConfig):
    min_masked: int = 3
    mask_ratio: float = 0.5
    question_only_share: float = 0.0  # share of prompts with the question alone (eval prompt); 0 = the paper
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec("gated_brevity")])


@dataclass
class Stage3Config(GRPOStageConfig):
    mining_k: int = 1  # answers per mined problem
    mining_temperature: float = 0.0  # 0 = greedy
    mining_max_new_tokens: int = 512
    mining_batch_size: int = 16
    failure_threshold: float = 0.0  # a problem fails persistently when its correct fraction <= this
    mining_limit: int = -1  # -1 = mine the whole stage-3 slice
    # the paper's reward: correctness and format gates (-2 / -1), then 1 + a compression-ratio bonus
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec("compression_ratio")])


@dataclass
class WarmupConfig(TrainConfig):
    """Not in the paper: SFT of the base model on the teacher's full rationales (``data.warmup_rows``), merged into
    its weights, which then stand for the base model of the whole run (base row, stages, baselines). On CPU it plays
    the competent, verbose pretrained base the paper starts from (README, "The proof run")."""

    enabled: bool = False
    learning_rate: float = 3e-4
    max_length: int = 1024


@dataclass
class EvalConfig:
    enabled: bool = True
    split: str = "test"
    limit: int = -1  # -1 = the whole split
    batch_size: int = 16
    max_new_tokens: int = 512
    prompt: Literal["paper", "fewshot", "chat"] = "paper"
    # when a row is done: "paper" = the authors' rule ((Final Answer|Answer): number, then a newline or > 20 more
    # characters); "answer_line" = an answer_label line with a digit, ended; "auto" = paper for prompt=paper, else
    # answer_line
    stop_rule: Literal["auto", "paper", "answer_line"] = "auto"
    stages: list[str] = field(default_factory=lambda: ["base", "stage1", "stage2", "stage3"])


BASELINES = ("sft", "grpo")  # `run.baselines` keys; each is an entry of recipe.run.orchestrator.ENTRIES


@dataclass
class BaselineGRPOConfig:
    """Plain GRPO from the base model (entry ``baseline-grpo``). Everything else is borrowed from ``stage2`` (LoRA,
    optimizer, lr schedule, generation settings); the step count is matched to stages 2+3's sampled completions."""

    reward: Literal["correctness", "correctness+brevity"] = "correctness"  # +brevity: stage 2's own rewards


@dataclass
class BaselineSFTConfig:
    """The SFT baseline's budget (entry ``baseline-sft``): ``stage1`` = stage 1's steps; ``tokens`` = as many steps as
    it takes to process as many tokens as the curriculum's finished stages did (TRL's ``num_tokens``)."""

    budget: Literal["stage1", "tokens"] = "stage1"


@dataclass
class RunConfig:
    output_dir: str = "runs/cotrecipe"
    seed: int = 42
    report_to: list[str] = field(default_factory=lambda: ["none"])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    baselines: list[str] = field(default_factory=list)  # trained by run-all after the stages, e.g. [sft, grpo]
    report_note: str = ""  # shown first in report.md: what this run does and does not show
    # run-all (and `baseline`) train each entry and evaluate in child processes (a fresh GPU context: a vLLM engine
    # is not reliably freed inside one process). auto: on with CUDA, off on the CPU and under a multi-process launch.
    process_per_entry: Literal["auto"] | bool = "auto"
    # Where TRL's vLLM (model.hf_use_vllm) runs for GRPO: in each training process, or a `trl vllm-serve` server
    # (README "Scaling out"). Not part of any entry's config fingerprint: switching it never blocks a resume.
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str = ""  # e.g. http://10.0.0.5:8000; when set, host and port are ignored
    vllm_server_host: str = "127.0.0.1"
    vllm_server_port: int = 8000
    vllm_server_timeout: float = 240.0  # seconds to wait for the server to come up


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    stage3: Stage3Config = field(default_factory=Stage3Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    baseline_grpo: BaselineGRPOConfig = field(default_factory=BaselineGRPOConfig)
    baseline_sft: BaselineSFTConfig = field(default_factory=BaselineSFTConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    description: str = ""


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
    """Defaults, then the preset, then a YAML file, then ``--set`` overrides; validated."""
    data: dict = {}
    if preset:
        data = deep_merge(data, _load_yaml(preset_text(preset), f"preset '{preset}'"))
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = deep_merge(data, _load_yaml(safe_yaml.read_bytes(path, ConfigError), str(path)))
    for item in overrides:
        keys, value = parse_override(item)
        set_path(data, keys, value)
    cfg = from_mapping(Config, data)
    validate(cfg)
    return cfg


def from_dict(data: dict) -> Config:
    cfg = from_mapping(Config, data)
    validate(cfg)
    return cfg


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"bad value for '{key}': {safe_yaml.short_repr(value)} ({allowed})")


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express."""
    for name in ("stage1", "stage2", "stage3", *(("warmup",) if cfg.warmup.enabled else ())):
        st = getattr(cfg, name)
        _check(st.learning_rate > 0, f"{name}.learning_rate", st.learning_rate, "must be > 0")
        _check(st.per_device_train_batch_size >= 1, f"{name}.per_device_train_batch_size",
               st.per_device_train_batch_size, "must be >= 1")
        _check(st.max_steps != 0, f"{name}.max_steps", st.max_steps, "use -1 for epochs or a positive count")
        _check(st.save_steps >= 1, f"{name}.save_steps", st.save_steps, "must be >= 1")
        rows = getattr(cfg.data, f"{name}_rows")
        _check(len(rows) == 2 and rows[0] >= 0 and (rows[1] == -1 or rows[1] > rows[0]), f"data.{name}_rows", rows,
               "expected [start, end) with 0 <= start < end, end -1 for 'to the end'")
    _check(0.0 <= cfg.stage1.mask_prob <= 1.0, "stage1.mask_prob", cfg.stage1.mask_prob, "must be in [0, 1]")
    for name in ("stage1", "stage2"):
        share = getattr(cfg, name).question_only_share
        _check(0.0 <= share <= 1.0, f"{name}.question_only_share", share, "must be in [0, 1]")
    _check(0.0 <= cfg.stage2.mask_ratio <= 1.0, "stage2.mask_ratio", cfg.stage2.mask_ratio, "must be in [0, 1]")
    _check(cfg.stage2.min_masked >= 0, "stage2.min_masked", cfg.stage2.min_masked, "must be >= 0")
    for name in ("stage2", "stage3"):
        st = getattr(cfg, name)
        _check(st.num_generations >= 2, f"{name}.num_generations", st.num_generations,
               "GRPO needs at least 2 generations per prompt")
        _check(st.max_completion_length >= 1, f"{name}.max_completion_length", st.max_completion_length,
               "must be >= 1")
        _check(st.temperature > 0, f"{name}.temperature", st.temperature, "must be > 0 for sampling")
        batch_error = dist.generation_batch_error(name, st.per_device_train_batch_size, st.gradient_accumulation_steps,
                                                  st.num_generations)  # processes: the launcher's WORLD_SIZE, else 1
        if batch_error:
            raise ConfigError(batch_error)
        _check(bool(st.rewards), f"{name}.rewards", st.rewards, "at least one reward is needed")
        for i, spec in enumerate(st.rewards):
            config_limits.check_reward_params(f"{name}.rewards[{i}]", spec)
    if cfg.data.teacher != "gold":
        _check(Path(cfg.data.teacher).expanduser().is_file(), "data.teacher", cfg.data.teacher,
               "'gold' or an existing .jsonl/.json/.parquet file of teacher rationales")
    _check(cfg.stage3.mining_k >= 1, "stage3.mining_k", cfg.stage3.mining_k, "must be >= 1")
    _check(0.0 <= cfg.stage3.failure_threshold < 1.0, "stage3.failure_threshold", cfg.stage3.failure_threshold,
           "must be in [0, 1)")
    _check(cfg.model.lora_r >= 1, "model.lora_r", cfg.model.lora_r, "must be >= 1")
    _check(cfg.model.max_seq_length >= 16, "model.max_seq_length", cfg.model.max_seq_length, "must be >= 16")
    launch_problem = dist.launch_error(cfg.model.backend, cfg.model.load_in_4bit)  # accelerate launch / torchrun
    if launch_problem:
        raise ConfigError(launch_problem)
    if cfg.run.vllm_mode == "server":
        _check(cfg.model.backend == "hf" and cfg.model.hf_use_vllm and not cfg.model.fast_inference, "run.vllm_mode",
               cfg.run.vllm_mode, "server mode is TRL's vLLM on the hf backend: set model.backend=hf, "
               "model.hf_use_vllm=true and model.fast_inference=false (Unsloth's engine is always colocated)")
    _check(1 <= cfg.run.vllm_server_port <= 65535, "run.vllm_server_port", cfg.run.vllm_server_port,
           "must be a TCP port (1-65535)")
    allowed_stages = {"base", "stage1", "stage2", "stage3"}
    for s in cfg.eval.stages:
        _check(s in allowed_stages, "eval.stages", s, f"allowed: {', '.join(sorted(allowed_stages))}")
    _check(cfg.eval.batch_size >= 1, "eval.batch_size", cfg.eval.batch_size, "must be >= 1")
    for b in cfg.run.baselines:
        _check(b in BASELINES, "run.baselines", b, f"allowed: {', '.join(BASELINES)}")
    config_limits.validate_trainer_keys(cfg)
    config_limits.validate_model_eval_run(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)


def to_dict(cfg: Any) -> dict:
    """The config as plain data (what ``config.yaml`` holds)."""
    return dataclasses.asdict(cfg)


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
