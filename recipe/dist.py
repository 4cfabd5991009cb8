"""Several processes, one run directory: rank, world size, barriers and "rank 0 only" helpers.

Under ``accelerate launch`` (or ``torchrun``) every process runs the same ``cotrecipe`` command. The launcher sets
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; :func:`init` starts the process group through accelerate's
``PartialState`` (gloo on the CPU, NCCL on GPUs, DeepSpeed when the accelerate config asks for it), the same shared
state the TRL trainers use afterwards. A plain ``python -m recipe.cli ...`` is one process: every helper here is then a
no-op (rank 0 of 1, barriers return at once, gathers return ``[obj]``), and torch is not even imported.

Who does what in a multi-process run (see docs/scaling-out.md):

- rank 0 writes ``config.yaml``, ``manifest.json``, every stage's ``model/`` and ``metrics.json``, evaluates and
  reports; the other ranks wait at a barrier where they need rank 0's files, and leave once training is done;
- training is data-parallel (each rank holds a model replica, or a ZeRO shard of it);
- stage-3 mining is split: each rank answers every ``world_size``-th problem, the failures are gathered in the
  original order and rank 0 writes ``failures.jsonl``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger("recipe")
T = TypeVar("T")


# --------------------------------------------------------------------------------------------------------------------
# Who am I
# --------------------------------------------------------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _initialised() -> bool:
    """Is a torch process group up? Never imports torch: without torch loaded no group can exist."""
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized())


def _state() -> Any | None:
    """accelerate's ``PartialState`` once a process group is up, else None.

    Only then: constructing a ``PartialState`` starts the group, and these facts are asked before one may exist (the
    config checks of :func:`launch_error` and :func:`generation_batch_error` run at resolve time, on every rank, so
    that all stop with one line before any model loads; the log prefix is set at CLI start; the run lock reads
    ``RANK``) and by single-process commands that never import torch. Until the group is up the launcher's
    ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` answer, which is what ``PartialState`` itself reads when it starts.
    Here only accelerate starts the group (:func:`init`, or a trainer's ``Accelerator``), so the call below returns
    that shared state and starts nothing."""
    if not _initialised():
        return None
    from accelerate import PartialState  # lazy: a group is up, so torch is loaded; accelerate imports torch

    return PartialState()


def world_size() -> int:
    """Number of processes: accelerate's once the group is up, else the launcher's ``WORLD_SIZE``, else 1."""
    state = _state()
    return state.num_processes if state is not None else max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's global rank (0 in a single-process run)."""
    state = _state()
    return state.process_index if state is not None else _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine (0 in a single-process run)."""
    state = _state()
    return state.local_process_index if state is not None else _env_int("LOCAL_RANK", 0)


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """True on the process that writes files (global rank 0); always True in a single-process run."""
    state = _state()
    return state.is_main_process if state is not None else rank() == 0


def describe() -> str:
    """``rank 1/2`` — the prefix every log line of a multi-process run carries."""
    return f"rank {rank()}/{world_size()}"


# --------------------------------------------------------------------------------------------------------------------
# Process group
# --------------------------------------------------------------------------------------------------------------------


def init(cpu: bool = False) -> None:
    """Start the process group when launched with several processes (no-op otherwise, and when already started).

    ``cpu=True`` (``run.device: cpu``) asks for gloo even where GPUs exist, matching the trainers' ``use_cpu``."""
    if not is_distributed() or _initialised():
        return
    # lazy: accelerate imports torch, which single-process commands such as `cotrecipe config` never need
    from accelerate import PartialState

    cpu = cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=cpu)
    if state.device.type == "cpu" and state.device.index is not None:
        # accelerate names a CPU rank's device "cpu:<local rank % 1>"; the Trainer then resumes with
        # torch.load(map_location="cpu:0"), which torch 2.13 refuses ("don't know how to restore data location").
        # The state is shared, so the trainers created later see plain "cpu".
        import torch  # lazy: see above

        state.device = torch.device("cpu")
    log.info("process group up, backend %s, device %s (%s, local rank %d)", state.backend, state.device, describe(),
             local_rank())


def trainer_kwargs(use_cpu: bool) -> dict:
    """Extra TrainingArguments for a multi-process CPU run: reuse the state :func:`init` started (whose device is plain
    ``cpu``) instead of letting transformers rebuild it as ``cpu:0``, which breaks resuming from a checkpoint. Empty
    otherwise (GPU runs and single-process runs keep transformers' own set-up)."""
    if not (use_cpu and is_distributed()):
        return {}
    init(cpu=True)
    return {"accelerator_config": {"use_configured_state": True}}


def barrier() -> None:
    """Every rank waits here until all have arrived (no-op in a single-process run)."""
    if not is_distributed():
        return
    init()
    sys.modules["torch.distributed"].barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes the manifest); the others run it after rank 0 has left it.

    Rank 0 reaches the barrier even when its block raises, so the other ranks run the block themselves (and usually
    hit the same error) instead of waiting for a barrier that never comes."""
    if not is_distributed():
        yield
        return
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def only_main(fn: Callable[..., T], *args: Any, wait: bool = True, **kwargs: Any) -> T | None:
    """Call ``fn`` on rank 0 only (others get ``None``); with ``wait`` every rank then meets at a barrier, so files
    rank 0 wrote are there for all. ``wait=False`` for the last work of a run (evaluation, reports): the other ranks
    just leave instead of idling at a barrier that could time out during a long evaluation."""
    result = fn(*args, **kwargs) if is_main() else None
    if wait:
        barrier()
    return result


def shard(items: Sequence[T]) -> list[tuple[int, T]]:
    """This rank's share of ``items`` as ``(index, item)`` pairs: every ``world_size``-th one, starting at ``rank``."""
    return [(i, items[i]) for i in range(rank(), len(items), world_size())]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single-process run). Picklable objects only."""
    if not is_distributed():
        return [obj]
    init()
    out: list[Any] = [None] * world_size()
    sys.modules["torch.distributed"].all_gather_object(out, obj)
    return out


def gather_shards(pairs: list[tuple[int, T]]) -> list[T]:
    """Undo :func:`shard` after each rank mapped its pairs: all ranks' ``(index, value)`` pairs, back in index order."""
    merged = [pair for part in gather(pairs) for pair in part]
    return [value for _, value in sorted(merged, key=lambda pair: pair[0])]


# --------------------------------------------------------------------------------------------------------------------
# GRPO batch shape across processes
# --------------------------------------------------------------------------------------------------------------------


def generation_batch_error(stage: str, per_device: int, grad_accum: int, num_generations: int,
                           processes: int | None = None) -> str | None:
    """Why ``stage``'s GRPO generation batch cannot hold whole prompt groups, or ``None`` when it can.

    TRL generates ``per_device_train_batch_size x processes x gradient_accumulation_steps`` completions per
    optimisation step and needs that to be a multiple of ``num_generations`` (each prompt's group is generated and
    scored together).

    >>> generation_batch_error("stage2", 2, 1, 4, processes=2) is None
    True
    >>> print(generation_batch_error("stage2", 2, 1, 4, processes=3))
    stage2.per_device_train_batch_size (2) x processes (3) x stage2.gradient_accumulation_steps (1) = 6 must be a multiple of stage2.num_generations (4): each prompt's group of completions is generated together
    """
    processes = world_size() if processes is None else processes
    total = per_device * processes * grad_accum
    if total % num_generations == 0:
        return None
    return (f"{stage}.per_device_train_batch_size ({per_device}) x processes ({processes}) x "
            f"{stage}.gradient_accumulation_steps ({grad_accum}) = {total} must be a multiple of "
            f"{stage}.num_generations ({num_generations}): each prompt's group of completions is generated together")


def zero_stage() -> int | None:
    """The DeepSpeed ZeRO stage ``accelerate launch`` was given (its ``ACCELERATE_DEEPSPEED_ZERO_STAGE``), else None."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return None
    stage = _env_int("ACCELERATE_DEEPSPEED_ZERO_STAGE", -1)
    return stage if stage >= 0 else None


def launch_error(backend: str, load_in_4bit: bool, processes: int | None = None,
                 stage: int | None = None) -> str | None:
    """Why this model setup cannot run under the current launcher, or ``None``. Checked with the config, so every
    rank stops with the same one-line error before any model loads.

    >>> print(launch_error("unsloth", False, processes=2))
    model.backend=unsloth under 2 processes: Unsloth's multi-GPU training is not supported here; set model.backend=hf (auto picks hf under a launcher)
    >>> launch_error("hf", True, processes=2, stage=2) is None
    True
    """
    processes = world_size() if processes is None else processes
    stage = zero_stage() if stage is None else stage
    if processes > 1 and backend == "unsloth":
        return (f"model.backend=unsloth under {processes} processes: Unsloth's multi-GPU training is not supported "
                "here; set model.backend=hf (auto picks hf under a launcher)")
    if stage == 3 and load_in_4bit:
        return ("model.load_in_4bit=true with DeepSpeed ZeRO-3: the recipe loads each stage's model before its "
                "trainer, so the 4-bit weights cannot be sharded; use recipe/accelerate/zero2.yaml or ddp.yaml for "
                "QLoRA, or set model.load_in_4bit=false with zero3.yaml")
    return None


# --------------------------------------------------------------------------------------------------------------------
# Saving under ZeRO-3
# --------------------------------------------------------------------------------------------------------------------


def full_state_dict(trainer: Any) -> dict | None:
    """The gathered weights when DeepSpeed ZeRO-3 shards them (a collective: call it on EVERY rank), else ``None``
    (the unwrapped model's own ``save_pretrained`` is right). Needs ``zero3_save_16bit_model: true`` in the accelerate
    config, as the shipped ``zero3.yaml`` sets."""
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return None
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3:
        return None
    return trainer.accelerator.get_state_dict(trainer.deepspeed)
