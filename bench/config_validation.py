"""Config validation: ``resolve(preset=...)`` with pydantic's ``from_mapping`` vs the hand-written checker it replaced.

The hand-written one is ``recipe/config/typed.py`` as of commit 3d77827 (read with ``git show``, imported from a
temporary file), swapped into ``recipe.config.core`` in the same process, alternating call by call so machine noise
hits both. Prints, per preset, CPU microseconds per ``resolve()`` and per ``from_mapping()`` alone, with the ratio
(pydantic / hand-written); then what pydantic adds to a fresh process (CPU time): importing it and building the schema
once (the first ``from_mapping`` of a process).

    python bench/config_validation.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from recipe.config import core as C
from recipe.config import typed

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "3d77827"  # the last commit with the hand-written checker


def load_before() -> object:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:recipe/config/typed.py"], check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory(prefix="typed-before-") as folder:
        path = Path(folder) / "typed_before.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("typed_before", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def per_call_us(fn, repeats: int, variants: dict) -> dict[str, float]:
    """Median CPU microseconds of ``fn()`` under each variant (a from_mapping), alternating variant by variant (CPU
    time: the machine's other load does not count)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, from_mapping in variants.items():
            C.from_mapping = from_mapping  # resolve() looks the name up in recipe.config.core at call time
            t0 = time.process_time()
            fn(from_mapping)
            times[name].append((time.process_time() - t0) * 1e6)
    C.from_mapping = typed.from_mapping
    return {name: statistics.median(values) for name, values in times.items()}


# a fresh interpreter, CPU milliseconds (process_time: the machine's other load does not count): importing pydantic and
# the parts typed.py uses (its submodules load lazily on first use; typing_extensions and annotated_types come with it,
# so an upper bound), then the rest of `import recipe.cli`, building the Config schema once, two resolves
FRESH = """
import time
clock = time.process_time
t0 = clock()
import pydantic
for name in ("TypeAdapter", "ConfigDict", "BeforeValidator", "WrapValidator", "Field", "ValidationError"):
    getattr(pydantic, name)
t1 = clock()
import recipe.cli
from recipe.config import core as C
from recipe.config import typed
t2 = clock(); typed._adapter(C.Config); t3 = clock()
C.resolve(preset="smoke"); t4 = clock(); C.resolve(preset="smoke"); t5 = clock()
print(*((b - a) * 1000 for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5))))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    variants = {"hand": load_before().from_mapping, "pydantic": typed.from_mapping}
    print(f"{'preset':<16} {'resolve hand':>13} {'pydantic':>9} {'ratio':>6}   {'from_mapping hand':>18} "
          f"{'pydantic':>9} {'ratio':>6}   (CPU microseconds, median of {args.repeats})")
    ratios = []
    for name in C.preset_names():
        data = yaml.safe_load(C.preset_text(name))
        whole = per_call_us(lambda _fm, name=name: C.resolve(preset=name), args.repeats, variants)
        alone = per_call_us(lambda fm, data=data: fm(C.Config, data), args.repeats, variants)
        ratios.append(whole["pydantic"] / whole["hand"])
        print(f"{name:<16} {whole['hand']:>13.0f} {whole['pydantic']:>9.0f} {ratios[-1]:>6.2f}   "
              f"{alone['hand']:>18.0f} {alone['pydantic']:>9.0f} {alone['pydantic'] / alone['hand']:>6.2f}")
    print(f"resolve() ratio pydantic / hand, median over presets: {statistics.median(ratios):.2f}")
    fresh = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, check=True, cwd=ROOT)
    imp, cli, build, first, second = (float(x) for x in fresh.stdout.split())
    print(f"fresh process, CPU ms: import pydantic {imp:.0f} (the rest of import recipe.cli {cli:.0f}); "
          f"build the Config schema {build:.0f} (once per process); first resolve(preset='smoke') {first:.0f} "
          f"(its own first-call imports), second {second:.0f}")

if __name__ == "__main__":
    main()
