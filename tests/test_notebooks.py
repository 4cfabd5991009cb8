"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel (nbclient) with the ``smoke`` preset, so a
renamed flag, a moved output file or a broken cell fails here instead of in a user's Colab session.

The notebooks share one run directory, in the order a user would run them: the stage notebooks train stages 1, 2 and
3, the evaluation notebook evaluates them, shows the report and exports; the Colab and CPU-demo notebooks then find
every stage done (their stage cells resume, i.e. skip) and add the SFT baseline.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

# ~2 min of notebook execution: outside the quick default loop; .ci/run executes them with the other slow tests.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
ORDER = ("stage1.ipynb", "stage2.ipynb", "stage3.ipynb", "eval_report.ipynb", "colab_t4.ipynb", "demo_cpu.ipynb")
NOTEBOOK_TIMEOUT_S = 600  # per notebook, all cells together; the smoke preset's slowest takes under a minute
KERNEL = "cotrecipe-test"  # a kernelspec made for these tests: this Python, whatever `python3` kernels exist
# Shorter than the smoke preset (the same values for every command, so the run's config check passes): CI checks that
# the cells run, not what the tiny model writes.
QUICK = ("stage1.max_steps=2 stage2.max_steps=2 stage3.max_steps=1 stage2.max_completion_length=16 "
         "stage3.max_completion_length=16 stage3.mining_limit=8 stage3.mining_max_new_tokens=16 "
         "eval.limit=4 eval.max_new_tokens=16")


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") if out.output_type == "stream" else "")
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def kernel_env(mp: pytest.MonkeyPatch, root: Path) -> None:
    """A kernelspec running this interpreter (found through JUPYTER_PATH), and an import path for this checkout."""
    spec = root / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(root / "jupyter"), os.environ.get("JUPYTER_PATH")])))
    # the kernel's `cotrecipe` processes import this checkout, whatever else is installed
    mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def execute(nb: nbformat.NotebookNode, cwd: Path) -> None:
    """Run every cell in a fresh kernel started in ``cwd``; raises on the first cell error, or when the notebook as a
    whole runs past NOTEBOOK_TIMEOUT_S (the kernel is interrupted, which stops the running command too)."""
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
    NotebookClient(nb, kernel_name=KERNEL, timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
                   interrupt_on_timeout=True, resources={"metadata": {"path": str(cwd)}}).execute()


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, dict]:
    """Execute every notebook once, in ORDER, with one shared run directory; record errors instead of raising so each
    notebook gets its own verdict below."""
    root = tmp_path_factory.mktemp("notebooks")
    run_dir = root / "run"
    results: dict[str, dict] = {}
    with pytest.MonkeyPatch.context() as mp:
        kernel_env(mp, root)
        mp.setenv("COTRECIPE_NOTEBOOK_PRESET", "smoke")
        mp.setenv("COTRECIPE_NOTEBOOK_RUN_DIR", str(run_dir))
        # the notebooks show report.png inline: drawn although the smoke preset leaves figures out
        mp.setenv("COTRECIPE_NOTEBOOK_SET", f"model.cache_dir={root / 'model-cache'} eval.figures=true {QUICK}")
        for name in ORDER:
            nb = read(name)
            t0 = time.monotonic()
            try:
                execute(nb, root)
                error = None
            except (CellExecutionError, CellTimeoutError) as exc:
                error = f"{type(exc).__name__}: {str(exc)[-4000:]}"
            results[name] = {"nb": nb, "error": error, "wall_s": time.monotonic() - t0}
    print("\nnotebook wall times:", {n: round(r["wall_s"], 1) for n, r in results.items()})
    return {"run_dir": run_dir, **results}


def setup_cell(name: str) -> str:
    """The first code cell with its default preset blanked out (the one line allowed to differ)."""
    return re.sub(r"(COTRECIPE_NOTEBOOK_PRESET', )'[^']+'", r"\1'*'", code_cells(read(name))[0])


def test_every_notebook_is_executed_and_switches_to_smoke_with_one_variable():
    assert sorted(ORDER) == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    for name in ORDER:
        nb = read(name)
        nbformat.validate(nb)
        cells = code_cells(nb)
        assert "PRESET = os.environ.get('COTRECIPE_NOTEBOOK_PRESET'" in cells[0], f"{name}: no switch in the first cell"
        assert setup_cell(name) == setup_cell(ORDER[0]), f"{name}: its setup cell drifted from {ORDER[0]}'s"
        # `!cmd` ignores a failing command, so CI would not notice a broken flag: commands go through %cotrecipe / sh
        shell = [line for c in cells for line in c.splitlines() if line.lstrip().startswith("!")]
        assert not shell, f"{name}: {shell}"


@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs_top_to_bottom_in_smoke_mode(executed, name):
    assert executed[name]["error"] is None, f"{name} failed:\n{executed[name]['error']}"


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_stage_notebook_trains_its_stage_into_the_shared_run(executed, stage):
    manifest = json.loads((executed["run_dir"] / "manifest.json").read_text())
    assert manifest["entries"][stage]["status"] == "done"
    text = outputs_text(executed[f"{stage}.ipynb"]["nb"])
    assert f"{stage} done in" in text and '"steps":' in text  # the training log and the manifest metrics cell


def test_eval_notebook_shows_the_report_table_and_plot_inline_and_exports(executed):
    nb = executed["eval_report.ipynb"]["nb"]
    shown = [out.data for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "display_data"]
    tables = [d["text/markdown"] for d in shown if "text/markdown" in d]
    assert tables and all(f"| {row} " in tables[0] for row in ("base", "stage1", "stage2", "stage3"))
    assert any("image/png" in d for d in shown)
    export = Path(f"{executed['run_dir']}-export-merged16")
    assert (export / "config.json").is_file() and list(export.glob("*.safetensors"))


def test_run_all_notebooks_resume_the_finished_stages_and_add_the_baseline(executed):
    colab = outputs_text(executed["colab_t4.ipynb"]["nb"])
    assert all(f"{stage} already done" in colab for stage in ("stage1", "stage2", "stage3"))
    assert re.search(r"fits|does not fit", colab)  # the plan cell printed a verdict
    manifest = json.loads((executed["run_dir"] / "manifest.json").read_text())
    assert manifest["entries"]["baseline-sft"]["status"] == "done"
    assert (executed["run_dir"] / "eval" / "baseline-sft" / "results.json").is_file()
    demo = outputs_text(executed["demo_cpu.ipynb"]["nb"])
    assert demo.count("already done; skipped") >= 3


def test_a_failing_command_fails_its_cell(tmp_path, monkeypatch):
    """What makes the notebooks unable to rot: a flag the CLI no longer knows stops the notebook with an error."""
    kernel_env(monkeypatch, tmp_path)
    monkeypatch.setenv("COTRECIPE_NOTEBOOK_PRESET", "smoke")
    monkeypatch.setenv("COTRECIPE_NOTEBOOK_RUN_DIR", str(tmp_path / "run"))
    nb = read("stage1.ipynb")
    nb.cells = [nbformat.v4.new_code_cell(code_cells(nb)[0]),
                nbformat.v4.new_code_cell("%cotrecipe stage1 --preset {PRESET} --no-such-flag"),
                nbformat.v4.new_code_cell("print('unreachable')")]
    with pytest.raises(CellExecutionError, match="exit status 2: cotrecipe stage1 --preset smoke --no-such-flag"):
        execute(nb, tmp_path)
    assert "No such option '--no-such-flag'" in outputs_text(nb) and "unreachable" not in outputs_text(nb)
