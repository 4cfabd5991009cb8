"""The GPU install without a GPU: the pinned `gpu` extra, the vendored unsloth signatures (and the script that
extracts them), the GPU smoke test's model and the Colab notebook."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from recipe.config.schema import ModelConfig
from recipe.models import model as M

ROOT = Path(__file__).resolve().parents[1]
API = json.loads((ROOT / "tests" / "data" / "unsloth_api_2026.10.x.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# 1-2, 9: the pins and the vendored signatures (the stand-ins binding to them: test_gpu_backend.py)
# ----------------------------------------------------------------------------------------------------------------


def gpu_extra() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name.lower().replace("_", "-"): Requirement(r) for r in
            project["optional-dependencies"]["gpu"]}


def test_gpu_extra_pins_a_set_that_keeps_bitsandbytes_inside_vllm():
    req = gpu_extra()
    assert req["vllm"].specifier.filter(["0.2.5", "0.27.1", "0.28.0", "0.32.0"]) and \
        list(req["vllm"].specifier.filter(["0.2.5", "0.27.1", "0.28.0", "0.32.0"])) == ["0.27.1"]
    assert list(req["torch"].specifier.filter(["2.12.0", "2.13.0", "2.14.0"])) == ["2.13.0"]
    for name in ("unsloth", "unsloth-zoo"):  # .1-.3 want trl<=1.13; 2026.11 is not what the signatures were read from
        assert list(req[name].specifier.filter(["2026.10.3", "2026.10.4", "2026.10.9", "2026.11.1"])) == \
            ["2026.10.4", "2026.10.9"]
    assert not req["bitsandbytes"].specifier.contains("0.46.0") and not req["bitsandbytes"].specifier.contains("0.48.0")
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("gpu = ["):text.index("]", text.index("gpu = ["))]
    lines = block.splitlines()[1:]
    for i, line in enumerate(lines):  # every pin carries its reason on the line(s) above
        if line.strip().startswith('"'):
            assert lines[i - 1].strip().startswith("#"), f"no reason above {line.strip()}"
    assert ".ci/gpu_resolve.sh" in (ROOT / ".ci" / "run").read_text()


def test_vendored_signatures_match_the_pinned_range():
    versions = API["versions"]
    extra = gpu_extra()
    assert extra["unsloth"].specifier.contains(versions["unsloth"])
    assert extra["unsloth-zoo"].specifier.contains(versions["unsloth_zoo"])
    assert set(API["functions"]) >= {"unsloth.FastLanguageModel.from_pretrained", "unsloth_zoo.vllm_utils.delete_vllm",
                                     "unsloth.FastLanguageModel.get_peft_model"}


def load_extractor():
    spec = importlib.util.spec_from_file_location("unsloth_api", ROOT / "scripts" / "unsloth_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_extractor_reads_what_is_vendored(tmp_path):
    """scripts/unsloth_api.py, run on a source tree declaring the vendored signatures, gives them back."""
    extractor = load_extractor()
    for path in {p for _, p, _, _ in extractor.WANTED}:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(vendored_source(path, extractor))
    got = extractor.extract([str(tmp_path)])["functions"]
    assert {k: v["parameters"] for k, v in got.items()} == {k: v["parameters"] for k, v in API["functions"].items()}


def vendored_source(path: str, extractor) -> str:
    """Python source declaring the vendored signatures of ``path``'s functions (methods grouped by class)."""
    by_class: dict[str | None, list[str]] = {}
    for qualname, p, cls, name in extractor.WANTED:
        if p != path:
            continue
        params = API["functions"][qualname]["parameters"]
        args = [{"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(q["kind"], "") + q["name"] +
                ("=0" if q["has_default"] else "") for q in params]
        if any(q["kind"] == "KEYWORD_ONLY" for q in params) and not any(q["kind"] == "VAR_POSITIONAL" for q in params):
            args.insert(next(i for i, q in enumerate(params) if q["kind"] == "KEYWORD_ONLY"), "*")
        by_class.setdefault(cls, []).append(f"def {name}({', '.join(args)}):\n    pass\n")
    out = []
    for cls, defs in by_class.items():
        if cls is None:
            out.extend(defs)
        else:
            out.append(f"class {cls}:\n" + "".join(textwrap.indent(d, "    ") for d in defs))
    return "\n".join(out)


def test_installed_unsloth_has_the_vendored_signatures():
    """Where the gpu extra is installed, the vendored file must still describe it (else regenerate it)."""
    specs = [importlib.util.find_spec(name) for name in ("unsloth", "unsloth_zoo")]
    if any(spec is None for spec in specs):
        pytest.skip("unsloth / unsloth_zoo not installed (CPU machine)")
    folders = sorted({str(Path(spec.origin).parents[1]) for spec in specs})
    got = load_extractor().extract(folders)["functions"]
    stale = [k for k, v in API["functions"].items() if got[k]["parameters"] != v["parameters"]]
    assert not stale, f"{stale} changed in the installed unsloth: rerun scripts/unsloth_api.py"


# ----------------------------------------------------------------------------------------------------------------
# 10-11: the smoke test's model and the Colab notebook
# ----------------------------------------------------------------------------------------------------------------


def test_gpu_smoke_model_has_a_head_size_vllm_accepts(tmp_path):
    folder = M.resolve_model_path(ModelConfig(name_or_path=M.TINY_HD64, cache_dir=str(tmp_path)))
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64 and config["model_type"] == "qwen2"
    assert "builtin:tiny-qwen2-hd64" in (ROOT / "scripts" / "gpu_smoke.sh").read_text()


def test_colab_notebook_installs_visibly_sets_the_t4_env_first_and_runs_a_stage_per_cell():
    cells = ["".join(c["source"]) for c in json.loads((ROOT / "notebooks" / "colab_t4.ipynb").read_text())["cells"]
             if c["cell_type"] == "code"]
    assert not any("%%capture" in c for c in cells)
    install = next(i for i, c in enumerate(cells) if "colab_install.py" in c)  # decides, then runs pip (visible)
    env = next(i for i, c in enumerate(cells) if "UNSLOTH_VLLM_NO_FLASHINFER" in c)
    runs = [i for i, c in enumerate(cells) if re.search(r"%cotrecipe (stage\d|eval|run-all|baseline)", c)]
    assert install < env < min(runs)
    for stage in ("stage1", "stage2", "stage3"):
        assert sum(f"%cotrecipe {stage} " in c for c in cells) == 1
    assert "/content/drive/" in cells[0] and all("{RUN_DIR}" in cells[i] for i in runs)
    readme = (ROOT / "README.md").read_text()
    notebook = (ROOT / "notebooks" / "colab_t4.ipynb").read_text()
    gpu_status = " ".join(readme.split("## GPU path", 1)[1].split("\n## ", 1)[0].split())
    assert "has not been run on a GPU" in notebook
    assert "have not run on a GPU" in gpu_status and "`notebooks/colab_t4.ipynb`" in gpu_status


# ----------------------------------------------------------------------------------------------------------------
# the device check for a lent GPU machine without network (scripts/gpu_check*.sh)
# ----------------------------------------------------------------------------------------------------------------


def test_device_check_scripts_parse_and_install_through_the_carried_install():
    for name in ("gpu_check.sh", "gpu_check_wheels.sh", "install_carried.sh", "offline_install_check.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / name)]).returncode == 0, name
    check = (ROOT / "scripts" / "gpu_check.sh").read_text()
    assert 'scripts/install_carried.sh "$BASE_PY" "$WHEELS"' in check and "--preset qwen2.5-3b-t4" in check
    assert "Qwen2.5-3B.json" in check and "NOT RUN YET" in check
    wheels = (ROOT / "scripts" / "gpu_check_wheels.sh").read_text()
    assert "-r scripts/gpu_wheels_recipe.txt" in wheels and "-r scripts/gpu_wheels_unsloth.txt" in wheels
    assert ".gpu-wheels/" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("mib, refused", [(61, True), (59, False)])
def test_the_wheel_folder_size_check_refuses_more_than_60_mib(tmp_path, mib, refused):
    folder = tmp_path / "wheels"
    folder.mkdir()
    with open(folder / "big-1.0-py3-none-any.whl", "wb") as f:
        f.truncate(mib * 2**20)  # sparse: the check counts the size a transfer carries
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check_wheels.sh"), "--check", str(folder)],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode != 0) == refused, proc.stdout + proc.stderr
    assert f"{mib:.2f} MiB  total in {folder} (limit 60 MiB)" in proc.stdout
    assert ("over the 60 MiB a device call may carry" in proc.stderr) == refused


# ----------------------------------------------------------------------------------------------------------------
# the notebooks install what the machine's driver can run, from the checkout they run in
# ----------------------------------------------------------------------------------------------------------------


def colab_install():
    """recipe/tools/colab_install.py loaded by path, as the notebook cell runs it before `recipe` is installed."""
    spec = importlib.util.spec_from_file_location("colab_install_by_path", ROOT / "recipe" / "tools" / "colab_install.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_a_cuda_13_capable_driver_gets_the_pinned_set():
    ci = colab_install()
    got = ci.choose("580.82.07\n", "/content/cotrecipe", "2.8.0+cu126")
    assert got.mode == "gpu" and got.pip_args == ("-e", "/content/cotrecipe[gpu]", "--only-binary", "xformers")
    assert got.line.startswith("NVIDIA driver 580.82.07 (R580+, CUDA 13): installing the pinned gpu set")
    assert ci.choose("595.10", "/r", None).mode == "gpu"


@pytest.mark.parametrize("driver", ["550.54.15", "535.104.05\n580.65.06\n"])  # two GPUs: the older driver decides
def test_an_older_driver_keeps_its_torch_and_installs_unsloth_without_vllm(driver):
    got = colab_install().choose(driver, "/content/cotrecipe", "2.8.0+cu126")
    assert got.mode == "gpu-novllm"
    assert got.pip_args == ("-e", "/content/cotrecipe[gpu-novllm]", "torch==2.8.0+cu126", "--only-binary", "xformers")
    assert "older than R580, which torch 2.13.0 (CUDA 13) needs: keeping torch 2.8.0+cu126" in got.line
    assert "without vLLM (vllm.enabled=false" in got.line and "\n" not in got.line


@pytest.mark.parametrize("driver", [None, "", "NVIDIA-SMI has failed because it couldn't communicate with the driver"])
def test_no_driver_installs_cotrecipe_alone(driver):
    got = colab_install().choose(driver, "/r", "2.8.0")
    assert got.mode == "cpu" and got.pip_args == ("-e", "/r") and got.line.startswith("no NVIDIA driver found")


def test_an_older_driver_without_torch_stops_with_one_line():
    got = colab_install().choose("470.256.02", "/r", None)
    assert got.mode == "stop" and got.pip_args == () and "no torch is installed" in got.line


def test_the_decision_binds_to_the_pins_and_the_fallback_extra():
    ci = colab_install()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert str(gpu_extra()["torch"].specifier) == f"=={ci.TORCH_PIN}"
    fallback = {Requirement(r).name.lower().replace("_", "-"): Requirement(r) for r in extras["gpu-novllm"]}
    assert set(fallback) == {"unsloth", "unsloth-zoo", "bitsandbytes"}, "no vllm, torch or xformers in the fallback"
    assert all(str(fallback[n].specifier) == str(gpu_extra()[n].specifier) for n in fallback)


def test_the_script_reads_the_driver_prints_one_line_then_runs_pip(tmp_path, monkeypatch, capsys):
    ci = colab_install()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --query-gpu=driver_version ] && echo 550.54.15\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(ci, "installed_torch", lambda: "2.8.0+cu126")
    calls = []
    monkeypatch.setattr(ci.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert ci.main([str(tmp_path / "repo")]) == 0
    assert capsys.readouterr().out.startswith("NVIDIA driver 550.54.15 is older than R580")
    assert calls == [[sys.executable, "-m", "pip", "install", "-e", f"{tmp_path / 'repo'}[gpu-novllm]",
                      "torch==2.8.0+cu126", "--only-binary", "xformers"]]


def test_no_notebook_clones_a_placeholder_and_each_installs_from_its_checkout():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        assert "<you>" not in text and "git clone" not in text and "'clone'" not in text, path.name
        setup = "".join(next(c for c in json.loads(text)["cells"] if c["cell_type"] == "code")["source"])
        assert "os.path.join(REPO, 'recipe', 'tools', 'colab_install.py')" in setup and "COTRECIPE_REPO" in setup, path.name
        assert "vllm.enabled=false" in setup, path.name
