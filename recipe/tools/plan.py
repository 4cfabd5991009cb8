"""``cotrecipe plan``: will a config fit my GPU? A per-stage estimate of peak GPU memory, without a GPU.

The whole formula is :func:`estimate_memory`; every term there says where its number comes from. Model dimensions
come from a ``config.json`` (:func:`model_dims`): a local model folder's, the tiny builtin's, or one of the few
shipped under ``recipe/model_configs/`` (dimension fields only), so planning never downloads anything.

Stages planned (:func:`stage_workloads`): stage 1 (SFT), stage 2 and stage 3 (GRPO), stage-3 failure mining and
evaluation (batched generation). Sizes are GiB (2**30 bytes); a "15 GB" T4 is 15 GiB here, as ``nvidia-smi`` shows.
Each row is one process at its peak, stage-3 mining being stage 3's process before its trainer starts
(:mod:`recipe.tools.plan_process` says what each holds).

>>> from recipe.config.core import resolve
>>> plans = plan_config(resolve(preset="qwen2.5-3b-t4"), gpu_gib=15)
>>> all(p.fits for p in plans)
True
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from recipe.config.core import Config
from recipe.errors import PlanError
from recipe.models import model as model_mod
from recipe.models.devices import GRPO, uses_vllm
from recipe.tools.gpu_memory import gpu_total_gib
from recipe.tools.plan_inputs import read_model_config
from recipe.tools.plan_process import alive_in

GIB = 2**30
# GSM8K prompts in the recipe's frame, in tokens (assumption, Qwen/SmolLM BPE): the question (~40-120 tokens) plus
# the frame (~50) plus the stage's material (shuffled/partial steps ~100-150; stage 3 shows the whole teacher
# solution). Rounded up so the estimate errs high. Capped by model.max_seq_length minus the completion.
PROMPT_TOKENS = {"stage2": 320, "stage3": 384, "mining": 256, "eval": 192}
# Cards a verdict can name, smallest first: (label, usable GiB as torch reports it). A Colab T4 shows 14.74 GiB
# (Unsloth's Qwen2.5 (3B) GRPO notebook log: "Max memory: 14.741 GB").
# The third field: bfloat16 support (T4 is Turing: float16 only).
CARDS = (("T4 16 GB", 14.74, False), ("L4 / A10G / RTX 4090 24 GB", 22.0, True), ("A100 40 GB", 39.5, True),
         ("A100 / H100 80 GB", 79.0, True), ("H200 141 GB", 139.0, True))
# A preset whose target card is known (its description names it); others get the smallest card that fits.
PRESET_CARDS = {"qwen2.5-3b-t4": 14.74}


@dataclass(frozen=True)
class ModelDims:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int
    max_positions: int | None = None  # max_position_embeddings: the longest sequence the model takes (None: unsaid)

    @classmethod
    def from_config(cls, c: dict) -> ModelDims:
        heads = c["num_attention_heads"]
        return cls(hidden=c["hidden_size"], intermediate=c["intermediate_size"], layers=c["num_hidden_layers"],
                   heads=heads, kv_heads=c.get("num_key_value_heads") or heads, vocab=c["vocab_size"],
                   tied=bool(c.get("tie_word_embeddings", False)),
                   head_dim=c.get("head_dim") or c["hidden_size"] // heads,
                   max_positions=c.get("max_position_embeddings"))

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block (Llama/Qwen2 names)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def n_params(self) -> int:
        per_layer = sum(a * b for a, b in self.module_shapes().values())
        return self.layers * per_layer + self.vocab * self.hidden * (1 if self.tied else 2)


@dataclass
class Workload:
    """What one stage puts on the GPU at its peak."""

    kind: str  # "sft" | "grpo" | "generate"
    batch: int  # sequences in one forward/backward (training) or one generate call
    prompt: int  # prompt tokens per sequence (SFT: the whole padded sequence)
    completion: int  # generated tokens per sequence (0 for SFT)
    gen_batch: int = 0  # sequences generated at once (GRPO: per_device x steps_per_generation)


@dataclass
class Setup:
    """The model/run settings that shape memory (read from a Config by :func:`setup_from_config`)."""

    four_bit: bool
    weight_bytes: float  # 2 for 16-bit, 4 for float32
    lora_r: int
    lora_targets: tuple[str, ...]
    use_lora: bool
    grad_ckpt: bool
    unsloth: bool
    fast_inference: bool
    gpu_util: float


@dataclass
class StagePlan:
    stage: str
    terms: dict[str, float]  # name -> GiB
    total: float
    gpu_gib: float
    fits: bool
    proposals: list[str] = field(default_factory=list)
    process: str = ""  # the process this peak is in (run-all runs each in its own): alive_in says what it holds


def estimate_memory(d: ModelDims, s: Setup, w: Workload, gpu_gib: float, optim: str = "adamw_torch") -> dict[str, float]:
    """Peak GPU memory of one stage, term by term, in GiB. The single place the formula lives.

    Phases: the resident part (context, weights, vLLM block, LoRA + optimizer) plus the larger of the training
    phase (activations + logits) and the HF-generate phase (KV cache), since TRL generates, then trains.
    """
    t: dict[str, float] = {}
    # CUDA context + cuBLAS/cuDNN workspaces: ~0.3-0.6 GiB on recent drivers (typical nvidia-smi reading of an idle
    # torch process); take the high end.
    t["cuda context"] = 0.6 * GIB
    # Weights. bitsandbytes NF4 with double quantisation stores ~4.127 bits/param for the decoder's linear layers
    # (4 bits + an 8-bit absmax per 64 weights + fp32 per 256 absmaxes); embeddings and an untied lm_head stay 16-bit.
    linear = d.layers * sum(a * b for a, b in d.module_shapes().values())
    embed = d.vocab * d.hidden * (1 if d.tied else 2)
    weights = linear * 4.127 / 8 + embed * 2 if s.four_bit else (linear + embed) * s.weight_bytes
    # vLLM (vllm.enabled): it reserves gpu_memory_utilization x the card (vLLM's own rule) and holds weights, KV
    # cache and its activation profile (~1 GiB for Qwen2.5-3B on a T4 in Unsloth's GRPO notebook log) inside; its
    # CUDA graphs come on top (0.62 GiB in the same log). Unsloth shares the training weights with it (weights
    # counted in the block only); TRL's colocate mode on the hf backend loads a second, 16-bit copy. One engine per
    # process: on unsloth, stage-3 mining generates through the engine its trainer uses, and evaluation through one
    # engine serving every adapter as a LoRA request; their KV cache lives in the block.
    kv_per_token = 2 * d.layers * d.kv_heads * d.head_dim * 2  # K and V, 16-bit
    vllm = s.fast_inference and (s.unsloth or w.kind == "grpo")
    if vllm:
        inside = (weights if s.unsloth else (linear + embed) * 2) + 1.0 * GIB  # + vLLM's activation profile
        inside += max(w.gen_batch, w.batch) * (w.prompt + w.completion) * kv_per_token
        t["weights"] = 0.0 if s.unsloth else weights
        t["vLLM block"] = max(s.gpu_util * gpu_gib * GIB, inside)
        t["vLLM CUDA graphs"] = 0.6 * GIB
    else:
        t["weights"] = weights
    # LoRA: r x (in + out) per targeted linear per layer. PEFT keeps adapter weights in fp32 (4 B) + fp32 grads (4 B);
    # Adam keeps two states: fp32 (8 B) or 8-bit (2 B, bitsandbytes' adamw_8bit / paged_adamw_8bit).
    shapes = d.module_shapes()
    n_lora = d.layers * sum(s.lora_r * sum(shapes[m]) for m in s.lora_targets if m in shapes) if s.use_lora else 0
    if not s.use_lora:  # full fine-tuning: every weight trains (same bytes per parameter as below)
        n_lora = d.n_params()
    train = w.kind in ("sft", "grpo")
    t["LoRA + optimizer"] = n_lora * (8 + (2 if "8bit" in optim else 8)) if train else 0.0
    act_bytes = 4 if s.weight_bytes == 4 else 2
    tokens = w.batch * (w.prompt + w.completion)
    # Activations saved for backward in one decoder block, per token, in compute-dtype elements (a Korthikanti et
    # al. 2022 style count with SDPA attention, so no seq^2 scores): 16h for the residual stream, q/o, attention
    # output and the two RMSNorms' fp32 upcasts; 4 kv_dim for k/v before and after RoPE; 5I for SwiGLU (gate, up,
    # silu(gate), their product, down's input). Fitted to bench/plan_memory.py on an H200 (docs/will-it-fit.md): +-10 %.
    kv_dim = d.kv_heads * d.head_dim
    per_layer_token = act_bytes * (16 * d.hidden + 4 * kv_dim + 5 * d.intermediate)
    per_layer_token += 4 * s.lora_r * len(s.lora_targets) if s.use_lora else 0  # LoRA's r-wide intermediates, fp32
    if not train:
        t["activations"] = 0.0
    elif s.grad_ckpt:
        # Checkpointing keeps one hidden state per layer boundary (Unsloth's "unsloth" mode offloads them to CPU RAM)
        # and rebuilds one block at a time in backward.
        boundaries = 0 if s.unsloth else d.layers * tokens * d.hidden * act_bytes
        t["activations"] = boundaries + tokens * per_layer_token
    else:
        t["activations"] = d.layers * tokens * per_layer_token
    # Logits: SFT over every position, GRPO over the completion only (TRL's logits_to_keep). On the hf path the peak
    # holds the 16-bit logits, their fp32 upcast for the loss, and both gradients: ~12 bytes per logit (measured,
    # bench/plan_memory.py). Unsloth computes the loss in chunks: one fp32 copy is counted, an upper bound.
    logit_tokens = w.batch * (w.prompt + w.completion) if w.kind == "sft" else w.batch * w.completion
    t["logits"] = logit_tokens * d.vocab * (4 if s.unsloth else 12) if train else 0.0
    # HF generate (GRPO without vLLM, mining, eval): a KV cache for every sequence generated at once, in the
    # compute dtype, plus one step of fp32 logits per sequence.
    gen_seqs = w.gen_batch or w.batch
    generate = 0.0
    if w.kind in ("generate", "grpo") and not vllm:
        generate = gen_seqs * (w.prompt + w.completion) * kv_per_token * act_bytes / 2 + gen_seqs * d.vocab * 4
    t["KV cache (generate)"] = generate
    # Training and generation do not overlap: keep the larger phase.
    if generate > t["activations"] + t["logits"]:
        t["activations"] = t["logits"] = 0.0
    else:
        t["KV cache (generate)"] = 0.0
    # PyTorch's caching allocator: fragmentation and rounding; reserved/allocated was 1.04-1.14 in
    # bench/plan_memory.py, so 15% of what it hands out (outside vLLM's block).
    pytorch = sum(v for k, v in t.items() if k not in ("cuda context", "vLLM block", "vLLM CUDA graphs"))
    t["allocator overhead"] = 0.15 * pytorch
    return {k: v / GIB for k, v in t.items()}


# --------------------------------------------------------------------------------------------------------------------
# Config -> dimensions, setup and per-stage workloads
# --------------------------------------------------------------------------------------------------------------------


def shipped_configs() -> dict[str, Path]:
    folder = resources.files("recipe") / "model_configs"
    return {p.name[: -len(".json")].lower(): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".json")}


def _shipped_name(name: str) -> str:
    """``unsloth/Qwen2.5-3B-Instruct-bnb-4bit`` -> ``qwen2.5-3b``: the shipped file a hub id maps to."""
    base = name.rsplit("/", 1)[-1].lower()
    return re.sub(r"(-unsloth)?(-bnb-4bit|-4bit)$", "", base).removesuffix("-instruct")


def model_dims(name_or_path: str, cache_dir: str = "~/.cache/cotrecipe") -> ModelDims:
    """Dimensions from a local folder's config.json, a config.json file, the tiny builtin, or a shipped config."""
    local = Path(name_or_path).expanduser()
    if local.is_file():
        return ModelDims.from_config(read_model_config(local))
    if (local / "config.json").is_file():
        return ModelDims.from_config(read_model_config(local / "config.json"))
    if name_or_path == model_mod.TINY:  # built locally in about a second
        cfg = dataclasses.make_dataclass("C", [("name_or_path", str), ("cache_dir", str)])(name_or_path, cache_dir)
        return model_dims(model_mod.resolve_model_path(cfg))
    shipped = shipped_configs()
    key = "smollm2-135m" if name_or_path == model_mod.SMOLLM2 else _shipped_name(name_or_path)
    for name, path in shipped.items():
        if _shipped_name(name) == key:
            return ModelDims.from_config(json.loads(path.read_text()))
    raise PlanError(f"no model dimensions for '{name_or_path}': pass --model-config with a config.json (or a model "
                    f"folder); shipped: {', '.join(sorted(shipped))}")


