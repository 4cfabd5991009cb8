"""One ``vllm`` section decides generation for every stage: its keys drive ``recipe.models.devices.uses_vllm`` and
every reader on both backends. The keys it replaced (``model.fast_inference``, ``model.hf_use_vllm``,
``model.gpu_memory_utilization``, ``run.vllm_*``) are unknown keys in a ``--config`` file or a ``--set`` override;
a run directory recorded with them (its config.yaml, its manifest) reads in today's spelling and resumes unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recipe.cli import main
from recipe.config import core as C
from recipe.entries import ENTRIES
from recipe.errors import RunError
from recipe.models.devices import EVAL, GRPO, MINING, TEACH, USES, uses_vllm
from recipe.store import rundir
from recipe.store.fingerprint import RENAMED, migrate_recorded
from recipe.tools import plan
from recipe.train.grpo import vllm_args

ROOT = Path(__file__).resolve().parents[1]
# to_dict(resolve(...)) as the code before the pass-through (and before this section) wrote it: the old keys
BEFORE = json.loads((ROOT / "tests" / "data" / "config_dicts_3d77827.json").read_text())

# old key -> (a value to set, the new key, overrides that make that value valid)
OLD_KEYS = {
    "model.fast_inference": (True, "vllm.enabled", []),
    "model.hf_use_vllm": (True, "vllm.enabled", []),
    "model.gpu_memory_utilization": (0.35, "vllm.gpu_memory_utilization", []),
    "run.vllm_mode": ("server", "vllm.mode", ["vllm.enabled=true"]),
    "run.vllm_server_base_url": ("http://gen:9000", "vllm.server_base_url", []),
    "run.vllm_server_host": ("10.0.0.7", "vllm.server_host", []),
    "run.vllm_server_port": (8123, "vllm.server_port", []),
    "run.vllm_server_timeout": (30.0, "vllm.server_timeout", []),
}


def _get(cfg: C.Config, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def test_the_table_covers_every_old_key():
    assert set(OLD_KEYS) == set(RENAMED)


# --------------------------------------------------------------------------------------------------------------------
# The new keys
# --------------------------------------------------------------------------------------------------------------------


def test_vllm_enabled_drives_uses_vllm_on_both_backends():
    on = C.resolve(preset="smoke", overrides=["vllm.enabled=true"])
    off = C.resolve(preset="smoke")
    assert on.vllm.enabled is True and off.vllm.enabled is False
    # unsloth: one engine for GRPO, evaluation and mining; hf: TRL's engine for GRPO only; teach never; CPU never
    assert [uses_vllm(on.vllm.enabled, "unsloth", use) for use in USES] == [True, True, True, False]
    assert [uses_vllm(on.vllm.enabled, "hf", use) for use in USES] == [True, False, False, False]
    assert not any(uses_vllm(off.vllm.enabled, backend, use) for backend in ("unsloth", "hf") for use in USES)
    assert not any(uses_vllm(on.vllm.enabled, "unsloth", use, on_gpu=False) for use in (GRPO, EVAL, MINING, TEACH))


def test_the_readers_take_the_vllm_section():
    cfg = C.resolve(preset="qwen2.5-3b-t4", overrides=["vllm.gpu_memory_utilization=0.3"])
    setup = plan.setup_from_config(cfg)
    assert (setup.fast_inference, setup.gpu_util) == (True, 0.3)
    assert plan.setup_from_config(C.resolve(preset="qwen2.5-3b-t4", overrides=["vllm.enabled=false"])).fast_inference \
        is False
    hf = C.resolve(preset="smoke", overrides=["vllm.enabled=true", "vllm.gpu_memory_utilization=0.4"])
    assert vllm_args(hf, use_cpu=False) == {  # the hf backend picks no GPU to answer this
        "use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.4, "vllm_server_base_url": None,
        "vllm_server_host": hf.vllm.server_host, "vllm_server_port": hf.vllm.server_port,
        "vllm_server_timeout": hf.vllm.server_timeout}
    assert vllm_args(hf, use_cpu=True)["use_vllm"] is False


def test_the_shipped_presets_use_the_new_keys_only():
    for name in C.preset_names():
        sections = yaml.safe_load(C.preset_text(name))
        assert not [old for old in RENAMED if old.split(".")[1] in (sections.get(old.split(".")[0]) or {})], name
    assert C.resolve(preset="qwen2.5-3b-t4").vllm.enabled is True


def test_a_trainer_section_key_names_the_vllm_key_to_use():
    for key, new in (("use_vllm", "vllm.enabled"), ("vllm_mode", "vllm.mode"),
                     ("vllm_gpu_memory_utilization", "vllm.gpu_memory_utilization"),
                     ("vllm_server_port", "vllm.server_port")):
        with pytest.raises(C.ConfigError, match=f"'stage2.{key}' is set by the recipe, not per section: use '{new}'"):
            C.resolve(preset="smoke", overrides=[f"stage2.{key}=1"])


@pytest.mark.parametrize(("override", "message"), [
    ("vllm.enabeld=true", "unknown key 'vllm.enabeld' (did you mean 'vllm.enabled'?)"),
    ("vllm.server_prot=1", "unknown key 'vllm.server_prot' (did you mean 'vllm.server_port'?)"),
    ("vllm.gpu_memory_utilization=1.5", "bad value for 'vllm.gpu_memory_utilization': 1.5 (must be in (0, 1])"),
    ("vllm.enabled=maybe", "bad value for 'vllm.enabled': 'maybe' (expected bool)"),
    ("vllm.server_port=0", "bad value for 'vllm.server_port': 0 (must be a TCP port (1-65535))"),
])
def test_a_bad_vllm_key_is_one_line_naming_it(override, message):
    with pytest.raises(C.ConfigError) as err:
        C.resolve(preset="smoke", overrides=[override])
    assert str(err.value) == message


# --------------------------------------------------------------------------------------------------------------------
# The old keys
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("old", sorted(OLD_KEYS))
def test_an_old_key_in_an_override_or_a_config_file_is_an_unknown_key(old, tmp_path):
    value, new, extra = OLD_KEYS[old]
    with pytest.raises(C.ConfigError, match=f"^unknown key '{old}'"):
        C.resolve(preset="smoke", overrides=[*extra, f"{old}={json.dumps(value)}"])
    section, name = old.split(".")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({section: {name: value}}))
    with pytest.raises(C.ConfigError, match=f"^unknown key '{old}'"):
        C.resolve(preset="smoke", config_file=path, overrides=extra)
    # read as a run's record, it lands in its new place
    cfg = C.resolve(preset="smoke", config_file=path, overrides=extra, recorded=migrate_recorded)
    assert _get(cfg, new) == value
    assert cfg == C.resolve(preset="smoke", overrides=[*extra, f"{new}={json.dumps(value)}"])


@pytest.mark.parametrize(("backend", "fast", "hf", "enabled"), [
    # an old config.yaml holds both switches: the one of the backend decides, as it did
    ("unsloth", True, False, True),  # the T4 preset's
    ("unsloth", False, True, False),
    ("hf", True, False, False),
    ("hf", False, True, True),
    # auto: the machine picked the backend; either switch on meant vLLM there
    ("auto", True, False, True),
    ("auto", False, True, True),
])
def test_both_old_switches_in_a_record_keep_the_one_of_the_backend(backend, fast, hf, enabled, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"backend": backend, "fast_inference": fast, "hf_use_vllm": hf}}))
    assert C.resolve(preset="smoke", config_file=path, recorded=migrate_recorded).vllm.enabled is enabled


# --------------------------------------------------------------------------------------------------------------------
# A run directory recorded before the vllm section
# --------------------------------------------------------------------------------------------------------------------


def _old_record(preset: str, name: str) -> dict:
    """An entry's config as the code before the vllm section recorded it: the whole model section (its vLLM keys
    included), data less eval_source, the entry's own sections, run.seed."""
    old = BEFORE[preset]
    record = {"model": old["model"], "data": {k: v for k, v in old["data"].items() if k != "eval_source"}}
    record.update({section: old[section] for section in ENTRIES[name].sections})
    record["run"] = {"seed": old["run"]["seed"]}
    return record


