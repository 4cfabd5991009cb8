"""Sampling speed on the CPU, side by side in one run: the GRPO generation call as TRL 1.14.2 makes it on the hf
backend, and the recipe's greedy evaluation, each as shipped and with the candidate speed-ups; beside the compute
limit of this core.

Run from the repository root, alone on the machine if you can (it prints the load average and the CPU):
``OMP_NUM_THREADS=1 taskset -c 1 python bench/sampling.py --quick [--adapter runs/X/stage2/model]``.

**GRPO call.** TRL's ``_generate_single_turn`` (grpo_trainer.py, "Regular generation path") left-pads the
tokenised prompts (``processing_class(text=prompts)``, each prompt ``num_generations`` times in a row, as its
``RepeatSampler`` yields them) and calls ``unwrapped_model.generate(**inputs, generation_config=...)`` on the
``PeftModel`` in train mode under ``torch.no_grad()``; the config is built in ``GRPOTrainer.__init__`` from the
``GRPOConfig`` (sampling at ``temperature``/``top_p``/``top_k``, ``disable_compile=True``). With ``bf16=True`` on the
CPU that call runs in float32: accelerate's autocast wraps ``PeftModel.forward``, and ``generate`` never calls it
(checked on a built trainer: no autocast inside ``generate``). Prompts: stage 2's rows (:func:`recipe.train.stage2.
build_rows`, the proof preset's ``question_only_share``) of GSM8K train problems; shapes: ``--groups`` x
``num_generations`` rows, ``max_completion_length`` new tokens.

**Evaluation.** :func:`recipe.models.generation.generate` as :func:`recipe.eval.evaluate.generate_and_score` calls it
(greedy, the paper prompt and stop rule, batched, finished rows pruned), the model in eval mode, on GSM8K test
problems.

Arms (each timed ``--repeats`` times, interleaved, median): as shipped (transformers' ``sdpa`` attention, which copies
the grouped key/value heads at every step); LoRA merged into the weights for the call
(:func:`merged_lora`); + the duplicated prompts prefilled once (GRPO); + finished rows dropped from the batch
(GRPO, :func:`generate_pruned`); + the grouped key/value heads read in place (:mod:`recipe.models.speedups`, what
``model.load`` now sets on the CPU); + a KV cache with room for the call's new tokens, written in place
(:func:`recipe.models.speedups.cache_with_room`; the arms before it run transformers' ``DynamicCache``, which copies
the whole cache at every step); a static KV cache, eager and compiled
(``torch.compile`` through transformers' ``CompileConfig``; compile time counted apart); eager attention instead of
SDPA and other batch sizes (evaluation); bfloat16 weights (a short call: bfloat16 matmuls are slow on a CPU without
native bfloat16, see the matmul table). Identity: evaluation arms must write the same tokens; GRPO arms are compared
on their per-step logits while every row's prefix is still the same (max abs diff, argmax agreement) and on the ids
sampled under the same seed.

Compute limit: float32 GFLOP/s of this core through the model's own linear weights at the call's row counts, against
the FLOPs of the call's tokens (2 x linear parameters per token, the LM head only where logits are computed).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model
from transformers import CompileConfig, DynamicCache, GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.config import core as config_mod  # noqa: E402
from recipe.data.gsm8k import load_gsm8k  # noqa: E402
from recipe.eval.evaluate import build_prompt  # noqa: E402
from recipe.models import hf_generation  # noqa: E402
from recipe.models import model as model_mod  # noqa: E402
from recipe.models import speedups as gqa  # noqa: E402
from recipe.models.generation import STOP_TEXTS, generate  # noqa: E402
from recipe.models.speedups import generate_pruned, generate_shared_prefill, merged_lora  # noqa: E402
from recipe.train import stage2  # noqa: E402
from recipe.train.grpo import grpo_args  # noqa: E402

GSM8K = str(Path(__file__).resolve().parents[2] / "shared/data/gsm8k")  # ../shared beside the checkout


# --------------------------------------------------------------------------------------------------------------------
# Machine and compute limit
# --------------------------------------------------------------------------------------------------------------------


def machine() -> str:
    name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), []))
    isa = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    return (f"CPU {name} ({isa}); torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
            f"load average {os.getloadavg()[0]:.1f} at start")


def linear_weights(model) -> list[torch.Tensor]:
    """The base weights every token goes through, in order (LoRA factors excluded), and the LM head last."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    weights = [m.weight for name, m in base.named_modules()
               if isinstance(m, torch.nn.Linear) and "lora_" not in name and name != "lm_head"
               and not hasattr(m, "base_layer")]
    return weights + [base.lm_head.weight]


