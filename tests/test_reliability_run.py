"""The run directory under hostile conditions (issue 11, items 6-8 and 10), with stand-in trainers (no model): a
corrupt manifest, checkpoint or adapter, a deleted stage output, a failed stage rerun with a new config, two writers,
a stale lock, filesystem errors, a full disk, file modes, the eval cache key and a hand-edited results.json."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from recipe import fsio
from recipe.cli import main
from recipe.config import core as C
from recipe.errors import RunError
from recipe.eval import evaluate
from recipe.eval.report import build_report, collect_results
from recipe.models.integrity import weights_file_problem
from recipe.run import orchestrator as run
from recipe.run import subrun
from recipe.store import rundir
from recipe.store.runlock import LOCK_FILE
from recipe.train.trainer import last_checkpoint


def safetensors_bytes(values: int = 4) -> bytes:
    """A minimal valid safetensors file: one float32 tensor."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * values)


def fake_trainers(monkeypatch, trained: list[str], fail: dict[str, BaseException] | None = None) -> None:
    """Replace each entry's trainer by one that writes a small valid adapter and records its name."""
    def make(name):
        def train(cfg, entry_dir, init_from):
            if fail and name in fail:
                raise fail.pop(name)
            trained.append(name)
            fsio.write_bytes(entry_dir / rundir.MODEL_DIR / "adapter_model.safetensors", safetensors_bytes())
            return {"output": str(entry_dir / rundir.MODEL_DIR), "metrics": {}}
        return train

    monkeypatch.setattr(run, "TRAINERS", {name: make(name) for name in run.ENTRIES})


def cfg_for(run_dir: Path, *extra: str) -> C.Config:
    return C.resolve(preset="smoke", overrides=[f"run.output_dir={run_dir}", "eval.enabled=false", *extra])


def invoke(run_dir: Path, *extra: str):
    args = ["run-all", "--preset", "smoke", "--output-dir", str(run_dir), "--set", "eval.enabled=false"]
    for item in extra:
        args += ["--set", item]
    return CliRunner().invoke(main, args)


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: "), result.output
    return line


# --------------------------------------------------------------------------------------------------------------------
# Manifest, outputs, failed stages (item 6)
# --------------------------------------------------------------------------------------------------------------------


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
    line = one_error_line(invoke(run_dir))
    assert "manifest.json is corrupt" in line and "move it aside" in line, line
    assert trained == []
    # the recovery it names works: moved aside, the run starts again
    os.replace(run_dir / rundir.MANIFEST_FILE, run_dir / "manifest.json.bad")
    assert invoke(run_dir).exit_code == 0
    assert trained == ["stage1", "stage2", "stage3"]


def test_a_deleted_stage_output_is_trained_again_with_its_downstream(tmp_path, monkeypatch, caplog):
    trained: list[str] = []
    fake_trainers(monkeypatch, trained)
    run_dir = tmp_path / "run"
    cfg = cfg_for(run_dir, "run.baselines=[sft]")
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
    run.run_all(cfg_for(run_dir))
    adapter = run_dir / "stage2" / "model" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-3])
    line = one_error_line(invoke(run_dir))
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
        run.run_all(cfg_for(run_dir))
    assert rundir.load_manifest(run_dir)["entries"]["stage2"]["status"] == "failed"
    run.run_all(cfg_for(run_dir, "stage2.learning_rate=2e-4"))  # no --force: a failed stage has nothing to protect
    assert trained == ["stage1", "stage2", "stage3"]
    # a *done* stage still is protected
    with pytest.raises(RunError, match=r"stage2 \(done\).*stage2.learning_rate"):
        run.run_all(cfg_for(run_dir, "stage2.learning_rate=3e-4"))


def _checkpoint(folder: Path, step: int, damage: str | None = None) -> Path:
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    (ckpt / "adapter_model.safetensors").write_bytes(safetensors_bytes())
    torch.save({"python": (3, (1, 2), None), "cpu": torch.zeros(4, dtype=torch.uint8)}, ckpt / "rng_state.pth")
    torch.save({"state": {0: {"exp_avg": torch.zeros(4)}}, "param_groups": []}, ckpt / "optimizer.pt")
    if damage == "trainer_state":
        (ckpt / "trainer_state.json").write_text('{"global_st', encoding="utf-8")
    elif damage:
        path = ckpt / damage
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return ckpt


