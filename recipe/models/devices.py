"""``run.device`` against this machine: ``cuda`` where torch sees no usable CUDA device is refused before any model
loads, naming what torch found (the trainers and the generation code would otherwise fall back to the CPU without a
word). ``auto`` and ``cpu`` always hold."""

from __future__ import annotations

from recipe.errors import ConfigError


def device_error(device: str) -> str | None:
    """Why ``run.device`` cannot be honoured on this machine, naming what was found, or None.

    >>> device_error("cpu") is None and device_error("auto") is None
    True
    """
    if device != "cuda":
        return None
    import torch  # lazy: heavy; only commands that load a model ask, and `cotrecipe config` stays instant

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        found = f"torch {torch.__version__} is a CPU-only build"
    else:
        found = f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU"
    return f"run.device=cuda but {found}; set run.device=auto (GPU when there is one) or run.device=cpu"


def check_device(device: str) -> None:
    """:func:`device_error` as a :class:`~recipe.errors.ConfigError` (one ``error:`` line from the CLI). Called by
    the CLI before anything loads, and again where training and generation pick their device, so no path (a child
    process, the Python API) falls back to the CPU unsaid."""
    problem = device_error(device)
    if problem:
        raise ConfigError(problem)
