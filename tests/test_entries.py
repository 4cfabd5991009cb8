"""The registry of run entries (recipe/entries.py) is the one table the orchestrator, the run directory, the report,
the CLI and the config check read; and a run directory written before the manifest key was ``entries`` resumes
without retraining (stand-in trainers, no model)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import struct
from pathlib import Path

import pytest

from recipe import entries, fsio
from recipe.cli import main
from recipe.config import core as C
from recipe.config import schema
from recipe.eval.report import build_report, collect_results, comparison_pairs
from recipe.run import orchestrator as run
from recipe.store import rundir


def test_every_entry_is_wired_to_a_trainer_sections_and_slices_that_exist():
    cfg = C.Config()
    for name, entry in entries.ENTRIES.items():
        assert entry.starts_from is None or entry.starts_from in entries.ENTRIES, name
        inspect.signature(run.TRAINERS[name]).bind(cfg, Path("entry_dir"), None)  # run(cfg, entry_dir, init_from)
        assert run.TRAINERS[name].__module__ == entry.module, name
        assert all(dataclasses.is_dataclass(getattr(cfg, s)) for s in entry.sections), name
        assert all(hasattr(cfg.data, f"{s}_rows") for s in entry.data_slices), name
        assert entry.trainer in ("sft", "grpo") and entry.kind in ("warmup", "stage", "baseline"), name
        assert (entry.eval_name is None) == (entry.kind == "warmup"), name
    assert set(run.TRAINERS) == set(entries.ENTRIES)


def test_the_cli_and_the_config_offer_what_the_registry_holds():
    assert entries.STAGES == ("stage1", "stage2", "stage3")
    assert set(entries.STAGES) <= set(main.commands)  # one command per stage, help text from the registry
    assert main.commands["stage2"].help == entries.ENTRIES["stage2"].cli_help
    assert set(main.commands["baseline"].commands) == set(entries.BASELINES) == set(schema.BASELINES)
    assert C.Config().eval.stages == ["base", *entries.STAGES]
    with pytest.raises(C.ConfigError, match=r"eval.stages.*'base' \| 'stage1' \| 'stage2' \| 'stage3'"):
        C.resolve(preset="smoke", overrides=["eval.stages=[warmup]"])


def test_the_report_pairs_rows_by_what_the_registry_says_they_start_from():
    pairs = comparison_pairs(["base", "stage1", "stage2", "stage3", "baseline-grpo", "mine"])
    assert pairs[:3] == [("stage1", "base"), ("stage2", "stage1"), ("stage3", "stage2")]
    assert ("baseline-grpo", "base") in pairs and ("mine", "base") in pairs  # unknown rows compare like baselines


def test_migrate_manifest_keeps_every_record_when_both_keys_are_there():
    both = {"stages": {"stage1": {"status": "done"}, "stage2": {"status": "done", "n": 1}},
            "entries": {"stage2": {"status": "running"}}}
    assert rundir.migrate_manifest(both) == {"entries": {"stage1": {"status": "done"}, "stage2": {"status": "running"}}}


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 8


def _write_eval(run_dir: Path, name: str, correct: list[bool]) -> None:
    folder = rundir.eval_dir(run_dir, name)
    rows = [{"id": f"test-{i}", "correct": c, "n_tokens": 50 + i} for i, c in enumerate(correct)]
    fsio.write_text(folder / rundir.GENERATIONS, "".join(json.dumps(r) + "\n" for r in rows))
    fsio.write_json(folder / rundir.RESULTS, {"metrics": {"accuracy": sum(correct) / len(correct), "n": len(correct),
                                                          "avg_tokens": 52.0}, "protocol": {}, "data": {}})


def test_a_run_directory_written_with_the_stages_key_resumes_without_retraining(tmp_path, monkeypatch):
    trained: list[str] = []

    def make(name):
        def train(cfg, entry_dir, init_from):
            trained.append(name)
            fsio.write_bytes(entry_dir / rundir.MODEL_DIR / "adapter_model.safetensors", _safetensors())
            return {"output": str(entry_dir / rundir.MODEL_DIR), "metrics": {}}
        return train

    monkeypatch.setattr(run, "TRAINERS", {name: make(name) for name in entries.ENTRIES})
    run_dir = tmp_path / "run"
    cfg = C.resolve(preset="smoke", overrides=[f"run.output_dir={run_dir}", "eval.enabled=false",
                                               "run.baselines=[sft]"])
    run.run_all(cfg)
    assert trained == ["stage1", "stage2", "stage3", "baseline-sft"]
    # the manifest as the code before the registry wrote it: the same records under "stages"
    path = run_dir / rundir.MANIFEST_FILE
    today = fsio.read_json(path)
    assert "stages" not in today and set(today["entries"]) == {"stage1", "stage2", "stage3", "baseline-sft"}
    fsio.write_json(path, {("stages" if key == "entries" else key): value for key, value in today.items()})
    assert rundir.output_of(run_dir, "stage3") == str(run_dir / "stage3" / rundir.MODEL_DIR)  # read before any save

    trained.clear()
    run.run_all(cfg)
    assert trained == []  # every entry was found done: nothing retrained
    migrated = fsio.read_json(path)
    assert "stages" not in migrated and migrated["entries"].keys() == today["entries"].keys()
    assert {n: r["status"] for n, r in migrated["entries"].items()} == dict.fromkeys(today["entries"], "done")
    assert {n: r["config"] for n, r in migrated["entries"].items()} == {n: r["config"]
                                                                        for n, r in today["entries"].items()}

    # the report builds from the migrated run: rows in registry order, each stage paired with what it starts from
    for name, correct in (("baseline-sft", [True, False, False, False]), ("stage2", [True, True, False, False]),
                          ("base", [False] * 4), ("stage3", [True, True, True, False]),
                          ("stage1", [True, False, False, False])):
        _write_eval(run_dir, name, correct)
    report = build_report(run_dir, figures=False)[0].read_text(encoding="utf-8")
    assert [name for name, _ in collect_results(run_dir)] == ["base", "stage1", "stage2", "stage3", "baseline-sft"]
    assert "| stage2 vs stage1 |" in report and "| stage3 vs stage2 |" in report and "| baseline-sft vs base |" in report
