"""One vLLM engine for many evaluations (:func:`shares_engine`: ``vllm.enabled`` on unsloth). A GPU has room for one
engine per process, and each build reloads the weights, profiles memory and captures CUDA graphs. So a run's models
are grouped by what the engine must load (:func:`engine_groups`): the run's base model serves the base row without a
LoRA and every adapter (stages, baselines) as its own LoRA request (:class:`EngineModel`, loaded once); a full-model
folder (a full fine-tune) is a base of its own, which the orchestrator evaluates in a process of its own.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

from recipe.config.core import Config
from recipe.models import model as model_mod
from recipe.models.devices import EVAL, uses_vllm
from recipe.models.generation import to_device


def shares_engine(cfg: Config) -> bool:
    """Whether evaluation generates through a vLLM engine here (``vllm.enabled`` on the unsloth backend, as picked),
    so that one engine per base serves every model on it (:func:`engine_groups`)."""
    return uses_vllm(cfg.vllm.enabled, model_mod.pick_backend(cfg.model), EVAL)


def engine_base(init_from: str | None) -> str | None:
    """What an engine must load to serve ``init_from``: None (the run's base model) for the base itself and for an
    adapter folder (a LoRA request on it), the folder itself for full-model weights.

    >>> engine_base(None) is None
    True
    """
    return None if init_from is None or model_mod.is_adapter_dir(init_from) else str(init_from)


def engine_groups(targets: Sequence[tuple[str, str | None]]) -> list[list[tuple[str, str | None]]]:
    """``(name, weights)`` pairs grouped by :func:`engine_base`, in first-seen order: the models one engine serves.

    >>> engine_groups([("base", None), ("stage1", "/no/such/model"), ("stage2", None)])
    [[('base', None), ('stage2', None)], [('stage1', '/no/such/model')]]
    """
    groups: dict[str | None, list[tuple[str, str | None]]] = {}
    for name, weights in targets:
        groups.setdefault(engine_base(weights), []).append((name, weights))
    return list(groups.values())


class EngineModel:
    """One model whose vLLM engine serves several evaluations in this process: loaded from ``base`` (None: the
    config's model; else a full-model folder) on first use, so evaluations kept from before load nothing. Adapter
    folders on that base are LoRA requests on its engine (:func:`recipe.models.generation.generate`'s ``adapter``).
    :meth:`close` frees the engine."""

    def __init__(self, cfg: Config, base: str | None = None):
        self.cfg, self.base = cfg, base
        self._loaded: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        """``(model, tokenizer)``, loaded once."""
        if self._loaded is None:
            model, tokenizer = model_mod.load(self.cfg.model, init_from=self.base, trainable=False,
                                              seed=self.cfg.run.seed, vllm=True, vllm_cfg=self.cfg.vllm)
            self._loaded = (to_device(model, self.cfg.run.device), tokenizer)
        return self._loaded

    def close(self) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            del loaded
            model_mod.release_engine()
            gc.collect()
