"""The GRPO objective is the same on both backends, and the manifest says what it was.

Clip and truncation (``epsilon_high``, ``mask_truncated_completions``)
    Both are config keys of stages 2 and 3 (and of the plain-GRPO baseline, which borrows stage 2's section) and are
    always passed to TRL's ``GRPOConfig`` (:func:`recipe.train.trl_args.grpo_args`). That matters on unsloth:
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

from typing import Any

from recipe.errors import ConfigError
from recipe.models import model as model_mod

NO_KL = "none (beta = 0: no KL term)"
REF_ADAPTER = "starting policy (a frozen copy of the starting adapter: TRL's 'ref' adapter)"
REF_MODEL = "starting policy (a frozen copy of the model the stage loaded: TRL's ref_model)"
BASE_IS_START = "starting policy (adapters disabled: the base model the fresh adapter starts from)"
BASE_NOT_START = "base model (adapters disabled), not the starting adapter"


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
