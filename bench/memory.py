"""Where a GRPO process's memory goes, and what brings it down: peak RSS per configuration, side by side in one run,
beside the weights' size, with the checks that each configuration trains the same.

Run from the repository root (alone on the machine; one thread, as the proof's lanes run)::

    OMP_NUM_THREADS=1 taskset -c 0 python bench/memory.py [--steps 1] [--arm NAME ...] [--set KEY=VALUE ...]
        [--keep DIR]

With ``--keep DIR`` every finished arm's result stays in DIR and a later run with the same DIR reuses it (an arm
takes minutes on one core), so an interrupted comparison goes on where it stopped.

Each arm is one ``cotrecipe stage2 --preset proof --set warmup.enabled=false --set stage2.max_steps=N`` (the way the
proof's GRPO memory was first measured, from the plain base model; the figures in docs/benchmarks.md with the
preset as it stood at commit 9eb87fc, 4 groups of 4 completions per step; ``--preset demo`` for the demo's) in a process of
its own with the arm's ``--set`` overrides; its peak RSS is the kernel's high-water mark of that process
(``os.wait4``), so arms never see each other's memory. Inside the child, :func:`callbacks` (installed with ``recipe.train.trainer.install_callbacks``) adds a phase tracer: RSS at
the start and end of every phase of a GRPO step (generation, old/reference log-probs, the loss's forward, backward,
the optimizer step), the highest RSS a sampling thread saw inside it, and the process's high-water mark after it, and
what glibc's allocator holds free at its end (``mallinfo2``: freed memory kept in its arenas, which RSS still counts).
The ``trim`` arms also call ``malloc_trim(0)`` after every phase and record the RSS after it.

Same training, checked against the first arm: the completions sampled at every step (token ids, compared exactly),
and the logged loss, gradient norm and entropy of every step (within ``--tol``, relative: bf16 autocast rounds
differently when a batch is split or activations are recomputed). Step 1 is sampled from identical weights, so its
tokens must match; a later step samples from weights that went through one optimizer step, and a token may flip when
those weights differ by the autocast noise.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_ENV = "COTRECIPE_BENCH_MEMORY_OUT"  # the child's trace file (set by the parent for each arm)
TRIM_ENV = "COTRECIPE_BENCH_MEMORY_TRIM"  # "1": malloc_trim(0) after every phase
# The measured process: the phase tracer's callbacks installed (recipe.train.trainer imports no training library, so
# unsloth is still imported first), then the CLI.
INSTALL_AND_RUN = ("from recipe.train.trainer import install_callbacks; from bench.memory import callbacks; "
                   "install_callbacks(callbacks); from recipe.cli import main; main()")
MB = 1024 * 1024  # the traces are in MiB


def gb(mib: float) -> float:
    """GB as the run's cost section prints them (recipe/eval/costs.py: MiB / 1024)."""
    return mib / 1024

PAGE = os.sysconf("SC_PAGE_SIZE")

# Each arm's overrides name every key the arms differ in, so an arm means the same whatever the preset's defaults are.
AS_SHIPPED = ["stage2.per_device_train_batch_size=16", "stage2.gradient_accumulation_steps=1",
              "model.gradient_checkpointing=false"]
MICRO4 = ["stage2.per_device_train_batch_size=4", "stage2.gradient_accumulation_steps=4"]
MICRO2 = ["stage2.per_device_train_batch_size=2", "stage2.gradient_accumulation_steps=8"]
ARMS: dict[str, tuple[list[str], dict[str, str]]] = {  # name -> (--set overrides, extra environment)
    "batch16": (AS_SHIPPED, {}),
    "batch16+trim": (AS_SHIPPED, {TRIM_ENV: "1"}),
    "batch16+arena1": (AS_SHIPPED, {"MALLOC_ARENA_MAX": "1"}),
    "batch16+ckpt": (AS_SHIPPED[:2] + ["model.gradient_checkpointing=true"], {}),
    "micro4": (MICRO4 + ["model.gradient_checkpointing=false"], {}),
    "micro4+trim": (MICRO4 + ["model.gradient_checkpointing=false"], {TRIM_ENV: "1"}),
    "micro4+ckpt": (MICRO4 + ["model.gradient_checkpointing=true"], {}),
    "micro2": (MICRO2 + ["model.gradient_checkpointing=false"], {}),
    "micro2+ckpt": (MICRO2 + ["model.gradient_checkpointing=true"], {}),
    "preset": ([], {}),  # the preset as it is now
}
DEFAULT_ARMS = ["batch16", "micro4", "micro4+ckpt", "micro4+trim", "batch16+ckpt", "batch16+trim", "preset"]
LOGGED = ("loss", "grad_norm", "entropy")
# A GRPO loss whose group advantages sum to zero logs ~1e-8 (float32 rounding of a zero): relative differences are
# taken against at least this. (TRL logs entropy as the mean of each micro-batch's mean, so a different split moves it
# slightly even when the gradients are the same.)
LOSS_FLOOR = 1e-4


