"""The warm-up (entry ``warmup``; not in the paper, off by default): SFT of the configured base model on the teacher's
full rationales of its own slice (``data.warmup_rows``), with the LoRA merged into the weights.

The merged model then stands for the base model of the whole run (:func:`recipe.run.orchestrator.with_base`): the ``base`` row
evaluates it and every stage and baseline starts from it. The paper starts from Qwen2.5-3B-Base, a pretrained model
that already solves ~65 % of GSM8K with long (230-token) answers; a 135M model on CPU solves ~5 %, so GRPO would see
all-wrong groups and the brevity reward would never act. The warm-up builds that regime: a competent, verbose
student, from data no stage sees. Rows and trainer are the SFT baseline's (evaluation prompt -> full solution),
budget and rate from the ``warmup`` section.

A finished warm-up is kept under ``model.cache_dir`` and copied by the next run whose warm-up has the same inputs
(:mod:`recipe.train.warm_cache`): the demo pays for its warm student once per machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

from peft import PeftModel, get_peft_model

from recipe import dist
from recipe.config.core import Config
from recipe.models import model as model_mod
from recipe.train import warm_cache
from recipe.train.baseline_sft import build_rows
from recipe.train.rows import train_problems
from recipe.train.sft import train_sft
from recipe.train.trainer import fingerprint_rows

log = logging.getLogger("recipe")


def run(cfg: Config, entry_dir: Path, init_from: str | None = None) -> dict:
    rows = build_rows(train_problems(cfg, "warmup"), cfg.data.answer_label)
    cache_key = warm_cache.key(cfg, fingerprint_rows(rows))
    cacheable = init_from is None and dist.world_size() == 1  # the key holds neither other weights nor ranks
    cached = warm_cache.restore(cfg, cache_key, entry_dir) if cacheable else None
    if cached is not None:
        return cached
    log.info("warm-up: SFT on %d full teacher rationales (max_steps=%d, lr %g), merged into the base weights",
             len(rows), cfg.warmup.max_steps, cfg.warmup.learning_rate)
    if model_mod.prepare_backend(cfg.model) == "unsloth":
        raise model_mod.ModelError("warmup.enabled merges a LoRA into the base weights, which 4-bit Unsloth weights cannot "
                         "hold exactly; the warm-up is for the hf backend (set model.backend=hf or warmup.enabled=false)")
    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=True, seed=cfg.run.seed,
                                      vllm_cfg=cfg.vllm)
    if cfg.model.use_lora and not isinstance(model, PeftModel):  # wrap here (as the trainer would) to keep a handle for the merge
        model = get_peft_model(model, model_mod.lora_config(cfg.model))
    result = train_sft(cfg, model, tokenizer, rows, entry_dir, section="warmup")
    merged = entry_dir / warm_cache.MERGED_DIR
    if dist.is_main():
        # the trained PeftModel is still in memory: fold the LoRA into the weights (exact in float32)
        model_mod.save(model.merge_and_unload() if isinstance(model, PeftModel) else model, tokenizer, merged)
    dist.barrier()
    record = {**result, "adapter": result["output"], "output": str(merged)}
    if cacheable:
        warm_cache.store(cfg, cache_key, entry_dir, record)
    return record
