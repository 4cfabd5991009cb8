"""``cotrecipe plan``'s time estimate: hours per stage from the work a config asks for, at a card's assumed rates.

The work is counted from the config (rows of each slice of GSM8K's 7,473 train / 1,319 test problems, optimizer steps,
completions, tokens); every generated row is taken to run to its token cap, so the figures are upper bounds for
generation. The rates are assumptions, not measurements (nothing here has run on a T4):

- decoding one step of ``n`` sequences reads every weight once and does ``2 x params x n`` FLOPs: the slower of the
  two at the card's usable bandwidth and compute, plus a fixed per-step overhead (vLLM's scheduler, or HF
  ``generate``'s Python loop, which is much larger);
- vLLM runs as many sequences at once as its KV block holds (at most 256, its default ``max_num_seqs``); HF
  ``generate`` runs ``batch_size`` at a time;
- training a token costs ``6 x params`` FLOPs (forward, input gradients, and the recomputed forward of gradient
  checkpointing; LoRA's own weight gradients are negligible).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recipe.config.core import Config
from recipe.models.devices import EVAL, uses_vllm
from recipe.tools.plan import GIB, PROMPT_TOKENS, ModelDims, Setup, setup_from_config

GSM8K_ROWS = {"train": 7473, "test": 1319}
VLLM_MAX_SEQS = 256
SFT_TOKENS = 448  # a stage-1 row: its prompt (PROMPT_TOKENS' size) plus the teacher's solution, rounded up
T4_GIB = 14.74  # as recipe.tools.plan.CARDS


@dataclass(frozen=True)
class Rates:
    label: str
    bandwidth: float  # usable bytes/s
    flops: float  # usable fp16 FLOP/s
    vllm_step_s: float  # fixed overhead per decode step
    hf_step_s: float


T4 = Rates("T4 (assumed: 60% of 320 GB/s, 30% of 65 fp16 TFLOPS, 5 ms per vLLM step, 40 ms per HF generate step)",
           0.6 * 320e9, 0.3 * 65e12, 0.005, 0.040)


def _rows(span: list[int], split: str = "train") -> int:
    start, end = span
    return max((GSM8K_ROWS[split] if end == -1 else end) - start, 0)


def weight_bytes(d: ModelDims, s: Setup) -> float:
    linear = d.layers * sum(a * b for a, b in d.module_shapes().values())
    embed = d.vocab * d.hidden * (1 if d.tied else 2)
    return linear * 4.127 / 8 + embed * 2 if s.four_bit else (linear + embed) * s.weight_bytes


def decode_seconds(d: ModelDims, s: Setup, r: Rates, n_seqs: int, prompt: int, new: int, batch: int,
                   gpu_gib: float, vllm: bool, all_at_once: bool = True) -> float:
    """``n_seqs`` sequences of ``new`` tokens each, ``batch`` at a time; with vLLM and ``all_at_once`` (evaluation,
    mining: every prompt in one call) as many as its KV block holds. GRPO generates one batch per step."""
    if n_seqs <= 0:
        return 0.0
    if vllm and all_at_once:
        kv_token = 2 * d.layers * d.kv_heads * d.head_dim * 2
        free = s.gpu_util * gpu_gib * GIB - weight_bytes(d, s) - GIB
        batch = max(1, min(VLLM_MAX_SEQS, int(free // (kv_token * (prompt + new))), n_seqs))
    step = max(weight_bytes(d, s) / r.bandwidth, 2 * d.n_params() * batch / r.flops)
    step += r.vllm_step_s if vllm else r.hf_step_s
    return math.ceil(n_seqs / batch) * new * step


def train_seconds(d: ModelDims, r: Rates, tokens: float) -> float:
    return 6 * d.n_params() * tokens / r.flops


def stage_hours(cfg: Config, d: ModelDims, gpu_gib: float = T4_GIB, r: Rates = T4) -> dict[str, float]:
    """Estimated hours per entry of ``run-all`` (stages, mining, each evaluation) for ``cfg``."""
    s = setup_from_config(cfg)
    vllm = uses_vllm(cfg.vllm.enabled, "unsloth" if cfg.model.backend in ("unsloth", "auto") else "hf", EVAL)  # and mining
    out: dict[str, float] = {}
    s1 = cfg.stage1
    if s1.enabled:
        rows = _rows(cfg.data.stage1_rows)
        steps = s1.max_steps if s1.max_steps > 0 else math.ceil(
            s1.num_train_epochs * rows / (s1.per_device_train_batch_size * s1.gradient_accumulation_steps))
        tokens = steps * s1.per_device_train_batch_size * s1.gradient_accumulation_steps * min(s1.max_length,
                                                                                              SFT_TOKENS)
        out["stage1"] = train_seconds(d, r, tokens)
    for name in ("stage2", "stage3"):
        st = getattr(cfg, name)
        if not st.enabled:
            continue
        prompt = PROMPT_TOKENS[name]
        if name == "stage3":
            mined = _rows(cfg.data.stage3_rows)
            mined = min(mined, st.mining_limit) if st.mining_limit > 0 else mined
            out["mining"] = decode_seconds(d, s, r, mined * st.mining_k, PROMPT_TOKENS["mining"],
                                           st.mining_max_new_tokens, st.mining_batch_size, gpu_gib, vllm)
        per_step = st.per_device_train_batch_size * st.gradient_accumulation_steps / st.num_iterations
        steps = st.max_steps if st.max_steps > 0 else math.ceil(
            st.num_train_epochs * _rows(getattr(cfg.data, f"{name}_rows")) * st.num_generations / per_step)
        generate = decode_seconds(d, s, r, round(steps * per_step), prompt, st.max_completion_length,
                                  round(per_step), gpu_gib, vllm, all_at_once=False)
        out[name] = generate + train_seconds(d, r, steps * per_step * st.num_iterations
                                             * (prompt + st.max_completion_length))
    if cfg.eval.enabled:
        n = GSM8K_ROWS["test"] if cfg.eval.limit <= 0 else min(cfg.eval.limit, GSM8K_ROWS["test"])
        each = decode_seconds(d, s, r, n, PROMPT_TOKENS["eval"], cfg.eval.max_new_tokens, cfg.eval.batch_size,
                              gpu_gib, vllm)
        for entry in cfg.eval.stages:
            out[f"eval {entry}"] = each
    return {k: v / 3600 for k, v in out.items()}


def render_hours(hours: dict[str, float], r: Rates = T4) -> str:
    """One line per entry, then the total, with the assumptions named."""
    lines = [f"time estimate on a {r.label}; every generated row at its token cap; never measured:"]
    lines += [f"  {name}: {h:.2f} h" for name, h in hours.items()]
    lines.append(f"  total: {sum(hours.values()):.1f} h")
    return "\n".join(lines)
