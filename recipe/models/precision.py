"""One place decides the numeric precision: the dtype models load in and the bf16/fp16 flags TRL trains with.

Unsloth's trainers refuse a bfloat16 model trained with ``fp16=True`` (and the reverse), so both sides must come
from :func:`decide`. ``torch.cuda.is_bf16_supported()`` answers True on a T4 (compute capability 7.5) because
bfloat16 can be emulated there; we ask for native support (``including_emulation=False``).

    ==============  =======================  ===================================================
    model.dtype     CPU                      CUDA
    ==============  =======================  ===================================================
    auto            float32, no AMP flags    bfloat16 + bf16 (Ampere and newer), else float16 + fp16
    bfloat16        bfloat16, no AMP flags   bfloat16 + bf16; an error on a GPU without native bf16
    float16         float16, no AMP flags    float16 + fp16
    float32         float32, no AMP flags    float32, no AMP flags
    ==============  =======================  ===================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from recipe.errors import PrecisionError  # noqa: F401  (defined there, raised here)

DTYPES = ("auto", "float32", "bfloat16", "float16")
CPU_AUTOCAST = ("none", "bfloat16")


@dataclass(frozen=True)
class Precision:
    dtype: str  # float32 | bfloat16 | float16: what the weights load in (4-bit: the compute dtype)
    bf16: bool  # TRL/transformers mixed-precision flags
    fp16: bool

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def trainer_flags(self) -> dict:
        """The ``bf16``/``fp16`` keyword arguments for a TRL config."""
        return {"bf16": self.bf16, "fp16": self.fp16}


def native_bf16() -> bool:
    """True when the current CUDA GPU computes in bfloat16 natively (not by emulation, as a T4 would)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def decide(dtype: str, cuda: bool, cpu_autocast: str = "none") -> Precision:
    """The precision for ``model.dtype`` = ``dtype`` on this machine (``cuda``: training/loading on a GPU);
    ``cpu_autocast`` (``model.cpu_autocast``) matters on the CPU only.

    >>> decide("auto", cuda=False, cpu_autocast="bfloat16")
    Precision(dtype='float32', bf16=True, fp16=False)
    """
    if dtype not in DTYPES:
        raise PrecisionError(f"unknown model.dtype '{dtype}' (allowed: {', '.join(DTYPES)})")
    if cpu_autocast not in CPU_AUTOCAST:
        raise PrecisionError(f"unknown model.cpu_autocast '{cpu_autocast}' (allowed: {', '.join(CPU_AUTOCAST)})")
    if not cuda:
        loaded = "float32" if dtype == "auto" else dtype
        if cpu_autocast == "bfloat16" and loaded != "float32":
            raise PrecisionError(f"model.cpu_autocast=bfloat16 keeps float32 master weights; model.dtype={dtype} "
                                 "loads them in 16 bits: use model.dtype=float32 (or auto)")
        return Precision(loaded, bf16=cpu_autocast == "bfloat16", fp16=False)
    if dtype == "auto":
        dtype = "bfloat16" if native_bf16() else "float16"
    elif dtype == "bfloat16" and not native_bf16():
        raise PrecisionError("model.dtype=bfloat16 but this GPU has no native bfloat16 (e.g. a T4): "
                             "use model.dtype=auto or float16")
    return Precision(dtype, bf16=dtype == "bfloat16", fp16=dtype == "float16")


def for_config(cfg: Any) -> Precision:
    """:func:`decide` for a full recipe config (``cfg.model.dtype``; CPU when ``run.device=cpu`` or no CUDA)."""
    import torch

    cuda = torch.cuda.is_available() and getattr(cfg.run, "device", "auto") != "cpu"
    return decide(cfg.model.dtype, cuda, getattr(cfg.model, "cpu_autocast", "none"))


@contextlib.contextmanager
def frozen_bf16(model: Any, precision: Precision) -> Iterator[int]:
    """While training under CPU bf16 autocast (``precision``: float32 weights with ``bf16``), give every frozen
    float32 ``nn.Linear`` (LoRA's base layers, the MLP, the output head) a bfloat16 copy of its weight, and run the
    model's forward under autocast wherever it is called from; put the originals back on leaving. Yields how many
    weights were swapped (0 for any other precision: nothing is done).

    Why: autocast casts a Linear's weight to bfloat16 on every call and caches the cast only for weights that
    require grad, so a frozen weight is cast again at every call; and TRL's GRPO sampling runs outside the trainer's
    autocast, in float32. A frozen weight never changes, so casting it once gives the training passes the same bf16
    matmuls (identical losses and LoRA gradients, tests/test_frozen_bf16.py), and GRPO now samples with the bf16
    matmuls it trains with, at ~1.75x float32's speed (bench/bf16_cpu.py). A tied output head gets its own copy;
    the input embedding stays float32, as autocast leaves it. The trained (requires-grad) weights stay float32: the
    master weights. Originals come back before anything saves or merges the model.
    """
    import torch

    swapped: list[tuple[Any, Any]] = []
    if precision.bf16 and precision.dtype == "float32":
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if (isinstance(module, torch.nn.Linear) and isinstance(weight, torch.nn.Parameter)
                    and weight.dtype == torch.float32 and not weight.requires_grad):
                swapped.append((module, weight))
                module.weight = torch.nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # the transformers model
    own_forward = vars(inner).get("forward")  # an instance attribute set by someone else, if any
    if swapped:  # a bf16 weight meets float32 activations outside autocast: every call of the model goes under it
        inner.forward = torch.autocast("cpu", dtype=torch.bfloat16)(inner.forward)
    try:
        yield len(swapped)
    finally:
        for module, weight in swapped:
            module.weight = weight
        if swapped:
            if own_forward is None:
                del inner.forward
            else:
                inner.forward = own_forward
