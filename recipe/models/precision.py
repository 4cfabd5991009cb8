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

import functools
from dataclasses import dataclass
from typing import Any

from recipe.errors import PrecisionError

DTYPES = ("auto", "float32", "bfloat16", "float16")
CPU_AUTOCAST = ("none", "bfloat16", "auto")


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


@functools.cache  # the CPU does not change under a process; decide() runs at every load and trainer build
def cpu_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when this CPU multiplies bfloat16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag). Without it,
    bfloat16 autocast is slower than float32: on an AVX2-only AMD EPYC core a bfloat16 ``F.linear`` through
    SmolLM2-135M's weights ran at 0.12-0.26x float32 (``bench/sampling.py``'s matmul table), where an AVX-512 BF16
    machine ran a GRPO step 1.62x faster under it (``bench/bf16_cpu.py``). Unknown (no such file): False."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def decide(dtype: str, cuda: bool, cpu_autocast: str = "none") -> Precision:
    """The precision for ``model.dtype`` = ``dtype`` on this machine (``cuda``: training/loading on a GPU);
    ``cpu_autocast`` (``model.cpu_autocast``) matters on the CPU only: ``auto`` is ``bfloat16`` on a CPU with native
    bfloat16 (:func:`cpu_native_bf16`) and float32 weights, else ``none``.

    >>> decide("auto", cuda=False, cpu_autocast="bfloat16")
    Precision(dtype='float32', bf16=True, fp16=False)
    """
    if dtype not in DTYPES:
        raise PrecisionError(f"unknown model.dtype '{dtype}' (allowed: {', '.join(DTYPES)})")
    if cpu_autocast not in CPU_AUTOCAST:
        raise PrecisionError(f"unknown model.cpu_autocast '{cpu_autocast}' (allowed: {', '.join(CPU_AUTOCAST)})")
    if not cuda:
        loaded = "float32" if dtype == "auto" else dtype
        if cpu_autocast == "auto":
            cpu_autocast = "bfloat16" if loaded == "float32" and cpu_native_bf16() else "none"
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


def for_device(dtype: str, device: str, cpu_autocast: str = "none") -> Precision:
    """:func:`decide` for ``model.dtype`` on ``run.device`` (the CPU when it is cpu or there is no CUDA)."""
    import torch

    return decide(dtype, torch.cuda.is_available() and device != "cpu", cpu_autocast)
