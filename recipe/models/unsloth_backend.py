"""The unsloth backend: its environment and import, its loader, and the one vLLM engine a process may hold.

Read against unsloth / unsloth_zoo 2026.10.x (the ``gpu`` extra); every call below is bound against the vendored
signatures in ``tests/data/unsloth_api_2026.10.x.json`` by the tests.

Import (:func:`import_unsloth`)
    unsloth patches transformers, TRL and peft when it is imported, so it must come first. On a GPU older than
    Ampere (compute capability < 8.0, e.g. a T4) ``UNSLOTH_VLLM_NO_FLASHINFER=1`` is set before the import:
    otherwise unsloth_zoo's ``load_vllm`` turns on ``VLLM_USE_FLASHINFER_SAMPLER`` wherever flashinfer, nvcc and
    ninja exist (Colab has them) and vLLM cannot build that sampler there. A value already in the environment wins.

The vLLM engine (``vllm.enabled``)
    ``FastLanguageModel.from_pretrained(fast_inference=True)`` starts an in-process vLLM engine that shares the
    weights (``model.vllm_engine``); unsloth's patched ``GRPOTrainer`` generates through it. The recipe asks for it
    where GRPO generates (stages 2 and 3: ``model.load(..., for_grpo=True)``; stage 3 mines through that same
    engine first) and where evaluation generates (``vllm=True``: one load per process, whose engine serves the base
    model and every adapter as a LoRA request, :class:`recipe.eval.engine.EngineModel`); SFT loads without one.
    A GPU has room for one engine per process: :func:`load` frees the held one (unsloth_zoo's ``delete_vllm``,
    ``gc``, ``torch.cuda.empty_cache``) before it loads anything, :func:`release_engine` frees it at the end of a
    GRPO stage, and :func:`_hold` refuses a second.

One set of weights (:func:`weights_repo`)
    Unsloth's loader picks the repository itself (``unsloth/models/loader.py`` ``FastLanguageModel.from_pretrained``
    -> ``loader_utils.get_model_name`` over ``unsloth/models/mapper.py``): in 4 bit ``unsloth/Qwen2.5-3B`` and
    ``Qwen/Qwen2.5-3B`` become the dynamic quant ``unsloth/Qwen2.5-3B-unsloth-bnb-4bit``, an adapter folder's base is
    mapped the same way, and then, only when the load starts vLLM, ``_utils.fast_inference_setup`` swaps a dynamic
    quant that ``unsloth_zoo.vllm_utils.vllm_dynamic_quant_supported`` rejects (a property of the repo's
    ``quantization_config``) for the plain ``-bnb-4bit`` one (``_vllm_plain_bnb_or_16bit``). So stage 1, mining and
    evaluation (no vLLM) and stages 2-3 (vLLM) could train and measure two different quantisations. We decide once:
    with ``vllm.enabled`` on, the plain ``-bnb-4bit`` repo (or the 16-bit original when none is published,
    as Unsloth's fallback does), which vLLM always loads and ``fast_inference_setup`` leaves alone; with it off, the
    dynamic quant Unsloth would pick. Every load passes it with ``use_exact_model_name=True`` (no remapping), an
    adapter must name it as its base, and each entry's record keeps the repo id and commit it loaded.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import sys
import weakref
from pathlib import Path
from typing import Any

from recipe.errors import EngineError, WeightsError
from recipe.models.devices import GRPO, uses_vllm
from recipe.models.precision import Precision

log = logging.getLogger(__name__)

NO_FLASHINFER = "UNSLOTH_VLLM_NO_FLASHINFER"
PATCHED_BY_UNSLOTH = ("transformers", "trl", "peft")


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


def engine_of(model: Any) -> Any:
    """The held vLLM engine when ``model`` carries it (unsloth sets ``vllm_engine`` on the model it built; an adapter
    wrapped around it forwards the attribute), else None: a model loaded without the engine, or beside another
    model's engine, has none."""
    engine = _held["engine"]
    if engine is None or getattr(model, "vllm_engine", None) is not engine:
        return None
    return engine


