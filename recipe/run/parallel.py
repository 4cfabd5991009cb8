"""Entries side by side (``run.parallel_entries`` = N >= 2): ``run-all`` runs up to N of its tasks at once, each in a
child process of its own (:mod:`recipe.run.subrun`), so that a run on the CPU uses its cores in several processes.

Why: on the CPU a GRPO step runs only ~1.3x faster on 2 threads than on 1, so two 1-thread entries side by side get
through the same work sooner than one 2-thread entry after another. Each child gets ``OMP_NUM_THREADS`` = the
usable cores // N (unless ``OMP_NUM_THREADS`` is set, which every child then inherits); the warm-up runs alone with
every thread, as with N = 1.

- :func:`plan` (pure): the tasks of a run-all -- train each entry still to do, evaluate each name to evaluate
  (``base`` included) -- each with the tasks it waits for, in priority order: the curriculum's trains (the critical
  path), then the baselines', then the evaluations.
- :func:`schedule` (pure): runs up to N tasks at once, always starting the first ready task in that order, through
  an injected ``start(task) -> handle`` (``poll()``/``wait()`` as :class:`subprocess.Popen`) and ``finish(task,
  handle)``, which raises when the task failed. After a failure it starts nothing new, waits for the running tasks,
  then raises the first failure (the run resumes like any stopped one). A Ctrl-C stops the running tasks and goes up;
  each task is started with SIGINT held back (:func:`recipe.run.interrupt.held`), so none starts unseen by it.
- :func:`run_all`: both with real children. A training child writes only its own entry's manifest record, merged into
  the file under :data:`recipe.store.rundir.MANIFEST_LOCK` (``--beside-others``); an evaluation child writes only
  ``eval/<name>/`` (``--no-report``); this process rebuilds the report once at the end. Each child's output is relayed
  line by line, prefixed with its task (``[stage2] ...``, ``[eval:base] ...``); a progress bar's redraws at most
  every :data:`BAR_EVERY_S` seconds per child. After a Ctrl-C each child prints where it stopped (relayed) and
  :func:`run_all` raises :class:`~recipe.errors.Interrupted` naming how each ended.

What waits for what: everything for the warm-up (when it is still to do: its weights are the run's base model); a
stage for the enabled stage before it (its starting weights, as with N = 1); ``baseline-sft`` with
``baseline_sft.budget: tokens`` for every enabled stage (it reads their trainer logs); ``baseline-grpo`` and
``baseline-concise`` (the same GRPO budget) for stage 3 only when stage 3 trains by epochs (``max_steps: -1``: then
their budget counts stage 3's mined rows; with a step count it does not, unless stage 3 mines no failure at all, and
they start at once); an evaluation for its entry's training.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from recipe.config.core import Config
from recipe.entries import BASE, BASELINES, ENTRIES, STAGES
from recipe.errors import ConfigError, Interrupted, RunError
from recipe.eval.report import build_report
from recipe.models.model import pick_backend
from recipe.run import forkserver, interrupt, subrun
from recipe.store import rundir

log = logging.getLogger("recipe")

BAR_EVERY_S = 30.0  # a child's progress-bar redraws (lines ending in a carriage return) relayed at most this often
POLL_S = 1.0  # how often the scheduler looks at its running children
TAIL_SEGMENTS = 400  # a child's last output lines kept for the error when it fails
_WRITE = threading.Lock()  # one relayed line at a time


@dataclass(frozen=True)
class Task:
    """Train an entry, or evaluate a name (an entry or ``base``), after the tasks ``after`` names (by :attr:`id`)."""

    kind: Literal["train", "eval"]
    name: str
    after: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """How its log lines and its output are prefixed: the entry for a training, ``eval:<name>`` else."""
        return self.name if self.kind == "train" else self.id


def plan(cfg: Config, manifest: dict) -> list[Task]:
    """The tasks of ``run-all`` for a run whose manifest is ``manifest``, in priority order (module docstring)."""
    stages = [s for s in STAGES if getattr(cfg, s).enabled]
    wanted = [*(["warmup"] if cfg.warmup.enabled else []), *stages, *(BASELINES[k] for k in cfg.run.baselines)]
    trains = [name for name in dict.fromkeys(wanted) if not rundir.is_done(manifest, name)]
    first = ("train:warmup",) if "warmup" in trains else ()

    def after(*names: str) -> tuple[str, ...]:
        return first + tuple(f"train:{n}" for n in names if n in trains)

    tasks = [Task("train", "warmup")] if first else []
    for name in trains:
        if name in stages:
            tasks.append(Task("train", name, after(*stages[:stages.index(name)][-1:])))
        elif name != "warmup":
            tasks.append(Task("train", name, after(*_reads_upstream(cfg, name, stages))))
    if cfg.eval.enabled:
        tasks += [Task("eval", name, after(name)) for name in eval_names(cfg, manifest, trains)]
    return tasks


def _reads_upstream(cfg: Config, name: str, stages: Sequence[str]) -> Sequence[str]:
    """The curriculum entries whose finished files a baseline reads when it starts (module docstring)."""
    if name == BASELINES["sft"] and cfg.baseline_sft.budget == "tokens":
        return stages  # recipe.run.orchestrator.entry_inputs
    matched = (BASELINES["grpo"], BASELINES["concise"])  # recipe.train.baseline_grpo.train_matched's budget
    if name in matched and "stage3" in stages and cfg.stage3.max_steps <= 0:
        return ["stage3"]  # recipe.train.baseline_grpo.stage3_rows
    return []


def eval_names(cfg: Config, manifest: dict, trains: Sequence[str]) -> list[str]:
    """What ``run-all`` evaluates, as ``eval --run`` would after the trainings: ``eval.stages`` and every baseline,
    each if it is (or is about to be) trained."""
    baselines = [n for n, e in ENTRIES.items() if e.kind == "baseline"]
    return [name for name in dict.fromkeys([*cfg.eval.stages, *baselines])
            if name == BASE or name in trains or rundir.is_done(manifest, name)]


def schedule(tasks: Sequence[Task], lanes: int, start: Callable[[Task], Any], finish: Callable[[Task, Any], None],
             stop: Callable[[Any], Any] = subrun.stop_child, poll_s: float = POLL_S,
             sleep: Callable[[float], None] = time.sleep, interrupts: Callable[[], int] = interrupt.count) -> None:
    """Run ``tasks`` (priority order), at most ``lanes`` at once, each as soon as the tasks it waits for have
    finished; ``finish(task, handle)`` raises when a task failed. An interrupt (Ctrl-C) stops the running tasks
    through ``stop`` (default: a grace period to record their state, then SIGKILL) and goes on up; one counted by
    ``interrupts`` whose KeyboardInterrupt was lost on the way (swallowed by a library) does the same."""
    pending, running, finished = list(tasks), {}, set()
    known = {task.id for task in tasks}  # a task waits only for planned tasks (the rest is done already)
    failure: Exception | None = None
    seen = interrupts()
    try:
        while pending or running:
            for task in list(pending) if failure is None else []:
                if len(running) < lanes and all(dep in finished or dep not in known for dep in task.after):
                    pending.remove(task)
                    try:
                        with interrupt.held():  # a Ctrl-C now comes once the task is in `running`, to be stopped
                            running[task.id] = (task, start(task))
                    except Exception as exc:  # it could not start: the same as a task that failed
                        failure = exc
                        break
            if interrupts() != seen:
                raise KeyboardInterrupt
            if not running:
                break
            ended = [(task, handle) for task, handle in running.values() if handle.poll() is not None]
            for task, handle in ended:
                del running[task.id]
                try:
                    finish(task, handle)
                    finished.add(task.id)
                except Exception as exc:
                    failure = failure or exc
            if not ended:
                sleep(poll_s)
    except BaseException:
        for _, handle in running.values():
            stop(handle)
        raise
    if failure is not None:
        raise failure
    if pending:
        raise RunError(f"internal: {', '.join(t.id for t in pending)} never became ready (a cycle in the plan)")


def lanes(cfg: Config) -> int:
    """``run.parallel_entries``; more than 1 is refused when CUDA would train (the config check refuses
    ``run.device=cuda``, this one ``auto`` on a CUDA machine)."""
    n = cfg.run.parallel_entries
    if n > 1 and cfg.run.device != "cpu":
        import torch  # lazy: as subrun.use_children; is_available creates no CUDA context

        if torch.cuda.is_available():
            raise ConfigError(f"bad value for 'run.parallel_entries': {n} (entries side by side are for CPU runs; "
                              "CUDA is available here: set run.device=cpu, or run.parallel_entries=1)")
    return n


def _threads(n: int) -> str | None:
    """``OMP_NUM_THREADS`` for each child: None when the user set it (every child inherits theirs)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return str(max(1, cores // n))


def run_all(cfg: Config, run_dir: Path, manifest: dict, n: int) -> None:
    """Train what ``run-all`` still has to train and evaluate (``eval.enabled``) with up to ``n`` child processes at
    once, then rebuild the report."""
    tasks = plan(cfg, manifest)
    threads, fork = _threads(n), forkserver.usable(pick_backend(cfg.model))
    log.info("run.parallel_entries=%d: up to %d tasks at once, each in its own process with %s", n, n,
             f"OMP_NUM_THREADS={threads} (usable cores // {n}; the warm-up: all)" if threads else
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} (yours)")
    planned = {task.name for task in tasks if task.kind == "eval"}
    for name in cfg.eval.stages if cfg.eval.enabled else ():
        if name not in planned:
            log.info("eval: %s skipped (%s)", name, manifest[rundir.ENTRIES_KEY].get(name, {}).get("status",
                                                                                              "not started"))
    log.info("tasks: %s", ", ".join(t.id + (f" (after {', '.join(t.after)})" if t.after else "") for t in tasks))
    progress = {"done": 0}

    def finish(task: Task, child: Child) -> None:
        _finish(run_dir, task, child)
        progress["done"] += 1
        log.info("%s finished (%d of %d tasks)", task.id, progress["done"], len(tasks))

    ended: list[str] = []

    def stop(child: Child) -> None:
        ended.append(subrun.stopped(child.label, _stop(run_dir, child)))

    try:
        schedule(tasks, n, lambda task: _start(cfg, run_dir, task, threads, fork), finish, stop=stop, poll_s=POLL_S)
    except KeyboardInterrupt:
        raise Interrupted("; ".join(ended) or "no task was running") from None
    if cfg.eval.enabled:
        build_report(run_dir)


def _start(cfg: Config, run_dir: Path, task: Task, threads: str | None, fork: bool) -> Child:
    if task.kind == "train":
        args = [*subrun.train_args(run_dir, task.name, _init_from(cfg, run_dir, task.name)), "--beside-others"]
    else:
        args = ["eval", "--run", str(run_dir), "--entry", task.name, "--no-report"]
    env = {"OMP_NUM_THREADS": threads} if threads and task.name != "warmup" else {}
    proc = subrun.start_child(run_dir, args, env, fork=fork)
    log.info("%s runs in its own process (pid %d)", task.label, proc.pid)
    return Child(proc, task)


def _init_from(cfg: Config, run_dir: Path, name: str) -> str | None:
    """A stage's starting weights: the output of the last enabled stage before it (None: the base model)."""
    if name not in STAGES:
        return None
    records = rundir.load_manifest(run_dir)[rundir.ENTRIES_KEY]
    init_from = None
    for stage in STAGES[:STAGES.index(name)]:
        if getattr(cfg, stage).enabled:
            init_from = rundir.absolute(run_dir, records.get(stage, {}).get("output")) or init_from
    return init_from


def _stop(run_dir: Path, child: Child) -> int:
    """After a Ctrl-C: stop ``child`` (:func:`recipe.run.subrun.stop_child`); a training child killed before it
    recorded where it stopped has its ``running`` record marked ``interrupted`` here, as :func:`_finish` does. Its
    exit status."""
    code = subrun.stop_child(child)
    child.join()
    if child.task.kind == "train":
        manifest = rundir.load_manifest(run_dir)
        rundir.mark_interrupted(run_dir, manifest, {child.task.name})
        rundir.save_records(run_dir, manifest, {child.task.name})
    return code


def _finish(run_dir: Path, task: Task, child: Child) -> None:
    code = child.wait()
    if code != 0:
        if task.kind == "train":  # its record alone: the other children are still writing theirs
            manifest = rundir.load_manifest(run_dir)
            rundir.mark_interrupted(run_dir, manifest, {task.name})
            rundir.save_records(run_dir, manifest, {task.name})
        raise subrun.child_failure(task.label, child.pid, code, child.tail())
    if task.kind == "train":
        subrun.check_done(run_dir, task.name)


class Child:
    """A started child process and the thread that relays its output (as :class:`subprocess.Popen` to
    :func:`schedule` and :func:`recipe.run.subrun.stop_child`: ``poll``, ``wait``, ``kill``, ``send_signal``)."""

    def __init__(self, proc: Any, task: Task) -> None:
        self.proc, self.task, self.label, self.pid = proc, task, task.label, proc.pid
        self._tail: deque[str] = deque(maxlen=TAIL_SEGMENTS)
        self._bar_at = float("-inf")
        self._thread = threading.Thread(target=self._relay, name=f"relay {self.label}", daemon=True)
        self._thread.start()

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None:
            self._thread.join()  # its last lines are out before it counts as ended
        return code

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self._thread.join()
        return code

    def kill(self) -> None:
        self.proc.kill()

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def join(self, timeout: float | None = subrun.STOP_GRACE_S) -> None:
        """Wait for its last lines to be relayed (the relay ends when the child's output closes)."""
        self._thread.join(timeout)

    def tail(self) -> str:
        return "\n".join(self._tail)

    def _relay(self) -> None:
        interrupt.leave_to_main_thread()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            *parts, pending = re.split(r"(?<=[\r\n])", pending + decoder.decode(chunk))
            for part in parts:
                self._emit(part)
        self._emit(pending + decoder.decode(b"", final=True))

    def _emit(self, part: str) -> None:
        text = part.rstrip("\r\n")
        if not text.strip():
            return
        self._tail.append(text)
        if part.endswith("\r"):  # a progress bar redrawn in place: every BAR_EVERY_S at most
            if time.monotonic() - self._bar_at < BAR_EVERY_S:
                return
            self._bar_at = time.monotonic()
        with _WRITE:
            sys.stderr.write(f"[{self.label}] {text}\n")
            sys.stderr.flush()