def gflops_through(weights: list[torch.Tensor], rows: int, dtype: torch.dtype, repeats: int = 2) -> float:
    """GFLOP/s of ``F.linear`` over ``weights`` (each a model matrix, so they stream from memory as in a forward) at
    ``rows`` rows; the best of ``repeats`` passes."""
    ws = [w.detach().to(dtype) for w in weights]
    xs = {w.shape[1]: torch.randn(rows, w.shape[1]).to(dtype) for w in ws}
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w in ws)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for w in ws:
            torch.nn.functional.linear(xs[w.shape[1]], w)
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def compute_limit(model, decode_rows: list[int], prefill_rows: int) -> dict:
    weights = linear_weights(model)
    per_token = 2 * sum(w.numel() for w in weights[:-1])
    head = 2 * weights[-1].numel()
    print(f"\nCompute limit: {per_token / 1e6:.0f} MFLOP per token in the layers + {head / 1e6:.0f} MFLOP in the LM "
          f"head (where logits are computed); weights {sum(w.numel() for w in weights) * 4 / 1e9:.2f} GB float32")
    print("  F.linear through the model's own weights, GFLOP/s of this core (layers / LM head):")
    out = {}
    for rows in [*decode_rows, prefill_rows]:
        row = {}
        for dtype in (torch.float32, torch.bfloat16):
            if dtype == torch.bfloat16 and rows == prefill_rows:
                prefill_bf16 = gflops_through(weights[:7], rows, dtype, repeats=1)  # one layer: bf16 is slow here
                row[dtype] = (prefill_bf16, float("nan"))
                continue
            row[dtype] = (gflops_through(weights[:-1], rows, dtype), gflops_through(weights[-1:], rows, dtype))
        out[rows] = row
        f32, b16 = row[torch.float32], row[torch.bfloat16]
        print(f"    {rows:>5} rows: float32 {f32[0]:6.1f} / {f32[1]:6.1f}   bfloat16 {b16[0]:6.1f} / {b16[1]:6.1f}   "
              f"(bf16 is {b16[0] / f32[0]:.2f}x float32 in the layers)")
    cast = time.perf_counter()
    for w in weights:
        w.detach().to(torch.bfloat16)
    cast = time.perf_counter() - cast
    print(f"  casting every weight to bfloat16 (what autocast does at every forward): {1000 * cast:.0f} ms")
    return {"per_token": per_token, "head": head, "gflops": out}


# --------------------------------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------------------------------


def load_policy(cfg, adapter: str | None, seed: int):
    """The policy GRPO samples from: the proof preset's model with a LoRA (``adapter``, or a fresh one whose B
    factors are drawn from N(0, 0.02) so that merging changes the weights, as a trained adapter's would)."""
    model, tokenizer = model_mod.load(cfg.model, init_from=adapter, trainable=True, seed=seed)
    if not isinstance(model, PeftModel):
        model = get_peft_model(model, model_mod.lora_config(cfg.model))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.02, generator=gen)
    return model, tokenizer


def trl_generation_config(args, tokenizer, eos_ids: list[int], **override) -> GenerationConfig:
    """The config ``GRPOTrainer.__init__`` builds for the regular generation path (grpo_trainer.py, the ``else``
    branch after the vLLM setup), from the run's ``GRPOConfig``."""
    kwargs = {"max_new_tokens": args.max_completion_length, "do_sample": True,
              "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": eos_ids, "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
              "min_p": args.min_p, "repetition_penalty": args.repetition_penalty,
              "cache_implementation": args.cache_implementation}
    if args.generation_kwargs is not None:
        kwargs.update(args.generation_kwargs)
    disable_compile = override.pop("disable_compile", True)
    kwargs.update(override)
    return GenerationConfig(**kwargs, disable_compile=disable_compile)


