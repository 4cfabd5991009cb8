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

from dataclasses import dataclass
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")


class PrecisionError(ValueError):
    """A dtype the config asks for that this machine cannot use."""


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


def decide(dtype: str, cuda: bool) -> Precision:
    """The precision for ``model.dtype`` = ``dtype`` on this machine (``cuda``: training/loading on a GPU)."""
    if dtype not in DTYPES:
        raise PrecisionError(f"unknown model.dtype '{dtype}' (allowed: {', '.join(DTYPES)})")
    if not cuda:
        return Precision("float32" if dtype == "auto" else dtype, bf16=False, fp16=False)
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
    return decide(cfg.model.dtype, cuda)
