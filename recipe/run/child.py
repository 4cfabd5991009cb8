"""The child side of ``run.process_per_entry`` (:mod:`recipe.run.subrun`): ``python -m recipe.run.child train --run DIR
--entry NAME [--from PATH]`` trains one entry, ``python -m recipe.run.child eval --run DIR [--entry NAME ...]`` evaluates
the run, both with the run's own ``config.yaml`` and under the parent's run lock (inherited, :mod:`recipe.run.runlock`).
Beside other children (``run.parallel_entries``, :mod:`recipe.run.parallel`): ``train ... --beside-others`` writes only
its entry's manifest record, merged into the file under its lock, and ``eval ... --no-report`` leaves the report to
the parent.

Exit status: 0 done, 2 one of the recipe's own errors (printed as one ``error:`` line), anything else a crash.
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
from recipe.errors import KNOWN_ERRORS
from recipe.models.model import prepare_backend
from recipe.run import rundir
from recipe.run.rundir import CONFIG_FILE
from recipe.run.subrun import PARENT_ENV

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


def main(argv: list[str] | None = None) -> int:
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
            run.run_one(cfg, args.entry[0], init_from=args.init_from)
        else:
            run.evaluate_run(cfg, run_dir, names=args.entry, report=not args.no_report)
    except KNOWN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
