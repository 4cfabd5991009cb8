"""Measure the peak CUDA memory of LoRA training steps on the hf path and compare with ``recipe.tools.plan``'s estimate.

Random-weight Qwen2.5-1.5B / -3B (dimensions from recipe/model_configs, nothing downloaded), bfloat16, SDPA
attention, torch AdamW. SFT: labels on every token (transformers' loss). GRPO-like: logits of the completion only
(``logits_to_keep``), fp32 log-softmax of the sampled tokens. Two steps each; ``max_memory_allocated`` is compared
with the estimate minus the CUDA context and allocator terms (which ``allocated`` does not see).

    python bench/plan_memory.py        # needs a CUDA GPU with >= 24 GiB
"""

import json

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Qwen2Config

try:
    from recipe.tools import plan
except ImportError:  # measuring only (an older checkout)
    plan = None

GIB = 2**30
T4 = ("q_proj", "k_proj", "v_proj", "o_proj")
T7 = T4 + ("gate_proj", "up_proj", "down_proj")
CASES = [  # targets, r, gradient checkpointing, kind, batch, prompt, completion
    (T4, 16, True, "sft", 2, 1024, 0), (T7, 32, True, "sft", 4, 1024, 0), (T7, 32, False, "sft", 2, 512, 0),
    (T7, 32, True, "grpo", 6, 320, 384), (T4, 16, True, "grpo", 8, 256, 512)]
CONFIGS = {"Qwen2.5-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                num_attention_heads=12, num_key_value_heads=2),
           "Qwen2.5-3B": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                              num_attention_heads=16, num_key_value_heads=2)}


def step(model, kind, ids, completion):
    if kind == "sft":
        loss = model(input_ids=ids, labels=ids).loss
    else:
        logits = model(input_ids=ids, logits_to_keep=completion + 1).logits[:, :-1].float()
        loss = -torch.log_softmax(logits, -1).gather(-1, ids[:, -completion:, None]).mean()
    loss.backward()


def main():
    for name, dims in CONFIGS.items():
        config = Qwen2Config(vocab_size=151936, tie_word_embeddings=True, **dims)
        base = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
        for targets, r, ckpt, kind, batch, prompt, completion in CASES:
            model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets)))
            if ckpt:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                model.enable_input_require_grads()
            model.train()
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
            ids = torch.randint(0, config.vocab_size, (batch, prompt + completion), device="cuda")
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            for _ in range(2):
                step(model, kind, ids, completion)
                opt.step()
                opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            row = {"model": name, "kind": kind, "r": r, "targets": len(targets), "ckpt": ckpt, "batch": batch,
                   "prompt": prompt, "completion": completion,
                   "allocated": round(torch.cuda.max_memory_allocated() / GIB, 2),
                   "reserved": round(torch.cuda.max_memory_reserved() / GIB, 2)}
            if plan is not None:
                setup = plan.Setup(False, 2, r, targets, True, ckpt, False, False, 0.5)
                est = plan.estimate_memory(plan.model_dims(name), setup,
                                           plan.Workload(kind, batch, prompt, completion, batch), 139, "adamw_torch")
                row["estimate"] = round(sum(v for k, v in est.items()
                                            if k not in ("cuda context", "allocator overhead")), 2)
            print(json.dumps(row), flush=True)
            if ckpt:
                model.gradient_checkpointing_disable()
            base = model.unload()
            del model, opt, ids
            torch.cuda.empty_cache()
        del base
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