def grpo_inputs(cfg, tokenizer, groups: int, num_generations: int, seed: int) -> dict:
    problems, _ = load_gsm8k(GSM8K, "train")
    rows = stage2.build_rows(problems[:groups], seed=seed, answer_label=cfg.data.answer_label,
                             question_only_share=cfg.stage2.question_only_share)
    ids = tokenizer(text=[r["prompt"] for r in rows for _ in range(num_generations)])["input_ids"]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):  # left padding, as trl.trainer.utils.pad(..., padding_side="left")
        input_ids[i, width - len(x):] = torch.tensor(x)
        mask[i, width - len(x):] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


# --------------------------------------------------------------------------------------------------------------------
# Arms
# --------------------------------------------------------------------------------------------------------------------


def shared_prefill_generate(model, input_ids, attention_mask, generation_config):
    """``model.generate`` with each distinct prompt prefilled once, through the module generate's steps run
    (:func:`recipe.models.speedups.generate_shared_prefill`: the fallback of :func:`recipe.models.speedups.fast_generate`
    for a call the pruned loop does not cover)."""
    return generate_shared_prefill(model.generate, model.get_base_model(), input_ids=input_ids,
                                   attention_mask=attention_mask, generation_config=generation_config)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def time_arms(arms: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, list[float]], dict]:
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    outputs: dict[str, list] = {name: [] for name in arms}
    for r in range(repeats):
        for name, call in arms.items():
            start = time.perf_counter()
            out = call()
            seconds[name].append(time.perf_counter() - start)
            outputs[name].append(out)
            print(f"    repeat {r + 1} {name:<34} {seconds[name][-1]:7.1f} s", flush=True)
    return seconds, outputs


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The first generated position where two id rows differ (None: same)."""
    n = min(len(a), len(b))
    diff = (a[:n] != b[:n]).nonzero()
    if len(diff):
        return int(diff[0])
    return None if len(a) == len(b) else n


def grpo_section(cfg, model, tokenizer, args) -> None:
    trl_args = grpo_args(cfg, "stage2", "/tmp/sampling-bench-unused")
    trl_args.max_completion_length = args.max_new_tokens or trl_args.max_completion_length
    eos = [tokenizer.eos_token_id]
    inputs = grpo_inputs(cfg, tokenizer, args.groups, trl_args.num_generations, cfg.run.seed)
    rows, width = inputs["input_ids"].shape
    shipped = trl_generation_config(trl_args, tokenizer, eos)
    static = trl_generation_config(trl_args, tokenizer, eos, cache_implementation="static")
    compile_config = CompileConfig(fullgraph=False, dynamic=False, mode="default")
    compile_config._compile_all_devices = True  # transformers compiles on CUDA/XPU only unless told (private flag)
    compiled = trl_generation_config(trl_args, tokenizer, eos, cache_implementation="static",
                                     compile_config=compile_config, disable_compile=False)
    print(f"\nGRPO generation call: {rows} rows ({args.groups} prompts x {trl_args.num_generations}), prompts padded "
          f"to {width} tokens ({int(inputs['attention_mask'].sum())} real), max_new_tokens "
          f"{trl_args.max_completion_length}, temperature {trl_args.temperature}, top_p {trl_args.top_p}, "
          f"top_k {trl_args.top_k}; PeftModel in train mode, float32")
    model.train()

    def call(config, merged=False, shared=False, pruned=False, attention="sdpa", room=False):
        def run():
            torch.manual_seed(args.seed)
            with torch.no_grad(), merged_lora(model) if merged else contextlib.nullcontext(), \
                    attention_as(model, attention), contextlib.nullcontext() if room else dynamic_cache():
                if pruned:
                    return generate_pruned(model.get_base_model(), **inputs, generation_config=config)
                if shared:
                    return shared_prefill_generate(model, **inputs, generation_config=config)
                return model.generate(**inputs, generation_config=config)
        return run

    arms = {"as shipped (TRL's call)": call(shipped),
            "LoRA merged for the call": call(shipped, merged=True),
            "merged + prompts prefilled once": call(shipped, merged=True, shared=True),
            "merged + prefilled once + pruned": call(shipped, merged=True, pruned=True),
            "+ grouped KV heads read in place": call(shipped, merged=True, pruned=True, attention=gqa.NAME),
            "+ KV cache with room": call(shipped, merged=True, pruned=True, attention=gqa.NAME, room=True),
            "merged + static cache (eager)": call(static, merged=True)}
    compile_s = None
    if args.compile:
        start = time.perf_counter()
        call(compiled, merged=True)()  # the first call compiles
        compile_s = time.perf_counter() - start
        arms["merged + static cache + compile"] = call(compiled, merged=True)
    seconds, outputs = time_arms(arms, args.repeats)
    reference = outputs["as shipped (TRL's call)"][0][:, width:]
    new_tokens = int((~torch.isin(reference, torch.tensor(eos + [tokenizer.pad_token_id]))).sum())
    steps = reference.shape[1]
    baseline = median(seconds["as shipped (TRL's call)"])
    print(f"\n  GRPO call, median of {args.repeats} (same seed, same prompts, {steps} decode steps run, "
          f"{new_tokens} completion tokens kept: {100 * (1 - new_tokens / (steps * rows)):.0f} % of the {steps * rows} "
          f"row-steps decode rows that already ended):")
    print(f"    {'arm':<34} {'median s':>9} {'speed-up':>9} {'same sampled rows':>18}  first difference")
    for name in arms:
        out = outputs[name][0][:, width:]
        same = sum(first_difference(a, b) is None for a, b in zip(reference, out))
        firsts = [first_difference(a, b) for a, b in zip(reference, out)]
        first = min((f for f in firsts if f is not None), default=None)
        print(f"    {name:<34} {median(seconds[name]):9.1f} {baseline / median(seconds[name]):8.2f}x "
              f"{same:>12}/{rows:<5}  {'-' if first is None else f'token {first}'}")
    if compile_s is not None:
        steady = median(seconds["merged + static cache + compile"])
        saved = median(seconds["merged + static cache (eager)"]) - steady
        payback = f"pays back after {compile_s / saved:.0f} calls" if saved > 0 else "never pays back (not faster)"
        print(f"    compile: first call {compile_s:.1f} s (compile + run); {payback}")
    grpo_logits_identity(model, tokenizer, inputs, trl_args, eos, args)
    grpo_bf16(model, tokenizer, inputs, trl_args, eos, args)
    limit = getattr(args, "limit_info", None)
    if limit:
        prompt_tokens = int(inputs["attention_mask"].sum())
        gf = limit["gflops"]
        f32_decode = gf[rows][torch.float32]
        f32_prefill = gf[max(gf)][torch.float32]
        work = (prompt_tokens * limit["per_token"] / f32_prefill[0]
                + new_tokens * (limit["per_token"] / f32_decode[0] + limit["head"] / f32_decode[1])) / 1e9
        print(f"    compute limit for this call's tokens ({prompt_tokens} prompt + {new_tokens} completion) at this "
              f"core's measured float32 rate: {work:.1f} s; as shipped is {baseline / work:.1f}x that")


def grpo_profile(cfg, model, tokenizer, args) -> None:
    """Where the call as shipped (merged, prefilled once, pruned, grouped heads, cache with room) spends its CPU time:
    one call under torch.profiler, each op's self time and share."""
    from torch.profiler import ProfilerActivity, profile

    trl_args = grpo_args(cfg, "stage2", "/tmp/sampling-bench-unused")
    trl_args.max_completion_length = args.max_new_tokens or trl_args.max_completion_length
    inputs = grpo_inputs(cfg, tokenizer, args.groups, trl_args.num_generations, cfg.run.seed)
    config = trl_generation_config(trl_args, tokenizer, [tokenizer.eos_token_id])
    model.train()

    def run():
        torch.manual_seed(args.seed)
        with torch.no_grad(), merged_lora(model), attention_as(model, gqa.NAME):
            return generate_pruned(model.get_base_model(), **inputs, generation_config=config)

    run()  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    print(f"\nGRPO call as shipped, profiled ({inputs['input_ids'].shape[0]} rows, "
          f"{trl_args.max_completion_length} new tokens): {wall:.1f} s wall, {total:.1f} s of op self time")
    for e in ops[:12]:
        print(f"    {e.key[:48]:<48} {e.self_cpu_time_total / 1e6:7.2f} s {100 * e.self_cpu_time_total / 1e6 / total:5.1f} % "
              f"{e.count:7d} calls")


