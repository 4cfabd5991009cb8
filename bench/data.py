"""Time the data pipeline on all GSM8K train rows: parse, then the stage 1, 2 and 3 builders.

Run from the repository root: ``python bench/data.py [source]``. The default source is the shared GSM8K copy
(``../shared/data/gsm8k``); without it the bench falls back to 7,473 synthetic rows and says so.
Target: the whole pipeline in under 2 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.data.gsm8k import load_gsm8k  # noqa: E402
from recipe.train.stage1 import build_rows as build_stage1  # noqa: E402
from recipe.train.stage2 import build_rows as build_stage2  # noqa: E402
from recipe.train.stage3 import build_rows as build_stage3  # noqa: E402

TARGET_S = 2.0
SHARED = Path(__file__).resolve().parents[2] / "shared/data/gsm8k"


def main() -> None:
    source = sys.argv[1] if len(sys.argv) > 1 else (str(SHARED) if SHARED.is_dir() else "synthetic:7473")
    timings: list[tuple[str, float, int]] = []

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        rows = result[0] if isinstance(result, tuple) else result
        timings.append((name, time.perf_counter() - start, len(rows)))
        return result

    problems, report = timed("load + parse", lambda: load_gsm8k(source, split="train", strict=True))
    timed("build_stage1", lambda: build_stage1(problems, seed=42))
    timed("build_stage2", lambda: build_stage2(problems, seed=42))
    timed("build_stage3", lambda: build_stage3(problems))

    print(f"source: {source}  ({report.summary()})")
    for name, seconds, n in timings:
        print(f"{name:<14} {seconds * 1000:8.1f} ms  {n:6d} rows  {n / seconds:10.0f} rows/s")
    total = sum(seconds for _, seconds, _ in timings)
    print(f"{'total':<14} {total * 1000:8.1f} ms  target {TARGET_S:.1f} s  ratio total/target = {total / TARGET_S:.3f}"
          f"  ({'within' if total <= TARGET_S else 'OVER'} target)")


if __name__ == "__main__":
    main()
