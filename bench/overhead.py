"""Recipe overhead: a stage-2 GRPO run through ``recipe.train.stage2`` vs a bare TRL GRPOTrainer script.

Same tiny model, same prompts, same reward, same GRPO settings, in one process, alternating A/B/A/B so machine noise
hits both. Prints seconds per GRPO step for each and the ratio (target: recipe / bare <= 1.05), and the whole-stage
wall time (model load, data, save included) for information.

    python bench/overhead.py [--steps 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from recipe.config import core as C
from recipe.data import gsm8k as data_mod
from recipe.models import model as model_mod
from recipe.rewards import build_reward
from recipe.run import orchestrator as run_mod
from recipe.store import rundir
from recipe.train import stage2


def recipe_cfg(root: Path, steps: int, tag: str) -> C.Config:
    return C.resolve(preset="smoke", overrides=[
        f"model.cache_dir={root / 'cache'}", f"run.output_dir={root / tag}", "eval.enabled=false",
        f"stage2.max_steps={steps}", f"stage2.save_steps={steps}", "stage2.log_completions=false",
        "stage2.max_completion_length=32", "stage2.num_generations=4", "stage2.per_device_train_batch_size=4",
    ])


def run_recipe(root: Path, steps: int, tag: str) -> tuple[float, float]:
    cfg = recipe_cfg(root, steps, tag)
    t0 = time.perf_counter()
    run_mod.run_one(cfg, "stage2")
    wall = time.perf_counter() - t0
    entry = rundir.load_manifest(root / tag)["entries"]["stage2"]
    return entry["metrics"]["train_runtime_s"] / steps, wall


def run_bare(root: Path, steps: int, tag: str) -> tuple[float, float]:
    """What a user would write by hand with TRL: same model, rows, reward and settings."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    cfg = recipe_cfg(root, steps, tag)
    t0 = time.perf_counter()
    path = model_mod.resolve_model_path(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    problems, _ = data_mod.load_gsm8k(cfg.data.source, split="train")
    rows = stage2.build_rows(problems[slice(*cfg.data.stage2_rows)], seed=cfg.run.seed)
    args = GRPOConfig(
        output_dir=str(root / tag), learning_rate=cfg.stage2.learning_rate, max_steps=steps, save_steps=steps,
        per_device_train_batch_size=4, num_generations=4, max_completion_length=32, logging_steps=1,
        use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none", seed=cfg.run.seed,
        temperature=cfg.stage2.temperature,
        beta=cfg.stage2.beta, epsilon=cfg.stage2.epsilon, loss_type=cfg.stage2.loss_type, remove_unused_columns=False,
    )
    lora = LoraConfig(r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, lora_dropout=cfg.model.lora_dropout,
                      target_modules=cfg.model.lora_target_modules, task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=[build_reward("gated_brevity")], args=args,
                          train_dataset=data_mod.to_dataset(rows), processing_class=tokenizer, peft_config=lora)
    out = trainer.train()
    trainer.save_model(str(root / tag / "final"))
    wall = time.perf_counter() - t0
    return out.metrics["train_runtime"] / steps, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = Path(tempfile.mkdtemp(prefix="cotrecipe-bench-"))
    run_recipe(root, 2, "warmup")  # builds the tiny model, warms caches and imports
    bare, recipe, bare_wall, recipe_wall = [], [], [], []
    for i in range(args.repeats):
        s, w = run_bare(root, args.steps, f"bare{i}")
        bare.append(s)
        bare_wall.append(w)
        s, w = run_recipe(root, args.steps, f"recipe{i}")
        recipe.append(s)
        recipe_wall.append(w)
    b, r = statistics.median(bare), statistics.median(recipe)
    print(f"GRPO step, bare TRL : {b * 1000:8.1f} ms   (runs: {', '.join(f'{x * 1000:.1f}' for x in bare)})")
    print(f"GRPO step, recipe   : {r * 1000:8.1f} ms   (runs: {', '.join(f'{x * 1000:.1f}' for x in recipe)})")
    print(f"ratio recipe / bare : {r / b:8.3f}   target <= 1.05  -> {'OK' if r / b <= 1.05 else 'MISSED'}")
    bw, rw = statistics.median(bare_wall), statistics.median(recipe_wall)
    print(f"whole stage wall    : bare {bw:.2f} s, recipe {rw:.2f} s (ratio {rw / bw:.3f}; includes load/data/save)")


if __name__ == "__main__":
    main()
