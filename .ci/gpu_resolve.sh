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

python3 - "$out" <<'PY'
import re
import sys


def key(v):
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:4])


# name -> [low, high): the range the recipe supports (keep in step with pyproject.toml's gpu extra)
SUPPORTED = {
    "vllm": ("0.27.1", "0.27.2"),  # < 0.28: bitsandbytes in-tree; trl 1.14.2 supports 0.20-0.30
    "torch": ("2.13.0", "2.13.1"),  # what vllm 0.27.1 pins
    "unsloth": ("2026.10.4", "2026.11"),  # bound to tests/data/unsloth_api_2026.10.x.json
    "unsloth-zoo": ("2026.10.4", "2026.11"),
    "trl": ("1.14.2", "1.14.3"),
    "transformers": ("5.17.0", "5.17.1"),
}
pins = {}
for line in open(sys.argv[1]):
    m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
    if m:
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
bad = [f"{n}=={pins.get(n)} (supported: >={lo},<{hi})" for n, (lo, hi) in SUPPORTED.items()
       if n not in pins or not key(lo) <= key(pins[n]) < key(hi)]
print("gpu extra resolves to: " + ", ".join(f"{n}=={pins.get(n)}" for n in SUPPORTED))
if bad:
    sys.exit("gpu extra resolved outside the supported range: " + "; ".join(bad))
PY
