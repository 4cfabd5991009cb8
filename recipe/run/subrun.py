"""One child process per run-all entry (``run.process_per_entry``): the parent orchestrates, each child trains one
entry (or runs the evaluation) in a fresh process, so every GRPO stage starts with a fresh GPU context.

Why: with ``vllm.enabled`` Unsloth's vLLM engine is not reliably released inside one process (``delete_vllm`` drops
a reference), and a new engine refuses to start when free memory is below its ``vllm.gpu_memory_utilization`` share.
A process that exits returns all of its GPU memory.

The parent holds the run directory's lock; each child shares it through the inherited lock descriptor
(:func:`recipe.store.runlock.child_env`), so it neither deadlocks on it nor lets another writer in. A child writes the
manifest itself exactly as the single-process path does (its record names its ``pid``); a child that dies (killed,
out of memory) leaves its entry ``running``, which the parent marks ``interrupted`` just as the next run would, then
reports the child's last output lines and stops. Running the same command again resumes from the last checkpoint.
With ``run.parallel_entries`` several children run at once (:mod:`recipe.run.parallel`, through :func:`start_child`).

Ctrl-C: a child is started with SIGINT held back and takes it once its handler is in place (:mod:`recipe.run.interrupt`);
it stops, records its entry ``interrupted`` and prints one line saying where (:mod:`recipe.run.child`). The parent
passes the interrupt on to a child that did not get it (a SIGINT sent to the parent alone), waits
:data:`STOP_GRACE_S` for it, kills it after that or on a second Ctrl-C, and stops with :class:`~recipe.errors.Interrupted`.
"""

from __future__ import annotations

import codecs
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

import recipe
from recipe import dist
from recipe.config.core import Config
from recipe.errors import Interrupted, RunError
from recipe.run import forkserver, interrupt
from recipe.store import rundir, runlock

log = logging.getLogger("recipe")

CHILD_MODULE = "recipe.run.child"  # `python -m recipe.run.child train|eval ...`
PARENT_ENV = "COTRECIPE_PARENT_PID"  # the pid a child dies with: this process, or the server it is a fork of
TAIL_LINES = 20  # a failed child's last output lines, shown with the error
STOP_GRACE_S = 30.0  # the parent was interrupted: time the child gets to record its state before SIGKILL


def use_children(cfg: Config) -> bool:
    """Whether run-all runs each entry in its own process: ``run.process_per_entry`` true/false, or ``auto`` = on with
    CUDA (and ``run.device`` not cpu). Never under a multi-process launch, whose ranks must train together."""
    mode = cfg.run.process_per_entry
    if dist.is_distributed():
        if mode is True:
            raise RunError("run.process_per_entry=true cannot be used under a multi-process launch (each rank is "
                           "already its own process): set it to auto or false")
        return False
    if mode != "auto":
        return bool(mode)
    if cfg.run.device == "cpu":
        return False
    import torch  # lazy: the decision is the first thing run-all needs torch for; is_available creates no context

    return torch.cuda.is_available()


def train_args(run_dir: Path, name: str, init_from: str | None) -> list[str]:
    """The child command's arguments that train entry ``name`` of ``run_dir``."""
    return ["train", "--run", str(run_dir), "--entry", name] + (["--from", init_from] if init_from else [])


def train_entry(run_dir: Path, name: str, init_from: str | None) -> None:
    """Train entry ``name`` of ``run_dir`` (whose ``config.yaml`` the parent wrote) in a child process."""
    _run_child(run_dir, name, train_args(run_dir, name, init_from))


def evaluate(run_dir: Path, names: list[str] | None = None) -> None:
    """Evaluate the run (``names``: those entries only) and rebuild its report in a child process."""
    _run_child(run_dir, "evaluation", ["eval", "--run", str(run_dir)]
               + [arg for name in names or () for arg in ("--entry", name)])


def _child_env(run_dir: Path) -> tuple[dict[str, str], int]:
    lock_env, fd = runlock.child_env(run_dir)
    source_root = str(Path(recipe.__file__).resolve().parents[1])  # the child imports the same recipe as this process
    path = os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, **lock_env, PARENT_ENV: str(os.getpid()), "PYTHONPATH": path}, fd


