"""``model.lora_target_modules`` against the model, before training: every name must match a module the way peft
matches it (the module's full name, or its last dotted parts), else one line naming the unknown names and listing the
module names the model has. Without it peft's ``ValueError`` surfaces as a traceback once training starts, or a
misspelt name among good ones is silently left without LoRA.

The model is built on the ``meta`` device from its config alone (no weights read, no memory), so the same check runs
before either backend loads anything.

>>> names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "lm_head"]
>>> unknown_targets(names, ["q_proj", "self_attn.q_proj", "up", "lm_head"])
['up']
>>> module_kinds(names)
['lm_head', 'q_proj', 'up_proj']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

log = logging.getLogger("recipe")


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def unknown_targets(module_names: Sequence[str], targets: Iterable[str]) -> list[str]:
    """The targets no module name matches (peft's rule: equal, or a dotted suffix)."""
    return [t for t in targets if not any(_matches(name, t) for name in module_names)]


def module_kinds(module_names: Iterable[str]) -> list[str]:
    """The distinct last parts of the module names (``q_proj``, ``lm_head``, ...), numbers (layer indices) left out."""
    return sorted({name.rsplit(".", 1)[-1] for name in module_names if name and not name.rsplit(".", 1)[-1].isdigit()})


def leaf_module_names(config_source: str, trust_remote_code: bool = False) -> list[str]:
    """Names of the modules that hold weights directly (the ones LoRA can wrap) in the model ``config_source``
    (a folder or hub id) describes, built on the meta device."""
    import torch  # lazy: heavy, and only commands that train get here
    from transformers import AutoConfig, AutoModelForCausalLM  # lazy: same (unsloth is imported before, by load)

    config = AutoConfig.from_pretrained(config_source, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return [name for name, module in model.named_modules() if name and not list(module.children())
            and any(True for _ in module.parameters(recurse=False))]


def targets_error(target_modules: list[str], trust_remote_code: bool, config_source: str) -> str | None:
    """Why ``target_modules`` (``model.lora_target_modules``) cannot be applied to the model ``config_source``
    describes, or None (also when the model cannot be built from its config here: the real load then says why, this
    check never blocks it)."""
    try:
        names = leaf_module_names(config_source, trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - an unknown architecture, no config offline: the load reports it
        log.debug("LoRA target check skipped for %s (%s: %s)", config_source, type(exc).__name__, exc)
        return None
    unknown = unknown_targets(names, target_modules)
    if not unknown:
        return None
    return (f"model.lora_target_modules: {', '.join(map(repr, unknown))} matches no module of {config_source}; "
            f"its modules with weights are named: {', '.join(module_kinds(names))}")
