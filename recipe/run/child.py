"""The child side of ``run.process_per_entry`` (:mod:`recipe.run.subrun`): ``python -m recipe.run.child train --run DIR
--entry NAME [--from PATH]`` trains one entry, ``python -m recipe.run.child eval --run DIR [--entry NAME ...]`` evaluates
the run, both with the run's own ``config.yaml`` and under the parent's run lock (inherited, :mod:`recipe.store.runlock`).
Beside other children (``run.parallel_entries``, :mod:`recipe.run.parallel`): ``train ... --beside-others`` writes only
its entry's manifest record, merged into the file under its lock, and ``eval ... --no-report`` leaves the report to
the parent.

Exit status: 0 done, 2 one of the recipe's own errors (printed as one ``error:`` line), 130 stopped by Ctrl-C (one
``stopped by Ctrl-C: ...`` line saying where; SIGINT is taken from the first line of :func:`main` on, see
:mod:`recipe.run.interrupt`), anything else a crash.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from pathlib import Path

from recipe.cli_common import setup_logging
from recipe.config import core as config_mod
from recipe.errors import KNOWN_ERRORS, Interrupted
from recipe.models.model import prepare_backend
from recipe.run import interrupt
from recipe.run.subrun import PARENT_ENV
from recipe.store import rundir
from recipe.store.rundir import CONFIG_FILE

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the orchestrating parent dies, so a killed run-all leaves no trainer behind
    (its entry then resumes like any killed one). Elsewhere, or when the parent is already gone, nothing is set."""
    parent = os.environ.get(PARENT_ENV, "")
    if not sys.platform.startswith("linux") or not parent.isdigit():
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def stopped_line(what: str, entries: list[str] | None, exc: KeyboardInterrupt) -> str:
    """The one line a child prints when Ctrl-C stopped it: where (a training's step and kept checkpoint, when the
    interrupt came during its steps), and what the same command does next.

    >>> stopped_line("eval", ["stage1"], KeyboardInterrupt())
    'stopped by Ctrl-C: eval:stage1 before its results were written; the same command evaluates it again'
    """
    if isinstance(exc, Interrupted) and exc.where:
        return f"stopped by Ctrl-C: {exc.where}"
    if what == "train":
        return (f"stopped by Ctrl-C: {entries[0]} outside its training steps (loading, or saving its weights); the "
                "same command goes on from what is saved")
    label = f"eval:{','.join(entries)}" if entries else "the evaluation"
    return f"stopped by Ctrl-C: {label} before its results were written; the same command evaluates it again"


def main(argv: list[str] | None = None) -> int:
    try:
        interrupt.catch(once=True)  # first: a SIGINT held back since this process was started is taken here
        return _main(argv)
    except KeyboardInterrupt as exc:
        line = stopped_line(*_what(argv), exc)
    interrupt.release_work()
    print(line, file=sys.stderr, flush=True)
    return interrupt.EXIT_CODE


def _what(argv: list[str] | None) -> tuple[str, list[str] | None]:
    """(train | eval, its entries) from the command line, for the stopped line (read without argparse: the interrupt
    may have come while it ran)."""
    args = list(sys.argv[1:] if argv is None else argv)
    entries = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--entry"]
    return ("train" if args[:1] == ["train"] else "eval"), entries or None


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipe.run.child", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("train", "eval"))
    parser.add_argument("--run", required=True, help="The run directory (its config.yaml is used).")
    parser.add_argument("--entry", action="append", help="train: the entry to train (a stage or a baseline); eval: "
                        "an entry to evaluate (repeatable; default: what `eval --run` evaluates).")
    parser.add_argument("--from", dest="init_from", help="train: its starting weights.")
    parser.add_argument("--beside-others", action="store_true", help="train: other children run at the same time; "
                        "write only this entry's manifest record, merged into manifest.json under its lock.")
    parser.add_argument("--no-report", action="store_true", help="eval: do not rebuild the report (the parent does).")
    args = parser.parse_args(argv)
    if args.what == "train" and len(args.entry or ()) != 1:
        parser.error("train needs one --entry")
    die_with_parent()
    setup_logging()
    run_dir = Path(args.run)
    if args.what == "train" and args.beside_others:
        rundir.write_only({args.entry[0]})
    try:
        cfg = config_mod.resolve(config_file=run_dir / CONFIG_FILE)
        prepare_backend(cfg.model)  # unsloth before transformers/TRL/peft
        from recipe.run import orchestrator as run  # lazy: torch/transformers/trl, after prepare_backend

        if args.what == "train":
            run.run_one(cfg, args.entry[0], init_from=args.init_from, check=False)  # the parent checked
        else:
            run.evaluate_run(cfg, run_dir, names=args.entry, report=not args.no_report)
    except KNOWN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