def grpo_logits_identity(model, tokenizer, inputs, trl_args, eos, args) -> None:
    """Per-step logits of each GRPO arm on the same prefixes (a short call, every step's logits kept)."""
    config = trl_generation_config(trl_args, tokenizer, eos, max_new_tokens=args.identity_tokens,
                                   output_logits=True, return_dict_in_generate=True)

    def logits(merged: bool, shared: bool = False, cache: str | None = None):
        cfg = copy.deepcopy(config)
        cfg.cache_implementation = cache
        torch.manual_seed(args.seed)
        with torch.no_grad(), merged_lora(model) if merged else contextlib.nullcontext():
            out = (shared_prefill_generate(model, **inputs, generation_config=cfg) if shared
                   else model.generate(**inputs, generation_config=cfg))
        return out.sequences[:, inputs["input_ids"].shape[1]:], torch.stack(out.logits, 1)

    ref_ids, ref_logits = logits(False)
    print(f"\n  GRPO identity on {args.identity_tokens} sampled steps (per-step logits while all rows' prefixes agree):")
    for name, kw in (("LoRA merged", {"merged": True}), ("merged + prefilled once", {"merged": True, "shared": True}),
                     ("merged + static cache", {"merged": True, "cache": "static"})):
        ids, lg = logits(**kw)
        firsts = [first_difference(a, b) for a, b in zip(ref_ids, ids)]
        agree_steps = min((f for f in firsts if f is not None), default=ids.shape[1])
        n = min(agree_steps + 1, lg.shape[1], ref_logits.shape[1])  # the step that differs saw the same prefix
        diff = (lg[:, :n] - ref_logits[:, :n]).abs().max().item()
        argmax = (lg[:, :n].argmax(-1) == ref_logits[:, :n].argmax(-1)).float().mean().item()
        print(f"    {name:<26} max |logit diff| {diff:.2e} over {n} steps, argmax agreement {100 * argmax:.2f} %, "
              f"sampled ids identical {sum(f is None for f in firsts)}/{len(firsts)} rows")