def setup_from_config(cfg: Config) -> Setup:
    m = cfg.model
    return Setup(four_bit=m.load_in_4bit and m.use_lora, weight_bytes=4 if m.dtype == "float32" else 2,
                 lora_r=m.lora_r, lora_targets=tuple(m.lora_target_modules), use_lora=m.use_lora,
                 grad_ckpt=m.gradient_checkpointing, unsloth=m.backend in ("unsloth", "auto"),
                 fast_inference=uses_vllm(cfg.vllm.enabled, "unsloth" if m.backend in ("unsloth", "auto") else "hf", GRPO),
                 gpu_util=cfg.vllm.gpu_memory_utilization)


def stage_workloads(cfg: Config) -> dict[str, tuple[Workload, str]]:
    """Each enabled stage's workload and optimizer name (``auto`` backends are planned as unsloth: the GPU install)."""
    seq = cfg.model.max_seq_length
    out: dict[str, tuple[Workload, str]] = {}
    s1 = cfg.stage1
    if s1.enabled:
        out["stage1"] = (Workload("sft", s1.per_device_train_batch_size, min(s1.max_length, seq), 0), s1.optim)
    for name in ("stage2", "stage3"):
        st = getattr(cfg, name)
        if name == "stage3" and st.enabled:
            done = min(st.mining_max_new_tokens, seq - 16)
            out["mining"] = (Workload("generate", st.mining_batch_size * st.mining_k,
                                      min(PROMPT_TOKENS["mining"], seq - done), done), st.optim)
        if st.enabled:
            comp = min(st.max_completion_length, seq - 16)
            out[name] = (Workload("grpo", st.per_device_train_batch_size, min(PROMPT_TOKENS[name], seq - comp), comp,
                                  st.per_device_train_batch_size * st.gradient_accumulation_steps), st.optim)
    if cfg.eval.enabled:
        new = min(cfg.eval.max_new_tokens, seq - 16)
        out["eval"] = (Workload("generate", cfg.eval.batch_size, min(PROMPT_TOKENS["eval"], seq - new), new), "")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Verdicts and proposals
