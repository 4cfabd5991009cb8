"""``cotrecipe export``: LoRA copy round trip, merged weights equal base + adapter, GGUF's clear refusal, Modelfile."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from recipe.cli import main
from recipe.config.core import resolve
from recipe.data import prompts
from recipe.errors import ExportError, RunError
from recipe.models import model as model_mod
from recipe.models.generation import STOP_TEXTS
from recipe.run import orchestrator as run_mod
from recipe.store import rundir
from recipe.tools import export


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run directory: the smoke preset's stage 1 (2 steps) on the tiny model, through the public API."""
    root = tmp_path_factory.mktemp("export")
    cfg = resolve(preset="smoke", overrides=[f"run.output_dir={root / 'run'}", f"model.cache_dir={root / 'cache'}",
                                             "stage1.max_steps=2", "stage1.learning_rate=0.05"])
    run_mod.run_one(cfg, "stage1")
    base = model_mod.resolve_model_path(cfg.model)
    return {"dir": root / "run", "base": base, "adapter": Path(rundir.output_of(root / "run", "stage1"))}


def _prompt_ids(base):
    tok = AutoTokenizer.from_pretrained(base)
    return tok([prompts.eval_prompt("Tom has 3 pens and buys 4 more. How many pens?")], return_tensors="pt")


def _base_plus_adapter(run):
    model = AutoModelForCausalLM.from_pretrained(run["base"], dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(run["adapter"])).eval()


def _greedy(model, ids, n=12):
    with torch.no_grad():
        return model.generate(**ids, max_new_tokens=n, do_sample=False)[0].tolist()


def test_merged_float32_matches_base_plus_adapter(run, tmp_path):
    out = export.export(run["dir"], "merged16", tmp_path / "merged", stage=1, dtype="float32")[0]
    assert not model_mod.is_adapter_dir(out) and model_mod.is_model_dir(out)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, no peft
    reference = _base_plus_adapter(run)
    plain = AutoModelForCausalLM.from_pretrained(run["base"], dtype=torch.float32).eval()
    ids = _prompt_ids(run["base"])
    with torch.no_grad():
        got, want, base = (m(**ids).logits for m in (merged, reference, plain))
    assert (want - base).abs().max() > 1e-3  # the adapter matters, so equality below means something
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert _greedy(merged, ids) == _greedy(reference, ids)


def test_merged_default_is_bfloat16_and_close(run, tmp_path):
    out = export.export(run["dir"], "merged16", tmp_path / "merged")[0]
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert next(merged.parameters()).dtype == torch.bfloat16
    ids = _prompt_ids(run["base"])
    with torch.no_grad():
        got = merged.float()(**ids).logits
        want = _base_plus_adapter(run)(**ids).logits
    assert (got - want).abs().max() < 0.1 * want.abs().max()


def test_lora_export_round_trips(run, tmp_path):
    out = export.export(run["dir"], "lora", tmp_path / "lora")[0]  # no --stage: the last finished one (stage1)
    compared = filecmp.dircmp(run["adapter"], out)
    assert not compared.left_only and not compared.diff_files and (out / "adapter_config.json").is_file()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run["base"]), str(out)).eval()
    ids = _prompt_ids(run["base"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**ids).logits, _base_plus_adapter(run)(**ids).logits)


def test_unfinished_stage_and_bad_stage_are_clear_errors(run, tmp_path):
    with pytest.raises(RunError, match="stage2 of run .* is not finished"):
        export.export(run["dir"], "lora", tmp_path / "x", stage="2")
    with pytest.raises(ExportError, match="unknown stage '7'"):
        export.export(run["dir"], "lora", tmp_path / "x", stage=7)


def test_gguf_without_unsloth_names_the_llama_cpp_converter(run, tmp_path):
    result = CliRunner().invoke(main, ["export", "--run", str(run["dir"]), "--format", "gguf",
                                       "--output", str(tmp_path / "g")])
    assert result.exit_code == 2
    assert "convert_hf_to_gguf.py" in result.output and "save_pretrained_gguf" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(ExportError, match="converter not found"):
        export.export(run["dir"], "gguf", tmp_path / "g", converter=tmp_path / "nope.py")