@pytest.mark.parametrize("damage", ["adapter_model.safetensors", "optimizer.pt", "rng_state.pth", "trainer_state"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(damage, tmp_path, caplog):
    trainer = tmp_path / "trainer"
    _checkpoint(trainer, 2)
    _checkpoint(trainer, 4, damage)
    (trainer / "checkpoint-6").mkdir()  # unfinished: no trainer_state.json yet
    assert last_checkpoint(trainer) == str(trainer / "checkpoint-2")
    assert "checkpoint-4 is damaged" in caplog.text and "previous intact checkpoint" in caplog.text
    assert not (trainer / "checkpoint-4").exists() and (trainer / ".damaged-checkpoint-4").is_dir()
    assert last_checkpoint(tmp_path / "none") is None


def test_a_safetensors_file_is_judged_by_safetensors_own_reader(tmp_path):
    """What safetensors refuses to load is damaged, including what a hand parser of the header let through (bytes
    past the last tensor, offsets that disagree with a tensor's shape); an intact file passes."""
    good = safetensors_bytes()
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    cases = {"intact": good, "cut in half": good[: len(good) // 2], "a byte past the end": good + b"\0",
             "offsets disagree with the shape": struct.pack("<Q", len(header)) + header + b"\0" * 8,
             "header is not JSON": struct.pack("<Q", 5) + b"{abc}"}
    found = {}
    for name, payload in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(payload)
        found[name] = weights_file_problem(path)
    assert found.pop("intact") is None
    assert found.pop("cut in half").startswith("not readable by safetensors (")  # the header itself is cut
    for name, problem in found.items():
        assert problem is not None and problem.startswith("not readable by safetensors ("), (name, problem)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[:-3])
    assert weights_file_problem(cut).startswith(f"truncated ({len(good) - 3} of {len(good)} bytes; safetensors: ")
    assert "JSON" in found["header is not JSON"]


# --------------------------------------------------------------------------------------------------------------------
# One writer (item 7)
# --------------------------------------------------------------------------------------------------------------------

HOLD = """
import sys, time
from recipe.store.runlock import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, monkeypatch):
    trained: list[str] = []
    fake_trainers(monkeypatch, trained)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        line = one_error_line(invoke(run_dir))
        assert f"in use by pid {holder.pid}" in line and "another --output-dir" in line, line
        assert trained == [] and not (run_dir / rundir.MANIFEST_FILE).exists()
    finally:
        holder.kill()
        holder.wait()
    # SIGKILLed: its lock file (with its pid) is left behind, and is taken over
    assert (run_dir / LOCK_FILE).read_text().split()[0] == str(holder.pid)
    assert invoke(run_dir).exit_code == 0
    assert trained == ["stage1", "stage2", "stage3"]


def test_a_running_entry_without_a_live_writer_is_marked_interrupted_and_resumes(tmp_path, monkeypatch):
    trained: list[str] = []
    fake_trainers(monkeypatch, trained)
    run_dir = tmp_path / "run"
    cfg = cfg_for(run_dir)
    run_dir.mkdir()
    manifest = rundir.load_manifest(run_dir)
    manifest["entries"]["stage1"] = {"status": "running", "config": rundir.entry_config(cfg, run.ENTRIES["stage1"])}
    rundir.save_manifest(run_dir, manifest)
    run.run_all(cfg)
    record = rundir.load_manifest(run_dir)["entries"]["stage1"]
    assert record["status"] == "done" and record["attempts"] == 2
    assert trained == ["stage1", "stage2", "stage3"]


# --------------------------------------------------------------------------------------------------------------------
# Filesystem errors (item 8)
# --------------------------------------------------------------------------------------------------------------------


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "run"
    path.write_text("x", encoding="utf-8")
    line = one_error_line(invoke(path))
    assert str(path) in line and "a file is in the way" in line, line


def test_an_unwritable_location_is_one_line(tmp_path):
    path = Path("/sys/cotrecipe-test-run")  # not writable even for root
    line = one_error_line(invoke(path))
    assert str(path) in line and ("not permitted" in line or "denied" in line or "Read-only" in line), line


def test_a_full_disk_is_one_line_and_leaves_the_run_resumable(tmp_path, monkeypatch):
    """ENOSPC while a stage writes, and again when the manifest records the failure: one line, and the next start
    (disk freed) treats the stage as interrupted and trains it."""
    trained: list[str] = []
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "stage2" / "trainer"))
    fake_trainers(monkeypatch, trained, fail={"stage2": full})
    real_write_bytes = fsio.write_bytes

    def no_space_after_stage2_fails(path, payload):
        if Path(path).name == rundir.MANIFEST_FILE and b'"failed"' in payload:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write_bytes(path, payload)

    monkeypatch.setattr(fsio, "write_bytes", no_space_after_stage2_fails)
    run_dir = tmp_path / "run"
    line = one_error_line(invoke(run_dir))
    assert "No space left on device (ENOSPC)" in line and "stage2" in line and "free space" in line, line
    assert rundir.load_manifest(run_dir)["entries"]["stage2"]["status"] == "running"  # could not write "failed"
    monkeypatch.setattr(fsio, "write_bytes", real_write_bytes)
    assert invoke(run_dir).exit_code == 0
    assert trained == ["stage1", "stage2", "stage3"]
    assert rundir.load_manifest(run_dir)["entries"]["stage2"]["attempts"] == 2


def test_the_disk_full_message_names_path_and_cause():
    line = fsio.os_error_line(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"))
    assert line == "cannot write /mnt/ro/run: Read-only file system (EROFS); choose a writable --output-dir"
    assert fsio.os_error_line(OSError(errno.EPIPE, "Broken pipe")) is None  # not a user-fixable file error


# --------------------------------------------------------------------------------------------------------------------
# Small things (item 10)
# --------------------------------------------------------------------------------------------------------------------


def test_atomic_writes_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        fsio.write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        fsio.write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_eval_cache_key_survives_a_move_and_sees_replaced_weights(tmp_path):
    cfg = cfg_for(tmp_path / "a")
    weights = tmp_path / "a" / "stage3" / "model"
    fsio.write_bytes(weights / "adapter_model.safetensors", safetensors_bytes())
    first = evaluate.model_record(cfg, str(weights), tmp_path / "a")
    assert first["init_from"] == "stage3/model" and len(first["weights_sha256"]) == 64
    os.replace(tmp_path / "a", tmp_path / "b")
    moved = evaluate.model_record(cfg, str(tmp_path / "b" / "stage3" / "model"), tmp_path / "b")
    assert moved == first  # a moved run is not evaluated again
    fsio.write_bytes(tmp_path / "b" / "stage3" / "model" / "adapter_model.safetensors", safetensors_bytes(8))
    replaced = evaluate.model_record(cfg, str(tmp_path / "b" / "stage3" / "model"), tmp_path / "b")
    assert replaced["weights_sha256"] != first["weights_sha256"]  # replaced in place: evaluated again


def test_report_skips_a_hand_edited_results_file_with_a_warning(tmp_path, caplog):
    good = {"metrics": {"accuracy": 0.5, "n": 4, "avg_tokens": 10.0, "truncation_rate": 0.0, "format_rate": 1.0}}
    fsio.write_json(rundir.eval_dir(tmp_path, "base") / rundir.RESULTS, good)
    fsio.write_json(rundir.eval_dir(tmp_path, "stage1") / rundir.RESULTS,
                    {"metrics": {**good["metrics"], "accuracy": "abc"}})
    fsio.write_text(rundir.eval_dir(tmp_path, "stage2") / rundir.RESULTS, '{"metrics": {"accura')
    fsio.write_json(rundir.eval_dir(tmp_path, "stage3") / rundir.RESULTS, {**good, "metrics": [1]})
    assert [name for name, _ in collect_results(tmp_path)] == ["base"]
    assert "stage1/results.json (metrics.accuracy is 'abc'" in caplog.text
    build_report(tmp_path)
    result = CliRunner().invoke(main, ["report", "--run", str(tmp_path)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


def test_a_child_that_ends_without_marking_its_entry_done_is_one_line(tmp_path, monkeypatch):
    """With a process per entry, a child that exits cleanly but leaves no finished record (a bug in the child, a
    hand-edited manifest) stops the run with one line naming the entry and its recorded status."""
    started: list[str] = []
    monkeypatch.setattr(subrun, "train_entry", lambda run_dir, name, init_from: started.append(name))
    run_dir = tmp_path / "run"
    with pytest.raises(RunError) as info:
        run.run_all(cfg_for(run_dir, "run.process_per_entry=true"))
    assert started == ["stage1"]
    assert str(info.value) == ("stage1's process ended without marking it done (status: not started); "
                               "run the same command again")
