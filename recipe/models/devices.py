"""``run.device`` against this machine: ``cuda`` where torch sees no usable CUDA device is refused before any model
loads, naming what torch found (the trainers and the generation code would otherwise fall back to the CPU without a
word). ``auto`` and ``cpu`` always hold. And the one place that says whether a use of generation goes through vLLM:
:func:`uses_vllm`."""

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


GRPO, EVAL, MINING, TEACH = "grpo", "eval", "mining", "teach"  # the uses of generation
USES = (GRPO, EVAL, MINING, TEACH)


def uses_vllm(enabled: bool, backend: str, use: str, on_gpu: bool = True) -> bool:
    """Whether ``use`` (GRPO's generation, evaluation, stage-3 mining, ``teach``) generates through vLLM for the
    config's switch ``vllm.enabled`` (``enabled``) on ``backend`` (``unsloth`` or ``hf``, as picked). Every site that decides vLLM asks here.

    ``vllm.enabled`` on unsloth gives the GRPO load and the evaluation load of a process one in-process engine
    (stage-3 mining generates through the GRPO load's; the weights repository follows the switch too); on hf it
    gives GRPO TRL's own engine (colocated or a server, ``vllm.mode``), and evaluation and mining generate with HF. ``teach`` loads without an engine; nothing uses vLLM off the GPU.

    >>> [uses_vllm(True, "unsloth", u) for u in USES], [uses_vllm(True, "hf", u) for u in USES]
    ([True, True, True, False], [True, False, False, False])
    >>> uses_vllm(True, "unsloth", EVAL, on_gpu=False), uses_vllm(False, "unsloth", GRPO)
    (False, False)
    """
    if use not in USES:
        raise ValueError(f"unknown use of generation {use!r} (allowed: {', '.join(USES)})")
    if not on_gpu or use == TEACH or not enabled:
        return False
    return backend == "unsloth" or use == GRPO
