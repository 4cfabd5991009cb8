"""recipe.run.forkserver: run-all's CPU children as forks of a server that imported the training libraries once; each
gets its own environment, output, thread count, exit status, the run lock handed down, and SIGINT held back."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys

import pytest

from recipe.run import child, forkserver, subrun
from recipe.store import runlock
from tests import forked


def report(run_dir: str) -> int:
    """In the child: what it was given, as one JSON line; then the run lock taken (it must adopt the parent's)."""
    import torch

    with runlock.locked(run_dir):
        adopted = True
    print(json.dumps({"env": os.environ.get("MARK"), "threads": torch.get_num_threads(), "cwd": os.getcwd(),
                      "parent": os.environ.get(child.PARENT_ENV), "ppid": os.getppid(), "adopted": adopted,
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
