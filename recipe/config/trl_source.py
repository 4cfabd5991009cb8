"""The fields of TRL's ``SFTConfig`` / ``GRPOConfig`` (their own, TRL's base config's and
``transformers.TrainingArguments'``) read from the installed source with :mod:`ast`, as the plain types a YAML value can
take: a config names and type-checks TRL's keys without importing TRL (tens of seconds on two loaded cores, and
transformers must load after unsloth on the GPU backend). The values are checked by TRL itself where it is imported
(:func:`recipe.train.trainer.built`).
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
import operator
from pathlib import Path
from typing import Any

# (package, file in it, class name) of a TRL config's bases, base first: the dataclass chain, fields in that order
_BASES = [("transformers", "training_args.py", "TrainingArguments"), ("trl", "trainer/base_config.py", "_BaseConfig")]
_PLAIN = {"bool", "int", "float", "str"}


@functools.cache
def _class(package: str, file: str, name: str) -> ast.ClassDef:
    """The class statement ``name`` of ``package/file``, located without importing the package."""
    spec = importlib.util.find_spec(package)  # a top-level package: found, not imported
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed")
    tree = ast.parse(Path(spec.submodule_search_locations[0], file).read_text(encoding="utf-8"))
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)


def _plain(node: ast.expr) -> tuple[Any, ...]:
    """An annotation as the plain alternatives a YAML value can take: bool, int, float, str, ``dict[str, Any]``,
    NoneType, ``list[...]``; a class YAML cannot spell is left out of a union (transformers annotates its string enums
    ``SchedulerType | str`` and checks the text; ``ParallelismConfig | None`` takes null alone), ``Any`` on its own."""
    if isinstance(node, ast.BinOp | ast.Tuple):  # X | Y; the values of Literal["a", "b"]
        parts = (node.left, node.right) if isinstance(node, ast.BinOp) else node.elts
        arms = [alt for part in parts for alt in _plain(part)]
        return tuple(dict.fromkeys(alt for alt in arms if alt is not Any)) or (Any,)
    if isinstance(node, ast.Constant):
        return (type(node.value),)
    name = ast.unparse(node.value if isinstance(node, ast.Subscript) else node)
    if isinstance(node, ast.Subscript) and name in ("Literal", "list"):
        items = _plain(node.slice)
        return items if name == "Literal" else (list[functools.reduce(operator.or_, items)],)
    return (dict[str, Any],) if name == "dict" else (getattr(builtins, name),) if name in _PLAIN else (Any,)


@functools.cache
def fields_of(trl_class: str) -> dict[str, tuple[Any, ...]]:
    """``name -> the plain types it takes`` for the installed TRL class's constructor fields, in dataclass order."""
    out: dict[str, tuple[Any, ...]] = {}
    own = ("trl", f"trainer/{trl_class.removesuffix('Config').lower()}_config.py", trl_class)  # SFTConfig, GRPOConfig
    for package, file, name in [*_BASES, own]:
        for statement in _class(package, file, name).body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                value = statement.value
                if isinstance(value, ast.Call) and any(k.arg == "init" and ast.unparse(k.value) == "False"
                                                       for k in value.keywords):
                    out.pop(statement.target.id, None)  # field(init=False): not a constructor argument
                else:
                    out[statement.target.id] = _plain(statement.annotation)
    return out
