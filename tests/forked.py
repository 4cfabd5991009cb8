"""Separate processes without a fresh interpreter each: ``python -c CODE ARGS`` and ``python -m MODULE ARGS`` run in a
fork of one server process (multiprocessing's ``forkserver``) that imported torch, transformers, TRL, peft,
accelerate and the recipe once, at its start. A test that needs another process, not another interpreter start (a run
SIGKILLed at a known point and resumed, two gloo ranks, row builders run under another hash seed) pays ~0.1 s for it
instead of the 3-8 s of importing those libraries again.

The server is itself a fresh interpreter, started the first time a child is, with ``PYTHONHASHSEED`` =
:data:`HASH_SEED` (:data:`OTHER_HASH_SEED` where this process was given that one), so each child's ``hash()`` of a
string differs from this process's; and it never runs a torch op: it has no thread pools, so a fork of it is safe
where a fork of this process is not (a child forked after torch's OpenMP pool ran hangs at its first parallel op).
Each child runs with exactly the environment, working directory and arguments it is given, its output in a file; it
is a process of its own, so a SIGKILL, an exit status, a file lock and the files it leaves are those of a real run.
The server is :mod:`recipe.run.forkserver`'s (what run-all's CPU children are forked from), with the tests' modules
preloaded too.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from recipe.run import forkserver

HASH_SEED = "12345"
OTHER_HASH_SEED = "54321"
# What the children use: imported once in the server (a module that fails to import there is left to the child)
PRELOAD = [*forkserver.PRELOAD, "tests.fault_injection"]


@dataclass
class Finished:
    """How a child ended: its exit status (``-signal`` when a signal killed it) and what it printed."""

    returncode: int
    output: str


def _start_server() -> None:
    """Start the fork server (once per test session) under :data:`HASH_SEED`."""
    seed = OTHER_HASH_SEED if os.environ.get("PYTHONHASHSEED") == HASH_SEED else HASH_SEED
    forkserver.start_server(PRELOAD, {"PYTHONHASHSEED": seed})  # every child inherits the server's


def _interpreter(argv: list[str]) -> None:
    """In the child: run ``argv`` as the interpreter would (``-c CODE ARGS`` or ``-m MODULE ARGS``)."""
    flag, target, *args = argv
    if flag == "-c":
        sys.argv = ["-c", *args]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})  # the test's own source text, as `-c`
    elif flag == "-m":
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        raise ValueError(f"argv must start with -c or -m, got {flag!r}")


class Popen(forkserver.Popen):
    """``subprocess.Popen([python, *argv], stdout=PIPE, stderr=STDOUT)`` as a fork of the server (``output``: the
    file its output goes to instead)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 output: Path | None = None):
        _start_server()
        super().__init__(_interpreter, (list(argv),), env=env, cwd=cwd, output=output, preload=PRELOAD)


def start(argv: list[str], output: Path, env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Popen:
    """Start ``python ARGV`` (``["-c", code, ...]`` or ``["-m", module, ...]``) as a fork of the server, its output
    appended to ``output``."""
    return Popen(argv, env, cwd, output)


def wait(proc: Popen, output: Path, timeout: float) -> Finished:
    """Wait up to ``timeout`` seconds for a process from :func:`start` (killed after that) and say how it ended."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TimeoutError(f"a forked child ran past {timeout:.0f} s; its output: {output.read_text(errors='replace')}") from None
    return Finished(code, output.read_text(errors="replace") if output.exists() else "")


def run(argv: list[str], output: Path, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float = 300) -> Finished:
    """:func:`start` then :func:`wait`."""
    return wait(start(argv, output, env, cwd), output, timeout)


def stop() -> None:
    """Stop the server (tests/conftest.py, at the session's end): :func:`recipe.run.forkserver.stop_server`."""
    forkserver.stop_server()
