"""Why stage 3 changes so little: its GRPO log, the size of its LoRA update and which greedy answers it changes.

Run from the repository root on runs whose stages 2 and 3 finished and were evaluated (``eval.stages`` holding both),
e.g. the arms of docs/proof/README.md, "Stage 3, diagnosed"::

    python bench/stage3_diagnosis.py /work/runs38/rw1 /work/runs38/rw_hi /work/runs38/q_lo /work/runs38/q_hi [--out DIR]

For each run it prints:

1. Stage 3 per GRPO step, from its ``trainer_log.json`` (TRL's log): mean reward and its spread, the mean
   completion length in tokens, the share of groups with a learning signal (``1 - frac_reward_zero_std``: a group
   whose completions all score the same has zero advantage and gives no gradient) and the gradient norm.
2. The LoRA update of each stage: the sum over adapted modules of the Frobenius norm of the change in
   ``scale * B @ A`` (stage 1 against the run's base; stage 2 against stage 1; stage 3 against stage 2: each stage
   goes on training the adapter it starts from, so the change is the stage's own), and how far A and B moved.
3. Greedy answers of stage 2 against stage 3 (the evaluation's decoding: greedy, ``eval.max_new_tokens``, its stop
   rule) on three prompt sets: (a) the paper's rewrite prompts of the mined failures (the teacher's solution shown),
   (b) the evaluation prompts of the same problems (the question alone), (c) the run's own evaluation of
   ``eval.split`` (read from ``eval/stage2`` and ``eval/stage3``; nothing is generated for it). Per set: how many
   outputs differ at all, answers won and lost (stage 3 right where stage 2 was wrong, and the reverse), accuracy
   and mean tokens. Generations for (a) and (b) are cached in ``--out`` keyed by the weights' hash.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from recipe.config import core as config_mod  # noqa: E402
from recipe.data.gsm8k import Problem  # noqa: E402
from recipe.data.stopping import resolve_stop_rule  # noqa: E402
from recipe.eval import pairstats  # noqa: E402
from recipe.eval.evaluate import score_generations, weights_hash  # noqa: E402
from recipe.fsio import read_json, read_jsonl, write_jsonl  # noqa: E402
from recipe.models import generation  # noqa: E402
from recipe.models import model as model_mod  # noqa: E402
from recipe.run.orchestrator import with_base  # noqa: E402
from recipe.store import rundir  # noqa: E402
from recipe.train import stage3  # noqa: E402

STEP_KEYS = ("reward", "reward_std", "compression_ratio/correct", "compression_ratio/ratio", "completions/mean_length",
             "completions/clipped_ratio", "frac_reward_zero_std", "grad_norm")
STAGES = ("stage1", "stage2", "stage3")


def step_table(entry_dir: Path, cap: int) -> list[str]:
    """Markdown rows, one per logged GRPO step of ``entry_dir/trainer_log.json`` (``cap``: the completion cap)."""
    lines = ["| step | reward (mean, std) | correct | length / teacher's | completion tokens (cut at 160) | "
             "groups with signal | grad norm |", "|---|---|---|---|---|---|---|"]
    for rec in read_json(entry_dir / rundir.TRAINER_LOG):
        if "reward" not in rec:
            continue  # the trainer's closing summary
        r, sd, correct, ratio, length, clipped, zero, grad = (rec.get(k, math.nan) for k in STEP_KEYS)
        lines.append(f"| {rec.get('step')} | {r:+.2f}, {sd:.2f} | {100 * correct:.0f} % | {ratio:.2f} | "
                     f"{length:.0f} ({100 * clipped:.0f} %) | {100 * (1 - zero):.0f} % | {grad:.3f} |")
    return lines


def lora_products(folder: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per adapted module: ``scale * B @ A`` (the weight change the adapter adds), and the raw A and B tensors."""
    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    r, alpha = config["r"], config["lora_alpha"]
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    tensors = load_file(str(Path(folder) / "adapter_model.safetensors"))
    products = {}
    for name, a in tensors.items():
        if ".lora_A." in name:
            b = tensors[name.replace(".lora_A.", ".lora_B.")]
            products[name.replace(".lora_A.weight", "")] = scale * (b.double() @ a.double())
    return products, tensors


def update_size(after: str, before: str | None) -> dict[str, float]:
    """Sum over modules of ``||delta_after - delta_before||_F`` (``before`` None: the adapter's whole delta), and the
    relative change of the A and B tensors (``||after - before|| / ||before||`` over all of them)."""
    prod_after, raw_after = lora_products(after)
    if before is None:
        return {"delta": sum(float(d.norm()) for d in prod_after.values()), "rel_A": math.nan, "rel_B": math.nan}
    prod_before, raw_before = lora_products(before)
    if prod_before.keys() != prod_after.keys():
        raise SystemExit(f"error: {after} and {before} adapt different modules: not one adapter continued")
    out = {"delta": sum(float((prod_after[k] - prod_before[k]).norm()) for k in prod_after)}
    for part in ("A", "B"):
        keys = [k for k in raw_after if f".lora_{part}." in k]
        diff = math.sqrt(sum(float((raw_after[k].double() - raw_before[k].double()).norm()) ** 2 for k in keys))
        size = math.sqrt(sum(float(raw_before[k].double().norm()) ** 2 for k in keys))
        out[f"rel_{part}"] = diff / size if size else math.inf
    return out


