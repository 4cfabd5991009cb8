"""recipe.store.runlock: one writer per run directory; a second is refused naming the holder, and a killed holder's
lock is taken over (the child processes that share the lock: tests/test_subrun.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from recipe.store import rundir
from recipe.store.runlock import LOCK_FILE
from tests.helpers import fake_trainers, one_error_line, run_all_no_eval

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
        line = one_error_line(run_all_no_eval(run_dir))
        assert f"in use by pid {holder.pid}" in line and "another --output-dir" in line, line
        assert trained == [] and not (run_dir / rundir.MANIFEST_FILE).exists()
    finally:
        holder.kill()
        holder.wait()
    # SIGKILLed: its lock file (with its pid) is left behind, and is taken over
    assert (run_dir / LOCK_FILE).read_text().split()[0] == str(holder.pid)
    assert run_all_no_eval(run_dir).exit_code == 0
    assert trained == ["stage1", "stage2", "stage3"]
