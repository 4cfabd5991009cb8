#!/usr/bin/env bash
# CI: resolve the `gpu` extra for Linux x86-64 / CPython 3.12 without installing it (no GPU needed), and fail when
# vllm, torch or unsloth resolve outside the range the recipe is written against (see pyproject.toml's comments).
# Needs network access to PyPI; takes ~20 s. Usage: .ci/gpu_resolve.sh [output.txt]
set -euo pipefail
cd "$(dirname "$0")/.."

command -v uv >/dev/null 2>&1 || python -m pip install --quiet uv
out="${1:-$(mktemp)}"
uv pip compile pyproject.toml --extra gpu --python-platform x86_64-manylinux_2_28 --python-version 3.12 \
  --no-header --quiet -o "$out"

# The range the recipe supports for each (keep in step with pyproject.toml's gpu extra): vllm < 0.28 keeps bitsandbytes
# in-tree and trl 1.14.2 supports 0.20-0.30; torch is what vllm 0.27.1 pins; unsloth is bound to
# tests/data/unsloth_api_2026.10.x.json.
python3 .ci/check_resolved.py "$out" "gpu extra" "vllm==0.27.1" "torch==2.13.0" "unsloth>=2026.10.4,<2026.11" \
  "unsloth-zoo>=2026.10.4,<2026.11" "trl==1.14.2" "transformers==5.17.0"
