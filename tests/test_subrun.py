"""run.process_per_entry: run-all trains each entry and runs the evaluation in its own child
process, under the parent's run lock (shared through the inherited descriptor), and a killed child resumes like any
killed run."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from recipe.config import core as C
from recipe.errors import RunError
from recipe.run import orchestrator as run
from recipe.run import subrun
from recipe.store import rundir, runlock
from tests import fault_injection
from tests.fault_injection import kill_after_save_env
from tests.helpers import cfg_no_eval

REPO = Path(__file__).resolve().parents[1]

CHILD_TAKES_LOCK = textwrap.dedent("""
    import sys
    from recipe.store.runlock import locked
    from recipe.errors import RunError
    try:
        with locked(sys.argv[1]):
            with locked(sys.argv[1]):  # re-entrant inside the child too
                print("child holds the lock")
    except RunError as exc:
        print("refused:", exc)
""")


def in_child(run_dir: Path, env: dict, pass_fds: tuple = ()) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", CHILD_TAKES_LOCK, str(run_dir)], env=env, pass_fds=pass_fds,
                          capture_output=True, text=True, timeout=60, check=True).stdout


def test_a_child_shares_the_parents_lock_and_everyone_else_is_refused(tmp_path):
    with runlock.locked(tmp_path):
        lock_env, fd = runlock.child_env(tmp_path)
        assert in_child(tmp_path, lock_env, (fd,)) == "child holds the lock\n"
        # the child neither released the lock nor rewrote the holder's name
        assert (tmp_path / runlock.LOCK_FILE).read_text().split()[0] == str(os.getpid())
        outsider = in_child(tmp_path, {})
        assert outsider.startswith("refused:") and f"pid {os.getpid()}" in outsider
        # an environment naming the descriptor without handing it down is not the lock either
        assert in_child(tmp_path, lock_env).startswith("refused:")
        # nor is a descriptor for another run directory
        other = tmp_path / "other"
        other.mkdir()
        assert in_child(other, {runlock.INHERITED_ENV: lock_env[runlock.INHERITED_ENV]}, (fd,)) == \
            "child holds the lock\n"  # `other` is free: taken normally, the inherited descriptor ignored
    assert in_child(tmp_path, {}) == "child holds the lock\n"  # released with the parent's block
    with pytest.raises(RunError, match="needs its lock held"):
        runlock.child_env(tmp_path)


def test_process_per_entry_auto_means_cuda_and_never_under_a_launcher(monkeypatch):
    def cfg(*sets):
        return C.resolve(preset="smoke", overrides=list(sets))

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert subrun.use_children(cfg("run.device=auto"))
    assert not subrun.use_children(cfg("run.device=cpu"))
    assert not subrun.use_children(cfg("run.process_per_entry=false"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not subrun.use_children(cfg())
    assert subrun.use_children(cfg("run.process_per_entry=on"))  # YAML's on: forced, CPU or not
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not subrun.use_children(cfg())
    with pytest.raises(RunError, match="run.process_per_entry=true cannot be used under a multi-process launch"):
        subrun.use_children(cfg("run.process_per_entry=true"))
    with pytest.raises(C.ConfigError, match="'run.process_per_entry'.*'auto' | bool"):
        cfg("run.process_per_entry=sometimes")


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def pids_logged(caplog) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for r in caplog.records
            if (m := re.match(r"(\S+) runs in its own process \(pid (\d+)\)", r.getMessage()))}


@pytest.mark.slow
def test_one_child_per_entry_and_a_killed_child_resumes(tmp_path, monkeypatch, caplog):
    """Forced on (CPU): stage 1, stage 2 and the evaluation each run in a process of their own; stage 2's process
    SIGKILLs itself after checkpoint-2 (tests/fault_injection.py); the parent reports it, and the same call resumes stage 2.
    `baseline sft` then trains and evaluates in processes of their own as well."""
    caplog.set_level(logging.INFO, logger="recipe")
    cfg = C.resolve(preset="smoke", overrides=[
        f"model.cache_dir={tmp_path / 'cache'}", f"run.output_dir={tmp_path / 'run'}", "run.process_per_entry=true",
        "stage1.max_steps=1", "stage2.max_steps=4", "stage2.save_steps=2", "stage2.max_completion_length=8",
        "stage2.log_completions=false", "stage3.enabled=false", "eval.limit=2", "eval.max_new_tokens=8",
        "eval.stages=[stage2]"])
    monkeypatch.setattr(subrun, "CHILD_MODULE", fault_injection.MODULE)  # children install the fault callbacks
    for name, value in kill_after_save_env("stage2:2").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RunError, match=r"stage2 failed in its own process \(pid \d+, which was killed by SIGKILL\)"):
        run.run_all(cfg)
    run_dir = tmp_path / "run"
    with pytest.raises(RunError, match="needs its lock held"):  # the failed run let its lock go
        runlock.child_env(run_dir)
    manifest = rundir.load_manifest(run_dir)
    first = pids_logged(caplog)
    assert manifest["entries"]["stage1"]["status"] == "done"
    assert manifest["entries"]["stage1"]["pid"] == first["stage1"] != os.getpid()
    assert manifest["entries"]["stage2"]["status"] == "interrupted"  # as the next run would have marked it
    assert manifest["entries"]["stage2"]["pid"] == first["stage2"] != first["stage1"]
    assert (run_dir / "stage2" / "trainer" / "checkpoint-2" / "trainer_state.json").is_file()
    assert any("its last lines:" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    stage1 = digest(run_dir / "stage1")

    for name in kill_after_save_env("stage2:2"):
        monkeypatch.delenv(name)
    caplog.clear()
    run.run_all(cfg)
    manifest = rundir.load_manifest(run_dir)
    second = pids_logged(caplog)
    stage2 = manifest["entries"]["stage2"]
    assert stage2["status"] == "done" and stage2["resumed_from"].endswith("checkpoint-2")
    assert stage2["metrics"]["steps"] == 4 and stage2["attempts"] == 2
    assert set(second) == {"stage2", "evaluation"}, "stage1 was done: no process for it"
    assert stage2["pid"] == second["stage2"] and len({os.getpid(), first["stage1"], first["stage2"],
                                                      *second.values()}) == 5
    assert digest(run_dir / "stage1") == stage1
    assert (run_dir / "eval" / "stage2" / "results.json").is_file() and (run_dir / "report.md").is_file()
    with runlock.locked(run_dir):  # nothing holds it any more
        pass

    caplog.clear()  # `cotrecipe baseline sft`: trained and evaluated in processes of their own too
    run.run_baseline(cfg, "sft")
    baseline = rundir.load_manifest(run_dir)["entries"]["baseline-sft"]
    assert set(pids_logged(caplog)) == {"baseline-sft", "evaluation"}
    assert baseline["status"] == "done" and baseline["pid"] == pids_logged(caplog)["baseline-sft"] != os.getpid()
    assert (run_dir / "eval" / "baseline-sft" / "results.json").is_file()


def test_a_child_that_ends_without_marking_its_entry_done_is_one_line(tmp_path, monkeypatch):
    """With a process per entry, a child that exits cleanly but leaves no finished record (a bug in the child, a
    hand-edited manifest) stops the run with one line naming the entry and its recorded status."""
    started: list[str] = []
    monkeypatch.setattr(subrun, "train_entry", lambda run_dir, name, init_from: started.append(name))
    run_dir = tmp_path / "run"
    with pytest.raises(RunError) as info:
        run.run_all(cfg_no_eval(run_dir, "run.process_per_entry=true"))
    assert started == ["stage1"]
    assert str(info.value) == ("stage1's process ended without marking it done (status: not started); "
                               "run the same command again")
