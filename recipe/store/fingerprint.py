"""What of the config an entry's weights depend on (its *fingerprint*, recorded in the manifest when it trains and
compared when a run reopens), and how a record written by older code reads today: keys added since hold the value
that code trained with (:data:`LEGACY_KEYS`, :data:`LEGACY_SECTIONS`), keys that moved are read in their new places
(:func:`migrate_recorded`; a run's ``config.yaml`` too). Only records are read in an old spelling: a preset, a
``--config`` file or a ``--set`` override uses today's keys. :mod:`recipe.store.rundir` does the comparison
(:func:`diff_keys` names the keys that changed).
"""

from __future__ import annotations

from recipe.config import core as config_mod
from recipe.config.core import Config
from recipe.entries import Entry

# Config that shapes every entry's weights; an entry also depends on its own sections. The vllm section's switch and
# memory share count (the unsloth weights repository follows the switch), not where a server is.
_SHARED_SECTIONS = ("model", "vllm", "data")
_IGNORED_KEYS = {"data.eval_source", "vllm.mode", "vllm.server_base_url", "vllm.server_host", "vllm.server_port",
                 "vllm.server_timeout"}
# Keys a recorded run may lack -> the value it trained with: a record without the key holds that value (TRL's own
# behaviour: epsilon for an unset epsilon_high, truncated completions kept in the loss).
LEGACY_KEYS = {
    **{(section, "epsilon_high"): lambda sec: sec.get("epsilon") for section in ("stage2", "stage3")},
    **{(section, "mask_truncated_completions"): lambda sec: False for section in ("stage2", "stage3")},
    # recorded runs predate it: they trained with TRL alone (hf backend), whose default is True
    **{(section, "vllm_importance_sampling_correction"): lambda sec: True for section in ("stage2", "stage3")},
    ("stage3", "prompt"): lambda sec: "rewrite",  # the paper's rewrite prompt, the only one before the key
    **{(section, "learning_rate"): lambda sec: "stage2" for section in ("baseline_grpo", "baseline_concise")},
}
# Keys a record may hold in an older spelling -> today's (the vLLM settings before the one ``vllm`` section)
RENAMED = {"model.fast_inference": "vllm.enabled", "model.hf_use_vllm": "vllm.enabled",
           "model.gpu_memory_utilization": "vllm.gpu_memory_utilization",
           **{f"run.vllm_{key}": f"vllm.{key}" for key in ("mode", "server_base_url", "server_host", "server_port",
                                                          "server_timeout")}}
_SWITCHES = {"unsloth": "model.fast_inference", "hf": "model.hf_use_vllm"}  # each backend's old vLLM switch
# sections an entry's config gained later, as runs recorded before them trained (the baseline's stage-1 budget)
LEGACY_SECTIONS = {"baseline_sft": {"budget": "stage1"}}


def entry_config(cfg: Config, entry: Entry) -> dict:
    """The part of the config that determines ``entry``'s weights (its upstream entries' sections included)."""
    full = config_mod.to_dict(cfg)
    # with a warm-up every entry starts from its weights; without one the section is left out (older runs resume)
    warm = ("warmup",) if cfg.warmup.enabled else ()
    out = {key: full[key] for key in dict.fromkeys(_SHARED_SECTIONS + warm + entry.sections)}
    for section in ("vllm", "data"):
        out[section] = {k: v for k, v in out[section].items() if f"{section}.{k}" not in _IGNORED_KEYS}
    out["run"] = {"seed": full["run"]["seed"]}
    return out


def with_legacy_keys(recorded: dict, current: dict | None = None) -> dict:
    """A recorded entry config with the :data:`LEGACY_KEYS` it predates filled in and the keys that moved since in
    their new places (:func:`migrate_recorded`): older runs resume unchanged.

    >>> sorted(with_legacy_keys({"stage2": {"epsilon": 0.1}})["stage2"].items())  # doctest: +NORMALIZE_WHITESPACE
    [('epsilon', 0.1), ('epsilon_high', 0.1), ('mask_truncated_completions', False),
     ('vllm_importance_sampling_correction', True)]
    >>> with_legacy_keys({"model": {"fast_inference": False, "gpu_memory_utilization": 0.6}})
    {'model': {}, 'vllm': {'enabled': False, 'gpu_memory_utilization': 0.6}}
    """
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in migrate_recorded(recorded).items()}
    for section, values in LEGACY_SECTIONS.items():  # a section the entry's config (``current``) has gained
        if current is not None and section in current:
            out.setdefault(section, dict(values))
    for (section, key), legacy in LEGACY_KEYS.items():
        if isinstance(out.get(section), dict) and key not in out[section]:
            out[section][key] = legacy(out[section])
    return out


def migrate_recorded(recorded: dict) -> dict:
    """A recorded config (``config.yaml`` or an entry's record) in today's spelling: each old key of
    :data:`RENAMED` moves to its new place. Of the two old vLLM switches the one of the record's ``model.backend``
    decides; under ``auto`` (the machine picked the backend) vLLM was on when either was.

    >>> migrate_recorded({"model": {"backend": "hf", "fast_inference": True, "hf_use_vllm": False}, "run": {}})
    {'model': {'backend': 'hf'}, 'run': {}, 'vllm': {'enabled': False}}
    """
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in recorded.items()}
    found = {}
    for old in RENAMED:
        section, name = old.split(".")
        if isinstance(out.get(section), dict) and name in out[section]:
            found[old] = out[section].pop(name)
    backend = out["model"].get("backend") if isinstance(out.get("model"), dict) else None
    switches = [value for old, value in found.items() if old in _SWITCHES.values()]
    for old, value in found.items():
        if old in _SWITCHES.values():
            value = found.get(_SWITCHES.get(backend, ""), any(switches))
        target = out.setdefault("vllm", {})
        if isinstance(target, dict):
            target[RENAMED[old].split(".")[1]] = value
    return out


def diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts.

    >>> diff_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}})
    ['a.c']
    """
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += diff_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys
