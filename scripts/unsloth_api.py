"""Extract the signatures of the unsloth / unsloth_zoo functions the recipe calls, from the wheels' source (``ast``,
nothing is imported or executed), into ``tests/data/unsloth_api_2026.10.x.json``.

Regenerate (no GPU needed)::

    pip download --no-deps -d /tmp/whl unsloth==2026.10.9 unsloth_zoo==2026.10.9
    python scripts/unsloth_api.py /tmp/whl/unsloth-2026.10.9-py3-none-any.whl \
        /tmp/whl/unsloth_zoo-2026.10.9-py3-none-any.whl > tests/data/unsloth_api_2026.10.x.json

``tests/test_gpu_backend.py`` binds every call the recipe makes against these signatures.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile

# (qualified name the recipe calls, file in the wheel, class, function). FastLanguageModel.get_peft_model and
# for_inference are functools.wraps of FastLlamaModel's, so (like inspect.signature) we read the wrapped ones.
WANTED = [
    ("unsloth.FastLanguageModel.from_pretrained", "unsloth/models/loader.py", "FastLanguageModel", "from_pretrained"),
    ("unsloth.FastLanguageModel.get_peft_model", "unsloth/models/llama.py", "FastLlamaModel", "get_peft_model"),
    ("unsloth.FastLanguageModel.for_inference", "unsloth/models/llama.py", "FastLlamaModel", "for_inference"),
    ("unsloth.FastLanguageModel.for_training", "unsloth/models/llama.py", "FastLlamaModel", "for_training"),
    ("unsloth_zoo.vllm_utils.delete_vllm", "unsloth_zoo/vllm_utils.py", None, "delete_vllm"),
    ("unsloth_zoo.vllm_utils.load_vllm", "unsloth_zoo/vllm_utils.py", None, "load_vllm"),
]


def _params(fn: ast.FunctionDef) -> list[dict]:
    """Parameters in order: name, kind (inspect.Parameter kind names), has_default."""
    a = fn.args
    out = []
    positional = a.posonlyargs + a.args
    n_plain_defaults = len(a.defaults)
    for i, arg in enumerate(positional):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append({"name": arg.arg, "kind": kind, "has_default": i >= len(positional) - n_plain_defaults})
    if a.vararg:
        out.append({"name": a.vararg.arg, "kind": "VAR_POSITIONAL", "has_default": False})
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        out.append({"name": arg.arg, "kind": "KEYWORD_ONLY", "has_default": default is not None})
    if a.kwarg:
        out.append({"name": a.kwarg.arg, "kind": "VAR_KEYWORD", "has_default": False})
    return out


def _find(tree: ast.Module, cls: str | None, name: str) -> ast.FunctionDef:
    body = tree.body
    if cls is not None:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    return next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == name)


def extract(wheels: list[str]) -> dict:
    sources, versions = {}, {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.namelist():
                if info.endswith(".py"):
                    sources[info] = zf.read(info).decode()
                meta = re.match(r"([A-Za-z0-9_]+)-([^-]+)\.dist-info/METADATA$", info)
                if meta:
                    versions[meta.group(1).lower()] = meta.group(2)
    out = {"versions": versions, "generated_by": "scripts/unsloth_api.py", "functions": {}}
    for qualname, path, cls, name in WANTED:
        fn = _find(ast.parse(sources[path]), cls, name)
        out["functions"][qualname] = {"source": f"{path}:{fn.lineno}", "parameters": _params(fn)}
    return out


if __name__ == "__main__":
    json.dump(extract(sys.argv[1:]), sys.stdout, indent=1)
    sys.stdout.write("\n")
