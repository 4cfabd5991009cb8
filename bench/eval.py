"""Batched vs one-at-a-time greedy generation on the demo model, measured side by side in one run.

Run from the repository root: ``python bench/eval.py [--n 16] [--max-new-tokens 96] [--batch-size 16]
[--model builtin:smollm2-135m]``. Both passes use the same evaluation prompts (synthetic GSM8K-style problems), the
same model and :func:`recipe.generation.generate` with greedy decoding and the evaluation's stop-after-answer rule;
only ``batch_size`` differs. Throughput is generated tokens (the student tokenizer's, pad/eos excluded) per second
of wall time. Target: batched >= 4x the tokens/s of one-at-a-time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe import config as config_mod  # noqa: E402
from recipe import prompts  # noqa: E402
from recipe.data import load_gsm8k  # noqa: E402

TARGET_RATIO = 4.0


def timed_generate(model, tokenizer, texts, max_new_tokens, batch_size):
    from recipe.generation import generate

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
    parser.add_argument("--model", default=None, help="model.name_or_path (default: the demo preset's model)")
    args = parser.parse_args()

    import torch

    from recipe import model as model_mod

    torch.manual_seed(0)
    overrides = [f"model.name_or_path={args.model}"] if args.model else []
    cfg = config_mod.resolve(preset="demo", overrides=overrides)
    model, tokenizer = model_mod.load(cfg.model, trainable=False)
    problems, _ = load_gsm8k(f"synthetic:{args.n}", split="test")
    texts = [prompts.eval_prompt(p.question) for p in problems]

    timed_generate(model, tokenizer, texts[:2], 8, 2)  # warm-up: first-call allocations and kernel selection
    batched, t_batched, n_batched = timed_generate(model, tokenizer, texts, args.max_new_tokens, args.batch_size)
    single, t_single, n_single = timed_generate(model, tokenizer, texts, args.max_new_tokens, 1)

    same = sum(a.text == b.text for a, b in zip(batched, single))
    rate_b, rate_s = n_batched / t_batched, n_single / t_single
    print(f"model {cfg.model.name_or_path}  device cpu x{torch.get_num_threads()} threads  torch {torch.__version__}")
    print(f"{args.n} prompts, greedy, max_new_tokens={args.max_new_tokens}, stop after the final-answer line")
    print(f"one-at-a-time : {n_single:6d} tokens in {t_single:7.2f} s = {rate_s:8.1f} tokens/s")
    print(f"batched ({args.batch_size:>3}) : {n_batched:6d} tokens in {t_batched:7.2f} s = {rate_b:8.1f} tokens/s")
    print(f"identical completions: {same}/{args.n}")
    ratio = rate_b / rate_s
    print(f"ratio batched/one-at-a-time tokens/s = {ratio:.2f}x  (target >= {TARGET_RATIO:.0f}x: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
