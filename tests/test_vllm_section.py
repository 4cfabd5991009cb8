"""One ``vllm`` section decides generation for every stage (issue 23, item 3): its keys drive
``recipe.models.devices.uses_vllm`` and every reader on both backends; the keys it replaces (``model.fast_inference``,
``model.hf_use_vllm``, ``model.gpu_memory_utilization``, ``run.vllm_*``) still work from a ``--config`` file or a
``--set`` override, each with one warning line naming its new place; an old key and its new key set differently in
one source is a one-line error naming both; and a run directory recorded with the old keys resumes unchanged."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recipe.cli import main
from recipe.config import core as C
from recipe.config import renamed
from recipe.config.entries import ENTRIES
from recipe.models.devices import EVAL, GRPO, MINING, TEACH, USES, uses_vllm
from recipe.store import rundir
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


def _warnings(caplog, old: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and f"'{old}'" in r.getMessage()]


def test_the_table_covers_every_old_key():
    assert set(OLD_KEYS) == set(renamed.RENAMED)


# --------------------------------------------------------------------------------------------------------------------
# The new keys
# --------------------------------------------------------------------------------------------------------------------


def test_vllm_enabled_drives_uses_vllm_on_both_backends():
    on = C.resolve(preset="smoke", overrides=["vllm.enabled=true"])
    off = C.resolve(preset="smoke")
    assert on.vllm.enabled is True and off.vllm.enabled is False
    # unsloth: one engine for GRPO, evaluation and mining; hf: TRL's engine for GRPO only; teach never; CPU never
    assert [uses_vllm(on.vllm, "unsloth", use) for use in USES] == [True, True, True, False]
    assert [uses_vllm(on.vllm, "hf", use) for use in USES] == [True, False, False, False]
    assert not any(uses_vllm(off.vllm, backend, use) for backend in ("unsloth", "hf") for use in USES)
    assert not any(uses_vllm(on.vllm, "unsloth", use, on_gpu=False) for use in (GRPO, EVAL, MINING, TEACH))


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
        assert renamed.old_keys(yaml.safe_load(C.preset_text(name))) == {}, name
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
def test_an_old_key_in_an_override_lands_in_its_new_place_with_one_warning(old, caplog):
    value, new, extra = OLD_KEYS[old]
    with caplog.at_level(logging.WARNING, logger="recipe"):
        cfg = C.resolve(preset="smoke", overrides=[*extra, f"{old}={json.dumps(value)}"])
    assert _get(cfg, new) == value
    assert cfg == C.resolve(preset="smoke", overrides=[*extra, f"{new}={json.dumps(value)}"])
    lines = _warnings(caplog, old)
    assert len(lines) == 1 and f"'{new}'" in lines[0] and "deprecated" in lines[0] and "\n" not in lines[0]


@pytest.mark.parametrize("old", sorted(OLD_KEYS))
def test_an_old_key_in_a_config_file_lands_in_its_new_place_with_one_warning(old, caplog, tmp_path):
    value, new, extra = OLD_KEYS[old]
    section, name = old.split(".")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({section: {name: value}}))
    with caplog.at_level(logging.WARNING, logger="recipe"):
        cfg = C.resolve(preset="smoke", config_file=path, overrides=extra)
    assert _get(cfg, new) == value
    lines = _warnings(caplog, old)
    assert len(lines) == 1 and lines[0].startswith(f"{path}: '{old}' is deprecated, use '{new}'")


def test_a_later_source_overrides_an_earlier_one_whichever_spelling_each_uses(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  fast_inference: true\n")
    assert C.resolve(preset="smoke", config_file=path, overrides=["vllm.enabled=false"]).vllm.enabled is False
    # the T4 preset says vllm.enabled: true; the notebooks' old override still turns it off
    assert C.resolve(preset="qwen2.5-3b-t4", overrides=["model.fast_inference=false"]).vllm.enabled is False
    path.write_text("vllm:\n  enabled: true\n")
    assert C.resolve(preset="smoke", config_file=path, overrides=["model.hf_use_vllm=false"]).vllm.enabled is False


@pytest.mark.parametrize(("old", "new", "old_value", "new_value"), [
    ("model.fast_inference", "vllm.enabled", "true", "false"),
    ("model.hf_use_vllm", "vllm.enabled", "false", "true"),
    ("model.gpu_memory_utilization", "vllm.gpu_memory_utilization", "0.3", "0.5"),
    ("run.vllm_server_port", "vllm.server_port", "8000", "8001"),
])
def test_an_old_key_and_its_new_key_set_differently_in_one_source_is_an_error_naming_both(old, new, old_value,
                                                                                          new_value, tmp_path):
    with pytest.raises(C.ConfigError) as err:
        C.resolve(preset="smoke", overrides=[f"{new}={new_value}", f"{old}={old_value}"])
    line = str(err.value)
    assert f"'{old}'" in line and f"'{new}'" in line and line.startswith("--set sets both") and "\n" not in line
    path = tmp_path / "both.yaml"
    path.write_text(f"{old.split('.')[0]}:\n  {old.split('.')[1]}: {old_value}\n"
                    f"{new.split('.')[0]}:\n  {new.split('.')[1]}: {new_value}\n")
    with pytest.raises(C.ConfigError, match=f"{path} sets both '{old}' \\(deprecated\\) and '{new}'"):
        C.resolve(preset="smoke", config_file=path)
    # the same value twice is fine
    assert _get(C.resolve(preset="smoke", overrides=[f"{new}={new_value}", f"{old}={new_value}"]), new) == \
        yaml.safe_load(new_value)


@pytest.mark.parametrize(("backend", "fast", "hf", "enabled", "unused"), [
    # an old config.yaml holds both switches: the one of the backend decides, as it did
    ("unsloth", True, False, True, "model.hf_use_vllm"),  # the T4 preset's
    ("unsloth", False, True, False, "model.hf_use_vllm"),
    ("hf", True, False, False, "model.fast_inference"),
    ("hf", False, True, True, "model.fast_inference"),
    # auto: the machine picks the backend; either switch on meant vLLM there
    ("auto", True, False, True, "model.hf_use_vllm"),
    ("auto", False, True, True, "model.fast_inference"),
])
def test_both_old_switches_in_one_source_keep_the_one_of_the_backend(backend, fast, hf, enabled, unused, tmp_path,
                                                                     caplog):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"model": {"backend": backend, "fast_inference": fast, "hf_use_vllm": hf}}))
    with caplog.at_level(logging.WARNING, logger="recipe"):
        cfg = C.resolve(preset="smoke", config_file=path)
    assert cfg.vllm.enabled is enabled
    lines = _warnings(caplog, unused)
    assert len(lines) == 1 and "not used" in lines[0]
    # the backend set in a later source is the run's
    path.write_text(yaml.safe_dump({"model": {"fast_inference": fast, "hf_use_vllm": hf}}))
    assert C.resolve(preset="smoke", config_file=path, overrides=[f"model.backend={backend}"]).vllm.enabled is enabled


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
    stored = C.resolve(config_file=run_dir / rundir.CONFIG_FILE, overrides=[f"run.output_dir={run_dir}"])
    cfg = C.resolve(preset=preset, overrides=[f"run.output_dir={run_dir}"])
    assert stored == cfg
    for again in (cfg, C.resolve(preset=preset, overrides=[f"run.output_dir={run_dir}", "vllm.server_port=9000"])):
        _, manifest = rundir.open_run(again, ENTRIES, force=False)
        assert all(rundir.is_done(manifest, name) for name in ("stage1", "stage2", "stage3"))
    # the switch still guards the weights it decided: turning it over is a changed key, named in its new place
    flipped = f"vllm.enabled={'false' if cfg.vllm.enabled else 'true'}"
    with pytest.raises(rundir.RunError, match=r"stage1 \(done\).*changed keys: vllm.enabled\."):
        rundir.open_run(C.resolve(preset=preset, overrides=[f"run.output_dir={run_dir}", flipped]), ENTRIES,
                        force=False)


def test_config_with_an_old_key_prints_pure_yaml_on_stdout_and_the_warning_on_stderr(tmp_path):
    """`cotrecipe config --config old.yaml > new.yaml` gives a YAML file that loads: the deprecation line goes to
    stderr with every other log line."""
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  fast_inference: true\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["config", "--preset", "smoke", "--config", str(old)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["vllm"]["enabled"] is True
    assert "deprecated" not in result.stdout
    assert "'model.fast_inference' is deprecated, use 'vllm.enabled'" in " ".join(result.stderr.split())