def grpo_bf16(model, tokenizer, inputs, trl_args, eos, args) -> None:
    """bfloat16 weights for generation only: a bfloat16 copy of the merged model, a short call against float32."""
    config = trl_generation_config(trl_args, tokenizer, eos, max_new_tokens=args.bf16_tokens)
    with torch.no_grad(), merged_lora(model):
        half = copy.deepcopy(model.get_base_model()).to(torch.bfloat16)
        f32 = model.get_base_model()
        times = {}
        for name, target in (("float32 (merged)", f32), ("bfloat16 copy", half)):
            torch.manual_seed(args.seed)
            start = time.perf_counter()
            target.generate(**inputs, generation_config=config)
            times[name] = time.perf_counter() - start
    del half
    print(f"\n  bfloat16 weights for generation ({args.bf16_tokens} new tokens): float32 {times['float32 (merged)']:.1f} s, "
          f"bfloat16 {times['bfloat16 copy']:.1f} s ({times['float32 (merged)'] / times['bfloat16 copy']:.2f}x)")


def eval_section(cfg, model, tokenizer, args) -> None:
    problems, _ = load_gsm8k(GSM8K, "test")
    texts = [build_prompt(p.question, cfg.eval.prompt, cfg.data.answer_label, tokenizer) for p in problems[:args.eval_n]]
    model.eval()
    max_new = args.eval_max_new_tokens or cfg.eval.max_new_tokens

    def call(batch: int, merged: bool = False, attention: str = "sdpa", room: bool = False):
        def run():
            with contextlib.ExitStack() as stack:
                if merged:
                    stack.enter_context(merged_lora(model))
                stack.enter_context(attention_as(model, attention))
                if not room:
                    stack.enter_context(dynamic_cache())
                out = generate(model, tokenizer, texts, max_new_tokens=max_new, batch_size=batch, temperature=0.0,
                               seed=args.seed, stop_texts=STOP_TEXTS, answer_label=cfg.data.answer_label,
                               stop_rule="paper")
            return [g[0] for g in out]
        return run

    batch = cfg.eval.batch_size
    arms = {f"as shipped (batch {batch})": call(batch),
            "LoRA merged for the call": call(batch, merged=True),
            "merged + eager attention": call(batch, merged=True, attention="eager"),
            "merged + grouped KV heads in place": call(batch, merged=True, attention=gqa.NAME),
            "+ KV cache with room": call(batch, merged=True, attention=gqa.NAME, room=True)}
    for other in args.eval_batches:
        arms[f"merged, batch {other}"] = call(other, merged=True)
    print(f"\nEvaluation: {len(texts)} GSM8K test problems, greedy, pruned, max_new_tokens {max_new}, "
          f"prompt '{cfg.eval.prompt}', paper stop rule; model in eval mode")
    seconds, outputs = time_arms(arms, args.repeats)
    names = list(arms)
    reference = outputs[names[0]][0]
    baseline = median(seconds[names[0]])
    print(f"\n  evaluation, median of {args.repeats} ({sum(g.n_tokens for g in reference)} generated tokens):")
    print(f"    {'arm':<34} {'median s':>9} {'speed-up':>9} {'identical rows':>15}")
    for name in names:
        out = outputs[name][0]
        same = [(a.raw, a.n_tokens, a.truncated) == (b.raw, b.n_tokens, b.truncated) for a, b in zip(reference, out)]
        print(f"    {name:<34} {median(seconds[name]):9.1f} {baseline / median(seconds[name]):8.2f}x "
              f"{sum(same):>9}/{len(same):<5}" + ("" if all(same) else f"  differ: rows {[i for i, s in enumerate(same) if not s][:8]}"))


