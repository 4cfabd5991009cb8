"""The curriculum's budget allocation on the dev split: one ``cotrecipe run-all`` per point of a grid, each with the
SFT baseline trained on as many tokens as that point's curriculum processed (``baseline_sft.budget: tokens``), and
one table of where every point lands: each row's accuracy (Wilson 95 % interval) and average tokens (bootstrap 95 %
interval), the last stage against the SFT baseline on the same problems (exact McNemar p; tokens as a share of the
baseline's) and stage 2's tokens against stage 1's.

Run from the repository root, one core per sweep (each point trains and evaluates one entry at a time):
``OMP_NUM_THREADS=1 taskset -c 0 python bench/sweep.py --out /tmp/sweep --point ship --point nos1 stage1.enabled=false
--point s1e1 stage1.max_steps=30``. A point whose run folder already has a report is read, not run again
(``--read`` only reads). Every point gets ``eval.split=dev`` (settings are tuned there, never on the held-out
problems), ``baseline_sft.budget=tokens``, ``run.parallel_entries=1`` and ``run.baselines=[sft]`` (``--concise``: also
the concise-RL baseline) after ``--set``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.eval import frontier, pairstats  # noqa: E402
from recipe.eval.report import collect_results, load_generations  # noqa: E402
from recipe.store.rundir import REPORT_MD  # noqa: E402

STAGES = ("base", "stage1", "stage2", "stage3")
SFT, CONCISE = "baseline-sft", "baseline-concise"
FIXED = ("eval.split=dev", "baseline_sft.budget=tokens", "run.parallel_entries=1")


def run_point(preset: str, folder: Path, overrides: list[str]) -> None:
    """``cotrecipe run-all`` for one point, its output in ``folder/run.log``; a failure stops the sweep."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "recipe.cli", "run-all", "--preset", preset, "--output-dir", str(folder)]
    args += [a for item in overrides for a in ("--set", item)]
    with open(folder.with_suffix(".log"), "w") as log:
        code = subprocess.call(args, stdout=log, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"{folder.name}: run-all exited {code} (see {folder.with_suffix('.log')})")


def cell(point: frontier.Point | None) -> str:
    if point is None:
        return "-"
    tokens = "-" if point.tokens is None else f"{point.tokens:.1f}"
    return f"{point.accuracy:.1f} [{point.acc_ci[0]:.0f}, {point.acc_ci[1]:.0f}] / {tokens}"


def summarise(name: str, folder: Path, settings: str) -> str:
    """One Markdown row: the point's rows, then its last stage against the SFT baseline and stage 2 against stage 1."""
    results = collect_results(folder)
    names = [n for n, _ in results]
    generations = load_generations(folder, names)
    found = {p.name: p for p in frontier.points(results, generations)}
    last = next((s for s in reversed(STAGES[1:]) if s in found), None)
    versus = "-"
    if last and SFT in found and generations.get(last) and generations.get(SFT):
        paired = pairstats.compare(last, generations[last], SFT, generations[SFT])
        share = (f", {100 * found[last].tokens / found[SFT].tokens:.1f} % of its tokens"
                 if found[last].tokens and found[SFT].tokens else "")
        versus = f"{paired.acc_diff:+.1f} pts ({paired.won} won, {paired.lost} lost, p = {paired.p_value:.2g}){share}"
    s1, s2 = found.get("stage1"), found.get("stage2")
    shorter = (f"{100 * (s2.tokens / s1.tokens - 1):+.1f} %" if s1 and s2 and s1.tokens and s2.tokens else "-")
    concise = found.get(CONCISE)
    if last and concise and generations.get(last) and generations.get(CONCISE):
        paired = pairstats.compare(last, generations[last], CONCISE, generations[CONCISE])
        versus += f"; vs concise RL {paired.acc_diff:+.1f} pts (p = {paired.p_value:.2g})"
    cells = [cell(found.get(s)) for s in (*STAGES, SFT, CONCISE)]
    return f"| {name} | {settings or 'as the preset'} | " + " | ".join(cells) + f" | {versus} | {shorter} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the points' run folders and logs")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--point", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                        help="a point: its name, then its overrides (repeat for each point)")
    parser.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every point (e.g. eval.limit=100)")
    parser.add_argument("--concise", action="store_true", help="also train and evaluate the concise-RL baseline")
    parser.add_argument("--read", action="store_true", help="only tabulate the points already run")
    args = parser.parse_args()
    lines = ["| point | settings | base | stage 1 | stage 2 | stage 3 | SFT (same tokens) | concise RL | last stage vs "
             "SFT | stage 2 vs stage 1 tokens |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, *overrides in args.point:
        folder = args.out / name
        if not args.read and not (folder / REPORT_MD).is_file():
            print(f"{name}: running ({', '.join(overrides) or 'the preset as it is'})", flush=True)
            baselines = "run.baselines=[sft, concise]" if args.concise else "run.baselines=[sft]"
            run_point(args.preset, folder, [*args.common, *overrides, *FIXED, baselines])
        if (folder / REPORT_MD).is_file():
            lines.append(summarise(name, folder, ", ".join(overrides)))
    print("\n".join(lines))
    print("\ncells: accuracy % [Wilson 95 % interval] / average tokens, on the dev split's problems")


if __name__ == "__main__":
    main()
