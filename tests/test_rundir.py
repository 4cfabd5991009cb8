"""The run directory's config check and invalidation on a hand-made run (no training): what a changed key refuses,
what --force marks stale and removes, and what it leaves alone; and, with stand-in trainers, how reopening a run
repairs what a crash or a user left (a corrupt manifest, a deleted or truncated output, a failed or orphaned entry)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe.cli import main
from recipe.config import core as C
from recipe.config import schema
from recipe.errors import RunError
from recipe.fsio import write_json
from recipe.run import orchestrator as run
from recipe.store import rundir
from tests.helpers import cfg_no_eval, cli, fake_trainers, one_error_line, run_all_no_eval


def cfg_for(run_dir: Path, *extra: str) -> C.Config:
    return C.resolve(preset="smoke", overrides=[f"run.output_dir={run_dir}", *extra])


def fake_run(run_dir: Path) -> C.Config:
    """Every entry done with the current config, each with a weights folder and an evaluation."""
    cfg = cfg_for(run_dir)
    manifest = rundir.load_manifest(run_dir)
    for name, entry in run.ENTRIES.items():
        (run_dir / name / "model").mkdir(parents=True)
        write_json(rundir.eval_dir(run_dir, name) / rundir.RESULTS, {"metrics": {"accuracy": 0.5}})
        manifest["entries"][name] = {"status": "done", "output": f"{name}/model", "ended": "2026-01-01T00:00:00+00:00",
                                     "config": rundir.entry_config(cfg, entry)}
    rundir.save_manifest(run_dir, manifest)
    return cfg


def test_every_run_baselines_key_is_an_entry():
    assert set(run.BASELINES) == set(schema.BASELINES)
    assert all(name in run.ENTRIES for name in run.BASELINES.values())
    with pytest.raises(C.ConfigError, match="run.baselines"):
        C.resolve(preset="smoke", overrides=["run.baselines=[grpo_typo]"])


def test_a_changed_key_is_refused_naming_it(tmp_path):
    fake_run(tmp_path)
    with pytest.raises(RunError, match=r"stage2 \(done\).*changed keys: stage2.learning_rate"):
        run.open_run(cfg_for(tmp_path, "stage2.learning_rate=0.5"))
    assert all(rundir.is_done(rundir.load_manifest(tmp_path), name) for name in run.ENTRIES)


def test_force_invalidates_the_changed_entry_and_what_starts_from_it(tmp_path):
    fake_run(tmp_path)
    _, manifest = run.open_run(cfg_for(tmp_path, "stage2.learning_rate=0.5"), force=True)
    status = {name: manifest["entries"][name]["status"] for name in run.ENTRIES}
    # baseline-grpo and baseline-concise borrow stage 2's trainer settings and budget, so a stage-2 change reaches them
    assert status == {"warmup": "done", "stage1": "done", "stage2": "stale", "stage3": "stale",
                      "baseline-sft": "done", "baseline-grpo": "stale", "baseline-concise": "stale"}
    assert rundir.load_manifest(tmp_path)["entries"] == manifest["entries"]
    for name in ("stage2", "stage3"):
        assert not (tmp_path / name).exists() and not rundir.eval_dir(tmp_path, name).exists()
    for name in ("stage1", "baseline-sft"):
        assert (tmp_path / name / "model").is_dir() and rundir.eval_dir(tmp_path, name).is_dir()


def test_a_stage1_change_reaches_the_baseline_that_borrows_its_budget(tmp_path):
    fake_run(tmp_path)
    _, manifest = run.open_run(cfg_for(tmp_path, "stage1.learning_rate=0.5"), force=True)
    # baseline-grpo starts from the base model and borrows stage 2's settings, not stage 1's: it stays done (and
    # the warm-up, which comes before everything)
    expected = {**dict.fromkeys(run.ENTRIES, "stale"), "baseline-grpo": "done", "warmup": "done"}
    assert {n: manifest["entries"][n]["status"] for n in run.ENTRIES} == expected


def test_the_concise_baselines_own_key_reaches_it_alone(tmp_path):
    fake_run(tmp_path)
    _, manifest = run.open_run(cfg_for(tmp_path, "baseline_concise.length_weight=0.5"), force=True)
    expected = {**dict.fromkeys(run.ENTRIES, "done"), "baseline-concise": "stale"}
    assert {n: manifest["entries"][n]["status"] for n in run.ENTRIES} == expected


def test_keys_no_entry_depends_on_change_freely(tmp_path):
    fake_run(tmp_path)
    _, manifest = run.open_run(cfg_for(tmp_path, "eval.limit=3", "data.eval_source=synthetic:50"))
    assert all(rundir.is_done(manifest, name) for name in run.ENTRIES)


def test_output_of_names_what_is_missing(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        rundir.output_of(tmp_path, "stage1")
    fake_run(tmp_path)
    assert rundir.output_of(tmp_path, "stage2") == str(tmp_path / "stage2" / "model")
    assert rundir.output_of(tmp_path, "base") is None
    manifest = rundir.load_manifest(tmp_path)
    rundir.invalidate(tmp_path, manifest, run.ENTRIES, "stage3", "test")
    with pytest.raises(RunError, match="stage3 of run .* is not finished \\(status: stale\\)"):
        rundir.output_of(tmp_path, "stage3")


def test_a_run_recorded_before_the_objective_keys_resumes_unless_they_differ(tmp_path):
    fake_run(tmp_path)
    manifest = rundir.load_manifest(tmp_path)
    for record in manifest["entries"].values():  # as recorded before epsilon_high / mask_truncated_completions existed
        for section in ("stage2", "stage3"):
            for key in ("epsilon_high", "mask_truncated_completions"):
                record["config"].get(section, {}).pop(key, None)
    rundir.save_manifest(tmp_path, manifest)
    _, manifest = run.open_run(cfg_for(tmp_path))  # the same objective TRL trained then: nothing changed
    assert all(rundir.is_done(manifest, name) for name in run.ENTRIES)
    with pytest.raises(RunError, match="changed keys: stage2.mask_truncated_completions"):
        run.open_run(cfg_for(tmp_path, "stage2.mask_truncated_completions=true"))


@pytest.mark.parametrize("content", [b"", b'{"stages": {"stage1": {"status": "do', b"[1, 2]", b'{"stages": []}',
                                     b'{"stages": {"stage1": "done"}}', b"\xff\xfe", b'{"entries": []}',
                                     b'{"entries": {"stage1": "done"}}'],
                         ids=["empty", "truncated", "list", "stages-list", "record-string", "not-utf8", "entries-list",
                              "entries-record-string"])
def test_a_corrupt_manifest_is_one_line_saying_how_to_recover(content, tmp_path, monkeypatch):
    trained: list[str] = []
    fake_trainers(monkeypatch, trained)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / rundir.MANIFEST_FILE).write_bytes(content)
    line = one_error_line(run_all_no_eval(run_dir))
    assert "manifest.json is corrupt" in line and "move it aside" in line, line
    assert trained == []
    # the recovery it names works: moved aside, the run starts again
    os.replace(run_dir / rundir.MANIFEST_FILE, run_dir / "manifest.json.bad")
    assert run_all_no_eval(run_dir).exit_code == 0
    assert trained == ["stage1", "stage2", "stage3"]


def test_a_deleted_stage_output_is_trained_again_with_its_downstream(tmp_path, monkeypatch, caplog):
    trained: list[str] = []
    fake_trainers(monkeypatch, trained)
    run_dir = tmp_path / "run"
    cfg = cfg_no_eval(run_dir, "run.baselines=[sft]")
    run.run_all(cfg)
    assert trained == ["stage1", "stage2", "stage3", "baseline-sft"]
    shutil.rmtree(run_dir / "stage1" / "model")
    trained.clear()
    run.run_all(cfg)
    assert trained == ["stage1", "stage2", "stage3"]  # the baseline does not start from stage 1
    assert "stage1/model are missing" in caplog.text
    manifest = rundir.load_manifest(run_dir)
    assert all(rundir.is_done(manifest, n) for n in ("stage1", "stage2", "stage3", "baseline-sft"))


def test_a_truncated_finished_adapter_is_one_line_naming_it_and_force(tmp_path, monkeypatch):
    trained: list[str] = []
    fake_trainers(monkeypatch, trained)
    run_dir = tmp_path / "run"
    run.run_all(cfg_no_eval(run_dir))
    adapter = run_dir / "stage2" / "model" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-3])
    line = one_error_line(run_all_no_eval(run_dir))
    assert "stage2" in line and "adapter_model.safetensors is truncated" in line and "--force" in line, line
    line = one_error_line(CliRunner().invoke(main, ["eval", "--run", str(run_dir), "--stage", "stage2"]))
    assert "adapter_model.safetensors is truncated" in line and "--force" in line, line
    trained.clear()
    result = CliRunner().invoke(main, ["stage2", "--preset", "smoke", "--output-dir", str(run_dir), "--force"])
    assert result.exit_code == 0, result.output
    assert trained == ["stage2"]


def test_a_failed_stage_reruns_with_a_changed_config_without_force(tmp_path, monkeypatch):
    trained: list[str] = []
    fake_trainers(monkeypatch, trained, fail={"stage2": ValueError("bad learning rate")})
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError):
        run.run_all(cfg_no_eval(run_dir))
    assert rundir.load_manifest(run_dir)["entries"]["stage2"]["status"] == "failed"
    run.run_all(cfg_no_eval(run_dir, "stage2.learning_rate=2e-4"))  # no --force: a failed stage has nothing to protect
    assert trained == ["stage1", "stage2", "stage3"]
    # a *done* stage still is protected
    with pytest.raises(RunError, match=r"stage2 \(done\).*stage2.learning_rate"):
        run.run_all(cfg_no_eval(run_dir, "stage2.learning_rate=3e-4"))


def test_a_running_entry_without_a_live_writer_is_marked_interrupted_and_resumes(tmp_path, monkeypatch):
    trained: list[str] = []
    fake_trainers(monkeypatch, trained)
    run_dir = tmp_path / "run"
    cfg = cfg_no_eval(run_dir)
    run_dir.mkdir()
    manifest = rundir.load_manifest(run_dir)
    manifest["entries"]["stage1"] = {"status": "running", "config": rundir.entry_config(cfg, run.ENTRIES["stage1"])}
    rundir.save_manifest(run_dir, manifest)
    run.run_all(cfg)
    record = rundir.load_manifest(run_dir)["entries"]["stage1"]
    assert record["status"] == "done" and record["attempts"] == 2
    assert trained == ["stage1", "stage2", "stage3"]


def test_a_deleted_adapter_file_retrains_the_stage_and_is_never_a_hub_id(tmp_path, monkeypatch, caplog, cache_dir):
    trained: list[str] = []
    fake_trainers(monkeypatch, trained)
    run_dir = tmp_path / "run"
    args = ["run-all", "--preset", "smoke", "--output-dir", str(run_dir), "--set", "eval.enabled=false"]
    assert cli(*args).exit_code == 0
    (run_dir / "stage1" / "model" / "adapter_model.safetensors").unlink()
    trained.clear()
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert trained == ["stage1", "stage2", "stage3"]  # the broken stage and what starts from it
    assert "missing adapter_model.safetensors" in caplog.text
    # handed to a model load directly (eval --adapter, stage --from), the folder is named, never looked up online
    (run_dir / "stage2" / "model" / "adapter_model.safetensors").unlink()
    line = one_error_line(cli("eval", "--preset", "smoke", "--set", f"model.cache_dir={cache_dir}", "--adapter",
                              str(run_dir / "stage2" / "model"), "--output-dir", str(tmp_path / "ev")))
    assert "stage2/model" in line and "missing adapter_model.safetensors" in line, line
