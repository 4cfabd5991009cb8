"""Keys that moved, still read in their old spelling: a preset, a ``--config`` file, the ``--set`` overrides or a
stored config that sets an old key works as before, with one warning line per old key naming the new one.

Each source is migrated on its own (:func:`migrate`; the ``--set`` overrides together are one source): an old key
moves to its new place, and a source that sets an old key and its new key to different values is a one-line
:class:`~recipe.errors.ConfigError` naming both. Later sources override earlier ones as always, whichever spelling
each uses. A run directory's recorded entry configs go through the same table silently
(:func:`migrate_recorded`), so a run recorded before a rename resumes unchanged.

The vLLM settings became one ``vllm`` section (issue 23). ``model.fast_inference`` (the unsloth backend's switch) and
``model.hf_use_vllm`` (the hf backend's) are both ``vllm.enabled``: a source that sets the two to different values
keeps the one of the run's ``model.backend`` (under ``auto``: on when either is on).

>>> migrate({"model": {"fast_inference": True, "lora_r": 8}}, "--set", warn=False)
({'model': {'lora_r': 8}, 'vllm': {'enabled': True}}, {'vllm.enabled': True})
>>> migrate({"model": {"hf_use_vllm": True}, "vllm": {"enabled": False}}, "my.yaml", warn=False)
Traceback (most recent call last):
...
recipe.errors.ConfigError: my.yaml sets both 'model.hf_use_vllm' (deprecated) and 'vllm.enabled', to different values (True and False): keep 'vllm.enabled' only
"""

from __future__ import annotations

import logging
from typing import Any

from recipe.config.safe_yaml import short_repr
from recipe.errors import ConfigError

log = logging.getLogger("recipe")

# old dotted key -> new dotted key
RENAMED: dict[str, str] = {
    "model.fast_inference": "vllm.enabled",
    "model.hf_use_vllm": "vllm.enabled",
    "model.gpu_memory_utilization": "vllm.gpu_memory_utilization",
    "run.vllm_mode": "vllm.mode",
    "run.vllm_server_base_url": "vllm.server_base_url",
    "run.vllm_server_host": "vllm.server_host",
    "run.vllm_server_port": "vllm.server_port",
    "run.vllm_server_timeout": "vllm.server_timeout",
}
# the backend whose switch each old key was; vllm.enabled is both now
SWITCHES: dict[str, str] = {"unsloth": "model.fast_inference", "hf": "model.hf_use_vllm"}


def _section(data: dict, name: str) -> dict | None:
    value = data.get(name)
    return value if isinstance(value, dict) else None


def backend_of(*sources: dict) -> str:
    """The ``model.backend`` the last source that sets it gives (``auto`` when none does).

    >>> backend_of({"model": {"backend": "unsloth"}}, {"model": {"lora_r": 4}})
    'unsloth'
    """
    backend = "auto"
    for source in sources:
        model = _section(source, "model") or {}
        backend = model.get("backend", backend)
    return backend if isinstance(backend, str) else "auto"


def old_keys(data: dict) -> dict[str, Any]:
    """``old dotted key -> value`` for each old key ``data`` sets, in the data's own order."""
    found = {}
    for section_name in dict.fromkeys(old.split(".")[0] for old in RENAMED):
        section = _section(data, section_name) or {}
        found.update({f"{section_name}.{k}": v for k, v in section.items() if f"{section_name}.{k}" in RENAMED})
    return found


def _decide(found: dict[str, Any], backend: str) -> tuple[dict[str, tuple[str, Any]], dict[str, str]]:
    """``new key -> (old key, value)`` for the old keys found, and ``old key -> why it is not used`` for a switch that
    lost to the other one (both set, to different values)."""
    decided: dict[str, tuple[str, Any]] = {}
    unused: dict[str, str] = {}
    switches = [old for old in SWITCHES.values() if old in found]
    if len(switches) == 2 and found[switches[0]] != found[switches[1]]:
        if backend in SWITCHES:
            kept, why = SWITCHES[backend], f"for model.backend={backend}"
        else:  # auto: the run's backend is picked on the machine; either switch on meant vLLM there
            kept = next((old for old in switches if found[old]), switches[0])
            why = f"it is on, and under model.backend={backend} either switch turned vLLM on"
        unused.update({old: f"'{kept}' decides it ({why})" for old in switches if old != kept})
    for old, value in found.items():
        if old not in unused:
            decided[RENAMED[old]] = (old, value)
    return decided, unused


def migrate(data: dict, origin: str, backend: str | None = None, warn: bool = True) -> tuple[dict, dict[str, Any]]:
    """One source's data with its old keys moved to their new places, and ``new dotted key -> value`` for the keys
    it moved. ``origin`` names the source in the warning and error lines; ``backend``: the run's ``model.backend``
    (default: this source's own)."""
    found = old_keys(data)
    if not found:
        return data, {}
    decided, unused = _decide(found, backend or backend_of(data))
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    drop_old(out)  # its sections are copies: ``data`` keeps its old keys
    moved: dict[str, Any] = {}
    for new, (old, value) in decided.items():
        section, name = new.split(".")
        target = out.setdefault(section, {})
        if not isinstance(target, dict):  # e.g. `vllm: 3`: the type check names it
            continue
        if name in target and target[name] != value:
            raise ConfigError(f"{origin} sets both '{old}' (deprecated) and '{new}', to different values "
                              f"({short_repr(value)} and {short_repr(target[name])}): keep '{new}' only")
        target[name] = moved[new] = value
    if warn:
        for old in found:
            note = f"not used: {unused[old]}" if old in unused else "read as that"
            log.warning("%s: '%s' is deprecated, use '%s' (%s)", origin, old, RENAMED[old], note)
    return out, moved


def drop_old(data: dict) -> None:
    """Remove the old keys from ``data``, in place (their values have been moved by :func:`migrate`)."""
    for old in old_keys(data):
        section, name = old.split(".")
        del data[section][name]


def migrate_recorded(recorded: dict) -> dict:
    """A recorded entry config (a run's manifest) in today's spelling, silently: what an older version recorded under
    the old keys is compared under the new ones. Only the keys the record holds move.

    >>> migrate_recorded({"model": {"backend": "unsloth", "fast_inference": True, "hf_use_vllm": False}})
    {'model': {'backend': 'unsloth'}, 'vllm': {'enabled': True}}
    """
    return migrate(recorded, "the recorded config", warn=False)[0]
