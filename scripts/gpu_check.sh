#!/usr/bin/env bash
# Device check of the unsloth path on a lent GPU machine with NO network. NOT RUN YET: no GPU was lent to the task
# that wrote it (README, "GPU path").
#
# Here first (reaches PyPI):   scripts/gpu_check_wheels.sh          # -> .gpu-wheels/ (gitignored), ~15 MiB
# Then on the device tool:     run(command="scripts/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=600)
#
# The machine's image (scripts/gpu_image.txt: Python 3.12, torch 2.11 CUDA 13, transformers 5.17, accelerate; no
# pydantic, trl, datasets) stays as it is: scripts/install_carried.sh makes a venv over it and installs cotrecipe
# with pip's resolver from the carried wheels alone (the same install scripts/offline_install_check.sh proves on a CPU
# machine), then the unsloth set without its dependencies. vLLM cannot be carried (hundreds of MiB, and it pins another
# torch), so this check runs with vllm.enabled=false: generation goes through HF generate on the 4-bit model.
# Steps: install + import probe; a random-weight model with Qwen2.5-3B's shapes (recipe/model_configs/Qwen2.5-3B.json,
# vocab 151936, tied embeddings) built on the GPU with the tiny local tokenizer (recipe/models/tiny.py; ids it lacks decode
# to nothing); then `cotrecipe run-all --preset qwen2.5-3b-t4` on the unsloth backend with 2 steps per stage, 16 mining
# prompts and an 8-problem eval of stage 3 on synthetic problems, each entry in its own process
# (run.process_per_entry, auto = on with CUDA). nvidia-smi samples device memory every 250 ms; the table at the end
# puts each stage's peak beside `cotrecipe plan`'s prediction for the same config, and names the GPU memory each
# process held (the run-all parent should hold none).
# Everything it writes goes to $OUT (the device tool brings it back) or, without $OUT, to $GPU_CHECK_WORK.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS="${GPU_WHEELS_DIR:-.gpu-wheels}"
WORK="${GPU_CHECK_WORK:-/tmp/cotrecipe-gpu-check}"
REPORT="${OUT:-$WORK}"
BASE_PY="${PYTHON:-python3}"
PY="$WORK/venv/bin/python"
T0=$SECONDS
mkdir -p "$WORK" "$REPORT"

command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: this needs an NVIDIA GPU" >&2; exit 2; }
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv
compgen -G "$WHEELS/*.whl" >/dev/null || {
  echo "gpu_check: no wheels in $WHEELS: run scripts/gpu_check_wheels.sh where PyPI is reachable, then carry it" >&2
  exit 2
}

echo "=== install cotrecipe from the carried wheels ($(du -sh "$WHEELS" | cut -f1)) into $WORK/venv over $BASE_PY"
scripts/install_carried.sh "$BASE_PY" "$WHEELS" "$WORK/venv" > "$REPORT/install.log" 2>&1 || {
  tail -n 25 "$REPORT/install.log"; exit 2; }
grep '^install_carried: ' "$REPORT/install.log"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

"$PY" - <<'PY'
from importlib.metadata import version

import torch

print("installed:", ", ".join(f"{p}=={version(p)}" for p in
      ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "unsloth", "unsloth_zoo")))
assert torch.cuda.is_available(), "torch sees no CUDA GPU"
print("GPU:", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(), "CUDA", torch.version.cuda)
import unsloth  # noqa: E402,F401  the real import, with its patches, before trl (as recipe.models.model does)
import trl  # noqa: E402,F401
import datasets  # noqa: E402,F401
print("unsloth, trl and datasets import")
PY
echo "=== [$((SECONDS - T0)) s] build a random-weight model with Qwen2.5-3B's shapes"
MODEL="$WORK/qwen2.5-3b-random"
"$PY" - "$MODEL" <<'PY'
import json
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from recipe.models import tiny

out = Path(sys.argv[1])
if (out / "config.json").is_file():
    sys.exit(print(f"reusing {out}"))
dims = json.loads(Path("recipe/model_configs/Qwen2.5-3B.json").read_text())
tokenizer = AutoTokenizer.from_pretrained(tiny.build_tiny_qwen2(out.parent / "tiny-tokenizer-source"))
eos, pad, im_end = tokenizer.convert_tokens_to_ids([tiny.EOS_TOKEN, tiny.PAD_TOKEN, tiny.IM_END])
config = Qwen2Config(vocab_size=dims["vocab_size"], hidden_size=dims["hidden_size"],
                     intermediate_size=dims["intermediate_size"], num_hidden_layers=dims["num_hidden_layers"],
                     num_attention_heads=dims["num_attention_heads"], num_key_value_heads=dims["num_key_value_heads"],
                     max_position_embeddings=dims["max_position_embeddings"], rope_theta=1_000_000.0,
                     tie_word_embeddings=dims["tie_word_embeddings"], bos_token_id=eos, eos_token_id=eos,
                     pad_token_id=pad)
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = Qwen2ForCausalLM(config)
model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=[eos, im_end], pad_token_id=pad)
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters -> {out}")
PY