def test_modelfile_sits_next_to_the_gguf_with_the_recipe_frame_and_stops(tmp_path):
    gguf = tmp_path / "out" / "model-q8_0.gguf"
    path = export.write_modelfile(gguf, eos_token="<|endoftext|>", max_new_tokens=256)
    assert path == gguf.parent / "Modelfile"
    text = path.read_text()
    assert text.splitlines()[0] == "FROM ./model-q8_0.gguf"
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    question = "What is 2 + 2?"
    assert template.replace("{{ .Prompt }}", question) == prompts.eval_prompt(question)
    stops = [json.loads(line.removeprefix("PARAMETER stop ")) for line in text.splitlines()
             if line.startswith("PARAMETER stop ")]
    assert stops == [*STOP_TEXTS, "<|endoftext|>"]
    assert "PARAMETER temperature 0" in text and "PARAMETER num_predict 256" in text


def test_cli_exports_lora_and_prints_the_path(run, tmp_path):
    result = CliRunner().invoke(main, ["export", "--run", str(run["dir"]), "--stage", "1", "--format", "lora",
                                       "--output", str(tmp_path / "cli-lora")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("cli-lora") and (tmp_path / "cli-lora" / "adapter_config.json").is_file()


def _cli_export(run_dir, out, *extra, fmt="lora"):
    return CliRunner().invoke(main, ["export", "--run", str(run_dir), "--format", fmt, "--output", str(out), *extra])


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["lora", "merged16"])
def test_an_output_that_is_a_file_is_refused_and_kept(run, tmp_path, fmt):
    target = tmp_path / "mine.txt"
    target.write_text("my notes")
    line = _one_error_line(_cli_export(run["dir"], target, fmt=fmt))
    assert str(target) in line and "is a file" in line
    assert target.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_a_folder_of_the_users_files_needs_force_and_keeps_them(run, tmp_path):
    """A folder export did not write is refused, naming it and --force; with --force the export's files go in beside
    the user's, which stay as they were."""
    out = tmp_path / "shared"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = _listing(out)
    line = _one_error_line(_cli_export(run["dir"], out))
    assert str(out) in line and "--force" in line and "notes.txt" in line
    assert _listing(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["shared"]
    result = _cli_export(run["dir"], out, "--force")
    assert result.exit_code == 0, result.output
    after = _listing(out)
    assert {k: after[k] for k in before} == before
    assert after["adapter_model.safetensors"] == (run["adapter"] / "adapter_model.safetensors").read_bytes()


def test_exporting_again_replaces_only_what_export_wrote(run, tmp_path):
    """Into a folder an earlier export wrote: no --force needed; the earlier export's files that this one does not
    write go, a file the user added stays, and nothing is left beside the folder."""
    out = tmp_path / "model"
    assert _cli_export(run["dir"], out).exit_code == 0
    (out / "README-mine.md").write_text("my card")
    result = _cli_export(run["dir"], out, fmt="merged16")
    assert result.exit_code == 0, result.output
    names = set(_listing(out))
    assert "README-mine.md" in names and "adapter_model.safetensors" not in names and "adapter_config.json" not in names
    assert model_mod.is_model_dir(out) and (out / "README-mine.md").read_text() == "my card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert _cli_export(run["dir"], out).exit_code == 0 and model_mod.is_adapter_dir(out)


@pytest.mark.parametrize("damage, why", [
    ("truncate", "adapter_model.safetensors is truncated"),
    ("delete", "missing adapter_model.safetensors"),
])
@pytest.mark.parametrize("fmt", ["lora", "merged16"])
def test_damaged_weights_are_refused_before_anything_is_written(run, tmp_path, damage, why, fmt):
    """The run's own integrity check runs first: a cut-off or missing adapter file is one line naming it and how to
    retrain; no output folder appears."""
    copy = tmp_path / "run"
    shutil.copytree(run["dir"], copy)
    weights = Path(rundir.output_of(copy, "stage1")) / "adapter_model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])  # a copy cut off
    else:
        weights.unlink()
    out = tmp_path / "out"
    line = _one_error_line(_cli_export(copy, out, fmt=fmt))
    assert why in line and "stage1" in line and "--force" in line, line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
