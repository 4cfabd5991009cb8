"""The configuration schema: every key the recipe can be told, as dataclasses whose defaults are the ONE place a
default is written. Loading, merging and validation live in :mod:`recipe.config.core`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from recipe.config.entries import BASELINES as BASELINE_ENTRIES
from recipe.config.entries import EVAL_STAGES

# --------------------------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    name_or_path: str = "Qwen/Qwen2.5-3B"  # hub id, local folder, or builtin:tiny-qwen2 | builtin:smollm2-135m
    backend: Literal["auto", "hf", "unsloth"] = "auto"
    load_in_4bit: bool = True  # only honoured on CUDA
    max_seq_length: Annotated[int, Field(ge=16)] = 1024
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # CPU only: train float32 weights under bf16 autocast (TRL bf16=True with use_cpu); see recipe/models/precision.py
    cpu_autocast: Literal["none", "bfloat16"] = "none"
    use_lora: bool = True
    lora_r: Annotated[int, Field(ge=1)] = 16
    lora_alpha: Annotated[int, Field(gt=0)] = 32
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    lora_target_modules: Annotated[list[str], Field(min_length=1, description="at least one module name, e.g. "
                                                                             "[q_proj, v_proj]")] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    cache_dir: str = "~/.cache/cotrecipe"


@dataclass
class VllmConfig:
    """The one ``vllm`` section: whether and how generation goes through vLLM, for every stage
    (:func:`recipe.models.devices.uses_vllm` reads ``enabled``). Replaces ``model.fast_inference``,
    ``model.hf_use_vllm``, ``model.gpu_memory_utilization`` and ``run.vllm_*`` (still read, with a warning:
    :mod:`recipe.config.renamed`)."""

    # unsloth backend: one in-process engine for GRPO, evaluation and stage-3 mining (and the weights repository
    # follows it); hf backend: TRL's own engine for GRPO only (evaluation and mining generate with HF). Never on CPU.
    enabled: bool = False
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.6  # the engine's share of the GPU's memory (weights + KV cache)
    # Where TRL's vLLM runs for GRPO on the hf backend: in each training process, or a `trl vllm-serve` server
    # (README "Scaling out"). mode and server_* are in no entry's config fingerprint: switching never blocks a resume.
    mode: Literal["colocate", "server"] = "colocate"
    server_base_url: str = ""  # e.g. http://10.0.0.5:8000; when set, host and port are ignored
    server_host: str = "127.0.0.1"
    server_port: Annotated[int, Field(ge=1, le=65535, description="must be a TCP port (1-65535)")] = 8000
    server_timeout: Annotated[float, Field(gt=0, description="seconds to wait for the server to come up: must be > 0")] \
        = 240.0  # seconds to wait for the server to come up


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


# The TRL fields the recipe records (config.yaml, the entries' config fingerprints) with the recipe's defaults for
# them: the ONE place they are written. Any other field of the pinned TRL class may be set in a section too; it is
# passed through as-is (recipe.config.trl_pass checks it against that class's fields).
TRAIN_DEFAULTS: dict[str, Any] = dict(
    learning_rate=1e-5,
    num_train_epochs=1.0,
    max_steps=-1,  # > 0 overrides epochs
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    warmup_steps=0.0,  # >= 1: a step count; < 1: a fraction of the training steps
    lr_scheduler_type="linear",
    weight_decay=0.0,
    max_grad_norm=1.0,
    optim="adamw_torch",
    logging_steps=1,
    save_steps=50,  # a checkpoint every N steps: resume point after a crash
    save_total_limit=2,
)
GRPO_DEFAULTS: dict[str, Any] = dict(
    TRAIN_DEFAULTS,
    per_device_train_batch_size=8,  # a multiple of num_generations: one prompt's group per step
    num_generations=8,
    max_completion_length=512,
    temperature=1.0,
    top_p=1.0,
    beta=0.0,  # KL coefficient; 0 means no reference model is kept
    epsilon=0.2,  # PPO-style clip range (lower side: ratio >= 1 - epsilon)
    # Upper clip (ratio <= 1 + epsilon_high). 0.2 = epsilon: the symmetric clip of the paper and of TRL alone. Passed
    # to TRL explicitly on both backends: with loss_type=dapo Unsloth's GRPOConfig puts 0.28 in an unset one.
    epsilon_high=0.2,
    # True drops every completion that reaches max_completion_length from the loss. False (ours, and TRL's): those
    # long completions stay in and take the brevity reward's penalty, which is what stages 2-3 train against.
    # Passed explicitly on both backends: with loss_type=dapo Unsloth's GRPOConfig turns an unset one on.
    mask_truncated_completions=False,
    # True: with vLLM generating (vllm.enabled on a GPU), the rollouts are sampled by vLLM's kernels (on a T4: fp16,
    # 4-bit weights, its LoRA kernels) and scored by the trainer's, so they are slightly off-policy; TRL's importance
    # sampling correction (its vllm_importance_sampling_mode sequence_mask, clip_max 3: a completion whose
    # trainer/vLLM probability ratio leaves the bounds drops out of the loss) accounts for it. TRL 1.14.2 defaults it
    # True, Unsloth 2026.10.x's GRPOConfig False (unsloth/models/rl.py), and both implement it: passed explicitly, so
    # the two backends train one objective. Without vLLM (HF generate, the CPU path) there is nothing to correct and
    # it has no effect.
    vllm_importance_sampling_correction=True,
    loss_type="dapo",
    scale_rewards="group",
    num_iterations=1,
    log_completions=True,
    num_completions_to_print=2,
)
# The limits of TRL's keys that TRL's own classes do not check before training starts (a key absent here is passed as
# the config gives it): checked as each section is read (recipe.config.trl_pass).
TRL_LIMITS: dict[str, Any] = dict(
    learning_rate=Field(gt=0), num_train_epochs=Field(gt=0), per_device_train_batch_size=Field(ge=1),
    gradient_accumulation_steps=Field(ge=1), logging_steps=Field(ge=1), save_steps=Field(ge=1),
    warmup_steps=Field(ge=0, description="must be >= 0 (>= 1: a step count, < 1: a fraction of the steps)"),
    max_grad_norm=Field(ge=0), weight_decay=Field(ge=0),
    save_total_limit=Field(ge=1, description="must be >= 1 (the newest checkpoint is the resume point)"),
    num_generations=Field(ge=2, description="GRPO needs at least 2 generations per prompt"),
    max_completion_length=Field(ge=1), temperature=Field(gt=0, description="must be > 0 for sampling"),
    top_p=Field(gt=0, le=1), beta=Field(ge=0, description="must be >= 0 (0: no KL term)"), epsilon=Field(ge=0),
    epsilon_high=Field(ge=0, description="must be >= 0 (upper clip 1 + it)"), num_iterations=Field(ge=1),
    num_completions_to_print=Field(ge=0),
)


@dataclass
class TrainConfig:
    """A trainer section: the recipe's own keys as fields, TRL's (``TRL_CLASS``'s) in ``trl_args``, read as
    attributes too (``cfg.stage2.learning_rate``). ``trl_args`` holds ``TRL_DEFAULTS`` and whatever TRL field the
    config sets; it goes to the TRL class as it is (:mod:`recipe.train.trl_args`)."""

    TRL_CLASS: ClassVar[str] = "SFTConfig"
    TRL_DEFAULTS: ClassVar[dict[str, Any]] = TRAIN_DEFAULTS

    enabled: bool = True
    trl_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trl_args = {**self.TRL_DEFAULTS, **self.trl_args}

    def __getattr__(self, name: str) -> Any:  # only for names that are not fields: TRL's keys
        passed = self.__dict__.get("trl_args", {})
        if name in passed:
            return passed[name]
        raise AttributeError(f"'{type(self).__name__}' has no key '{name}'")

    def as_dict(self) -> dict[str, Any]:
        """Plain data in the order config.yaml has always had: ``enabled``, TRL's keys, the recipe's own."""
        out: dict[str, Any] = {}
        for name, value in dataclasses.asdict(self).items():
            out.update(value if name == "trl_args" else {name: value})
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (own keys or TRL's), as ``dataclasses.replace`` for both kinds."""
        own = {f.name for f in dataclasses.fields(self)}
        trl = {k: v for k, v in changes.items() if k not in own}
        mine = {k: v for k, v in changes.items() if k in own}
        return dataclasses.replace(self, **mine, trl_args={**self.trl_args, **trl})


@dataclass
class Stage1Config(TrainConfig):
    mask_prob: Annotated[float, Field(ge=0, le=1)] = 0.7
    max_length: Annotated[int, Field(ge=1)] = 1024  # TRL's max_length, capped at model.max_seq_length
    question_only_share: Annotated[float, Field(ge=0, le=1)] = 0.0  # share of rows with the question alone (eval prompt); 0 = the paper


@dataclass
class GRPOStageConfig(TrainConfig):
    TRL_CLASS: ClassVar[str] = "GRPOConfig"
    TRL_DEFAULTS: ClassVar[dict[str, Any]] = GRPO_DEFAULTS

    length_unit: Literal["words", "tokens"] = "words"
    cut_after_answer: bool = True  # rewards read a completion up to its first answer line (official truncation)
    rewards: Annotated[list[RewardSpec], Field(min_length=1, description="at least one reward is needed")] = \
        field(default_factory=list)


@dataclass
class Stage2Config(GRPOStageConfig):
    min_masked: Annotated[int, Field(ge=0)] = 3
    mask_ratio: Annotated[float, Field(ge=0, le=1)] = 0.5
    question_only_share: Annotated[float, Field(ge=0, le=1)] = 0.0  # share of prompts with the question alone (eval prompt); 0 = the paper
    rewards: Annotated[list[RewardSpec], Field(min_length=1, description="at least one reward is needed")] = \
        field(default_factory=lambda: [RewardSpec("gated_brevity")])


@dataclass
class Stage3Config(GRPOStageConfig):
    mining_k: Annotated[int, Field(ge=1)] = 1  # answers per mined problem
    mining_temperature: Annotated[float, Field(ge=0, description="must be >= 0 (0: greedy)")] = 0.0
    mining_max_new_tokens: Annotated[int, Field(ge=1)] = 512
    mining_batch_size: Annotated[int, Field(ge=1)] = 16
    failure_threshold: Annotated[float, Field(ge=0, lt=1)] = 0.0  # a problem fails persistently when its correct fraction <= this
    mining_limit: int = -1  # -1 = mine the whole stage-3 slice
    # the paper's reward: correctness and format gates (-2 / -1), then 1 + a compression-ratio bonus
    rewards: Annotated[list[RewardSpec], Field(min_length=1, description="at least one reward is needed")] = \
        field(default_factory=lambda: [RewardSpec("compression_ratio")])


@dataclass
class WarmupConfig(TrainConfig):
    """Not in the paper: SFT of the base model on the teacher's full rationales (``data.warmup_rows``), merged into
    its weights, which then stand for the base model of the whole run (base row, stages, baselines). On CPU it plays
    the competent, verbose pretrained base the paper starts from (README, "The proof run")."""

    TRL_DEFAULTS: ClassVar[dict[str, Any]] = dict(TRAIN_DEFAULTS, learning_rate=3e-4)

    enabled: bool = False
    max_length: Annotated[int, Field(ge=1)] = 1024  # TRL's max_length, capped at model.max_seq_length


TRAINER_SECTIONS = ("stage1", "stage2", "stage3", "warmup")  # the Config fields that are TrainConfig sections


@dataclass
class EvalConfig:
    enabled: bool = True
    split: str = "test"
    limit: int = -1  # -1 = the whole split
    batch_size: Annotated[int, Field(ge=1)] = 16
    max_new_tokens: Annotated[int, Field(ge=1)] = 512
    prompt: Literal["paper", "fewshot", "chat"] = "paper"
    # when a row is done: "paper" = the authors' rule ((Final Answer|Answer): number, then a newline or > 20 more
    # characters); "answer_line" = an answer_label line with a digit, ended; "auto" = paper for prompt=paper, else
    # answer_line
    stop_rule: Literal["auto", "paper", "answer_line"] = "auto"
    stages: list[str] = field(default_factory=lambda: list(EVAL_STAGES))  # base, stage1, stage2, stage3


BASELINES = tuple(BASELINE_ENTRIES)  # `run.baselines` keys (sft, grpo, concise): the baselines of recipe.config.entries


@dataclass
class BaselineGRPOConfig:
    """Plain GRPO from the base model (entry ``baseline-grpo``). Everything else is borrowed from ``stage2`` (LoRA,
    optimizer, lr schedule, generation settings); the step count is matched to stages 2+3's sampled completions."""

    reward: Literal["correctness", "correctness+brevity"] = "correctness"  # +brevity: stage 2's own rewards


@dataclass
class BaselineSFTConfig:
    """The SFT baseline's budget (entry ``baseline-sft``): ``stage1`` = stage 1's steps; ``tokens`` = as many steps as
    it takes to process as many tokens as the curriculum's finished stages did (TRL's ``num_tokens``; it waits for
    them); a number = that many steps, chosen ahead (it starts at once beside the stages; the report's cost section
    puts its tokens beside the curriculum's, so a mismatch shows)."""

    budget: Literal["stage1", "tokens"] | int = "stage1"


@dataclass
class BaselineConciseConfig:
    """The concise-RL baseline (entry ``baseline-concise``): SFT on the full teacher rationales at stage 1's budget
    (the ``baseline-sft`` trainer with ``budget: stage1``), then GRPO on the questions alone at stages 2+3's sampled
    completions (the ``baseline-grpo`` budget and stage 2's section), rewarded by ``all_correct_length``: 1 right /
    0 wrong, plus ``length_weight`` x (1 - tokens / stage2.max_completion_length) in a group whose completions are
    all right (ConciseR's L-GRPO gating, arXiv 2505.21178)."""

    length_weight: Annotated[float, Field(ge=0)] = 1.0


@dataclass
class RunConfig:
    output_dir: str = "runs/cotrecipe"
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 42  # numpy's seed range (transformers.set_seed seeds numpy)
    report_to: list[str] = field(default_factory=lambda: ["none"])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    baselines: list[str] = field(default_factory=list)  # trained by run-all after the stages, e.g. [sft, grpo]
    report_note: str = ""  # shown first in report.md: what this run does and does not show
    # run-all (and `baseline`) train each entry and evaluate in child processes (a fresh GPU context: a vLLM engine
    # is not reliably freed inside one process). auto: on with CUDA, off on the CPU and under a multi-process launch.
    process_per_entry: Literal["auto"] | bool = "auto"
    # run-all: up to this many entries (and evaluations) at once, each in a child process with OMP_NUM_THREADS =
    # usable cores // N (unless set). For CPU runs, where a GRPO step scales poorly with threads. 1: one at a time.
    parallel_entries: Annotated[int, Field(ge=1, description="must be >= 1 (1: one entry at a time)")] = 1


@dataclass
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
    description: str = ""
