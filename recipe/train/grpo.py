"""The GRPO trainer kind (stages 2 and 3, the GRPO baselines): its ``GRPOConfig`` built from the config in one
call (:func:`grpo_args`, the vLLM keys included: :func:`vllm_args`), the rewards, TRL's ``GRPOTrainer``, and what
its objective is on each backend (below).

With rows drawn anew each epoch (:func:`recipe.train.rows.seeded_epochs`) the epochs are one dataset read once, in
order: ``shuffle_dataset=False`` (TRL's ``RepeatSampler`` then keeps the dataset's order).

The GRPO objective is the same on both backends, and the manifest says what it was.

Clip and truncation (``epsilon_high``, ``mask_truncated_completions``)
    Both are config keys of stages 2 and 3 (and of the plain-GRPO baseline, which borrows stage 2's section) and are
    always passed to TRL's ``GRPOConfig`` (:func:`grpo_args`). That matters on unsloth:
    its patched ``GRPOConfig`` (``unsloth/models/rl.py`` 2026.10.9, the ``check_dr_grpo`` block of
    ``_patch_trl_rl_trainers_impl``) makes ``mask_truncated_completions`` default to None and, for an explicitly set
    ``loss_type='dapo'``, turns a None into True and a None ``epsilon_high`` into 0.28, with only a printed line.
    TRL 1.14.2 alone keeps False and uses ``epsilon`` for an unset ``epsilon_high``. Explicit values are left alone
    by that rule; the record keeps the values read back from ``trainer.args`` after construction.

Importance-sampling correction (``vllm_importance_sampling_correction``)
    With vLLM generating, TRL 1.14.2 corrects for the vLLM/trainer log-prob mismatch by default
    (``trl/trainer/grpo_config.py``: True); Unsloth 2026.10.9's patched ``GRPOConfig`` defaults it to False (the
    ``grpo_trainer`` replacements of ``_patch_trl_rl_trainers_impl``) and applies TRL's modes itself when it is on
    (``unsloth_zoo/rl_replacements.py``, ``grpo_accumulated_loss``). A config key of stages 2 and 3 (default True,
    why: :mod:`recipe.config.schema`), always passed, recorded from ``trainer.args`` like the clip keys.

KL reference (``beta`` > 0)
    TRL 1.14.2 alone (``hf``): a stage that re-trains an existing adapter gets a frozen copy of it, the ``ref``
    adapter (``GRPOTrainer.__init__``, the ``elif is_peft_model(model) and args.beta != 0.0`` branch), and the
    reference log-probs are computed with it (``use_adapter(model, "ref")`` in ``_generate_and_score_completions``):
    the stage's starting policy. Unsloth 2026.10.9 deletes that branch from the trainer source it compiles
    (``unsloth/models/rl.py``: the ``peft_pattern`` substitution for TRL >= 1.4.0, and ``add_adapter_block_pattern``
    in ``patch_functions``: "use base model as reference, not SFT/LoRA model"), so ``use_adapter(model, None)``
    disables every adapter: the reference is the raw base model. With a fresh adapter (LoRA B = 0) that base *is* the
    starting policy; after stage 1 it is not. So on unsloth ``beta > 0`` is refused for a stage that starts from an
    existing adapter (:func:`refuse_base_reference`), and :func:`kl_reference` records what the trainer uses.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from transformers import MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TopKLogitsWarper
from trl import GRPOConfig, GRPOTrainer

from recipe import dist
from recipe.config.core import check
from recipe.config.schema import Config, GRPOStageConfig
from recipe.data import gsm8k as data_mod
from recipe.errors import ConfigError
from recipe.models import model as model_mod
from recipe.models.devices import GRPO, uses_vllm
from recipe.rewards import CutAfterAnswer, build_reward, reward_params
from recipe.store.rundir import TRAINER_DIR
from recipe.train.rows import RowsForEpoch, epochs_to_draw, seeded_epochs
from recipe.train.trainer import built, common_args, train_and_save

log = logging.getLogger("recipe")

Stage = Literal["stage2", "stage3"]

# What the KL reference of a built trainer is (:func:`kl_reference`, the module doc)
NO_KL = "none (beta = 0: no KL term)"
REF_ADAPTER = "starting policy (a frozen copy of the starting adapter: TRL's 'ref' adapter)"
REF_MODEL = "starting policy (a frozen copy of the model the stage loaded: TRL's ref_model)"
BASE_IS_START = "starting policy (adapters disabled: the base model the fresh adapter starts from)"
BASE_NOT_START = "base model (adapters disabled), not the starting adapter"


def vllm_args(cfg: Config, use_cpu: bool) -> dict:
    """The vLLM keys of a ``GRPOConfig``: ``use_vllm`` with ``vllm.enabled`` on the GPU
    (:func:`recipe.models.devices.uses_vllm`; on unsloth the trainer then generates with the model's own engine, on hf
    with TRL's), where it runs (``vllm.mode``; the config check allows server mode only on hf), its memory share and
    how to reach a ``trl vllm-serve`` server."""
    v = cfg.vllm
    backend = "hf" if use_cpu else model_mod.pick_backend(cfg.model)
    return dict(use_vllm=uses_vllm(v.enabled, backend, GRPO, on_gpu=not use_cpu), vllm_mode=v.mode,
                vllm_gpu_memory_utilization=v.gpu_memory_utilization,
                vllm_server_base_url=v.server_base_url or None, vllm_server_host=v.server_host,
                vllm_server_port=v.server_port, vllm_server_timeout=v.server_timeout)


def grpo_args(cfg: Config, stage: Stage, output_dir: str, for_check: bool = False, **decided: Any) -> GRPOConfig:
    """TRL GRPOConfig for stage 2 or 3 (and the GRPO baselines, on stage 2's section). ``decided``: keys the recipe
    sets for this training (the epoch layout), over the section's; ``for_check``: as
    :func:`recipe.train.trainer.common_args`."""
    st: GRPOStageConfig = getattr(cfg, stage)
    args = common_args(cfg, st, output_dir, for_check)
    vllm = vllm_args(cfg, args["use_cpu"])
    config = built(GRPOConfig, stage, st, {
        **args,  # epsilon_high and mask_truncated_completions among them: see recipe.config.schema
        "reward_weights": [spec.weight for spec in st.rewards],
        **vllm,
        "remove_unused_columns": False,
        **decided,
    })
    if not (vllm["use_vllm"] or for_check and cfg.vllm.enabled):  # vLLM checks its own (its top_k -1 means "off")
        _check_sampling(stage, config)
    return config


# TRL hands these to transformers' generation unchecked; transformers' processors refuse a bad one at the first
# generation, after the stages before it trained: built once here, as generate() builds them, to refuse it first
_SAMPLERS = (("top_k", TopKLogitsWarper, (None, 0)), ("min_p", MinPLogitsWarper, (None,)),
             ("repetition_penalty", RepetitionPenaltyLogitsProcessor, (None, 1.0)))


def _check_sampling(stage: str, config: GRPOConfig) -> None:
    for key, processor, off in _SAMPLERS:
        value = getattr(config, key, None)
        if value in off:
            continue
        try:
            processor(value)
        except ValueError as exc:
            check(False, f"{stage}.{key}", value, f"transformers' {processor.__name__}: {exc}")


def completions_per_step(st: GRPOStageConfig) -> float:
    """Completions sampled per optimizer step (per process): the batch of completions, generated once every
    ``num_iterations`` steps."""
    return st.per_device_train_batch_size * st.gradient_accumulation_steps / st.num_iterations


def make_rewards(st: GRPOStageConfig, answer_label: str, tokenizer: Any = None) -> list:
    """Reward objects from the config. Parameters a spec leaves unset are filled from the run: ``unit`` from the
    stage's ``length_unit``, ``answer_label`` from ``data.answer_label``. With the stage's ``cut_after_answer`` (on by
    default) each reward reads a completion only up to its first answer line (:class:`recipe.rewards.CutAfterAnswer`;
    ``tokenizer`` recounts the tokens of a cut completion)."""
    rewards = []
    for spec in st.rewards:
        accepted = reward_params(spec.name)
        defaults = {"unit": st.length_unit, "answer_label": answer_label}
        params = {**{k: v for k, v in defaults.items() if k in accepted}, **spec.params}
        reward = build_reward(spec.name, **params)
        cut_label = params.get("answer_label", answer_label)  # cut where this reward reads the answer
        rewards.append(CutAfterAnswer(reward, cut_label, tokenizer) if st.cut_after_answer else reward)
    return rewards


def train_grpo(cfg: Config, stage: Stage, model, tokenizer, rows: list[dict], entry_dir: Path,
               rows_for_epoch: RowsForEpoch | None = None, init_from: str | None = None) -> dict:
    """TRL GRPOTrainer on ``rows`` with the stage's rewards, then :func:`recipe.train.trainer.train_and_save`. With
    ``rows_for_epoch`` (epoch -> rows; epoch 0 must give ``rows``) every epoch reads its own rows: the epochs
    :func:`recipe.train.rows.epochs_to_draw` asks for, one after another, read in one pass in order.
    ``init_from``: what the model was loaded from; the record's ``kl_reference`` is read from the built trainer
    (:func:`kl_reference`), which refuses a base-model reference for a stage that starts from an adapter."""
    data, decided = rows, {}
    if rows_for_epoch is not None:
        st = getattr(cfg, stage)
        prompts_per_step = completions_per_step(st) * dist.world_size() / st.num_generations
        epochs, share = epochs_to_draw(st, len(rows), prompts_per_step, stage)
        data = seeded_epochs(lambda e: rows if e == 0 else rows_for_epoch(e), epochs, cfg.run.seed)
        decided = {"shuffle_dataset": False, "num_train_epochs": share}
        log.info("%s: %d epochs of %d rows drawn anew, read in one pass", stage, epochs, len(rows))
    args = grpo_args(cfg, stage, str(entry_dir / TRAINER_DIR), **decided)
    try:  # the GRPO stage's vLLM engine (if any) goes before the next stage or eval, also when building fails
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=make_rewards(getattr(cfg, stage), cfg.data.answer_label, tokenizer),
            args=args,
            train_dataset=data_mod.to_dataset(data),
            processing_class=tokenizer,
            peft_config=model_mod.trainer_peft_config(model, cfg.model),
        )
        reference = kl_reference(trainer, starts_from_adapter(init_from))
        if reference == BASE_NOT_START:
            raise ConfigError(f"{stage}.beta={args.beta}: this trainer's KL reference is the base model with adapters "
                              f"disabled, not this stage's starting adapter ({init_from}); set {stage}.beta=0")
        return {**train_and_save(trainer, tokenizer, entry_dir, rows), "kl_reference": reference}
    finally:
        model_mod.release_engine()


def starts_from_adapter(init_from: str | None) -> bool:
    """Whether a stage re-trains an existing adapter (its ``init_from`` is an adapter folder)."""
    return init_from is not None and model_mod.is_adapter_dir(init_from)


def refuse_base_reference(cfg: Any, stage: str, init_from: str | None) -> None:
    """Raise before any work when this stage would use the base model as its KL reference: ``beta > 0`` on the
    unsloth backend, starting from an existing adapter (see the module doc)."""
    beta = getattr(cfg, stage).beta
    if beta > 0 and starts_from_adapter(init_from) and model_mod.pick_backend(cfg.model) == "unsloth":
        raise ConfigError(f"{stage}.beta={beta} on model.backend=unsloth: Unsloth's GRPOTrainer takes the KL "
                          "reference from the base model with adapters disabled, not from this stage's starting "
                          f"adapter ({init_from}); set {stage}.beta=0 or model.backend=hf")


def kl_reference(trainer: Any, from_adapter: bool) -> str:
    """What the constructed trainer computes its KL reference with (read from the trainer, not from the config)."""
    if not trainer.args.beta:
        return NO_KL
    if getattr(trainer, "ref_model", None) is not None:
        return REF_MODEL
    if "ref" in (getattr(trainer.model, "peft_config", None) or {}):
        return REF_ADAPTER
    return BASE_NOT_START if from_adapter else BASE_IS_START