RUN="$WORK/run"
rm -rf "$RUN"
SETS=(--set "model.name_or_path=$MODEL" --set vllm.enabled=false
      --set data.source=synthetic:400 --set data.eval_source=synthetic:400
      --set "data.stage1_rows=[0, 64]" --set "data.stage2_rows=[64, 128]" --set "data.stage3_rows=[128, 160]"
      --set stage1.max_steps=2 --set stage2.max_steps=2 --set stage3.max_steps=2 --set stage3.mining_limit=16
      --set eval.limit=8 --set "eval.stages=[stage3]")
"$PY" -m recipe.cli plan --preset qwen2.5-3b-t4 "${SETS[@]}" > "$REPORT/plan.txt" 2>&1 || true
echo "=== [$((SECONDS - T0)) s] run-all, unsloth backend, 4-bit, 2 steps per stage"
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 250 > "$REPORT/gpu_memory.csv" &
SAMPLER=$!
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 500 > "$REPORT/gpu_apps.csv" &
APPS=$!
STATUS=0
"$PY" -m recipe.cli run-all --preset qwen2.5-3b-t4 --output-dir "$RUN" "${SETS[@]}" > "$REPORT/run-all.log" 2>&1 &
PARENT=$!
wait "$PARENT" || STATUS=$?
kill "$SAMPLER" "$APPS" 2>/dev/null || true
wait "$SAMPLER" "$APPS" 2>/dev/null || true
tail -n 40 "$REPORT/run-all.log"
cp "$RUN/manifest.json" "$REPORT/" 2>/dev/null || true

echo "=== [$((SECONDS - T0)) s] peak GPU memory per stage beside the plan (run-all exit status $STATUS)"
"$PY" - "$RUN" "$REPORT" "$PARENT" <<'PY'
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from recipe.config import core as C
from recipe.store import rundir
from recipe.tools import plan

run, report, parent = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
points = []
for line in (report / "gpu_memory.csv").read_text().splitlines():
    stamp, _, used = line.partition(",")
    try:  # nvidia-smi prints local time
        points.append((datetime.strptime(stamp.strip(), "%Y/%m/%d %H:%M:%S.%f").astimezone(timezone.utc),
                       int(used)))
    except ValueError:
        continue
entries = rundir.load_manifest(run)[rundir.ENTRIES_KEY]
windows = {}
for name, rec in entries.items():
    if "started" in rec:
        end = rec.get("ended") or datetime.now(timezone.utc).isoformat()
        windows[name] = (datetime.fromisoformat(rec["started"]), datetime.fromisoformat(end))
last = max((end for _, end in windows.values()), default=None)
if last is not None:
    windows["eval"] = (last, datetime.now(timezone.utc))


def peak(start, end):
    inside = [m for t, m in points if start <= t <= end]
    return max(inside) / 1024 if inside else None


gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 14.74
cfg = C.resolve(config_file=run / "config.yaml") if (run / "config.yaml").is_file() else None
predicted = {p.stage: p.total for p in plan.plan_config(cfg, gib, plan.model_dims(cfg.model.name_or_path))} if cfg \
    else {}
rows = [("stage1", ["stage1"]), ("stage2", ["stage2"]), ("stage3", ["mining", "stage3"]), ("eval", ["eval"])]
print(f"{'entry':<8}{'status':<13}{'wall_s':>8}{'peak GiB':>10}{'plan GiB':>10}  (plan rows)")
for name, plan_rows in rows:
    rec = entries.get(name, {})
    measured = peak(*windows[name]) if name in windows else None
    guess = max((predicted[r] for r in plan_rows if r in predicted), default=None)
    fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
    status = rec.get("status", "done" if name == "eval" and (run / "eval" / "stage3" / "results.json").is_file()
                     else "-")
    print(f"{name:<8}{status:<13}{rec.get('wall_s', '-'):>8}{fmt(measured):>10}{fmt(guess):>10}  "
          f"({', '.join(plan_rows)})")
print(f"peak over the whole run: {max((m for _, m in points), default=0) / 1024:.2f} GiB of {gib:.1f} GiB")
apps = {}
for line in (report / "gpu_apps.csv").read_text().splitlines():
    pid, _, used = (x.strip() for x in line.partition(","))
    if pid.isdigit() and used.isdigit():
        apps[int(pid)] = max(apps.get(int(pid), 0), int(used))
owners = {rec.get("pid"): name for name, rec in entries.items()}
for pid, used in sorted(apps.items()):
    who = "run-all parent" if pid == parent else owners.get(pid, "another process (the eval child, or not ours)")
    print(f"pid {pid}: {used} MiB peak ({who})")
if parent not in apps:
    print(f"the run-all parent (pid {parent}) never appeared among the GPU's processes" if apps else
          "nvidia-smi listed no compute processes (some sandboxes hide them)")
PY
exit "$STATUS"