@pytest.mark.parametrize("preset", ["qwen2.5-3b-t4", "smoke"])
def test_a_run_recorded_with_the_old_keys_resumes_unchanged(preset, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert "fast_inference" in BEFORE[preset]["model"] and "vllm" not in BEFORE[preset]
    (run_dir / rundir.CONFIG_FILE).write_text(yaml.safe_dump(BEFORE[preset], sort_keys=False))  # old config.yaml
    manifest = rundir.load_manifest(run_dir)
    for name in ("stage1", "stage2", "stage3"):
        manifest["entries"][name] = {"status": "done", "ended": "2026-01-01T00:00:00+00:00",
                                     "config": _old_record(preset, name)}
    rundir.save_manifest(run_dir, manifest)
    # the run's own config.yaml (what `eval --run` and a child process read) resolves to today's preset
    cfg = C.resolve(preset=preset, overrides=[f"run.output_dir={run_dir}"])
    # (eval.figures came later: the smoke preset leaves the figures out, an old record says nothing of them)
    stored = C.resolve(config_file=run_dir / rundir.CONFIG_FILE, recorded=migrate_recorded,
                       overrides=[f"run.output_dir={run_dir}", f"eval.figures={str(cfg.eval.figures).lower()}"])
    assert stored == cfg
    for again in (cfg, C.resolve(preset=preset, overrides=[f"run.output_dir={run_dir}", "vllm.server_port=9000"])):
        _, manifest = rundir.open_run(again, ENTRIES, force=False)
        assert all(rundir.is_done(manifest, name) for name in ("stage1", "stage2", "stage3"))
    # the switch still guards the weights it decided: turning it over is a changed key, named in its new place
    flipped = f"vllm.enabled={'false' if cfg.vllm.enabled else 'true'}"
    with pytest.raises(RunError, match=r"stage1 \(done\).*changed keys: vllm.enabled\."):
        rundir.open_run(C.resolve(preset=preset, overrides=[f"run.output_dir={run_dir}", flipped]), ENTRIES,
                        force=False)


def test_config_with_an_old_key_is_one_error_line_naming_it(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  fast_inference: true\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["config", "--preset", "smoke", "--config", str(old)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: unknown key 'model.fast_inference'") and result.stderr.count("\n") == 1
