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
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from pathlib import Path

HASH_SEED = "12345"
OTHER_HASH_SEED = "54321"
# What the children use: imported once in the server (a module that fails to import there is left to the child)
PRELOAD = ["torch", "transformers", "trl", "peft", "accelerate", "recipe.cli", "recipe.run.orchestrator",
           "tests.fault_injection"]

_context = multiprocessing.get_context("forkserver")


@dataclass
class Finished:
    """How a child ended: its exit status (``-signal`` when a signal killed it) and what it printed."""

    returncode: int
    output: str


def _start_server() -> None:
    """Start the fork server (once per test session) under :data:`HASH_SEED`."""
    _context.set_forkserver_preload(PRELOAD)
    saved = os.environ.get("PYTHONHASHSEED")
    # read by the server's interpreter at its start; every child inherits it
    os.environ["PYTHONHASHSEED"] = OTHER_HASH_SEED if saved == HASH_SEED else HASH_SEED
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = saved


def _child(argv: list[str], env: dict[str, str], cwd: str, output: str | Connection) -> None:
    """In the child: take the environment, folder and output (a file to append to, or a pipe's writing end) given,
    then run ``argv`` as the interpreter would (``-c CODE ARGS`` or ``-m MODULE ARGS``); an exit status it asks for
    ends the process with that status."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if isinstance(output, str) else output.fileno()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if isinstance(output, str):
        os.close(fd)
    flag, target, *args = argv
    if flag == "-c":
        sys.argv = ["-c", *args]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})  # the test's own source text, as `-c`
    elif flag == "-m":
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        raise ValueError(f"argv must start with -c or -m, got {flag!r}")


def _fork(argv: list[str], output: str | Connection, env: dict[str, str] | None, cwd: str | Path | None):
    _start_server()
    proc = _context.Process(target=_child, args=(list(argv), dict(os.environ if env is None else env),
                                                 str(cwd or os.getcwd()), output))
    proc.start()
    return proc


def start(argv: list[str], output: Path, env: dict[str, str] | None = None, cwd: str | Path | None = None):
    """Start ``python ARGV`` (``["-c", code, ...]`` or ``["-m", module, ...]``) as a fork of the server, its output
    appended to ``output``; returns the running ``multiprocessing`` process (``join``, ``exitcode``, ``pid``)."""
    return _fork(argv, str(output), env, cwd)


def wait(proc, output: Path, timeout: float) -> Finished:
    """Wait up to ``timeout`` seconds for a process from :func:`start` (killed after that) and say how it ended."""
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise TimeoutError(f"a forked child ran past {timeout:.0f} s; its output: {output.read_text(errors='replace')}")
    return Finished(proc.exitcode, output.read_text(errors="replace") if output.exists() else "")


def run(argv: list[str], output: Path, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float = 300) -> Finished:
    """:func:`start` then :func:`wait`."""
    return wait(start(argv, output, env, cwd), output, timeout)


class Popen:
    """``subprocess.Popen([python, *argv], stdout=PIPE, stderr=STDOUT)`` as a fork of the server: ``pid``,
    ``stdout`` (stdout and stderr together; None when they go to the file ``output``), ``poll``, ``wait``, ``kill``,
    ``send_signal``, ``returncode``."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 output: Path | None = None):
        if output is not None:
            self._proc, self.stdout = _fork(argv, str(output), env, cwd), None
        else:
            reader, writer = _context.Pipe(duplex=False)
            self._proc = _fork(argv, writer, env, cwd)
            writer.close()  # the child holds the only writing end: the reader sees the end of output when it exits
            self.stdout = os.fdopen(os.dup(reader.fileno()), "rb")
            reader.close()
        self.pid = self._proc.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        self.returncode = self._proc.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(["python", "(forked)"], timeout)
        return self.returncode

    def kill(self) -> None:
        self._proc.kill()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)


def stop() -> None:
    """Stop the server, if it was started, and wait for it (tests/conftest.py, at the session's end): its exit is then
    collected by this process, so the CPU time it and its children used counts among this process's children's, as a
    subprocess's would (``/usr/bin/time``, ``resource.RUSAGE_CHILDREN``). ``_stop`` is the method CPython's own tests
    stop the server with (Python 3.8+); multiprocessing has no public one."""
    forkserver._forkserver._stop()
