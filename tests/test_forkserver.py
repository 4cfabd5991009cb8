"""recipe.run.forkserver: run-all's CPU children as forks of a server that imported the training libraries once; each
gets its own environment, output, thread count, exit status, the run lock handed down, and SIGINT held back."""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import sys

import pytest

from recipe.run import forkserver, subrun
from recipe.store import runlock
from tests import forked


def report(run_dir: str) -> int:
    """In the child: what it was given, as one JSON line; then the run lock taken (it must adopt the parent's)."""
    import torch

    with runlock.locked(run_dir):
        adopted = True
    print(json.dumps({"env": os.environ.get("MARK"), "threads": torch.get_num_threads(), "cwd": os.getcwd(),
                      "parent": os.environ.get(subrun.PARENT_ENV), "ppid": os.getppid(), "adopted": adopted,
                      "sigint_blocked": signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])}), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    return 3


def sleep_forever() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, [])
    while True:
        signal.pause()


@pytest.fixture
def server():
    forked._start_server()  # the tests' server (its hash seed) should this be the process's first fork


def test_a_forked_child_gets_its_environment_threads_output_exit_status_and_the_run_lock(tmp_path, server):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with runlock.locked(run_dir):
        lock_env, fd = runlock.child_env(run_dir)
        proc = forkserver.Popen(report, (str(run_dir),), env={**os.environ, "MARK": "mine", "OMP_NUM_THREADS": "2"},
                                cwd=tmp_path, sigint_held=True,
                                pass_fd=(fd, functools.partial(subrun._forked_env, str(run_dir.resolve()))))
        out = proc.stdout.read().decode()
        assert proc.wait(60) == 3 and proc.returncode == 3
    seen = json.loads(out.splitlines()[0])
    server_pid = seen.pop("ppid")
    assert seen == {"env": "mine", "threads": 2, "cwd": str(tmp_path), "parent": str(server_pid), "adopted": True,
                    "sigint_blocked": True}
    assert server_pid != os.getpid()  # a fork of the server, which it dies with
    assert "to stderr" in out


def test_a_forked_child_without_the_lock_handed_down_is_refused_it(tmp_path, server):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with runlock.locked(run_dir):
        proc = forkserver.Popen(report, (str(run_dir),), output=tmp_path / "out.log")
        assert proc.wait(60) == 1  # RunError: the run directory is in use (by this process)
    assert "is in use by pid" in (tmp_path / "out.log").read_text()


def test_a_forked_child_is_killed_and_timed_out_as_a_subprocess_is(server):
    proc = forkserver.Popen(sleep_forever)
    with pytest.raises(subrun.subprocess.TimeoutExpired):
        proc.wait(0.2)
    proc.kill()
    assert proc.wait(60) == -signal.SIGKILL


def test_forks_are_for_cpu_children_on_the_hf_backend():
    assert forkserver.usable("hf") == sys.platform.startswith("linux")
    assert not forkserver.usable("unsloth")


@pytest.mark.parametrize(("lanes", "started"), [(2, True), (1, False)])
def test_run_all_with_entries_side_by_side_starts_the_server_before_its_own_imports(tmp_path, monkeypatch, lanes,
                                                                                   started):
    from click.testing import CliRunner

    from recipe import cli
    from recipe.run import orchestrator

    calls = []
    monkeypatch.setattr(forkserver, "start_server", lambda *a: calls.append("server"))
    monkeypatch.setattr(orchestrator, "run_all", lambda cfg, force: calls.append("run"))
    result = CliRunner().invoke(cli.main, ["run-all", "--preset", "smoke", "--output-dir", str(tmp_path / "r"),
                                           "--set", f"run.parallel_entries={lanes}", "--set", "run.device=cpu"])
    assert result.exit_code == 0, result.output
    assert calls == (["server", "run"] if started else ["run"])


def orphan(fifo: str) -> None:
    """In a fork of a server a test's child started: die with the server (as a run-all child does), say so, wait."""
    from recipe.run.child import die_with_parent

    os.environ[subrun.PARENT_ENV] = str(os.getppid())  # as subrun._forked_env names it
    die_with_parent()
    with open(fifo, "w") as fh:
        fh.write(str(os.getpid()))
    sleep_forever()


RUN_ALL_STAND_IN = """
import sys
from recipe.run import forkserver
forkserver.Popen("tests.test_forkserver:orphan", (sys.argv[1],), output=sys.argv[1] + ".log", preload=[])
sleep = __import__("tests.test_forkserver", fromlist=["x"]).sleep_forever
sleep()
"""


@pytest.mark.slow
def test_a_forked_child_dies_when_the_run_all_that_started_its_server_is_killed(tmp_path, server):
    """SIGKILL the parent: its server sees its end and exits, and the child, which asked to die with the server,
    is killed too: a killed run-all leaves no trainer behind."""
    fifo = tmp_path / "grandchild.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    parent = forked.start(["-c", RUN_ALL_STAND_IN, str(fifo)], tmp_path / "parent.log")
    assert select.select([reader], [], [], 120)[0], (tmp_path / "parent.log").read_text()  # its pid, once written
    grandchild = int(os.read(reader, 100))
    os.close(reader)
    gone = os.pidfd_open(grandchild)  # readable once the process has ended
    assert not select.select([gone], [], [], 0)[0]  # alive
    parent.kill()
    assert parent.wait(60) == -signal.SIGKILL
    assert select.select([gone], [], [], 60)[0], "the grandchild outlived its run-all parent by 60 s"
    os.close(gone)
