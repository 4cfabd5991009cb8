#!/usr/bin/env bash
# CI: resolve the `gpu-novllm` extra against each torch Google Colab ships, for Linux x86-64, without installing, and
# fail loudly when one has no xformers wheel. That extra is what recipe/tools/colab_install.py installs on an NVIDIA
# driver older than R580: Unsloth on the torch the machine already has (`pip install -e REPO[gpu-novllm]
# torch==<installed>`), no vLLM. Unsloth 2026.10.x requires xformers on Linux x86-64 (its METADATA:
# `xformers>=0.0.27.post2; ... platform_machine == "x86_64"`), and each xformers wheel is built for one torch (read
# from PyPI's METADATA: 0.0.35 torch>=2.10, 0.0.34 torch==2.10.0, 0.0.33.post1 torch==2.9.0, 0.0.32.post2
# torch==2.8.0, 0.0.29.post3 torch==2.6.0): for a torch no wheel matches, pip on Colab would fall back to building
# xformers from source. --only-binary xformers makes that a resolution failure here instead.
#
# Colab's torch versions, from github.com/googlecolab/backend-info at a724079 (2026-08-19): the current runtime from
# pip-freeze.gpu.txt (torch==2.11.0+cu128) and os-info-gpu.txt (Python 3.13.15); the runtimes a notebook can pin from
# README.md's "Colab's Past Runtime Versions". Colab's torch carries a local tag (+cu128): a wheel's `torch==X` matches
# X+cu128 (PEP 440), so resolving the public X picks the same xformers.
# Needs PyPI; the resolutions run side by side (~15-20 s). Usage: .ci/colab_resolve.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIMES=(  # label, torch, Python
  "current 2.11.0 3.13"
  "2026.07 2.11.0 3.12"
  "2026.04 2.10.0 3.12"
  "2026.01 2.9.0 3.12"
  "2025.10 2.8.0 3.12"
  "2025.07 2.6.0 3.11"
)

command -v uv >/dev/null 2>&1 || python -m pip install --quiet uv
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pids=()
for runtime in "${RUNTIMES[@]}"; do
  read -r label torch py <<<"$runtime"
  echo "torch==$torch" > "$work/$label.constraints"
  uv pip compile pyproject.toml --extra gpu-novllm -c "$work/$label.constraints" --only-binary xformers \
    --python-platform x86_64-manylinux_2_28 --python-version "$py" --no-header --quiet -o "$work/$label.txt" \
    > "$work/$label.log" 2>&1 &
  pids+=("$!")
done

failed=()
for i in "${!RUNTIMES[@]}"; do
  read -r label torch py <<<"${RUNTIMES[$i]}"
  what="gpu-novllm on Colab's $label runtime (torch $torch, Python $py)"
  if ! wait "${pids[$i]}"; then
    cat "$work/$label.log" >&2
    echo "colab_resolve: $what does not resolve (uv's message above; if it names xformers, no xformers wheel is" \
      "built for torch $torch)" >&2
    failed+=("$label")
  elif ! python3 .ci/check_resolved.py "$work/$label.txt" "$what" "torch==$torch" "xformers>=0.0.27.post2" \
      "unsloth>=2026.10.4,<2026.11" "unsloth-zoo>=2026.10.4,<2026.11" "bitsandbytes" "trl==1.14.2" \
      "transformers==5.17.0"; then
    failed+=("$label")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "colab_resolve: the gpu-novllm extra fails on Colab runtime(s) ${failed[*]}" >&2
  exit 1
fi
