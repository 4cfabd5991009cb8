"""The package's layout shows its architecture: few flat modules, small packages by concern, every package says
what it owns, and imports flow one way down the layers that ``recipe/__init__.py`` and the README's
"Architecture" section draw (checked here on the import graph of tests/test_imports.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from test_imports import GRAPH, MODULES, PACKAGE

MAX_FLAT = 6  # modules directly under recipe/ besides __init__.py
MAX_PER_PACKAGE = 12  # modules in one package besides its __init__.py

# Top first. A module may import its own group and any group of a LOWER layer; groups that share a layer (train,
# eval, tools) may not import each other. A group is a package or one module (matched on whole dotted parts).
LAYERS: list[list[tuple[str, ...]]] = [
    [("recipe.cli",)],
    [("recipe.run",)],
    [("recipe.train",), ("recipe.eval",), ("recipe.tools",)],
    [("recipe.teacher",)],
    [("recipe.store",)],
    [("recipe.config",)],
    [("recipe.rewards",)],
    [("recipe.models",)],
    [("recipe.data",)],
    [("recipe.cli_common",)],
    [("recipe.errors", "recipe.fsio", "recipe.dist", "recipe.entries", "recipe")],
]


def group_of(module: str) -> tuple[int, tuple[str, ...]]:
    """``(layer index, group)`` of a module: the group naming it exactly, else the one naming its package."""
    exact = [(i, g) for i, layer in enumerate(LAYERS) for g in layer if module in g]
    if exact:
        return exact[0]
    parts = module.split(".")
    for n in range(len(parts) - 1, 1, -1):
        prefix = ".".join(parts[:n])
        found = [(i, g) for i, layer in enumerate(LAYERS) for g in layer if prefix in g and prefix != "recipe"]
        if found:
            return found[0]
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py: add it to LAYERS")


def layer_violations(graph: dict[str, list[tuple[str, bool, str]]]) -> list[str]:
    bad = []
    for name, found in graph.items():
        layer, group = group_of(name)
        for target in sorted({t for t, _, _ in found if t in MODULES and t != name}):
            t_layer, t_group = group_of(target)
            if t_group != group and t_layer <= layer:
                bad.append(f"{name} -> {target}")
    return bad


def packages() -> dict[Path, list[Path]]:
    return {init.parent: sorted(p for p in init.parent.glob("*.py") if p.name != "__init__.py")
            for init in PACKAGE.rglob("__init__.py")}


def test_few_flat_modules():
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(flat) <= MAX_FLAT, f"{len(flat)} flat modules under recipe/ (at most {MAX_FLAT}): {flat}"


def test_small_packages():
    big = {str(folder.relative_to(PACKAGE.parent)): len(mods) for folder, mods in packages().items()
           if folder != PACKAGE and len(mods) > MAX_PER_PACKAGE}
    assert not big, f"packages over {MAX_PER_PACKAGE} modules: {big}"


def test_every_package_says_what_it_owns_and_may_import():
    for folder in packages():
        if folder == PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"{folder.name}/__init__.py: the docstring says what it owns and may import"


def test_imports_flow_down_the_layers():
    bad = layer_violations(GRAPH)
    assert not bad, "imports against the layers of tests/test_layout.py:\n" + "\n".join(bad)


def test_the_layer_check_catches_an_upward_import():
    upward = {"recipe.data.prompts": [("recipe.models.model", False, "from recipe.models import model")],
              "recipe.train.grpo": [("recipe.eval.report", False, "from recipe.eval import report")],
              "recipe.eval.report": [("recipe.store.rundir", False, "from recipe.store import rundir")]}
    assert layer_violations(upward) == ["recipe.data.prompts -> recipe.models.model",
                                        "recipe.train.grpo -> recipe.eval.report"]


def test_readme_map_names_every_package():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Architecture"):]
    section = section[:section.index("\n## ", 1)]
    drawn = set(re.findall(r"\b(\w+)/", section))
    folders = {folder.name for folder in packages() if folder != PACKAGE}
    assert folders <= drawn, f"packages missing from the README's Architecture map: {sorted(folders - drawn)}"
    flat = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert all(name in section for name in flat), f"flat modules missing from the map: {sorted(flat)}"


def test_the_public_import_paths_a_user_would_write_still_work():
    from recipe.config import ConfigError, ModelConfig, core, resolve, schema
    from recipe.data import DataError, Problem, gsm8k, load_gsm8k
    from recipe.errors import ConfigError as config_error
    from recipe.errors import DataError as data_error

    assert (resolve, ModelConfig) == (core.resolve, schema.ModelConfig) and ConfigError is config_error
    assert (load_gsm8k, Problem) == (gsm8k.load_gsm8k, gsm8k.Problem) and DataError is data_error
