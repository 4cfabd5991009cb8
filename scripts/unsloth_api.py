"""Extract the signatures of the unsloth / unsloth_zoo functions the recipe calls, from the wheels' source (``ast``,
nothing is imported or executed), into ``tests/data/unsloth_api_2026.10.x.json``.

Regenerate (no GPU needed)::

    pip download --no-deps -d /tmp/whl unsloth==2026.10.9 unsloth_zoo==2026.10.9
    python scripts/unsloth_api.py /tmp/whl/unsloth-2026.10.9-py3-none-any.whl \
        /tmp/whl/unsloth_zoo-2026.10.9-py3-none-any.whl > tests/data/unsloth_api_2026.10.x.json

Arguments may also be site-packages folders (the test compares an installed unsloth with the vendored file).
``tests/test_gpu_backend.py`` binds every call the recipe makes against these signatures.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path

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


def signature_params(fn: ast.FunctionDef) -> list[dict]:
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


def _files(location: str) -> dict[str, str]:
    """Relative path -> text for the files we read, from a wheel or an installed site-packages folder."""
    wanted = {path for _, path, _, _ in WANTED}
    if zipfile.is_zipfile(location):
        with zipfile.ZipFile(location) as zf:
            return {n: zf.read(n).decode() for n in zf.namelist() if n in wanted or n.endswith(".dist-info/METADATA")}
    root = Path(location)
    found = {p: (root / p).read_text() for p in wanted if (root / p).is_file()}
    for meta in root.glob("unsloth*.dist-info/METADATA"):
        found[str(meta.relative_to(root))] = meta.read_text()
    return found


def extract(locations: list[str]) -> dict:
    """Signatures from wheels or site-packages folders (unsloth's and unsloth_zoo's may be in different ones)."""
    sources, versions = {}, {}
    for location in locations:
        for name, text in _files(location).items():
            meta = re.match(r"([A-Za-z0-9_]+)-([^-/]+)\.dist-info/METADATA$", name)
            if meta:
                versions[meta.group(1).lower()] = meta.group(2)
            else:
                sources[name] = text
    out = {"versions": versions, "generated_by": "scripts/unsloth_api.py", "functions": {}}
    for qualname, path, cls, name in WANTED:
        fn = _find(ast.parse(sources[path]), cls, name)
        out["functions"][qualname] = {"source": f"{path}:{fn.lineno}", "parameters": signature_params(fn)}
    return out


if __name__ == "__main__":
    json.dump(extract(sys.argv[1:]), sys.stdout, indent=1)
    sys.stdout.write("\n")
