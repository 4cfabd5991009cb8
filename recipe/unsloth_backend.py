"""The unsloth backend: its environment and import, its loader, and the one vLLM engine a process may hold.

Read against unsloth / unsloth_zoo 2026.10.x (the ``gpu`` extra); every call below is bound against the vendored
signatures in ``tests/data/unsloth_api_2026.10.x.json`` by the tests.

Import (:func:`import_unsloth`)
    unsloth patches transformers, TRL and peft when it is imported, so it must come first. On a GPU older than
    Ampere (compute capability < 8.0, e.g. a T4) ``UNSLOTH_VLLM_NO_FLASHINFER=1`` is set before the import:
    otherwise unsloth_zoo's ``load_vllm`` turns on ``VLLM_USE_FLASHINFER_SAMPLER`` wherever flashinfer, nvcc and
    ninja exist (Colab has them) and vLLM cannot build that sampler there. A value already in the environment wins.

The vLLM engine (``model.fast_inference``)
    ``FastLanguageModel.from_pretrained(fast_inference=True)`` starts an in-process vLLM engine that shares the
    weights (``model.vllm_engine``); unsloth's patched ``GRPOTrainer`` generates through it. The recipe asks for it
    only where GRPO generates (stages 2 and 3: ``model.load(..., for_grpo=True)``); SFT, mining and evaluation load
    without one. At most one engine is held per process: :func:`load` frees the held one (unsloth_zoo's
    ``delete_vllm``, ``gc``, ``torch.cuda.empty_cache``) before it loads anything, :func:`release_engine` frees it
    at the end of a GRPO stage, and :func:`_hold` refuses a second.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import weakref
from typing import Any

from recipe.precision import Precision

log = logging.getLogger(__name__)

NO_FLASHINFER = "UNSLOTH_VLLM_NO_FLASHINFER"
PATCHED_BY_UNSLOTH = ("transformers", "trl", "peft")


class EngineError(RuntimeError):
    """A second vLLM engine was asked for while one is still held."""


# ---------------------------------------------------------------------------------------------------------------
# Environment and import
# ---------------------------------------------------------------------------------------------------------------


def gpu_environment() -> dict[str, str]:
    """Environment variables this GPU needs before unsloth is imported ({} without CUDA or on Ampere+)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    major, _minor = torch.cuda.get_device_capability()
    return {NO_FLASHINFER: "1"} if major < 8 else {}


def import_unsloth() -> Any:
    """Set the GPU's environment, then import unsloth (before transformers/TRL/peft when possible)."""
    for key, value in gpu_environment().items():
        if key not in os.environ:
            os.environ[key] = value
            log.info("set %s=%s (GPU compute capability < 8.0)", key, value)
    if "unsloth" not in sys.modules:
        early = [name for name in PATCHED_BY_UNSLOTH if name in sys.modules]
        if early:
            log.warning("%s imported before unsloth: unsloth cannot patch them fully", ", ".join(early))
    import unsloth  # lazy on purpose: importing unsloth patches transformers, TRL and peft process-wide

    return unsloth


# ---------------------------------------------------------------------------------------------------------------
# The one engine
# ---------------------------------------------------------------------------------------------------------------

_held: dict[str, Any] = {"engine": None, "model": None}


def held_engine() -> Any:
    """The vLLM engine this process holds, or None."""
    return _held["engine"]


def _hold(model: Any) -> None:
    engine = getattr(model, "vllm_engine", None)
    if engine is None:
        return
    if _held["engine"] is not None and _held["engine"] is not engine:
        raise EngineError("a vLLM engine is already held; call recipe.unsloth_backend.release_engine() first "
                          "(a second engine does not fit beside the first on one GPU)")
    _held["engine"], _held["model"] = engine, weakref.ref(model)


def release_engine() -> bool:
    """Free the held vLLM engine (unsloth_zoo ``delete_vllm``, ``gc``, CUDA cache); False when none is held."""
    engine = _held["engine"]
    if engine is None:
        return False
    from unsloth_zoo.vllm_utils import delete_vllm  # lazy: only exists with the gpu extra installed

    owner = _held["model"]() if _held["model"] is not None else None
    _held["engine"], _held["model"] = None, None
    if owner is not None:  # the model's own references (on it or on a wrapped base model) keep the engine alive
        modules = owner.modules() if hasattr(owner, "modules") else []
        for module in (owner, *modules):
            for attr in ("vllm_engine", "fast_generate", "fast_generate_batches"):
                module.__dict__.pop(attr, None)
    delete_vllm(engine)
    del engine, owner
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    log.info("vLLM engine freed")
    return True


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def load(cfg: Any, base: str, init_from: str | None, adapter: bool, trainable: bool, seed: int,
         precision: Precision, engine: bool) -> tuple[Any, Any]:
    """``FastLanguageModel`` load; ``engine``: start vLLM (only when ``cfg.fast_inference`` too). See the module doc.

    ``base`` is the resolved model folder or hub id, ``init_from`` a stage's output folder (an adapter folder names
    its base in adapter_config.json and unsloth attaches the adapter), ``adapter`` whether it is one."""
    release_engine()  # the previous stage's engine goes before anything else loads
    FastLanguageModel = import_unsloth().FastLanguageModel
    fast_inference = bool(engine and cfg.fast_inference)
    import torch

    gc.collect()  # vLLM sizes its cache from the free memory: drop what earlier loads (e.g. mining) left cached
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    checkpointing = "unsloth" if cfg.gradient_checkpointing else False
    torch.manual_seed(seed)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=init_from if init_from is not None else base,
        max_seq_length=cfg.max_seq_length,
        dtype=precision.torch_dtype(),
        load_in_4bit=cfg.load_in_4bit and cfg.use_lora,
        full_finetuning=not cfg.use_lora,
        fast_inference=fast_inference,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        max_lora_rank=cfg.lora_r,
        trust_remote_code=cfg.trust_remote_code,
        use_gradient_checkpointing=checkpointing,  # used when init_from is an adapter (no get_peft_model below)
        random_state=seed,
    )
    _hold(model)
    if cfg.use_lora and not adapter:
        torch.manual_seed(seed)  # LoRA A is drawn from torch's generator: same seed, same adapter
        model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules),
            use_gradient_checkpointing=checkpointing, random_state=seed,
        )
    if not trainable:
        FastLanguageModel.for_inference(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def trl_vllm_args(cfg: Any, backend: str, use_cpu: bool) -> dict:
    """The vLLM part of a TRL ``GRPOConfig``: on unsloth, its shared engine when ``model.fast_inference`` is on
    (unsloth's trainer uses ``model.vllm_engine``); on hf, TRL's own colocated engine only when
    ``model.hf_use_vllm`` asks for it explicitly; never on the CPU."""
    if use_cpu:
        use_vllm = False
    elif backend == "unsloth":
        use_vllm = bool(cfg.fast_inference)
    else:
        use_vllm = bool(getattr(cfg, "hf_use_vllm", False))
    return {"use_vllm": use_vllm, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": cfg.gpu_memory_utilization}
