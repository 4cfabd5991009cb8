"""pyproject.toml declares what the package imports, and CI installs the floors at the versions of constraints.txt."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

# import name -> distribution name, where they differ
DIST_OF = {"yaml": "pyyaml"}


def project() -> dict:
    if tomllib is None:
        import pytest

        pytest.skip("tomllib needs Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirements(group: str | None = None) -> dict[str, Requirement]:
    reqs = project()["dependencies"] if group is None else project()["optional-dependencies"][group]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in reqs}


def third_party_imports() -> set[str]:
    found = set()
    for path in (ROOT / "recipe").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return {n for n in found if n not in sys.stdlib_module_names and n != "recipe"}


def test_every_imported_package_is_declared():
    declared = set(requirements()) | set(requirements("gpu")) | set(requirements("teacher"))
    missing = {canonicalize_name(DIST_OF.get(n, n)) for n in third_party_imports()} - declared
    assert not missing, f"imported by recipe/ but not declared in pyproject.toml: {sorted(missing)}"
    assert "pyarrow" in requirements() and "gguf" in requirements()  # parquet reader; the CPU demo's GGUF model


def test_every_core_dependency_is_imported_except_the_gguf_reader():
    """Nothing unused in the core set: each is imported by recipe/, except gguf, which transformers' GGUF reader needs
    to convert the CPU demo's model (pyproject says so beside it)."""
    imported = {canonicalize_name(DIST_OF.get(n, n)) for n in third_party_imports()}
    assert set(requirements()) - imported == {"gguf"}


def test_the_teacher_extra_is_the_openai_client_and_dev_installs_it():
    """`cotrecipe teach --source openai:` needs `openai` (recipe/teacher/client.py names the extra when it is missing);
    CI installs `.[dev]`, which must bring the same client so the teach tests drive the real one."""
    from recipe.teacher.client import EXTRA

    teacher = requirements(EXTRA)
    assert set(teacher) == {"openai"} and "openai" not in requirements()
    assert str(requirements("dev")["openai"].specifier) == str(teacher["openai"].specifier)


def test_constraints_pin_the_floors_within_their_ranges_and_ci_installs_with_them():
    declared = {**requirements(), **requirements("dev")}
    lines = [x for x in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
             if x.strip() and not x.startswith("#")]
    assert lines, "constraints.txt is empty"
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.+-]*", line), f"not an exact pin: {line}"
        name, version = line.split("==")
        req = declared.get(canonicalize_name(name))
        assert req is not None, f"constraints.txt pins {name}, which pyproject.toml does not declare"
        assert req.specifier.contains(version), f"{line} is outside pyproject's {req}"
    floors = {n for n, r in declared.items() if n != "torch" and not any(s.operator == "==" for s in r.specifier)}
    pinned = {canonicalize_name(x.split("==")[0]) for x in lines}
    assert floors <= pinned, f"floors without a tested version in constraints.txt: {sorted(floors - pinned)}"
    assert "-e '.[dev]' -c constraints.txt" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