def start_child(run_dir: Path, args: list[str], env: dict[str, str] | None = None,
                fork: bool = False) -> subprocess.Popen | forkserver.Popen:
    """Start ``python -m recipe.run.child ARGS`` under this process's lock of ``run_dir`` (``env``: extra variables)
    without waiting for it; its stdout and stderr come together through ``proc.stdout``. ``fork``: as a fork of
    :mod:`recipe.run.forkserver`'s server, which imported the training libraries once (CPU children only)."""
    child_env, fd = _child_env(run_dir)
    if fork:
        key = str(Path(run_dir).resolve())
        return forkserver.Popen(f"{CHILD_MODULE}:main", (args,), env={**child_env, **(env or {})}, sigint_held=True,
                                pass_fd=(fd, functools.partial(_forked_env, key)))
    return subprocess.Popen([sys.executable, "-m", CHILD_MODULE, *args], env={**child_env, **(env or {})},
                            pass_fds=(fd,), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _forked_env(key: str, fd: int) -> dict[str, str]:
    """In a forked child: the entry naming its copy of the lock descriptor, and its parent (the server: the child
    dies with it, and the server exits with this process)."""
    return {**runlock.naming(key, fd), PARENT_ENV: str(os.getppid())}


def _run_child(run_dir: Path, label: str, args: list[str]) -> None:
    with interrupt.held():  # the child starts with SIGINT held back; this process takes its own once proc is known
        proc = start_child(run_dir, args)
    try:
        log.info("%s runs in its own process (pid %d)", label, proc.pid)
        tail = _relay(proc)
        code = proc.wait()
    except KeyboardInterrupt:
        rest = threading.Thread(target=_relay_rest, args=(proc,), name=f"relay {label}", daemon=True)
        rest.start()  # while it stops: its last lines, the one saying where it stopped among them
        code = stop_child(proc)
        rest.join(timeout=STOP_GRACE_S)
        raise Interrupted(stopped(label, code)) from None
    except BaseException:
        stop_child(proc)
        raise
    if code == 0:
        return
    manifest = rundir.load_manifest(run_dir)
    rundir.mark_interrupted(run_dir, manifest)  # what the next run would do: the entry resumes from its checkpoint
    rundir.save_manifest(run_dir, manifest)
    raise child_failure(label, proc.pid, code, tail)


def check_done(run_dir: Path, name: str) -> dict:
    """After ``name``'s child exited cleanly: the manifest it left, which must record ``name`` done."""
    manifest = rundir.load_manifest(run_dir)  # the child wrote its record
    if not rundir.is_done(manifest, name):
        status = manifest[rundir.ENTRIES_KEY].get(name, {}).get("status", "not started")
        raise RunError(f"{name}'s process ended without marking it done (status: {status}); run the same command again")
    return manifest


def child_failure(label: str, pid: int, code: int, tail: str) -> RunError:
    """Log a failed child's last output lines and return the one-line error that stops the run."""
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    lines = [line for line in tail.replace("\r", "\n").splitlines() if line.strip()][-TAIL_LINES:]
    log.error("%s's process (pid %d) %s; its last lines:\n%s", label, pid, how, "\n".join(lines) or "(none)")
    return RunError(f"{label} failed in its own process (pid {pid}, which {how}); its last lines are above; run "
                    f"the same command again to resume")


def _relay_rest(proc: subprocess.Popen) -> None:
    interrupt.leave_to_main_thread()
    _relay(proc)


def _relay(proc: subprocess.Popen) -> str:
    """Copy the child's output to this process's stderr as it comes; return its last ~64 KiB."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail: deque[str] = deque()
    size = 0
    for chunk in iter(lambda: proc.stdout.read1(65536), b""):
        text = decoder.decode(chunk)
        sys.stderr.write(text)
        sys.stderr.flush()
        tail.append(text)
        size += len(text)
        while size > 65536 and len(tail) > 1:
            size -= len(tail.popleft())
    return "".join(tail)


def stop_child(proc: subprocess.Popen) -> int:
    """After a Ctrl-C: pass it on to the child (one that got it already ignores a second), give it
    :data:`STOP_GRACE_S` to record its state, then kill it (at once on another Ctrl-C); its exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=STOP_GRACE_S)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
            proc.wait()
    return proc.wait()


def stopped(label: str, code: int) -> str:
    """How a child ended after Ctrl-C, in words, for the parent's one line (the child's own line says where).

    >>> stopped("stage2", 130), stopped("stage2", -9)
    ('stage2 stopped (its line above says where)', 'stage2 was killed (SIGKILL) before it said where it stopped')
    """
    if code == interrupt.EXIT_CODE:
        return f"{label} stopped (its line above says where)"
    if code < 0:
        return f"{label} was killed ({signal.Signals(-code).name}) before it said where it stopped"
    return f"{label} ended with exit status {code}"
