"""Every key the recipe can be told, as pydantic dataclasses: each key's type, default, limits and doc in one place.
Types are strict (no ``"3"`` for 3, no ``1`` for ``True``; a float may be written ``1e-5``, which YAML 1.1 reads as
text) and a float must be finite. Loading, merging and the checks that span keys live in :mod:`recipe.config.core`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AllowInfNan, BeforeValidator, ConfigDict, Field, Strict, StrictBool, StrictInt, StrictStr
from pydantic.dataclasses import dataclass

from recipe.config.trl_source import fields_of
from recipe.entries import BASELINES as BASELINE_ENTRIES
from recipe.entries import EVAL_STAGES


def _float_from_text(value: Any) -> Any:  # "1e-5", " 2.5E-1 "; what float() cannot read the strict check refuses
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


Bool, Int, Str = StrictBool, StrictInt, StrictStr
Float = Annotated[float, Strict(), AllowInfNan(False), BeforeValidator(_float_from_text)]
Share = Annotated[Float, Field(ge=0, le=1, description="must be in [0, 1]")]
Text = Annotated[Str, Field(pattern=r"\S", description="must not be empty")]
Rows = Annotated[list[Int], Strict()]  # [start, end) of the train split; end -1 means "to the end"
Count = Annotated[Literal[-1] | Annotated[Int, Field(ge=1)], Field(description="-1 or a positive count")]
RLRate = Annotated[Literal["stage2"] | Annotated[Float, Field(gt=0)], Field(description="'stage2' or a rate > 0")]
section = dataclass(config=ConfigDict(extra="forbid"))

# transformers 5.17's integrations (integrations.integration_utils.INTEGRATION_TO_CALLBACK), plus its "all" / "none"
REPORT_INTEGRATIONS = ("azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow",
                       "mlflow", "neptune", "swanlab", "tensorboard", "trackio", "wandb")
# TRL's GRPO names, checked by GRPOTrainer only once training runs (not by GRPOConfig): read here, before anything loads
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
GRPO_SCALE_REWARDS = ("group", "batch", "none")
# TRL fields the recipe decides itself -> the key that says it instead (None: set by the recipe, no key)
RECIPE_SETS: dict[str, str | None] = {
    "output_dir": "run.output_dir", "overwrite_output_dir": "run.output_dir", "seed": "run.seed",
    "data_seed": "run.seed", "full_determinism": "run.seed", "report_to": "run.report_to", "use_cpu": "run.device",
    "no_cuda": "run.device", "bf16": "model.dtype", "fp16": "model.dtype", "bf16_full_eval": "model.dtype",
    "fp16_full_eval": "model.dtype", "half_precision_backend": "model.dtype",
    "gradient_checkpointing": "model.gradient_checkpointing", "model_init_kwargs": "model",
    "max_length": None, "reward_weights": "rewards[].weight", "resume_from_checkpoint": None,
    "save_strategy": None, "remove_unused_columns": None, "completion_only_loss": None, "packing": None,
    "dataset_num_proc": None, "dataloader_num_workers": None, "disable_tqdm": None, "padding_free": None,
    "dataloader_persistent_workers": None, "dataloader_prefetch_factor": None,  # the recipe loads in-process
    "assistant_only_loss": None, "dataset_kwargs": None,  # the recipe's rows are prompt/completion text
    "ddp_find_unused_parameters": None, "accelerator_config": None, "eval_strategy": "eval", "eval_on_start": "eval",
    "use_vllm": "vllm.enabled", "vllm_mode": "vllm.mode", "vllm_gpu_memory_utilization": "vllm.gpu_memory_utilization",
    **{f"vllm_server_{k}": f"vllm.server_{k}" for k in ("base_url", "host", "port", "timeout")},
}


@section
class ModelConfig:
    name_or_path: Text = "Qwen/Qwen2.5-3B"  # hub id, local folder, or builtin:tiny-qwen2 | builtin:smollm2-135m
    backend: Literal["auto", "hf", "unsloth"] = "auto"
    load_in_4bit: Bool = True  # only honoured on CUDA
    max_seq_length: Annotated[Int, Field(ge=16)] = 1024
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # CPU only: train float32 weights under bf16 autocast (TRL bf16=True with use_cpu); auto: where the CPU has
    # native bf16 (avx512_bf16/amx_bf16), else none; see recipe/models/precision.py
    cpu_autocast: Literal["none", "bfloat16", "auto"] = "none"
    use_lora: Bool = True
    lora_r: Annotated[Int, Field(ge=1)] = 16
    lora_alpha: Annotated[Int, Field(gt=0)] = 32
    lora_dropout: Annotated[Float, Field(ge=0, lt=1, description="must be in [0, 1)")] = 0.0
    lora_target_modules: Annotated[list[Str], Strict(), Field(min_length=1, description="at least one module name, "
                                                              "e.g. [q_proj, v_proj]")] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    gradient_checkpointing: Bool = False
    trust_remote_code: Bool = False
    cache_dir: Text = "~/.cache/cotrecipe"


@section
class VllmConfig:
    """Whether and how generation goes through vLLM, for every stage (:func:`recipe.models.devices.uses_vllm`)."""

    # unsloth: one in-process engine for GRPO, evaluation and mining; hf: TRL's engine for GRPO only. Never on CPU.
    enabled: Bool = False
    gpu_memory_utilization: Annotated[Float, Field(gt=0, le=1, description="must be in (0, 1]")] = 0.6
    # hf backend: TRL's vLLM in each training process, or a `trl vllm-serve` server (docs: "Scaling out")
    mode: Literal["colocate", "server"] = "colocate"
    server_base_url: Str = ""  # e.g. http://10.0.0.5:8000; when set, host and port are ignored
    server_host: Str = "127.0.0.1"
    server_port: Annotated[Int, Field(ge=1, le=65535, description="must be a TCP port (1-65535)")] = 8000
    server_timeout: Annotated[Float, Field(gt=0)] = 240.0  # seconds to wait for the server to come up


@section
class DataConfig:
    source: Text = "openai/gsm8k"  # hub id | local .jsonl/.json/.parquet | folder with train/test files | synthetic[:N]
    eval_source: Str = ""  # empty = same as source
    teacher: Text = "gold"  # teacher rationales: "gold" (the dataset's own) or a .jsonl/.json/.parquet file of them
    annotations: Literal["strip", "keep"] = "strip"
    answer_label: Text = "Final Answer:"
    mask_token: Text = "[MASK]"
    strict: Bool = False
    teacher_latex: Literal["keep", "math"] = "keep"  # stage 1 only: "math" replaces LaTeX spans by [math] (official)
    stage1_rows: Rows = field(default_factory=lambda: [0, 2000])
    stage2_rows: Rows = field(default_factory=lambda: [2000, 4000])
    stage3_rows: Rows = field(default_factory=lambda: [4000, -1])
    warmup_rows: Rows = field(default_factory=lambda: [0, 0])  # the warm-up's own slice (warmup.enabled)


@section
class RewardSpec:
    name: Str = ""  # required: a spec without a name is refused (allowed: recipe.rewards.REWARDS)
    weight: Float = 1.0
    params: Annotated[dict[str, Any], Strict()] = field(default_factory=dict)  # checked against the reward's fields


Rewards = Annotated[list[RewardSpec], Strict(), Field(min_length=1, description="at least one reward is needed")]


@section
class TrainConfig:
    """A trainer section: ``enabled``, the fields of TRL's ``TRL_CLASS`` the recipe records with its defaults, the
    recipe's own keys (subclasses); any other field of the TRL class is kept in ``trl_args``, read as an attribute
    (``cfg.stage2.top_k``) and passed to TRL as it is (TRL checks the values)."""

    TRL_CLASS: ClassVar[str] = "SFTConfig"

    enabled: Bool = True
    learning_rate: Annotated[Float, Field(gt=0)] = 1e-5
    num_train_epochs: Annotated[Float, Field(gt=0)] = 1.0
    max_steps: Count = -1  # -1: train for num_train_epochs
    per_device_train_batch_size: Annotated[Int, Field(ge=1)] = 4
    gradient_accumulation_steps: Annotated[Int, Field(ge=1)] = 1
    warmup_steps: Float = 0.0  # >= 1: a step count; < 1: a fraction of the training steps
    lr_scheduler_type: Str = "linear"  # transformers' SchedulerType
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[Float, Field(ge=0)] = 1.0
    optim: Str = "adamw_torch"  # transformers' OptimizerNames
    logging_steps: Annotated[Int | Float, Field(ge=1)] = 1
    save_steps: Annotated[Int | Float, Field(ge=1)] = 50  # a checkpoint every N steps: the resume point after a crash
    save_total_limit: Annotated[Int, Field(ge=1)] = 2  # >= 1: the newest checkpoint is the resume point
    trl_args: Annotated[dict[str, Any], Strict()] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # only for names that are not fields: TRL's other keys
        passed = self.__dict__.get("trl_args", {})
        if name in passed:
            return passed[name]
        raise AttributeError(f"'{type(self).__name__}' has no key '{name}'")

    def trl_keys(self) -> dict[str, Any]:
        """The section's keys that go to TRL as they are: the recorded fields, then ``trl_args``."""
        trl = fields_of(self.TRL_CLASS)
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name in trl and f.name not in RECIPE_SETS}, **self.trl_args}

    def as_dict(self) -> dict[str, Any]:
        """The section as config.yaml holds it: ``enabled``, TRL's keys, the recipe's own."""
        trl = self.trl_keys()
        rest = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in (*trl, "trl_args")}
        return {"enabled": self.enabled, **trl, **rest}

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (own keys or TRL's), as ``dataclasses.replace`` for both kinds."""
        own = {f.name for f in dataclasses.fields(self)}
        trl = {k: v for k, v in changes.items() if k not in own}
        mine = {k: v for k, v in changes.items() if k in own}
        return dataclasses.replace(self, **mine, trl_args={**self.trl_args, **trl})


@section
class Stage1Config(TrainConfig):
    mask_prob: Share = 0.7
    max_length: Annotated[Int, Field(ge=1)] = 1024  # TRL's max_length, capped at model.max_seq_length
    question_only_share: Share = 0.0  # share of rows with the question alone (eval prompt); 0 = the paper


@section
class GRPOStageConfig(TrainConfig):
    TRL_CLASS: ClassVar[str] = "GRPOConfig"

    per_device_train_batch_size: Annotated[Int, Field(ge=1)] = 8  # a multiple of num_generations: whole groups
    num_generations: Annotated[Int, Field(ge=2, description="GRPO needs at least 2 generations per prompt")] = 8
    max_completion_length: Annotated[Int, Field(ge=1)] = 512
    temperature: Annotated[Float, Field(gt=0, description="must be > 0 for sampling")] = 1.0
    top_p: Annotated[Float, Field(gt=0, le=1, description="must be in (0, 1]")] = 1.0
    beta: Annotated[Float, Field(ge=0, description="must be >= 0 (0: no KL term)")] = 0.0  # 0: no reference model
    epsilon: Annotated[Float, Field(ge=0)] = 0.2  # PPO-style clip range (lower side: ratio >= 1 - epsilon)
    # upper clip (ratio <= 1 + it): 0.2 = epsilon, the paper's symmetric clip; passed explicitly (docs/gpu.md)
    epsilon_high: Annotated[Float, Field(ge=0, description="must be >= 0 (upper clip 1 + it)")] = 0.2
    # false: truncated completions stay in the loss and take the brevity penalty; passed explicitly (docs/gpu.md)
    mask_truncated_completions: Bool = False
    # true: TRL's correction of vLLM-sampled rollouts (slightly off-policy); Unsloth defaults it false (docs/gpu.md)
    vllm_importance_sampling_correction: Bool = True
    loss_type: Literal[GRPO_LOSS_TYPES] = "dapo"
    scale_rewards: Literal[GRPO_SCALE_REWARDS] = "group"
    num_iterations: Annotated[Int, Field(ge=1)] = 1
    log_completions: Bool = True
    num_completions_to_print: Annotated[Int, Field(ge=0)] = 2
    length_unit: Literal["words", "tokens"] = "words"
    cut_after_answer: Bool = True  # rewards read a completion up to its first answer line (official truncation)
    rewards: Rewards = field(default_factory=list)


@section
class Stage2Config(GRPOStageConfig):
    rewards: Rewards = field(default_factory=lambda: [RewardSpec("gated_brevity")])
    min_masked: Annotated[Int, Field(ge=0)] = 3
    mask_ratio: Share = 0.5
    question_only_share: Share = 0.0  # share of prompts with the question alone (eval prompt); 0 = the paper


@section
class Stage3Config(GRPOStageConfig):
    # the paper's reward: correctness and format gates (-2 / -1), then 1 + a compression-ratio bonus
    rewards: Rewards = field(default_factory=lambda: [RewardSpec("compression_ratio")])
    mining_k: Annotated[Int, Field(ge=1)] = 1  # answers per mined problem
    mining_temperature: Annotated[Float, Field(ge=0, description="must be >= 0 (0: greedy)")] = 0.0
    mining_max_new_tokens: Annotated[Int, Field(ge=1)] = 512
    mining_batch_size: Annotated[Int, Field(ge=1)] = 16
    # a problem fails persistently when its correct share <= this
    failure_threshold: Annotated[Float, Field(ge=0, lt=1, description="must be in [0, 1)")] = 0.0
    mining_limit: Count = -1  # problems mined; -1: the whole stage-3 slice
    prompt: Literal["rewrite", "question"] = "rewrite"  # rewrite: the teacher solution shown (paper); or the question


@section
class WarmupConfig(TrainConfig):
    """Not in the paper: SFT of the base model on the teacher's full rationales (``data.warmup_rows``), merged into
    its weights, the base model of the whole run (docs, "The proof run")."""

    enabled: Bool = False
    learning_rate: Annotated[Float, Field(gt=0)] = 3e-4
    max_length: Annotated[Int, Field(ge=1)] = 1024  # TRL's max_length, capped at model.max_seq_length


@section
class EvalConfig:
    enabled: Bool = True
    split: Str = "test"
    limit: Count = -1  # rows evaluated; -1: the whole split
    batch_size: Annotated[Int, Field(ge=1)] = 16
    max_new_tokens: Annotated[Int, Field(ge=1)] = 512
    prompt: Literal["paper", "fewshot", "chat"] = "paper"
    # when a row is done: the authors' rule, an ended answer_label line with a digit, or auto (paper for prompt=paper)
    stop_rule: Literal["auto", "paper", "answer_line"] = "auto"
    stages: Annotated[list[Literal[EVAL_STAGES]], Strict()] = field(default_factory=lambda: list(EVAL_STAGES))
    figures: Bool = True  # draw report.png (the frontier) and report_curves.png; false: report.md alone


BASELINES = tuple(BASELINE_ENTRIES)  # `run.baselines` keys (sft, grpo, concise): the baselines of recipe.entries


@section
class BaselineGRPOConfig:
    """Plain GRPO from the base model (``baseline-grpo``): stage 2's settings, stages 2+3's sampled completions."""

    reward: Literal["correctness", "correctness+brevity"] = "correctness"  # +brevity: stage 2's own rewards
    learning_rate: RLRate = "stage2"  # its GRPO's rate: stage 2's, or its own (tuned for it, not for the curriculum)


@section
class BaselineSFTConfig:
    """The SFT baseline's budget (``baseline-sft``): stage 1's steps; the tokens the curriculum's stages processed
    (it waits for them); or a step count (it starts at once)."""

    budget: Annotated[Literal["stage1", "tokens"] | Annotated[Int, Field(ge=1)],
                      Field(description="'stage1', 'tokens' or a step count >= 1")] = "stage1"


@section
class BaselineConciseConfig:
    """The concise-RL baseline (``baseline-concise``): SFT at stage 1's budget, then GRPO at ``baseline-grpo``'s,
    rewarded by ``all_correct_length`` (a length bonus in all-correct groups: ConciseR's L-GRPO, arXiv 2505.21178)."""

    length_weight: Annotated[Float, Field(ge=0)] = 1.0
    learning_rate: RLRate = "stage2"  # its GRPO phase's rate (its SFT phase takes stage 1's)


@section
class RunConfig:
    output_dir: Text = "runs/cotrecipe"
    seed: Annotated[Int, Field(ge=0, le=2**32 - 1, description="must be in [0, 4294967295]")] = 42  # numpy's seeds
    report_to: Annotated[list[Str], Strict()] = field(default_factory=lambda: ["none"])  # REPORT_INTEGRATIONS
    device: Literal["auto", "cpu", "cuda"] = "auto"
    baselines: Annotated[list[Literal[BASELINES]], Strict()] = field(default_factory=list)  # trained after the stages
    report_note: Str = ""  # shown first in report.md: what this run does and does not show
    # each entry trained and evaluated in a child process (a fresh GPU context); auto: on with CUDA, off on the CPU
    process_per_entry: Literal["auto"] | Bool = "auto"
    # run-all on the CPU: up to this many entries at once, each in a child process with cores // N threads
    parallel_entries: Annotated[Int, Field(ge=1, description="must be >= 1 (1: one entry at a time)")] = 1


@section
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    stage3: Stage3Config = field(default_factory=Stage3Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    baseline_grpo: BaselineGRPOConfig = field(default_factory=BaselineGRPOConfig)
    baseline_sft: BaselineSFTConfig = field(default_factory=BaselineSFTConfig)
    baseline_concise: BaselineConciseConfig = field(default_factory=BaselineConciseConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    description: Str = ""
