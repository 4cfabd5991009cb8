"""Ctrl-C (SIGINT) for the ``cotrecipe`` process and the children a run starts (:mod:`recipe.run.subrun`).

- :func:`catch` installs the handler: each SIGINT is counted (:func:`count`) and raises KeyboardInterrupt, so the work
  unwinds through its ``except BaseException`` clean-ups; with ``once`` (a child) only the first does and later ones
  are ignored while the child records where it stopped (its parent kills it if that takes too long). It is installed
  even where SIGINT was inherited as ignored: bash starts a script's ``cmd &`` with SIGINT ignored when job control is
  off, and such a run then carried on through Ctrl-C and ``kill -INT``; stopping is safe, a run resumes.
- :func:`held` blocks SIGINT in this thread while a child process is started and registered: the child starts with
  SIGINT blocked (the mask survives fork and exec) and takes a pending one once its handler is in place, so a Ctrl-C
  while it imports is handled like any other; this process takes its own pending one when the block ends.
- The count lets a loop see an interrupt whose KeyboardInterrupt some library swallowed.
- :func:`release_work` before the one line that says where the work stopped: the interrupted work's objects go, so a
  progress bar it left open closes now (ending its line) rather than redrawing itself after that line at exit.
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CODE = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C
_received = 0


def _on_sigint(signum, frame) -> None:
    global _received
    _received += 1
    raise KeyboardInterrupt


def _on_first_sigint(signum, frame) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _on_sigint(signum, frame)


def catch(once: bool = False) -> None:
    """Count and raise on SIGINT (``once``: the first only) and unblock it; a handler someone else installed is kept.
    Only the main thread can set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, signal.SIG_IGN, signal.SIG_DFL, _on_sigint):
        signal.signal(signal.SIGINT, _on_first_sigint if once else _on_sigint)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def count() -> int:
    """SIGINTs received since :func:`catch` (0 before it)."""
    return _received


@contextmanager
def held() -> Iterator[None]:
    """SIGINT blocked in this thread inside the block (and in the threads and processes started there); one that
    arrives meanwhile is taken when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def leave_to_main_thread() -> None:
    """Block SIGINT for good in the calling (non-main) thread, so that the kernel hands it to the main thread, where
    Python runs the handler anyway."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def release_work() -> None:
    """Collect the interrupted work's objects (called once its exception is gone): an open tqdm bar among them closes
    and ends its line before the caller prints its own."""
    gc.collect()