# --------------------------------------------------------------------------------------------------------------------
# Child side: the phase tracer, installed through the trainer-callback seam
# --------------------------------------------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / MB


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def held_free_mb() -> float:
    """Bytes glibc's allocator holds free in its arenas (``mallinfo2().fordblks``): freed, not returned to the OS."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2().fordblks / MB


def hwm_mb() -> float:
    """The process's peak RSS so far (VmHWM), exact."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Tracer:
    """Per-phase RSS of one training process, written to ``path`` after every phase (a killed child still leaves its
    trace). A daemon thread samples RSS every 5 ms for each phase's peak."""

    def __init__(self, path: str, trim: bool):
        self.path, self.trim = path, trim
        self.libc = ctypes.CDLL("libc.so.6") if trim else None
        self.rows: list[dict] = []
        self.samples: list[dict] = []  # one per generation call: what was sampled
        self.steps: list[float] = []  # seconds per optimizer step
        self.info: dict = {}
        self.step = 0
        self._peak = 0.0
        self._open: dict[str, tuple[float, float]] = {}
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self._peak = max(self._peak, rss_mb())
            time.sleep(0.005)

    def begin(self, name: str) -> None:
        start = rss_mb()
        self._peak = start
        self._open[name] = (start, time.perf_counter())

    def end(self, name: str) -> None:
        start, t0 = self._open.pop(name)
        end = rss_mb()
        row = {"phase": name, "step": self.step + 1, "start_mb": start, "peak_mb": max(self._peak, end),
               "end_mb": end, "hwm_mb": hwm_mb(), "held_free_mb": held_free_mb(), "s": time.perf_counter() - t0}
        if self.libc is not None:
            self.libc.malloc_trim(0)
            row["trimmed_mb"] = rss_mb()
        self.rows.append(row)
        self.dump()

    @contextlib.contextmanager
    def phase(self, name: str):
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def dump(self) -> None:
        Path(self.path).write_text(json.dumps({"info": self.info, "phases": self.rows, "samples": self.samples,
                                               "step_s": self.steps}))


def _wrap(cls, attr: str, phase_of) -> None:
    """Run ``cls.attr`` inside the phase ``phase_of(*args)`` names (None: untraced)."""
    original = getattr(cls, attr)

    def traced(*args, **kwargs):
        name = phase_of(*args, **kwargs)
        if name is None:
            return original(*args, **kwargs)
        with TRACER.phase(name):
            return original(*args, **kwargs)

    setattr(cls, attr, traced)


TRACER: Tracer | None = None


def _install(tracer: Tracer) -> None:
    """Class-level wrappers on the pinned TRL/accelerate methods that make up a GRPO step (bench process only)."""
    import torch  # the child has them loaded already; the parent never imports them
    from accelerate import Accelerator
    from trl import GRPOTrainer

    global TRACER
    TRACER = tracer
    generate = GRPOTrainer._generate

    def sampled(self, prompts):
        with tracer.phase("generation"):
            out = generate(self, prompts)
        prompt_ids, completion_ids = out[0], out[1]
        tracer.samples.append({"step": tracer.step + 1, "rows": len(completion_ids),
                               "tokens": sum(len(c) for c in completion_ids),
                               "prompts_sha": hashlib.sha256(json.dumps(prompt_ids).encode()).hexdigest()[:16],
                               "completions_sha": hashlib.sha256(json.dumps(completion_ids).encode()).hexdigest()[:16]})
        return out

    GRPOTrainer._generate = sampled
    # the no-grad scoring passes (old policy, reference) vs the policy's forward inside compute_loss
    _wrap(GRPOTrainer, "_get_per_token_logps_and_entropies",
          lambda *a, **k: None if torch.is_grad_enabled() else "old/ref log-probs")
    _wrap(GRPOTrainer, "compute_loss", lambda *a, **k: "forward + loss")
    _wrap(Accelerator, "backward", lambda *a, **k: "backward")