def greedy(cfg, folder: str, texts: list[str], cache: Path) -> list:
    """Greedy generations of the model ``folder`` for ``texts`` with the evaluation's decoding, cached by weights and
    prompts."""
    key = hashlib.sha256((weights_hash(folder) + "\0".join(texts)).encode()).hexdigest()[:16]
    path = cache / f"{key}.jsonl"
    if path.is_file():
        return [generation.Generation(**row) for row in read_jsonl(path)]
    model, tokenizer = model_mod.load(cfg.model, init_from=folder, trainable=False, seed=cfg.run.seed)
    ecfg = cfg.eval
    gens = generation.generate(model, tokenizer, texts, adapter=model_mod.adapter_folder(folder),
                               max_new_tokens=ecfg.max_new_tokens, batch_size=ecfg.batch_size, temperature=0.0,
                               seed=cfg.run.seed, stop_texts=generation.STOP_TEXTS, answer_label=cfg.data.answer_label,
                               stop_rule=resolve_stop_rule(ecfg.stop_rule, ecfg.prompt))
    gens = [g[0] for g in gens]
    cache.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, [vars(g) for g in gens])
    return gens


def compare_rows(name: str, before: list[dict], after: list[dict]) -> str:
    """One Markdown row: stage 2 (``before``) against stage 3 (``after``) on the same problems."""
    paired = pairstats.compare("stage3", after, "stage2", before, samples=1000)
    by_id = {r["id"]: r for r in before}
    differ = sum(1 for r in after if r["completion"] != by_id[r["id"]]["completion"])
    acc = [100 * sum(r["correct"] for r in rows) / len(rows) for rows in (before, after)]
    tok = [sum(r["n_tokens"] for r in rows) / len(rows) for rows in (before, after)]
    return (f"| {name} | {len(after)} | {differ} | {paired.won} / {paired.lost} | {acc[0]:.1f} → {acc[1]:.1f} | "
            f"{tok[0]:.1f} → {tok[1]:.1f} |")


def diagnose(run_dir: Path, cache: Path) -> list[str]:
    cfg = config_mod.resolve(config_file=run_dir / rundir.CONFIG_FILE)
    manifest = rundir.load_manifest(run_dir)
    cfg = with_base(cfg, run_dir, manifest)
    entry = rundir.entry_dir(run_dir, "stage3")
    record = manifest[rundir.ENTRIES_KEY]["stage3"]
    metrics = record.get("metrics", {})
    st = cfg.stage3
    lines = [f"## {run_dir.name}: stage3.prompt={st.prompt}, lr {st.learning_rate:g}, {st.max_steps} steps x "
             f"{st.per_device_train_batch_size * st.gradient_accumulation_steps // st.num_generations} groups of "
             f"{st.num_generations}; {metrics.get('failures')} failures of {metrics.get('mined')} mined", ""]
    lines += step_table(entry, st.max_completion_length) + [""]

    outputs = {s: rundir.output_of(run_dir, s, manifest) for s in STAGES}
    starts = {"stage1": None, "stage2": outputs["stage1"], "stage3": outputs["stage2"]}
    lines += ["| LoRA update | sum of per-module Frobenius norms of the change in scale·BA | rel. change of A | "
              "rel. change of B |", "|---|---|---|---|"]
    for s in STAGES:
        size = update_size(outputs[s], starts[s])
        lines.append(f"| {s} | {size['delta']:.4f} | {size['rel_A']:.4f} | {size['rel_B']:.4f} |")
    lines.append("")

    problems = [Problem.from_dict(f) for f in read_jsonl(entry / stage3.FAILURES)]
    label = cfg.data.answer_label
    sets = {"(a) rewrite prompts (paper's stage 3)": stage3.build_rows(problems, label, prompt="rewrite"),
            "(b) eval prompts of the mined problems": stage3.build_rows(problems, label, prompt="question")}
    lines += ["| prompts (stage 2 → stage 3, greedy) | n | outputs that differ | won / lost | accuracy % | "
              "tokens |", "|---|---|---|---|---|---|"]
    for name, rows in sets.items():
        texts = [r["prompt"] for r in rows]
        scored = [score_generations(problems, greedy(cfg, outputs[s], texts, cache), answer_label=label)[1]
                  for s in ("stage2", "stage3")]
        lines.append(compare_rows(name, *scored))
    evals = [read_jsonl(rundir.eval_dir(run_dir, s) / rundir.GENERATIONS) for s in ("stage2", "stage3")]
    lines.append(compare_rows(f"(c) {cfg.eval.split} evaluation", *evals))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with stages 2 and 3 done and evaluated")
    parser.add_argument("--out", type=Path, default=Path("runs/s3diag"), help="cache of the greedy generations")
    args = parser.parse_args()
    for run_dir in args.runs:
        print("\n".join(diagnose(run_dir, args.out)) + "\n", flush=True)


if __name__ == "__main__":
    main()
