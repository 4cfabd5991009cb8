"""Ctrl-C never prints a traceback: a training stopped by SIGINT says where it stopped and the command that goes on
(exit 130), its record is ``interrupted`` and the same command resumes it; under ``run-all`` with two lanes a SIGINT
to the process group stops every child quietly (each says where) and the parent with one line, also when the run was
started with SIGINT ignored (as bash starts a script's ``cmd &``). The interrupts land at known points through
tests/fault_injection.py: nothing here waits on a clock."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recipe.run import child, interrupt, parallel
from recipe.run.parallel import Task
from recipe.store import rundir
from tests import fault_injection
from tests.fault_injection import WAITING, ctrl_c_env, wait_for_ctrl_c_env

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> list[str]:
    """``cotrecipe ARGS`` with the fault-injection callbacks installed (tests/fault_injection.py)."""
    return fault_injection.command(*args)


def env_with(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def stopped_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "stopped by Ctrl-C" in line]


@pytest.mark.slow
def test_ctrl_c_during_a_stage_is_one_line_and_the_same_command_resumes(tmp_path, cache_dir):
    """`cotrecipe stage1` SIGINTs itself right after checkpoint-2 (of 4 steps): one `error:` line naming the step,
    the checkpoint that is kept and the command to run again; exit 130; the entry is `interrupted`; that command
    then resumes from checkpoint-2."""
    args = ["stage1", "--preset", "smoke", "--output-dir", str(tmp_path / "run"),
            "--set", f"model.cache_dir={cache_dir}", "--set", "stage1.max_steps=4"]
    first = subprocess.run(cli(*args), env=env_with(ctrl_c_env("stage1:2")), capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == interrupt.EXIT_CODE, first.stderr
    assert "Traceback" not in first.stderr and "KeyboardInterrupt" not in first.stderr, first.stderr
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped by Ctrl-C: stage1 at step 2 of 4; the same command resumes it from "
                           "checkpoint-2; to go on, run the same command again: cotrecipe stage1 --preset smoke "), last
    assert stopped_lines(first.stderr) == [last]
    assert rundir.load_manifest(tmp_path / "run")["entries"]["stage1"]["status"] == "interrupted"
    again = subprocess.run(cli(*args), env=env_with({}), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    record = rundir.load_manifest(tmp_path / "run")["entries"]["stage1"]
    assert record["status"] == "done" and record["resumed_from"].endswith("checkpoint-2")


def start_in_own_group(args: list[str], env: dict[str, str], sigint_ignored: bool) -> subprocess.Popen:
    """``cotrecipe ARGS`` as the leader of a new process group (the group a terminal's Ctrl-C reaches); with
    ``sigint_ignored`` it inherits SIGINT ignored, as a non-interactive bash starts ``cmd &``."""
    command = cli(*args)
    if sigint_ignored:
        command = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "os.execv(sys.executable, sys.argv[1:])", *command]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["sigint-default", "sigint-inherited-ignored"])
def test_ctrl_c_to_run_all_with_two_lanes_stops_every_child_quietly(tmp_path, cache_dir, sigint_ignored):
    """Stage 2 (after checkpoint-1) and the SFT baseline (after checkpoint-2) train side by side, each in its own
    process, each blocked at a known step (tests/fault_injection.py) until the test, having read both their
    lines, sends SIGINT to the whole process group: each child prints one line saying where it stopped (relayed under
    its prefix), the parent one `error:` line with the command to run again, exit 130, no traceback; their records
    are `interrupted` and stage 1's stays done."""
    run_dir = tmp_path / "run"
    args = ["run-all", "--preset", "smoke", "--set", f"model.cache_dir={cache_dir}", "--set", "run.parallel_entries=2",
            "--set", "stage3.enabled=false", "--set", "run.baselines=[sft]", "--set", "eval.enabled=false",
            "--set", "stage2.log_completions=false", "--output-dir", str(run_dir)]
    proc = start_in_own_group(args, env_with(wait_for_ctrl_c_env("stage2:2", "baseline-sft:3")), sigint_ignored)
    before, waiting = [], set()
    for line in proc.stdout:  # until both children wait at their step (or the run ends early: the asserts say so)
        before.append(line)
        if WAITING in line:
            waiting.add(line.split(WAITING)[1].split()[0])
        if waiting == {"stage2", "baseline-sft"}:
            break
    assert waiting == {"stage2", "baseline-sft"}, "".join(before)
    os.killpg(proc.pid, signal.SIGINT)
    after = proc.stdout.read()
    code = proc.wait(timeout=600)
    output = "".join(before) + after
    assert code == interrupt.EXIT_CODE, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output and "Aborted" not in output, output
    lines = [line for line in after.splitlines() if line.strip()]
    assert "[stage2] stopped by Ctrl-C: stage2 at step 2 of 3; the same command resumes it from checkpoint-1" in lines
    assert ("[baseline-sft] stopped by Ctrl-C: baseline-sft at step 3 of 4; the same command resumes it from "
            "checkpoint-2") in lines
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], output
    assert errors[0].startswith("error: stopped by Ctrl-C: ") and "stage2 stopped" in errors[0]
    assert "baseline-sft stopped" in errors[0]
    assert errors[0].endswith(f"; to go on, run the same command again: {shlex.join(['cotrecipe', *args])}")
    records = rundir.load_manifest(run_dir)["entries"]
    assert {name: r["status"] for name, r in records.items()} == {
        "stage1": "done", "stage2": "interrupted", "baseline-sft": "interrupted"}
    if sigint_ignored:
        return
    again = subprocess.run(cli(*args), env=env_with({}), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    records = rundir.load_manifest(run_dir)["entries"]
    assert records["stage2"]["resumed_from"].endswith("checkpoint-1")
    assert records["baseline-sft"]["resumed_from"].endswith("checkpoint-2")
    assert {r["status"] for r in records.values()} == {"done"}


def test_a_lost_interrupt_still_stops_the_scheduled_tasks():
    """An interrupt counted by the handler whose KeyboardInterrupt some library swallowed: the scheduler sees the
    count change at its next look, stops what runs and goes up."""
    class Handle:
        def __init__(self, task):
            self.id = task.id

        def poll(self):
            return None

    counts = iter([0, 0, 1])
    stopped: list[str] = []
    tasks = [Task("train", "stage1"), Task("train", "baseline-grpo"), Task("eval", "base")]
    with pytest.raises(KeyboardInterrupt):
        parallel.schedule(tasks, 2, Handle, lambda task, handle: None, stop=lambda h: stopped.append(h.id),
                          sleep=lambda _s: None, interrupts=lambda: next(counts))
    assert stopped == ["train:stage1", "train:baseline-grpo"]


@pytest.fixture
def restore_sigint():
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.mark.parametrize("what, entries, expected", [
    ("eval", ["stage1"], "stopped by Ctrl-C: eval:stage1 before its results were written; the same command "
                         "evaluates it again"),
    ("train", ["stage2"], "stopped by Ctrl-C: stage2 outside its training steps (loading, or saving its weights); "
                          "the same command goes on from what is saved"),
])
def test_a_child_stopped_outside_a_training_step_says_so_in_one_line(what, entries, expected, tmp_path, monkeypatch,
                                                                    capsys, restore_sigint):
    """The child's Ctrl-C line when the interrupt comes while it evaluates or loads (here: raised where the work
    starts, as the SIGINT handler would), exit 130."""
    from recipe.run import orchestrator

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(orchestrator, "evaluate_run", interrupted)
    monkeypatch.setattr(orchestrator, "run_one", interrupted)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / rundir.CONFIG_FILE).write_text(f"model:\n  cache_dir: {tmp_path}\nrun:\n  device: cpu\n")
    argv = [what, "--run", str(run_dir), *[a for e in entries for a in ("--entry", e)]]
    assert child.main(argv) == interrupt.EXIT_CODE
    assert capsys.readouterr().err.strip().splitlines()[-1] == expected
