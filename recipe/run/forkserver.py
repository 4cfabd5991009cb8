"""Child processes without a fresh interpreter each: forks of one server process (multiprocessing's ``forkserver``)
that imported torch, transformers, TRL, peft and the recipe once, at its start. A run-all on the CPU starts a child
per entry and per evaluation (``run.parallel_entries``); each spent ~12 s of a core importing those libraries before
its first step, ~10 times in the demo. A fork of the server starts in ~0.1 s.

The server is a fresh interpreter started from this process's environment (by ``cotrecipe run-all`` at its start, so
that its imports run beside the command's own; else the first time a child is), and it never runs a torch op: it has no thread pools, so a fork of it is safe where a fork of a process that ran torch is not (a
child forked after torch's OpenMP pool ran hangs at its first parallel op). It exits when this process does; a child
that asks to die with its parent (:func:`recipe.run.child.die_with_parent`) names the server, so the chain still
holds. Each child gets exactly the environment, folder and output it is given, and ``OMP_NUM_THREADS`` from it as
torch's thread count (libgomp read the variable when the server imported torch). A descriptor is passed down with the
environment entries that name the child's copy of it (``pass_fd``). CUDA children are never forked: the unsloth backend
must be imported before transformers, and a GPU context wants a process of its own (:func:`usable`).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from multiprocessing import forkserver, reduction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# what a run-all child imports, loaded once in the server (a module that fails to import there is left to the child);
# recipe.cli: multiprocessing runs the parent's main script in each child (as __mp_main__), and `cotrecipe` imports it
PRELOAD = ["torch", "transformers", "trl", "peft", "accelerate", "recipe.cli", "recipe.run.child",
           "recipe.run.orchestrator"]

_context = multiprocessing.get_context("forkserver")


def usable(backend: str) -> bool:
    """Whether a child may be a fork of the server: on Linux, for CPU training (entries side by side are CPU-only,
    :func:`recipe.run.parallel.lanes`) on the hf backend."""
    return sys.platform.startswith("linux") and backend == "hf"


def start_server(preload: list[str] = PRELOAD, env: dict[str, str] | None = None) -> None:
    """Start the server with ``preload`` imported and ``env`` set in its environment, unless one runs already (the
    first start's settings hold)."""
    _context.set_forkserver_preload(preload)
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})  # read by the server's interpreter at its start
    try:
        forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


class _PassedFd:
    """A descriptor sent to the forked child with the fork request (multiprocessing's ``DupFd``), and the function
    that gives the environment entries naming the child's copy."""

    def __init__(self, fd: int, env_for: Callable[[int], dict[str, str]]) -> None:
        self.fd, self.env_for = fd, env_for

    def __reduce__(self):
        return _received, (reduction.DupFd(self.fd), self.env_for)  # DupFd only while the child is being started


def _received(dup: Any, env_for: Callable[[int], dict[str, str]]) -> dict[str, str]:
    fd = dup.detach()
    os.set_inheritable(fd, True)
    return env_for(fd)


def _child(target: str | Callable[..., Any], args: tuple, env: dict[str, str], cwd: str, output: str | Connection,
           passed: dict[str, str], sigint_held: bool) -> None:
    """In the child: SIGINT held back (as for a process started under :func:`recipe.run.interrupt.held`) when asked,
    the environment, folder, output (a file to append to, or a pipe's writing end) and thread count given; then
    ``target(*args)`` (a function, or ``"module:function"``), whose integer result is the exit status."""
    if sigint_held:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    # multiprocessing hands every fork the client's end of the pipe whose closing tells the server that the client is
    # gone (``_forkserver_alive_fd``, private; for a child that forks in turn): held here, it would keep the server
    # alive after the client died, and so this child, which dies with the server
    alive, forkserver._forkserver._forkserver_alive_fd = forkserver._forkserver._forkserver_alive_fd, None
    forkserver._forkserver._forkserver_address = None
    if alive is not None:
        os.close(alive)
    os.environ.clear()
    os.environ.update({**env, **passed})
    os.chdir(cwd)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if isinstance(output, str) else output.fileno()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if isinstance(output, str):
        os.close(fd)
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0 and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = getattr(importlib.import_module(module), name)
    code = target(*args)
    sys.exit(code if isinstance(code, int) else 0)


class Popen:
    """``target(*args)`` (a function, or ``"module:function"``) in a fork of the server, shown as
    :class:`subprocess.Popen` shows a process: ``pid``, ``stdout`` (its stdout and stderr together, unless they go to
    the file ``output``), ``poll``, ``wait``, ``kill``, ``send_signal``, ``returncode``. ``env``: its whole environment (default: this process's); ``pass_fd``: a descriptor
    and the function (picklable, run in the child) giving the environment entries that name the child's copy."""

    def __init__(self, target: str | Callable[..., Any], args: tuple = (), env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, output: Path | None = None,
                 pass_fd: tuple[int, Callable[[int], dict[str, str]]] | None = None, sigint_held: bool = False,
                 preload: list[str] = PRELOAD):
        start_server(preload)
        reader = None
        if output is None:
            reader, writer = _context.Pipe(duplex=False)
        passed = _PassedFd(*pass_fd) if pass_fd else {}
        self._proc = _context.Process(target=_child, args=(
            target, tuple(args), dict(os.environ if env is None else env), str(cwd or os.getcwd()),
            writer if output is None else str(output), passed, sigint_held))
        self._proc.start()
        self.stdout = None
        if reader is not None:
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
            raise subprocess.TimeoutExpired(["(forked)", self._proc.name], timeout)
        return self.returncode

    def kill(self) -> None:
        self._proc.kill()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)


def stop_server() -> None:
    """Stop the server, if one was started, and wait for it: its exit is collected by this process, so the CPU time
    it and its children used counts among this process's children's, as a subprocess's would (``/usr/bin/time``,
    ``resource.RUSAGE_CHILDREN``). ``_stop`` is the method CPython's own tests stop the server with (Python 3.8+);
    multiprocessing has no public one."""
    forkserver._forkserver._stop()
