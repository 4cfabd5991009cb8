#!/usr/bin/env bash
# GPU smoke test for the unsloth backend. NOT RUN YET: written without a GPU (see the README's "GPU path").
#
# On any Linux x86-64 machine with an NVIDIA GPU and a CUDA driver:
#   scripts/gpu_smoke.sh            # fresh venv .venv-gpu, pinned `gpu` extra, two run-all runs
#   SMOKE_MODEL=unsloth/Qwen2.5-0.5B-Instruct scripts/gpu_smoke.sh   # a hub model instead of the tiny local one
#
# It installs the pinned set (pyproject.toml's `gpu` extra: torch 2.13.0, vllm 0.27.1, unsloth 2026.10.x), then runs
# `cotrecipe run-all --preset smoke` on the tiny local Qwen2 through the unsloth backend in 4-bit, once without and
# once with vllm.enabled (vLLM engine for GRPO), and prints per stage/eval row: wall time and the peak GPU memory
# the device reported (nvidia-smi, sampled every 250 ms; this includes vLLM's own pool).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv-gpu}"
MODEL="${SMOKE_MODEL:-builtin:tiny-qwen2-hd64}"
OUT="${SMOKE_OUT:-runs/gpu-smoke}"

command -v nvidia-smi >/dev/null || { echo "gpu_smoke: no nvidia-smi: this needs an NVIDIA GPU" >&2; exit 2; }
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --upgrade pip
python -m pip install -e '.[gpu]'  # visible output on purpose: a failed resolve must show
python - <<'PY'
from importlib.metadata import version
print("installed:", ", ".join(f"{p}=={version(p)}" for p in
      ("torch", "vllm", "unsloth", "unsloth_zoo", "trl", "transformers", "bitsandbytes", "xformers")))
import torch
assert torch.cuda.is_available(), "torch sees no CUDA GPU"
print("GPU:", torch.cuda.get_device_name(), "compute capability", torch.cuda.get_device_capability())
PY

for fast in false true; do
  run="$OUT/vllm-$fast"
  rm -rf "$run"
  mkdir -p "$run"
  samples="$run/gpu_memory.csv"
  nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 250 > "$samples" &
  sampler=$!
  echo "=== run-all, unsloth backend, 4-bit, vllm.enabled=$fast, model $MODEL ==="
  status=0
  cotrecipe run-all --preset smoke --output-dir "$run" \
    --set model.name_or_path="$MODEL" --set model.backend=unsloth --set model.load_in_4bit=true \
    --set model.dtype=auto --set run.device=auto --set vllm.enabled=$fast \
    --set vllm.gpu_memory_utilization=0.4 2> >(tee "$run/stderr.log" >&2) || status=$?
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  python - "$run" "$samples" "$fast" "$status" <<'PY'
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from recipe.store import rundir

run, samples, fast, status = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
points = []
for line in open(samples):
    stamp, used = (x.strip() for x in line.split(","))
    try:  # nvidia-smi prints local time
        t = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").astimezone(timezone.utc)
        points.append((t, int(used)))
    except ValueError:
        pass


def peak(start, end):
    inside = [m for t, m in points if start <= t <= end]
    return max(inside) if inside else None


print(f"--- vllm.enabled={fast}: exit status {status}")
print(f"{'step':<16}{'status':<10}{'wall_s':>10}{'peak GPU MiB':>14}")
for name, entry in rundir.load_manifest(run)[rundir.ENTRIES_KEY].items():
    start = datetime.fromisoformat(entry["started"])
    end = datetime.fromisoformat(entry.get("ended", datetime.now(timezone.utc).isoformat()))
    print(f"{name:<16}{entry.get('status', '?'):<10}{entry.get('wall_s', '-'):>10}{peak(start, end) or '-':>14}")
for results in sorted(run.glob("eval/*/results.json")):
    r = json.loads(results.read_text())
    print(f"eval/{r['name']:<11}{'done':<10}{r.get('wall_s', '-'):>10}{'-':>14}")
print(f"peak GPU memory over the whole run: {max((m for _, m in points), default='-')} MiB")
PY
done