def _hold(model: Any) -> None:
    engine = getattr(model, "vllm_engine", None)
    if engine is None:
        return
    if _held["engine"] is not None and _held["engine"] is not engine:
        raise EngineError("a vLLM engine is already held; call recipe.models.unsloth_backend.release_engine() first "
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


DYNAMIC, PLAIN = "-unsloth-bnb-4bit", "-bnb-4bit"


def weights_repo(base: str, four_bit: bool, fast_inference: bool, tables: Any) -> str:
    """The one repository every load of a run uses (see the module doc). ``tables``: ``unsloth.models.mapper`` (its
    ``FLOAT_TO_INT_MAPPER``, ``INT_TO_FLOAT_MAPPER``, ``MAP_TO_UNSLOTH_16bit``, keyed by exact and lower-case ids).
    A local folder is used as it is."""
    if Path(base).expanduser().is_dir():
        return base
    lower = base.lower()
    if not four_bit:
        return tables.INT_TO_FLOAT_MAPPER.get(lower) or tables.MAP_TO_UNSLOTH_16bit.get(lower) or base
    chosen = base if lower.endswith(PLAIN) else tables.FLOAT_TO_INT_MAPPER.get(lower, base)  # an explicit quant stays
    if not (fast_inference and chosen.lower().endswith(DYNAMIC)):
        return chosen
    plain = chosen[: -len(DYNAMIC)] + PLAIN
    if tables.FLOAT_TO_INT_MAPPER.get(plain.lower(), "").lower() == chosen.lower():  # published as a twin
        return plain
    return tables.INT_TO_FLOAT_MAPPER.get(chosen.lower()) or plain


def _check_adapter_base(init_from: str, repo: str) -> None:
    recorded = json.loads((Path(init_from) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if str(recorded).casefold() != repo.casefold():  # hub ids are case-insensitive
        raise WeightsError(f"{Path(init_from) / 'adapter_config.json'}: the adapter was trained on '{recorded}', but "
                           f"this run loads '{repo}' for every stage (model.name_or_path / vllm.enabled "
                           "changed since?); rerun the stage that wrote it")


def load(cfg: Any, base: str, init_from: str | None, adapter: bool, trainable: bool, seed: int,
         precision: Precision, engine: bool, vllm_cfg: Any = None) -> tuple[Any, Any]:
    """``FastLanguageModel`` load; ``engine``: start vLLM (only when ``vllm_cfg.enabled`` too, the run's ``vllm``
    section; None: off). See the module doc.

    ``base`` is the resolved model folder or hub id, ``init_from`` a stage's output folder (an adapter folder names
    its base in adapter_config.json and unsloth attaches the adapter), ``adapter`` whether it is one."""
    release_engine()  # the previous stage's engine goes before anything else loads
    FastLanguageModel = import_unsloth().FastLanguageModel
    vllm_on = vllm_cfg is not None and vllm_cfg.enabled
    fast_inference = bool(engine) and uses_vllm(vllm_on, "unsloth", GRPO)  # eval and mining: as GRPO
    four_bit = cfg.load_in_4bit and cfg.use_lora
    mapper = importlib.import_module("unsloth.models.mapper")  # lazy: exists with the gpu extra only
    repo = weights_repo(base, four_bit, uses_vllm(vllm_on, "unsloth", GRPO), mapper)  # the run's, not this load's
    if adapter:
        _check_adapter_base(init_from, repo)
    import torch

    gc.collect()  # vLLM sizes its cache from the free memory: drop what earlier loads (e.g. mining) left cached
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    checkpointing = "unsloth" if cfg.gradient_checkpointing else False
    torch.manual_seed(seed)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=init_from if init_from is not None else repo,
        use_exact_model_name=True,  # repo is already decided: no remapping by Unsloth's mapper
        max_seq_length=cfg.max_seq_length,
        dtype=precision.torch_dtype(),
        load_in_4bit=four_bit,
        full_finetuning=not cfg.use_lora,
        fast_inference=fast_inference,
        **({} if vllm_cfg is None else {"gpu_memory_utilization": vllm_cfg.gpu_memory_utilization}),
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

