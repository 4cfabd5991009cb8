#!/usr/bin/env bash
# Run HERE, on a machine that reaches PyPI: download the wheels a lent GPU machine (no network) needs beside its image
# (scripts/gpu_image.txt: Python 3.12, x86-64, torch 2.11 CUDA 13, transformers 5.17, accelerate, ...): what cotrecipe
# needs and the image lacks or holds at an unread version (scripts/gpu_wheels_recipe.txt: trl, datasets, peft, pydantic
# and its three, filelock, fsspec, ...) and the unsloth set (scripts/gpu_wheels_unsloth.txt). scripts/install_carried.sh
# installs them there (scripts/gpu_check.sh) and here (scripts/offline_install_check.sh, which proves the set complete).
#
#   scripts/gpu_check_wheels.sh               # -> .gpu-wheels/ (gitignored); prints every size and the total
#   scripts/gpu_check_wheels.sh --check DIR   # only the size check of a folder (exit 1 above the limit)
#
# A device call carries at most 64 MiB with the working tree, so the folder must stay at or under 60 MiB
# (GPU_WHEELS_LIMIT_MIB). Two wheels are trimmed to fit: bitsandbytes keeps only the one CUDA library the machine's
# torch loads (libbitsandbytes_cuda130.so; BNB_CUDA=130), unsloth drops its `studio` web app and `unsloth_cli`, which
# training never imports. Their RECORD files are rewritten to match, so `pip install` accepts them.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${GPU_WHEELS_DIR:-.gpu-wheels}"
LIMIT_MIB="${GPU_WHEELS_LIMIT_MIB:-60}"
BNB_CUDA="${BNB_CUDA:-130}"

check_size() {  # check_size DIR: print each file's size and the total; fail above LIMIT_MIB
  python3 - "$1" "$LIMIT_MIB" <<'PY'
import sys
from pathlib import Path

folder, limit = Path(sys.argv[1]), float(sys.argv[2])
files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
total = 0
for p in files:
    size = p.stat().st_size
    total += size
    print(f"{size / 2**20:9.2f} MiB  {p.relative_to(folder)}")
print(f"{total / 2**20:9.2f} MiB  total in {folder} (limit {limit:g} MiB)")
if not files:
    sys.exit(f"gpu_check_wheels: {folder} holds no files")
if total > limit * 2**20:
    sys.exit(f"gpu_check_wheels: {folder} is {total / 2**20:.2f} MiB, over the {limit:g} MiB a device call may carry: "
             "split the wheels into two folders and carry them in two calls")
PY
}

if [ "${1:-}" = "--check" ]; then
  check_size "${2:?usage: $0 --check DIR}"
  exit
fi

rm -rf "$OUT"
mkdir -p "$OUT"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$OUT" -r scripts/gpu_wheels_recipe.txt \
  -r scripts/gpu_wheels_unsloth.txt

python3 - "$OUT" "$BNB_CUDA" <<'PY'
"""Trim a wheel in place: drop members, rewrite RECORD without them."""
import re
import sys
import zipfile
from pathlib import Path

out, cuda = Path(sys.argv[1]), sys.argv[2]


def trim(wheel: Path, drop) -> None:
    tmp = wheel.with_suffix(".tmp")
    dropped = 0
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if drop(info.filename):
                dropped += info.file_size
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = data.decode().splitlines()
                data = ("\n".join(r for r in rows if not drop(r.split(",", 1)[0])) + "\n").encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(wheel)
    print(f"trimmed {wheel.name}: {dropped / 2**20:.1f} MiB uncompressed removed")


(bnb,) = out.glob("bitsandbytes-*.whl")
keep = f"bitsandbytes/libbitsandbytes_cuda{cuda}.so"
trim(bnb, lambda name: re.fullmatch(r"bitsandbytes/libbitsandbytes_(cuda|rocm|xpu)\w*\.so", name) and name != keep)
with zipfile.ZipFile(bnb) as z:
    assert keep in z.namelist(), f"{keep} is not in {bnb.name}: check BNB_CUDA"
(unsloth,) = out.glob("unsloth-*.whl")
trim(unsloth, lambda name: name.startswith(("studio/", "unsloth_cli/")))
PY

check_size "$OUT"
