"""Batched vs one-at-a-time greedy generation on the demo model, measured side by side in one run.

Run from the repository root: ``python bench/eval.py [--n 16] [--max-new-tokens 96] [--batch-size 16]
[--repeats 2] [--model builtin:smollm2-135m]``. Both passes use the same evaluation prompts (synthetic GSM8K-style problems), the
same model and :func:`recipe.models.generation.generate` with greedy decoding and the evaluation's stop-after-answer rule;
only ``batch_size`` differs. Throughput is generated tokens (the student tokenizer's, pad/eos excluded) per second
of wall time. Target: batched >= 4x the tokens/s of one-at-a-time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.config import core as config_mod  # noqa: E402
from recipe.data import prompts  # noqa: E402
from recipe.data.gsm8k import load_gsm8k  # noqa: E402

TARGET_RATIO = 4.0


def timed_generate(model, tokenizer, texts, max_new_tokens, batch_size):
    from recipe.models.generation import generate

    start = time.perf_counter()
    out = generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=0.0)
    seconds = time.perf_counter() - start
    gens = [g[0] for g in out]
    return gens, seconds, sum(g.n_tokens for g in gens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="number of prompts")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats; the best time of each counts")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--model", default=None, help="model.name_or_path (default: the demo preset's model)")
    args = parser.parse_args()

    import torch

    from recipe.models import model as model_mod

    torch.manual_seed(0)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f} before starting: other processes share the CPU, timings are noisy")
    overrides = [f"model.name_or_path={args.model}"] if args.model else []
    cfg = config_mod.resolve(preset="demo", overrides=overrides)
    model, tokenizer = model_mod.load(cfg.model, trainable=False)
    problems, _ = load_gsm8k(f"synthetic:{args.n}", split="test")
    texts = [prompts.eval_prompt(p.question) for p in problems]

    timed_generate(model, tokenizer, texts[:2], 8, 2)  # warm-up: first-call allocations and kernel selection
    print(f"model {cfg.model.name_or_path}  device cpu x{torch.get_num_threads()} threads  torch {torch.__version__}")
    print(f"{args.n} prompts, greedy, max_new_tokens={args.max_new_tokens}, stop after the final-answer line, "
          f"best of {args.repeats} alternating repeats")
    best: dict[str, tuple[float, int, list]] = {}
    for r in range(args.repeats):  # alternate the two modes so that background load hits both alike
        for mode, bs in (("batched", args.batch_size), ("one-at-a-time", 1)):
            gens, seconds, n_tokens = timed_generate(model, tokenizer, texts, args.max_new_tokens, bs)
            print(f"  repeat {r + 1} {mode:<13}: {n_tokens:6d} tokens in {seconds:7.2f} s = "
                  f"{n_tokens / seconds:8.1f} tokens/s")
            if mode not in best or seconds < best[mode][0]:
                best[mode] = (seconds, n_tokens, gens)
    (t_batched, n_batched, batched), (t_single, n_single, single) = best["batched"], best["one-at-a-time"]
    rate_b, rate_s = n_batched / t_batched, n_single / t_single
    print(f"one-at-a-time : {n_single:6d} tokens in {t_single:7.2f} s = {rate_s:8.1f} tokens/s")
    print(f"batched ({args.batch_size:>3}) : {n_batched:6d} tokens in {t_batched:7.2f} s = {rate_b:8.1f} tokens/s")
    same = sum(a.text == b.text for a, b in zip(batched, single))
    print(f"identical completions batched vs one-at-a-time: {same}/{args.n}")
    ratio = rate_b / rate_s
    print(f"ratio batched/one-at-a-time tokens/s = {ratio:.2f}x  (target >= {TARGET_RATIO:.0f}x: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