# --------------------------------------------------------------------------------------------------------------------


def _total(terms: dict[str, float]) -> float:
    return sum(terms.values())


def _largest(fits, current: int, step: int = 1, floor: int = 1, cap: int | None = None) -> int | None:
    """The largest ``floor + k * step`` <= ``cap`` for which ``fits``; None if none. ``fits`` is monotone (each knob
    only adds memory), so bisection needs ~log2(span / step) estimates for any span (10**9 included).

    >>> _largest(lambda v: v <= 1000, 8, step=64, floor=64, cap=10**9)
    960
    """
    cap = cap or max(current * 4, floor)
    if cap < floor or not fits(floor):
        return None
    low, high = 0, (cap - floor) // step  # value = floor + index * step; fits at `low` holds throughout
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(floor + mid * step) else (low, mid - 1)
    return floor + low * step


def propose(d: ModelDims, s: Setup, stage: str, w: Workload, optim: str, gpu_gib: float, max_seq: int) -> list[str]:
    """``--set`` suggestions: the largest batch / num_generations / completion length that fit, one at a time
    (lengths capped by ``model.max_seq_length``)."""
    def fits(**changes) -> bool:
        return _total(estimate_memory(d, s, dataclasses.replace(w, **changes), gpu_gib, optim)) <= gpu_gib

    out = []
    if w.kind == "sft":
        b = _largest(lambda v: fits(batch=v), w.batch)
        n = _largest(lambda v: fits(prompt=v), w.prompt, step=64, floor=64, cap=max_seq)
        out += [f"stage1.per_device_train_batch_size={b}" if b else "",
                f"stage1.max_length={n}" if n else ""]
    elif w.kind == "grpo":
        ratio = max(w.gen_batch // max(w.batch, 1), 1)
        per_prompt = w.batch  # completions of one prompt per device step when batch == num_generations
        g = _largest(lambda v: fits(batch=v, gen_batch=v * ratio), per_prompt, floor=2)
        c = _largest(lambda v: fits(completion=v), w.completion, step=32, floor=32, cap=max(max_seq - w.prompt, 32))
        out += [f"{stage}.num_generations={g} {stage}.per_device_train_batch_size={g}" if g else "",
                f"{stage}.max_completion_length={c}" if c else ""]
    else:
        key = "stage3.mining_batch_size" if stage == "mining" else "eval.batch_size"
        b = _largest(lambda v: fits(batch=v), w.batch)
        out.append(f"{key}={b}" if b else "")
    out = [p for p in out if p]
    if not out and not s.four_bit:
        out.append("model.load_in_4bit=true")
    elif not out and s.fast_inference:
        out.append(f"vllm.gpu_memory_utilization={max(round(s.gpu_util - 0.1, 2), 0.1)} (vLLM's block is too big)")
    return out


def plan_config(cfg: Config, gpu_gib: float, dims: ModelDims | None = None) -> list[StagePlan]:
    """A :class:`StagePlan` per enabled stage for a card with ``gpu_gib`` GiB."""
    d = dims or model_dims(cfg.model.name_or_path, cfg.model.cache_dir)
    s = setup_from_config(cfg)
    plans = []
    for stage, (w, optim) in stage_workloads(cfg).items():
        terms = estimate_memory(d, s, w, gpu_gib, optim)
        total = _total(terms)
        plans.append(StagePlan(stage, terms, total, gpu_gib, total <= gpu_gib,
                               propose(d, s, stage, w, optim, gpu_gib, cfg.model.max_seq_length),
                               process=alive_in(stage, s)))
    return plans


def smallest_card(cfg: Config, dims: ModelDims | None = None) -> tuple[str, float] | None:
    """The smallest card in :data:`CARDS` on which every stage fits (the vLLM block scales with the card);
    ``model.dtype=bfloat16`` rules out cards without bfloat16."""
    d = dims or model_dims(cfg.model.name_or_path, cfg.model.cache_dir)
    for label, gib, bf16 in CARDS:
        if cfg.model.dtype == "bfloat16" and not bf16:
            continue
        if all(p.fits for p in plan_config(cfg, gib, d)):
            return label, gib
    return None


def default_gpu_gib(cfg: Config, preset: str | None) -> float | None:
    """The card to judge against when none is given: the preset's target card, else the local GPU
    (:func:`recipe.tools.gpu_memory.gpu_total_gib`), else None."""
    if preset in PRESET_CARDS:
        return PRESET_CARDS[preset]
    try:
        import torch  # lazy: planning itself needs no torch; is_available creates no CUDA context
    except ImportError:
        return None
    return gpu_total_gib() if torch.cuda.is_available() else None


def check_fits(cfg: Config, gpu_gib: float | None = None) -> list[str]:
    """Warnings (empty when everything fits) for the run orchestrator to log before training on CUDA.

    ``gpu_gib`` defaults to the local GPU's memory, read without a CUDA context (:func:`recipe.tools.gpu_memory.gpu_total_gib`: the
    run-all parent only orchestrates, its children hold the GPU); without a GPU or model dimensions it returns [].
    """
    gpu_gib = gpu_gib if gpu_gib is not None else default_gpu_gib(cfg, None)
    if gpu_gib is None:
        return []
    try:
        plans = plan_config(cfg, gpu_gib)
    except PlanError:
        return []
    return [f"{p.stage} may not fit: estimated {p.total:.1f} GiB on a {gpu_gib:.1f} GiB GPU"
            + (f"; try --set {' '.join(p.proposals[:1])}" if p.proposals else "") + " (see `cotrecipe plan`)"
            for p in plans if not p.fits]


def render(plans: list[StagePlan], console=None, card: tuple[str, float] | None = None, gpu_note: str = "") -> bool:
    """Print one table per stage and the verdict with rich; return True when every stage fits."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for p in plans:
        console.print(f"[bold]{p.stage}[/bold]: {p.total:.2f} GiB of {p.gpu_gib:.1f} GiB "
                      f"({'fits' if p.fits else '[red]DOES NOT FIT[/red]'})")
        if p.process:
            console.print(f"  alive: {p.process}", soft_wrap=True)
        table = Table()
        table.add_column("term")
        table.add_column("GiB", justify="right")
        for name, gib in p.terms.items():
            if gib > 0:
                table.add_row(name, f"{gib:.2f}")
        console.print(table)
        if p.proposals:
            verb = "largest that fit (one at a time)" if p.fits else "to fit, change one of"
            console.print(f"  {verb}: " + "; ".join(f"--set {x}" for x in p.proposals), soft_wrap=True)
    ok = all(p.fits for p in plans)
    console.print("each row: one process at its peak (run-all runs each entry and the evaluation in a fresh "
                  "process, run.process_per_entry, each building at most one vLLM engine)", soft_wrap=True)
    worst = max(plans, key=lambda p: p.total) if plans else None
    gpu = f" on {plans[0].gpu_gib:.2f} GiB{gpu_note}" if plans else ""
    verdict = (f"verdict: fits{gpu}; peak {worst.total:.1f} GiB in {worst.stage}" if ok and worst else
               f"verdict: does NOT fit{gpu}: " + ", ".join(p.stage for p in plans if not p.fits))
    console.print(verdict, soft_wrap=True)
    if card is not None:
        console.print(f"smallest card that fits every stage: {card[0]} ({card[1]:g} GiB)")
    return ok