@contextlib.contextmanager
def dynamic_cache():
    """The decoding loops of :mod:`recipe.models.speedups` and :mod:`recipe.models.hf_generation` on transformers' own
    ``DynamicCache`` (``torch.cat`` of the whole cache at every step), as before :func:`cache_with_room`."""
    saved = gqa.cache_with_room, hf_generation.cache_with_room
    plain = lambda model, room: DynamicCache(config=getattr(model, "config", None))  # noqa: E731
    gqa.cache_with_room = hf_generation.cache_with_room = plain
    try:
        yield
    finally:
        gqa.cache_with_room, hf_generation.cache_with_room = saved


@contextlib.contextmanager
def attention_as(model, implementation: str):
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    before = base.config._attn_implementation
    base.set_attn_implementation(implementation)
    try:
        yield
    finally:
        base.set_attn_implementation(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default=None, help="a LoRA adapter folder (default: a fresh LoRA, B ~ N(0, 0.02))")
    parser.add_argument("--quick", action="store_true", help="GRPO 64 new tokens, 16 evaluation problems at 96 (about 10 min on an idle core)")
    parser.add_argument("--groups", type=int, default=4, help="GRPO prompts per call (x num_generations rows)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="GRPO cap (default: the preset's)")
    parser.add_argument("--eval-n", type=int, default=50)
    parser.add_argument("--eval-max-new-tokens", type=int, default=0, help="default: the preset's eval cap")
    parser.add_argument("--eval-batches", type=int, nargs="*", default=[250])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--identity-tokens", type=int, default=24)
    parser.add_argument("--bf16-tokens", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="add the compiled static-cache arm (slow to compile)")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-grpo", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--profile", action="store_true", help="only profile the GRPO call as shipped (torch.profiler)")
    args = parser.parse_args()
    if args.quick:
        args.max_new_tokens = args.max_new_tokens or 64
        args.eval_n, args.eval_max_new_tokens, args.eval_batches = 16, args.eval_max_new_tokens or 96, [8]
    print(machine())
    print(subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1]).stdout.strip(), " ".join(sys.argv))
    cfg = config_mod.resolve(preset="proof")
    model, tokenizer = load_policy(cfg, args.adapter, cfg.run.seed)
    rows = args.groups * cfg.stage2.num_generations
    args.limit_info = compute_limit(model, [rows, cfg.eval.batch_size], 2048)
    if args.profile:
        grpo_profile(cfg, model, tokenizer, args)
        return
    if not args.skip_grpo:
        grpo_section(cfg, model, tokenizer, args)
    if not args.skip_eval:
        eval_section(cfg, model, tokenizer, args)


if __name__ == "__main__":
    main()
