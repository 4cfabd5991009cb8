"""What a whole command holds in memory at once: the resident memory of its process tree (the command and every child
it starts, e.g. ``run-all``'s parallel entries), sampled every ``--every`` seconds, summed over the processes alive at
that moment; the peak of that sum, when it was reached and which processes made it, and each process's own peak.

Why a sampler: ``/usr/bin/time`` and the run's Cost section give each process's own high-water mark, which do not add
up to what the machine held at once (two lanes peak at different times). The sum is given two ways: RSS (what ``ps``
shows; pages shared between processes, such as the libraries every child maps, are counted once per process) and PSS
(each shared page split between the processes that map it: their sum is what the tree holds). A peak shorter than
the sampling interval can be missed; each process's own high-water mark from the kernel is printed beside it.

Run from the repository root, e.g. the proof's shapes with every step count cut (memory follows the shapes, not the
number of steps)::

    python bench/run_memory.py -- cotrecipe run-all --preset proof --output-dir /tmp/proof-shapes \\
        --set warmup.max_steps=2 --set stage1.max_steps=2 --set stage2.max_steps=2 --set stage3.max_steps=2 \\
        --set stage3.mining_limit=50 --set baseline_sft.budget=2 --set eval.limit=50
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil

GB = 1e9


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _memory(proc: psutil.Process) -> tuple[int, int, int] | None:
    """(RSS, PSS, the kernel's high-water mark of RSS) of a live process, in bytes; None once it is gone."""
    try:
        full = proc.memory_full_info()
        with open(f"/proc/{proc.pid}/status") as fh:
            hwm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
        return full.rss, full.pss, hwm
    except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, StopIteration):
        return None


def _label(proc: psutil.Process) -> str:
    try:
        args = proc.cmdline()
    except psutil.NoSuchProcess:
        return str(proc.pid)
    text = " ".join(a for a in args[1:] if not a.startswith("/"))  # its subcommand and options, not the paths
    return " ".join(text.split())[:70] or str(proc.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    t0 = time.monotonic()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak = {"rss": (0, 0.0, []), "pss": (0, 0.0, [])}
    own: dict[int, tuple[str, int]] = {}  # pid -> (label, its highest high-water mark seen)
    while child.poll() is None:
        alive = [(p, m) for p in _tree(root) if (m := _memory(p)) is not None]
        now = time.monotonic() - t0
        for p, (_, _, hwm) in alive:
            label = own.get(p.pid, (_label(p), 0))[0]
            own[p.pid] = (label, max(hwm, own.get(p.pid, ("", 0))[1]))
        for i, key in enumerate(("rss", "pss")):
            total = sum(m[i] for _, m in alive)
            if total > peak[key][0]:
                peak[key] = (total, now, [(own[p.pid][0], m[i]) for p, m in alive])
        time.sleep(args.every)
    wall = time.monotonic() - t0
    print(f"\nexit {child.returncode}; {wall / 60:.1f} min wall; {len(own)} processes; sampled every {args.every:g} s")
    for key in ("rss", "pss"):
        total, at, parts = peak[key]
        print(f"peak of the summed {key.upper()}: {total / GB:.2f} GB at {at / 60:.1f} min: "
              + "; ".join(f"{label} {size / GB:.2f}" for label, size in sorted(parts, key=lambda x: -x[1])))
    print("each process's own peak RSS (the kernel's high-water mark):")
    for label, hwm in sorted(own.values(), key=lambda x: -x[1]):
        print(f"  {hwm / GB:6.2f} GB  {label}")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
