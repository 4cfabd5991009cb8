"""Helpers the test files share: the CLI called in-process and its one-line refusals, a minimal safetensors file, and
stand-in trainers that let the run machinery (manifest, lock, repairs) run without a model."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from click.testing import CliRunner

from recipe import fsio
from recipe.cli import main
from recipe.config import core as C
from recipe.run import orchestrator as run
from recipe.store import rundir


def cli(*args: str):
    """``cotrecipe <args>`` in this process (click's runner)."""
    return CliRunner().invoke(main, list(args))


def one_error_line(result, *fragments: str) -> str:
    """The single ``error:`` line of a refused command (exit 2, no traceback, output ending its line), holding every
    fragment."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.endswith("\n"), repr(result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def safetensors_bytes(values: int = 4) -> bytes:
    """A minimal valid safetensors file: one float32 tensor."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * values)


def fake_trainers(monkeypatch, trained: list[str], fail: dict[str, BaseException] | None = None) -> None:
    """Replace each entry's trainer by one that writes a small valid adapter folder (config + weights, as peft saves
    one) and records its name; an entry named in ``fail`` raises that exception once instead."""
    def make(name):
        def train(cfg, entry_dir, init_from):
            if fail and name in fail:
                raise fail.pop(name)
            trained.append(name)
            model = entry_dir / rundir.MODEL_DIR
            fsio.write_text(model / "adapter_config.json", json.dumps({"r": 8}))
            fsio.write_bytes(model / "adapter_model.safetensors", safetensors_bytes())
            return {"output": str(model), "metrics": {}}
        return train

    monkeypatch.setattr(run, "TRAINERS", {name: make(name) for name in run.ENTRIES})


def cfg_no_eval(run_dir: Path, *extra: str) -> C.Config:
    """The smoke preset writing to ``run_dir`` with the evaluation off."""
    return C.resolve(preset="smoke", overrides=[f"run.output_dir={run_dir}", "eval.enabled=false", *extra])


def run_all_no_eval(run_dir: Path, *extra: str):
    """``cotrecipe run-all`` on the smoke preset into ``run_dir``, evaluation off, each of ``extra`` a ``--set``."""
    args = ["run-all", "--preset", "smoke", "--output-dir", str(run_dir), "--set", "eval.enabled=false"]
    for item in extra:
        args += ["--set", item]
    return cli(*args)
