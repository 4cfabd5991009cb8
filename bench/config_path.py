"""The modules stage 2's config passes through on its way to TRL's ``GRPOTrainer``, measured by tracing the calls.

Run from the repository root: ``python bench/config_path.py``. It writes a smoke-preset run directory in a temporary
folder and runs the process that trains an entry (``recipe.run.child.main(["train", "--run", DIR, "--entry",
"stage2"])``, what ``run.process_per_entry`` starts) under ``sys.setprofile``, stopping when ``GRPOTrainer``'s
constructor is entered. Method:

- a call *carries the config* when one of its arguments is an object of the config layer (``Config`` or one of its
  sections, e.g. ``cfg.stage2``, ``cfg.vllm``, ``cfg.model``: any object whose class is defined in
  ``recipe.config``) and the called function lives in a ``recipe`` module outside ``recipe.config`` (the config
  reading and checking itself is not a step on its way);
- the *path* is the sequence of those modules in call order, consecutive repeats merged; before it come the
  modules the config passes through to start that child and be read there (``recipe.cli``,
  ``recipe.run.orchestrator``, ``recipe.run.subrun``, ``recipe.run.child``);
- *modules*: the distinct modules on the path; a *climb back* is a call that carries the config from a module into
  one of a higher layer (its caller: the nearest ``recipe`` frame outside ``recipe.config`` on the stack; layers:
  ``LAYERS`` of tests/test_layout.py, top first; the same group is no climb). Returning to a higher module and
  calling on from there is not a climb: the config goes down again.

Prints the path, the module count and the climbs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from test_layout import group_of  # noqa: E402

from recipe.config import core as config_mod  # noqa: E402
from recipe.entries import ENTRIES  # noqa: E402
from recipe.run import child  # noqa: E402
from recipe.store import rundir  # noqa: E402

PARENT = ["recipe.cli", "recipe.run.orchestrator", "recipe.run.subrun", "recipe.run.child"]


class Reached(Exception):
    """Raised when the trainer's constructor is entered: the config has arrived."""


def carries_config(frame) -> bool:
    code = frame.f_code
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    return any(type(frame.f_locals.get(n)).__module__.startswith("recipe.config") for n in names)


def caller_module(frame) -> str:
    """The module of the nearest recipe frame (outside recipe.config) that called ``frame``."""
    up = frame.f_back
    while up is not None:
        name = up.f_globals.get("__name__", "")
        if name.startswith("recipe.") and not name.startswith("recipe.config"):
            return name
        up = up.f_back
    return "recipe.run.child"


def trace_child(run_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    path: list[str] = []
    edges: list[tuple[str, str]] = []

    def profile(frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name == "__init__" and module.startswith("trl.trainer.grpo_trainer"):
            raise Reached
        if module.startswith("recipe.") and not module.startswith("recipe.config") and carries_config(frame):
            edges.append((caller_module(frame), module))
            if not path or path[-1] != module:
                path.append(module)

    sys.setprofile(profile)
    try:
        child.main(["train", "--run", str(run_dir), "--entry", "stage2"])
    except Reached:
        pass
    finally:
        sys.setprofile(None)
    return path, edges


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_mod.resolve(preset="smoke", overrides=[f"run.output_dir={tmp}/run", f"model.cache_dir={tmp}"])
        rundir.open_run(cfg, ENTRIES, force=False)  # config.yaml, manifest.json: what the child reads
        traced, edges = trace_child(Path(tmp) / "run")
    path = PARENT + traced
    edges = list(zip(PARENT, PARENT[1:])) + edges
    climbs = sorted({(a, b) for a, b in edges if group_of(b)[1] != group_of(a)[1] and group_of(b)[0] < group_of(a)[0]})
    print(" -> ".join(path))
    print(f"modules: {len(set(path))}  hops: {len(path) - 1}  climbs back: {len(climbs)}")
    for a, b in climbs:
        print(f"  climb: {a} -> {b}")


if __name__ == "__main__":
    main()
