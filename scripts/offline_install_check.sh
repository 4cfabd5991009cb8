#!/usr/bin/env bash
# Prove, on a CPU machine, the install scripts/gpu_check.sh makes on a lent GPU machine without network: the carried
# wheels plus that machine's image hold everything cotrecipe needs, at versions inside its bounds.
#
#   scripts/offline_install_check.sh      # needs PyPI for steps 1-2 only; prints each step's wall time
#
# 1. The wheels: scripts/gpu_check_wheels.sh into $WORK/wheels (or GPU_WHEELS_DIR, reused as it is).
# 2. The image: a clean venv of Python 3.12 (the image's minor version; PYTHON, else python3.12 or pyenv's) holding exactly
#    scripts/gpu_image.txt: the image's torch 2.11.0 (PyPI's, a CUDA 13 build; it runs on the CPU), transformers,
#    accelerate, ..., and the packages whose versions nobody has read on the image put outside cotrecipe's bounds.
#    Built once per content of that file and Python version under $GPU_IMAGE_CACHE (default
#    ~/.cache/cotrecipe/gpu-image-*, ~5 GB) and never changed afterwards: the install goes into a venv over it.
# 3. Offline (every proxy variable points at a closed port, HF_HUB_OFFLINE=1, pip reads no configuration):
#    scripts/install_carried.sh, as on the machine.
# 4. From outside the checkout, so the installed copy runs: `cotrecipe plan --preset qwen2.5-3b-t4`, then `cotrecipe
#    run-all --preset smoke` (hf backend, tiny local Qwen2) with one step per stage, 8 mining prompts and 4 eval rows.
# It ends with "offline_install_check: passed" or exits non-zero with a line saying which step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(realpath -m "${OFFLINE_CHECK_WORK:-/tmp/cotrecipe-offline-check}")"
CACHE="${GPU_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cotrecipe}"
T0=$SECONDS
fail() { echo "offline_install_check: $*" >&2; exit 1; }
step() { echo "=== [$((SECONDS - T0)) s] $*"; }

if [ -d "$WORK" ] && [ -n "$(ls -A "$WORK")" ] && [ ! -e "$WORK/.cotrecipe-offline-check" ]; then
  fail "$WORK holds files this script did not write: set OFFLINE_CHECK_WORK to a new folder"
fi

is312() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; }
if [ -n "${PYTHON:-}" ]; then
  is312 "$PYTHON" || fail "PYTHON=$PYTHON does not run as Python 3.12, the image's"
else
  for PYTHON in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 ""; do
    [ -n "$PYTHON" ] && is312 "$PYTHON" && break
  done
  [ -n "$PYTHON" ] || fail "no Python 3.12 here (the image's): set PYTHON to one"
fi
mkdir -p "$WORK" "$CACHE"
touch "$WORK/.cotrecipe-offline-check"

step "1. the carried wheels"
if [ -n "${GPU_WHEELS_DIR:-}" ]; then
  WHEELS="$GPU_WHEELS_DIR"
  scripts/gpu_check_wheels.sh --check "$WHEELS"
else
  WHEELS="$WORK/wheels"
  GPU_WHEELS_DIR="$WHEELS" scripts/gpu_check_wheels.sh
fi

step "2. the image: $PYTHON with scripts/gpu_image.txt"
KEY="$( ("$PYTHON" --version; cat scripts/gpu_image.txt) | sha256sum | cut -c1-12)"
IMAGE="$CACHE/gpu-image-$KEY"
if [ ! -e "$IMAGE/.complete" ]; then
  if [ -e "$IMAGE" ]; then  # an interrupted build of ours (it marks itself first), else not ours to remove
    [ -e "$IMAGE/.building" ] || fail "$IMAGE exists and was not made by this script: not touching it"
    rm -rf "$IMAGE"
  fi
  "$PYTHON" -m venv "$IMAGE"
  touch "$IMAGE/.building"
  "$IMAGE/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/gpu_image.txt \
    || fail "could not build the image venv $IMAGE from scripts/gpu_image.txt (pip's error above)"
  rm "$IMAGE/.building"
  touch "$IMAGE/.complete"
else
  echo "reusing $IMAGE"
fi

step "3. offline: install cotrecipe from the carried wheels over the image"
export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
  HTTPS_PROXY=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 all_proxy=http://127.0.0.1:9 no_proxy= NO_PROXY= \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
unset PYTHONPATH
scripts/install_carried.sh "$IMAGE/bin/python" "$WHEELS" "$WORK/venv" > "$WORK/install.log" 2>&1 || {
  tail -n 25 "$WORK/install.log"; fail "step 3: the offline install failed (log: $WORK/install.log)"; }
grep '^install_carried: ' "$WORK/install.log"

step "4. cotrecipe plan --preset qwen2.5-3b-t4, then a tiny run-all (hf backend), from outside the checkout"
cd "$WORK"
COTRECIPE="$WORK/venv/bin/cotrecipe"
where="$("$WORK/venv/bin/python" -c 'import recipe; print(recipe.__file__)')"
case "$where" in "$WORK/venv/"*) ;; *) fail "cotrecipe imports from $where, not from the install";; esac
"$COTRECIPE" plan --preset qwen2.5-3b-t4 > plan.txt 2>&1 || { tail -n 20 plan.txt; fail "step 4: plan failed"; }
grep '^verdict: ' plan.txt || fail "step 4: plan printed no verdict (plan.txt)"
rm -rf "$WORK/run"
"$COTRECIPE" run-all --preset smoke --output-dir "$WORK/run" --set "model.cache_dir=$WORK/models" \
  --set stage1.max_steps=1 --set stage2.max_steps=1 --set stage3.max_steps=1 --set stage3.mining_limit=8 \
  --set eval.limit=4 > run-all.log 2>&1 || { tail -n 30 run-all.log; fail "step 4: run-all failed (log: $WORK/run-all.log)"; }
"$WORK/venv/bin/python" - "$WORK/run" <<'PY'
import sys
from pathlib import Path

from recipe.store import rundir

run = Path(sys.argv[1])
entries = rundir.load_manifest(run)[rundir.ENTRIES_KEY]
status = {name: rec.get("status") for name, rec in entries.items()}
evals = sorted(p.parent.name for p in run.glob("eval/*/results.json"))
print(f"run-all: {status}; evaluated: {evals}")
if set(status) != {"stage1", "stage2", "stage3"} or set(status.values()) != {"done"} or "stage3" not in evals:
    sys.exit("offline_install_check: step 4: the tiny run did not finish every stage and the stage-3 evaluation")
PY
step "offline_install_check: passed (wheels $(du -sh "$WHEELS" | cut -f1), image $IMAGE)"
