"""Why plain SFT beat stage 1: stage-1 variants and the SFT baseline at equal data and steps, scored on the dev split.

Run from the repository root, alone on the machine: ``python bench/stage1_ablation.py [--steps 60] [--n 100]
[--out runs/ablation] [--only NAME ...]``. Each variant is its own run directory under ``--out`` (resumable: a
finished variant is kept), trained from the base model of the ``proof`` preset (the figures in docs/proof/README.md:
as it stood at commit 9eb87fc: a 150-step warm-up, 600 stage-1 rows) on the same stage-1 problems for the
same number of optimizer steps and batch size, then evaluated greedily on ``--n`` problems of the synthetic ``dev``
split (its own seed; never the held-out ``test`` problems). Printed: a Markdown table (accuracy, tokens, format,
truncation) and each variant against the SFT baseline paired on the same problems (won/lost, exact McNemar p).

Variants: the paper's stage 1 (every row a masked, shuffled reconstruction; mask probability 0.7); the same without
masks (shuffle only); question-only shares 0.5 and 0.75 (that share of rows is the bare evaluation prompt with the
ordered solution as target, the rest reconstruction rows); and the SFT baseline (every row the evaluation prompt and
the full ordered solution). The SFT baseline normally trains on the stage-1 and stage-2 slices; here it trains on
the stage-1 slice only, so all variants see the same problems.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.config import core as config_mod  # noqa: E402
from recipe.eval import pairstats  # noqa: E402
from recipe.fsio import read_json, read_jsonl  # noqa: E402
from recipe.run import orchestrator as run
from recipe.store import rundir

VARIANTS = {  # name -> (entry, overrides)
    "stage1-paper": ("stage1", ["stage1.question_only_share=0", "stage1.mask_prob=0.7"]),
    "stage1-no-mask": ("stage1", ["stage1.question_only_share=0", "stage1.mask_prob=0"]),
    "stage1-qo0.5": ("stage1", ["stage1.question_only_share=0.5", "stage1.mask_prob=0.7"]),
    "stage1-qo0.75": ("stage1", ["stage1.question_only_share=0.75", "stage1.mask_prob=0.7"]),
    "sft-baseline": ("baseline-sft", ["baseline_sft.budget=stage1"]),
}


def variant_config(name: str, out: Path, steps: int, n: int, extra: list[str]) -> config_mod.Config:
    entry, overrides = VARIANTS[name]
    cfg = config_mod.resolve(preset="proof", overrides=[
        f"run.output_dir={out / name}", f"stage1.max_steps={steps}", f"stage1.save_steps={steps}",
        "eval.split=dev", f"eval.limit={n}", "eval.stages=[]", "run.baselines=[]", *overrides, *extra])
    if entry == "baseline-sft":
        # it reads the stage-1 and stage-2 slices; split the stage-1 rows between them (a slice cannot be empty) so
        # it trains on exactly the stage-1 variants' problems
        start, end = cfg.data.stage1_rows
        cfg.data.stage1_rows, cfg.data.stage2_rows = [start, end - 1], [end - 1, end]
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], help="extra override for every variant")
    args = parser.parse_args()
    out = Path(args.out)
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f}: other processes share the CPU")
    rows, gens = [], {}
    for name in args.only:
        entry = VARIANTS[name][0]
        cfg = variant_config(name, out, args.steps, args.n, args.set)
        start = time.perf_counter()
        run_dir = run.run_one(cfg, entry)
        run.evaluate_run(cfg, run_dir, names=[entry])
        res = read_json(rundir.eval_dir(run_dir, entry) / rundir.RESULTS)
        gens[name] = read_jsonl(rundir.eval_dir(run_dir, entry) / rundir.GENERATIONS)
        m = res["metrics"]
        rows.append((name, m, time.perf_counter() - start))
        print(f"{name}: {100 * m['accuracy']:.1f}% / {m['avg_tokens']:.1f} tokens ({time.perf_counter() - start:.0f} s)",
              flush=True)
    print(f"\n{args.steps} steps x {variant_config(args.only[0], out, args.steps, args.n, args.set).stage1.per_device_train_batch_size}"
          f" rows, dev split, n={args.n}\n")
    print("| variant | accuracy (%) | avg tokens | format (%) | truncated (%) | vs SFT baseline: won / lost, p |")
    print("|---|---|---|---|---|---|")
    for name, m, _ in rows:
        versus = "-"
        if "sft-baseline" in gens and name != "sft-baseline":
            p = pairstats.compare(name, gens[name], "sft-baseline", gens["sft-baseline"], samples=1000)
            versus = f"{p.won} / {p.lost}, p={p.p_value:.2g}"
        print(f"| {name} | {100 * m['accuracy']:.1f} | {m['avg_tokens']:.1f} | {100 * m['format_rate']:.1f} | "
              f"{100 * m['truncation_rate']:.1f} | {versus} |")


if __name__ == "__main__":
    main()
