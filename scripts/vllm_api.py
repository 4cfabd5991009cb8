"""Extract the vLLM API the recipe calls (evaluation and mining through vLLM, ``recipe/models/vllm_generation.py``) from the
wheel's source (``ast``, nothing imported or executed) into ``tests/data/vllm_api_0.27.1.json``.

Regenerate (no GPU needed)::

    pip download --no-deps -d /tmp/whl vllm==0.27.1
    python scripts/vllm_api.py /tmp/whl/vllm-0.27.1-cp38-abi3-manylinux_2_28_x86_64.whl > tests/data/vllm_api_0.27.1.json

``tests/test_vllm_generation.py`` binds every call against these: constructor fields of the msgspec structs
(``SamplingParams``, ``LoRARequest``), ``LLM.generate``'s parameters, the ``TokensPrompt`` keys, and the output
fields read back (``RequestOutput``, ``CompletionOutput``).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile

from unsloth_api import signature_params  # the same AST reading of a signature (scripts/ is on sys.path)

# (name in the JSON, file in the wheel, class, method or None for the class's annotated fields)
WANTED = [
    ("vllm.SamplingParams", "vllm/sampling_params.py", "SamplingParams", None),
    ("vllm.lora.request.LoRARequest", "vllm/lora/request.py", "LoRARequest", None),
    ("vllm.LLM.generate", "vllm/entrypoints/llm.py", "LLM", "generate"),
    ("vllm.outputs.CompletionOutput", "vllm/outputs.py", "CompletionOutput", None),
    ("vllm.outputs.RequestOutput.__init__", "vllm/outputs.py", "RequestOutput", "__init__"),
    ("vllm.inputs.TokensPrompt", "vllm/inputs/llm.py", "TokensPrompt", None),
]
EXPORTS = ("LLM", "SamplingParams", "TokensPrompt")  # names ``vllm/__init__.py`` must export


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def _fields(cls: ast.ClassDef) -> list[dict]:
    """Annotated class-level fields in order (struct/dataclass/TypedDict), private ones left out."""
    out = []
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not node.target.id.startswith("_"):
            required = "NotRequired" not in ast.unparse(node.annotation)
            field = {"name": node.target.id, "kind": "POSITIONAL_OR_KEYWORD",
                     "has_default": node.value is not None or not required}
            try:  # a literal default (the stand-ins use it); anything else (a factory, an enum) is left out
                field["default"] = ast.literal_eval(node.value) if node.value is not None else None
            except ValueError:
                pass
            out.append(field)
    return out


def extract(wheel: str) -> dict:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        read = {n: zf.read(n).decode() for n in {path for _, path, _, _ in WANTED} | {"vllm/__init__.py"}}
        version = next(re.match(r"vllm-([^/]+)\.dist-info/METADATA$", n).group(1) for n in names
                       if re.match(r"vllm-[^/]+\.dist-info/METADATA$", n))
    functions = {}
    for qualname, path, cls_name, method in WANTED:
        cls = _class(ast.parse(read[path]), cls_name)
        if method is None:
            functions[qualname] = {"source": f"{path}:{cls.lineno}", "parameters": _fields(cls)}
        else:
            fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method)
            functions[qualname] = {"source": f"{path}:{fn.lineno}", "parameters": signature_params(fn)}
    exports = [name for name in EXPORTS if f'"{name}":' in read["vllm/__init__.py"]]
    return {"versions": {"vllm": version}, "generated_by": "scripts/vllm_api.py", "exports": exports,
            "functions": functions}


if __name__ == "__main__":
    json.dump(extract(sys.argv[1]), sys.stdout, indent=1)
    print()
