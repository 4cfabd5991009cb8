"""One writer per run directory: an exclusive lock file ``<run>/.lock`` holding the writer's pid and host.

The lock is filelock's :class:`~filelock.UnixFileLock` on that file: an ``flock``, so it dies with its process (a
``kill -9`` leaves a *stale* file that the next writer simply takes over); the pid and host inside (written by its
``on_acquired`` hook) only serve the refusal message. Re-entrant within one process (``run-all`` evaluates under the
lock it trains under). In a multi-process launch only rank 0 writes the run directory, so other ranks (``RANK`` set
and not 0) take no lock.

A child process working for the holder (``run.process_per_entry``: ``run-all`` trains each entry in its own process)
*shares* the holder's lock instead of waiting for it: the parent passes the lock's open file descriptor to the child
(:func:`child_env`), and the child's :func:`locked` adopts it. An ``flock`` belongs to the open file description, not
to a process, so parent and child then hold one lock: no deadlock, and no third writer can enter while either lives
(if the parent is killed, the child keeps the lock until it exits). The child never truncates the file (it names the
parent) and never unlocks; its copy of the descriptor closes when it exits. filelock has no notion of a lock handed
to another program, so the hand-off is ours: the parent's descriptor is the one filelock lends its ``on_acquired``
hook (held open and locked until release), and the child re-takes it with filelock's :func:`~filelock.lock_descriptor`
after checking that the number still names this run's lock file.

>>> import tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> with locked(run):
...     with locked(run):
...         (run / LOCK_FILE).read_text().split()[0] == str(os.getpid())
True
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import Timeout, UnixFileLock, lock_descriptor

from recipe.errors import RunError

LOCK_FILE = ".lock"
INHERITED_ENV = "COTRECIPE_RUN_LOCK"  # "<fd>:<resolved run dir>": a lock descriptor handed down by the holder


@dataclass
class _Hold:
    fd: int  # the locked descriptor (filelock's, or the one the parent handed down)
    depth: int
    lock: UnixFileLock | None  # None: inherited from the parent, which releases it


_held: dict[Path, _Hold] = {}  # resolved run dir -> this process's hold


def _owner(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return "another process"
    return f"pid {text[0]} on {text[1]}" if len(text) >= 2 else "another process"


def _is_writer_rank() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _name_holder(fd: int) -> None:
    """filelock's ``on_acquired`` hook: write this process's pid and host into the freshly locked file."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    except OSError:  # a full disk: the flock itself still excludes other writers
        pass


@contextmanager
def locked(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the run directory's lock for the block; a second writer gets a :class:`RunError` naming the holder."""
    run_dir = Path(run_dir)
    if not _is_writer_rank():
        yield
        return
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} is {'not a folder' if run_dir.exists() else 'missing'}")
    key = run_dir.resolve()
    if key in _held:
        _held[key].depth += 1
        try:
            yield
        finally:
            _held[key].depth -= 1
        return
    path = run_dir / LOCK_FILE
    inherited = _inherited_fd(key, path)
    if inherited is not None:  # a child of the holder: share its lock (module docstring)
        _held[key] = _Hold(inherited, 1, None)
        try:
            yield
        finally:
            _held.pop(key, None)  # the descriptor stays open: a later block of this child adopts it again
        return
    fds: list[int] = []
    # thread_local=False: one hold per process, whichever thread enters; no soft (marker-file) fallback, which
    # could not be handed to a child; the file stays on release, so a waiter and a stale file share one inode.
    lock = UnixFileLock(path, thread_local=False, fallback_to_soft=False, preserve_lock_file=True,
                        on_acquired=lambda fd: (fds.append(fd), _name_holder(fd)))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise RunError(f"run directory {run_dir} is in use by {_owner(path)} (lock {path}); wait for it to finish "
                       f"or use another --output-dir") from None
    try:
        _held[key] = _Hold(fds[-1], 1, lock)
        yield
    finally:
        _held.pop(key, None)
        try:
            os.ftruncate(fds[-1], 0)  # still ours: filelock closes it on release, which releases the flock
        except OSError:
            pass
        lock.release()


def child_env(run_dir: str | os.PathLike) -> tuple[dict[str, str], int]:
    """For a child process that works in ``run_dir`` under this process's lock: the environment entry naming the lock's
    descriptor, and the descriptor to pass down (``subprocess.Popen(pass_fds=...)``). This process must hold the lock.
    """
    key = Path(run_dir).resolve()
    if key not in _held:
        raise RunError(f"internal: a child process for {run_dir} needs its lock held by this process")
    fd = _held[key].fd
    return naming(str(key), fd), fd


def naming(key: str, fd: int) -> dict[str, str]:
    """The environment entry that names ``fd`` as the lock of the (resolved) run directory ``key``: what a child
    given a copy of the descriptor under another number reads (:mod:`recipe.run.forkserver`)."""
    return {INHERITED_ENV: f"{fd}:{key}"}


def _inherited_fd(key: Path, path: Path) -> int | None:
    """The lock descriptor the parent handed down for ``key``, checked to be ``path``'s open file and locked by this
    descriptor (the parent's lock: same open file description); None when there is none or it is not that file."""
    fd_text, sep, where = os.environ.get(INHERITED_ENV, "").partition(":")
    if not sep or where != str(key) or not fd_text.isdigit():
        return None
    fd = int(fd_text)
    try:
        mine, theirs = os.fstat(fd), os.stat(path)
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return None  # the number now names another file
        # Succeeds at once on the parent's own lock (same open file description), and takes the lock if the parent is
        # gone; fails if an unrelated process holds it (then this is not the parent's descriptor after all).
        return fd if lock_descriptor(fd, blocking=False) else None
    except OSError:
        return None
