"""CI: check a ``uv pip compile`` output against the versions the recipe supports, without installing anything.

    python3 .ci/check_resolved.py RESOLVED.txt LABEL 'NAME SPECIFIER' ...

Prints one line with what LABEL resolved to for each NAME, and exits with one line naming every NAME that is missing
from the resolution or outside its specifier (a requirement string, e.g. ``vllm==0.27.1``, ``xformers>=0.0.27.post2``).
Used by .ci/gpu_resolve.sh (the `gpu` extra) and .ci/colab_resolve.sh (the `gpu-novllm` extra on Colab's torch).
"""

from __future__ import annotations

import re
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def resolved(text: str) -> dict[str, str]:
    """``name==version`` lines of a compiled requirements file, by canonical name."""
    return {canonicalize_name(m.group(1)): m.group(2) for line in text.splitlines()
            if (m := re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line))}


def problems(pins: dict[str, str], wanted: list[Requirement]) -> list[str]:
    return [f"{r.name}=={pins.get(canonicalize_name(r.name))} (supported: {r.specifier})" for r in wanted
            if canonicalize_name(r.name) not in pins
            or not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]


def main(argv: list[str]) -> int:
    path, label, *specs = argv
    with open(path) as f:
        pins = resolved(f.read())
    wanted = [Requirement(s) for s in specs]
    print(f"{label} resolves to: " + ", ".join(f"{r.name}=={pins.get(canonicalize_name(r.name))}" for r in wanted))
    bad = problems(pins, wanted)
    if bad:
        sys.exit(f"{label} resolved outside the supported range: " + "; ".join(bad))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
