"""TRL trainer arguments built from the config: the one place an ``SFTConfig`` or ``GRPOConfig`` is made. A section's
TRL keys go through as they are; the recipe adds what it decides itself (output folder, seed, device, precision,
checkpointing, the data layout, the vLLM switch): :data:`recipe.config.trl_pass.RECIPE_SETS` refuses those keys in a
section."""

from __future__ import annotations

from typing import Literal

import torch
from trl import GRPOConfig, SFTConfig

from recipe import dist
from recipe.config.core import Config, GRPOStageConfig, TrainConfig
from recipe.models.devices import check_device
from recipe.models.model import trl_vllm_args
from recipe.models.precision import for_config as precision_for


def _common_args(cfg: Config, st: TrainConfig, output_dir: str) -> dict:
    check_device(cfg.run.device)  # run.device=cuda without CUDA is refused, never trained on the CPU
    use_cpu = cfg.run.device == "cpu" or not torch.cuda.is_available()
    flags = precision_for(cfg).trainer_flags()  # the same decision model.load follows (recipe/models/precision.py)
    return dict(
        **st.trl_args,  # TRL's own keys of the section, as the config gives them (recipe.config.trl_pass)
        output_dir=output_dir,
        save_strategy="steps",
        seed=cfg.run.seed,
        report_to=[r for r in cfg.run.report_to if r != "none"] or "none",
        use_cpu=use_cpu,
        **flags,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
        dataloader_num_workers=0,
        disable_tqdm=False,
        # several processes (DDP): LoRA and full fine-tuning use every trainable weight, so skip DDP's unused-weight scan
        ddp_find_unused_parameters=False if dist.is_distributed() else None,
        **dist.trainer_kwargs(use_cpu),
    )


def sft_args(cfg: Config, output_dir: str, section: Literal["stage1", "warmup"] = "stage1") -> SFTConfig:
    """TRL SFTConfig for stage 1 (and the SFT baseline, on stage 1's budget) or the warm-up (its own section):
    prompt-completion data, loss on the completion only."""
    st = getattr(cfg, section)
    return SFTConfig(
        **_common_args(cfg, st, output_dir),
        max_length=min(st.max_length, cfg.model.max_seq_length),
        completion_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    )


def grpo_args(cfg: Config, stage: Literal["stage2", "stage3"], output_dir: str) -> GRPOConfig:
    """TRL GRPOConfig for stage 2 or 3."""
    st: GRPOStageConfig = getattr(cfg, stage)
    args = _common_args(cfg, st, output_dir)
    return GRPOConfig(
        **args,  # epsilon_high and mask_truncated_completions among them: see recipe.config.schema
        reward_weights=[spec.weight for spec in st.rewards],
        **{**trl_vllm_args(cfg.model, cfg.vllm, args["use_cpu"]), **vllm_server_args(cfg)},  # vllm.mode wins
        remove_unused_columns=False,
    )


def vllm_server_args(cfg: Config) -> dict:
    """Where TRL's vLLM runs (``vllm.mode``) and how to reach a ``trl vllm-serve`` server; the switch itself is
    ``vllm.enabled`` (:func:`recipe.models.model.trl_vllm_args`). The config check allows server mode only on hf."""
    v = cfg.vllm
    return dict(vllm_mode=v.mode, vllm_server_base_url=v.server_base_url or None, vllm_server_host=v.server_host,
                vllm_server_port=v.server_port, vllm_server_timeout=v.server_timeout)
