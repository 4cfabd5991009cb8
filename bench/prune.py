"""Greedy evaluation with finished rows dropped from the batch vs HF ``generate``, measured side by side in one run.

Run from the repository root: ``python bench/prune.py [--adapter runs/proof/baseline-sft/model] [--n 100]
[--max-new-tokens 192] [--batch-size 50] [--repeats 1]``. Both passes call :func:`recipe.models.generation.generate` on the
same evaluation prompts (the dev seed of the two-step synthetic problems, not the held-out ones) with greedy decoding
and the paper's stop rule; only ``prune`` differs. HF ``generate`` keeps a finished row in the batch until the last
row ends; the pruned loop index-selects the KV cache instead. Target: >= 1.2x the wall-time speed, identical
generations.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.config import core as config_mod  # noqa: E402
from recipe.data import prompts, synthetic  # noqa: E402
from recipe.models import model as model_mod  # noqa: E402
from recipe.models.generation import STOP_TEXTS, generate  # noqa: E402

TARGET_RATIO = 1.2
DEV_SEED = 20261126  # the proof preset's dev problems (the held-out test seed is never used for settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default=None, help="a LoRA adapter folder (default: the bare model)")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1, help="alternating repeats; the best time of each counts")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f} before starting: other processes share the CPU, timings are noisy")
    cfg = config_mod.resolve(preset="proof")
    model, tokenizer = model_mod.load(cfg.model, init_from=args.adapter, trainable=False)
    texts = [prompts.eval_prompt(r["question"]) for r in synthetic.synthetic_rows(args.n, seed=DEV_SEED, max_steps=2)]
    print(f"model {cfg.model.name_or_path} adapter {args.adapter}  cpu x{torch.get_num_threads()} threads  "
          f"{args.n} prompts, batch {args.batch_size}, greedy, max_new_tokens={args.max_new_tokens}, paper stop rule")
    best: dict[bool, tuple[float, list]] = {}
    for r in range(args.repeats):
        for prune in (True, False):
            start = time.perf_counter()
            out = generate(model, tokenizer, texts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           stop_texts=STOP_TEXTS, stop_rule="paper", prune=prune)
            seconds = time.perf_counter() - start
            gens = [g[0] for g in out]
            name = "pruned" if prune else "HF generate"
            print(f"  repeat {r + 1} {name:<11}: {seconds:7.1f} s, {sum(g.n_tokens for g in gens) / len(gens):.1f} "
                  f"tokens per row, {sum(g.truncated for g in gens)} truncated")
            if prune not in best or seconds < best[prune][0]:
                best[prune] = (seconds, gens)
    (t_pruned, pruned), (t_hf, hf) = best[True], best[False]
    same = sum((a.raw, a.n_tokens, a.truncated) == (b.raw, b.n_tokens, b.truncated) for a, b in zip(pruned, hf))
    ratio = t_hf / t_pruned
    print(f"pruned {t_pruned:.1f} s vs HF generate {t_hf:.1f} s: {ratio:.2f}x (target >= {TARGET_RATIO}x); "
          f"identical generations {same}/{len(hf)}")
    sys.exit(0 if ratio >= TARGET_RATIO and same == len(hf) else 1)


if __name__ == "__main__":
    main()
