"""TRL trainer arguments built from the config: the one place an ``SFTConfig`` or ``GRPOConfig`` is made. A section's
TRL keys go through as they are; the recipe adds what it decides itself (output folder, seed, device, precision,
checkpointing, the data layout, the vLLM switch): :data:`recipe.config.schema.RECIPE_SETS` refuses those keys in a
section. TRL checks the values itself (its dataclasses' ``__post_init__``); what it refuses is one
:class:`~recipe.errors.ConfigError` line naming the section's key (:func:`check`, before a run directory is made)."""

from __future__ import annotations

import tempfile
from typing import Any, Literal

import torch
from trl import GRPOConfig, SFTConfig

from recipe import dist
from recipe.config.core import Config, GRPOStageConfig, TrainConfig
from recipe.config.safe_yaml import short_repr
from recipe.errors import ConfigError
from recipe.models.devices import check_device
from recipe.models.model import trl_vllm_args
from recipe.models.precision import for_config as precision_for


def _common_args(cfg: Config, st: TrainConfig, output_dir: str, for_check: bool = False) -> dict:
    if for_check:  # built on the CPU, precision left to TRL: what is checked is the section's own keys
        use_cpu, flags = True, {}
    else:
        check_device(cfg.run.device)  # run.device=cuda without CUDA is refused, never trained on the CPU
        use_cpu = cfg.run.device == "cpu" or not torch.cuda.is_available()
        flags = precision_for(cfg).trainer_flags()  # the same decision model.load follows (models/precision.py)
    return dict(
        **st.trl_keys(),  # TRL's own keys of the section, as the config gives them
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


def sft_args(cfg: Config, output_dir: str, section: Literal["stage1", "warmup"] = "stage1",
             for_check: bool = False) -> SFTConfig:
    """TRL SFTConfig for stage 1 (and the SFT baseline, on stage 1's budget) or the warm-up (its own section):
    prompt-completion data, loss on the completion only. ``for_check``: built only to be checked (:func:`check`)."""
    st = getattr(cfg, section)
    return _built(SFTConfig, section, st, dict(
        **_common_args(cfg, st, output_dir, for_check),
        max_length=min(st.max_length, cfg.model.max_seq_length),
        completion_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    ))


def grpo_args(cfg: Config, stage: Literal["stage2", "stage3"], output_dir: str,
              for_check: bool = False) -> GRPOConfig:
    """TRL GRPOConfig for stage 2 or 3 (``for_check`` as for :func:`sft_args`)."""
    st: GRPOStageConfig = getattr(cfg, stage)
    args = _common_args(cfg, st, output_dir, for_check)
    return _built(GRPOConfig, stage, st, dict(
        **args,  # epsilon_high and mask_truncated_completions among them: see recipe.config.schema
        reward_weights=[spec.weight for spec in st.rewards],
        **{**trl_vllm_args(cfg.model, cfg.vllm, args["use_cpu"]), **vllm_server_args(cfg)},  # vllm.mode wins
        remove_unused_columns=False,
    ))


def _built(trl_class: Any, section: str, st: TrainConfig, kwargs: dict) -> Any:
    """``trl_class(**kwargs)``; when TRL refuses, the section's key it refuses: the first whose value, left to
    TRL's default, makes TRL accept the rest (else the section, with TRL's words)."""
    try:
        return trl_class(**kwargs)
    except (ValueError, TypeError) as exc:
        refusal = exc
    name = getattr(trl_class, "__name__", "TRL")
    for key in st.trl_keys():
        try:
            trl_class(**{k: v for k, v in kwargs.items() if k != key})
        except (ValueError, TypeError):
            continue
        raise ConfigError(f"bad value for '{section}.{key}': {short_repr(kwargs[key])} (TRL's {name}: "
                          f"{_one_line(refusal)})")
    raise ConfigError(f"'{section}': TRL's {name} refuses it: {_one_line(refusal)}")


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 600 else text[:597] + "..."


def check(cfg: Config) -> None:
    """Every enabled trainer section through TRL's own checks (its config built for a folder never written), so a
    value TRL refuses stops a command before its run directory is made. Built for the CPU: TRL's config sets up
    its device when built, and on a GPU that would create a CUDA context in a process that never trains (the
    run-all parent); the device-dependent checks run again where each entry builds its config."""
    with tempfile.TemporaryDirectory(prefix="cotrecipe-check-") as folder:
        for name in ("warmup", "stage1"):
            if getattr(cfg, name).enabled:
                sft_args(cfg, folder, name, for_check=True)
        for name in ("stage2", "stage3"):
            if getattr(cfg, name).enabled:
                grpo_args(cfg, name, folder, for_check=True)


def vllm_server_args(cfg: Config) -> dict:
    """Where TRL's vLLM runs (``vllm.mode``) and how to reach a ``trl vllm-serve`` server; the switch itself is
    ``vllm.enabled`` (:func:`recipe.models.model.trl_vllm_args`). The config check allows server mode only on hf."""
    v = cfg.vllm
    return dict(vllm_mode=v.mode, vllm_server_base_url=v.server_base_url or None, vllm_server_host=v.server_host,
                vllm_server_port=v.server_port, vllm_server_timeout=v.server_timeout)
