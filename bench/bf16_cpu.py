"""bf16 autocast against float32 on the CPU, side by side in one run: one GRPO training run of a few steps, a fixed-batch
loss/gradient check, and batched greedy generation.

Run from the repository root (alone on the machine; it warns when the load average says otherwise):
``python bench/bf16_cpu.py [--init runs/X/baseline-sft/model] [--steps 2] [--n 50]``.

Both arms keep float32 master weights; the bf16 arm sets ``model.cpu_autocast=bfloat16`` (TRL ``bf16=True`` with
``use_cpu``: ``torch.autocast("cpu", torch.bfloat16)`` around the forward passes) and, for generation, wraps
:func:`recipe.models.generation.generate` in the same autocast. Loading the weights themselves in bfloat16 was measured to
break the GRPO policy (docs/benchmarks.md), so it is not an arm here.

1. **GRPO**: stage 2 of the ``proof`` preset (2 groups of 4 completions per step; the figures in
   docs/benchmarks.md were measured with its shapes at commit 9eb87fc, 4 groups of 4) from ``--init`` for
   ``--steps`` steps, same seed, each arm in its own folder; seconds per step from TRL's ``train_runtime``, and the logged
   reward and loss (sampling makes these differ between arms; the fixed batch below is the like-for-like check).
2. **Fixed batch**: the teacher solutions of 16 stage-2 prompts scored by the same LoRA model in both precisions:
   mean token NLL (target: relative difference <= 1 %), cosine of the LoRA gradients (target >= 0.99).
3. **Generation**: greedy answers to ``--n`` dev problems (never the held-out test seed): seconds, identical
   outputs, accuracy of each arm.

Adoption rule: >= 1.3x faster per GRPO step with the fixed-batch targets met.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from peft import get_peft_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.config import core as config_mod  # noqa: E402
from recipe.data import prompts, synthetic  # noqa: E402
from recipe.data.answers import answers_match, extract_answer  # noqa: E402
from recipe.fsio import read_json  # noqa: E402
from recipe.models import model as model_mod  # noqa: E402
from recipe.models.generation import STOP_TEXTS, generate  # noqa: E402
from recipe.train import stage2  # noqa: E402
from recipe.train.rows import train_problems  # noqa: E402

TARGET_RATIO = 1.3
LOSS_TOL = 0.01
GRAD_COS = 0.99
DEV_SEED = 20261126  # the proof preset's dev problems (bench/prune.py uses the same)


def autocast(on: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def grpo_arm(base: list[str], init: str | None, steps: int, bf16: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bf16-bench-") as tmp:
        cfg = config_mod.resolve(preset="proof", overrides=[
            *base, f"run.output_dir={tmp}", f"stage2.max_steps={steps}", f"stage2.save_steps={steps}",
            f"model.cpu_autocast={'bfloat16' if bf16 else 'none'}", "stage2.log_completions=false"])
        start = time.perf_counter()
        result = stage2.run(cfg, Path(tmp) / "stage2", init)
        wall = time.perf_counter() - start
        log = read_json(Path(tmp) / "stage2" / "trainer_log.json")
    steps_logged = [row for row in log if "reward" in row]
    return {"s_per_step": result["metrics"]["train_runtime_s"] / steps, "wall_s": wall,
            "rewards": [round(r["reward"], 3) for r in steps_logged],
            "losses": [round(r["loss"], 4) for r in steps_logged if "loss" in r],
            "lengths": [round(r["completions/mean_length"], 1) for r in steps_logged]}


def fixed_batch(model, tokenizer, rows: list[dict], bf16: bool) -> tuple[float, torch.Tensor, float]:
    """Mean completion-token NLL, the flattened LoRA gradient and the seconds for forward + backward."""
    model.zero_grad(set_to_none=True)
    texts = [r["prompt"] + "\n" + r["teacher_solution"] for r in rows]
    prompt_lens = [len(tokenizer(r["prompt"])["input_ids"]) for r in rows]
    tokenizer.padding_side = "right"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    for i, n in enumerate(prompt_lens):
        labels[i, :n] = -100
    start = time.perf_counter()
    with autocast(bf16):
        loss = model(**batch, labels=labels).loss
    loss.backward()
    seconds = time.perf_counter() - start
    grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    return float(loss), grad, seconds


def gen_arm(model, tokenizer, problems: list[dict], bf16: bool, max_new_tokens: int) -> tuple[float, list, float]:
    texts = [prompts.eval_prompt(p["question"]) for p in problems]
    start = time.perf_counter()
    with autocast(bf16), torch.no_grad():
        out = generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=len(texts),
                       stop_texts=STOP_TEXTS, stop_rule="paper")
    seconds = time.perf_counter() - start
    gens = [g[0] for g in out]
    gold = [p["answer"].rsplit("#### ", 1)[1].strip() for p in problems]
    acc = sum(answers_match(extract_answer(g.text), a) for g, a in zip(gens, gold)) / len(gens)
    return seconds, gens, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default=None, help="LoRA adapter the GRPO arms and checks start from")
    parser.add_argument("--set", action="append", default=[], help="extra proof-preset override (repeatable)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--skip-grpo", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f} before starting: other processes share the CPU, timings are noisy")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, init {args.init}")

    grpo = {}
    if not args.skip_grpo:
        for bf16 in (False, True):
            grpo[bf16] = grpo_arm(args.set, args.init, args.steps, bf16)
            print(f"GRPO {'bf16 autocast' if bf16 else 'float32      '}: {grpo[bf16]['s_per_step']:.1f} s/step; "
                  f"reward {grpo[bf16]['rewards']} loss {grpo[bf16]['losses']} length {grpo[bf16]['lengths']}")

    cfg = config_mod.resolve(preset="proof", overrides=args.set)
    model, tokenizer = model_mod.load(cfg.model, init_from=args.init, trainable=True, seed=cfg.run.seed)
    if not hasattr(model, "peft_config"):
        model = get_peft_model(model, model_mod.lora_config(cfg.model))
    rows = stage2.build_rows(train_problems(cfg, "stage2")[:16], seed=0)
    loss32, grad32, t32 = fixed_batch(model, tokenizer, rows, False)
    loss16, grad16, t16 = fixed_batch(model, tokenizer, rows, True)
    rel = abs(loss16 - loss32) / loss32
    cos = float(torch.nn.functional.cosine_similarity(grad32, grad16, dim=0))
    print(f"fixed batch (16 rows): NLL {loss32:.4f} vs {loss16:.4f} (rel. diff {rel:.4f}, target <= {LOSS_TOL}); "
          f"grad cosine {cos:.4f} (target >= {GRAD_COS}); forward+backward {t32:.2f} s vs {t16:.2f} s "
          f"({t32 / t16:.2f}x)")

    model.eval()
    problems = synthetic.synthetic_rows(args.n, seed=DEV_SEED, max_steps=2)
    s32, g32, a32 = gen_arm(model, tokenizer, problems, False, args.max_new_tokens)
    s16, g16, a16 = gen_arm(model, tokenizer, problems, True, args.max_new_tokens)
    same = sum(a.raw == b.raw for a, b in zip(g32, g16))
    tok32 = sum(g.n_tokens for g in g32) / len(g32)
    tok16 = sum(g.n_tokens for g in g16) / len(g16)
    print(f"greedy generation ({args.n} dev problems): {s32:.1f} s vs {s16:.1f} s ({s32 / s16:.2f}x); identical "
          f"{same}/{args.n}; accuracy {100 * a32:.1f}% vs {100 * a16:.1f}%; tokens {tok32:.1f} vs {tok16:.1f}")

    if grpo:
        ratio = grpo[False]["s_per_step"] / grpo[True]["s_per_step"]
        adopt = ratio >= TARGET_RATIO and rel <= LOSS_TOL and cos >= GRAD_COS
        print(f"GRPO step: {ratio:.2f}x faster with bf16 autocast (target >= {TARGET_RATIO}x); "
              f"{'ADOPT' if adopt else 'do not adopt'} for training")


if __name__ == "__main__":
    main()