def callbacks(entry: str) -> list:
    """The trainer-callback factory the measured process installs (:data:`INSTALL_AND_RUN`): the phase tracer."""
    from transformers import TrainerCallback

    tracer = Tracer(os.environ[OUT_ENV], os.environ.get(TRIM_ENV) == "1")
    _install(tracer)

    class Phases(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            params = list(model.parameters())
            tracer.info.update(
                entry=entry, weights_mb=sum(p.numel() * p.element_size() for p in params) / MB,
                trainable_mb=sum(p.numel() * p.element_size() for p in params if p.requires_grad) / MB,
                loaded_rss_mb=rss_mb(), loaded_hwm_mb=hwm_mb(), batch=args.per_device_train_batch_size,
                grad_accum=args.gradient_accumulation_steps, steps_per_generation=args.steps_per_generation,
                gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16)
            tracer.dump()

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            tracer.begin("optimizer")

        def on_optimizer_step(self, args, state, control, **kwargs):
            tracer.end("optimizer")

        def on_step_end(self, args, state, control, **kwargs):
            tracer.steps.append(time.perf_counter() - self.t0)
            tracer.step += 1
            tracer.dump()

    return [Phases()]


# --------------------------------------------------------------------------------------------------------------------
# Parent side: one child per arm, the table, the checks
# --------------------------------------------------------------------------------------------------------------------


def run_arm(name: str, preset: str, steps: int, extra: list[str], tmp: Path) -> dict:
    overrides, env_extra = ARMS[name]
    sets = ["warmup.enabled=false", f"stage2.max_steps={steps}", *overrides, *extra]
    saved = tmp / f"{name.replace('+', '_')}.result.json"
    if saved.is_file() and json.loads(saved.read_text()).get("sets") == sets + [f"preset={preset}"]:
        return json.loads(saved.read_text())
    out_dir, trace = tmp / name.replace("+", "_"), tmp / f"{name.replace('+', '_')}.json"
    cmd = [sys.executable, "-c", INSTALL_AND_RUN, "stage2", "--preset", preset,
           *[a for s in sets for a in ("--set", s)], "--output-dir", str(out_dir)]
    env = {**os.environ, **env_extra, OUT_ENV: str(trace),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    with open(tmp / f"{name.replace('+', '_')}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"arm {name}: exit {rc}; see {tmp / (name.replace('+', '_') + '.log')}")
    result = json.loads(trace.read_text())
    history = json.loads((out_dir / "stage2" / "trainer_log.json").read_text())
    result["logged"] = [row for row in history if "loss" in row and "train_runtime" not in row]
    result["peak_mb"] = usage.ru_maxrss / 1024  # kB on Linux
    result["wall_s"] = wall
    result["sets"] = sets + [f"preset={preset}"]
    saved.write_text(json.dumps(result))
    return result


def phase_table(name: str, result: dict) -> list[str]:
    """Per phase (the largest over steps): RSS at its start, the peak inside it, at its end, after malloc_trim."""
    lines = [f"  {name}: loaded {gb(result['info']['loaded_rss_mb']):.2f} GB "
             f"(high-water {gb(result['info']['loaded_hwm_mb']):.2f} GB)"]
    order = ["generation", "old/ref log-probs", "forward + loss", "backward", "optimizer"]
    for phase in order:
        rows = [r for r in result["phases"] if r["phase"] == phase]
        if not rows:
            lines.append(f"    {phase:<18} none (beta = 0 and on-policy: TRL computes no old/reference log-probs)")
            continue
        worst = max(rows, key=lambda r: r["peak_mb"])
        trimmed = f", after malloc_trim {gb(worst['trimmed_mb']):5.2f}" if "trimmed_mb" in worst else ""
        lines.append(f"    {phase:<18} x{len(rows):<2} start {gb(worst['start_mb']):5.2f}  peak "
                     f"{gb(worst['peak_mb']):5.2f}  end {gb(worst['end_mb']):5.2f} (glibc holds "
                     f"{gb(worst['held_free_mb']):4.2f} free){trimmed} GB; "
                     f"{sum(r['s'] for r in rows) / len(set(r['step'] for r in rows)):6.1f} s/step")
    return lines


def compare(ref: dict, other: dict, tol: float) -> tuple[str, bool]:
    """Sampled tokens per step (exact) and the logged values per step (relative ``tol``) against the reference arm."""
    tokens = ["=" if a["completions_sha"] == b["completions_sha"] and a["prompts_sha"] == b["prompts_sha"] else "x"
              for a, b in zip(ref["samples"], other["samples"])]
    worst, ok = {}, tokens[:1] == ["="]
    for key in LOGGED:
        diffs = [abs(b[key] - a[key]) / max(abs(a[key]), LOSS_FLOOR) for a, b in zip(ref["logged"], other["logged"])
                 if key in a and key in b]
        worst[key] = max(diffs, default=float("nan"))
        ok = ok and worst[key] <= tol
    text = (f"tokens per step {''.join(tokens)}; max rel. diff " +
            ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    return text, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="proof", help="the preset whose stage 2 is measured")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--arm", action="append", choices=sorted(ARMS), help=f"repeatable; default {DEFAULT_ARMS}")
    parser.add_argument("--set", action="append", default=[], help="extra override for every arm (repeatable)")
    parser.add_argument("--tol", type=float, default=0.02, help="relative tolerance of loss/grad-norm/entropy")
    parser.add_argument("--keep", default=None, help="keep the arms' run folders, traces and logs here")
    args = parser.parse_args()
    arms = args.arm or DEFAULT_ARMS
    load = os.getloadavg()[0]
    print(f"{len(arms)} arms x {args.steps} GRPO steps, {args.preset} preset from the plain base; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, CPUs {sorted(os.sched_getaffinity(0))}, load {load:.1f}")
    with contextlib.ExitStack() as stack:
        tmp = Path(args.keep) if args.keep else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mem-")))
        tmp.mkdir(parents=True, exist_ok=True)
        results = {}
        for name in arms:
            results[name] = run_arm(name, args.preset, args.steps, args.set, tmp)
            r = results[name]
            print(f"{name:<15} peak {gb(r['peak_mb']):5.2f} GB; {sum(r['step_s']) / len(r['step_s']):6.1f} s/step",
                  flush=True)
    report(arms, results, args.tol)


def report(arms: list[str], results: dict, tol: float) -> None:
    ref_name = arms[0]
    ref = results[ref_name]
    weights = gb(ref["info"]["weights_mb"])
    print(f"\nweights (float32 + LoRA) {weights:.2f} GB; reference arm {ref_name}; tolerance {tol}")
    print(f"{'arm':<15} {'batch x accum':>13} {'ckpt':>5} {'peak GB':>8} {'x weights':>9} {'s/step':>7} "
          f"{'time x':>7}  same training as {ref_name}")
    ref_step = sum(ref["step_s"]) / len(ref["step_s"])
    for name, r in results.items():
        info, step_s = r["info"], sum(r["step_s"]) / len(r["step_s"])
        check, ok = compare(ref, r, tol)
        print(f"{name:<15} {info['batch']:>6} x {info['grad_accum']:<4} {str(info['gradient_checkpointing'])[0]:>5} "
              f"{gb(r['peak_mb']):8.2f} {gb(r['peak_mb']) / weights:9.1f} {step_s:7.1f} "
              f"{step_s / ref_step:7.2f}  {'OK' if ok else 'DIFFERS'}: {check}")
    print("\nper phase (RSS, GB; the step with the highest peak):")
    for name, r in results.items():
        print("\n".join(phase_table(name, r)))
    print("\nlogged per step (loss / grad_norm / entropy / mean completion length):")
    for name, r in results.items():
        print(f"  {name:<15} " + "; ".join(
            f"{row['loss']:.5f} / {row['grad_norm']:.4f} / {row['entropy']:.4f} / "
            f"{row['completions/mean_length']:.1f}" for row in r["logged"]))


if __name__ == "__main__":
    main()
