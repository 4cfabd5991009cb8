"""recipe.models.devices: ``run.device=cuda`` on a machine without CUDA is refused with one line naming what torch
found, at the CLI and where training and generation pick their device."""

from __future__ import annotations

import pytest
import torch

from recipe.config import core as C
from recipe.errors import ConfigError
from recipe.models.generation import to_device
from recipe.train.sft import sft_args
from tests.helpers import cli, one_error_line


def test_run_device_cuda_without_cuda_is_refused_naming_what_was_found(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    for args in (["stage1", "--output-dir", str(out)], ["eval", "--output-dir", str(tmp_path / "ev")]):
        line = one_error_line(cli(*args, "--preset", "smoke", "--set", "run.device=cuda"))
        assert "run.device=cuda" in line and f"torch {torch.__version__}" in line and "run.device=cpu" in line, line
    assert not out.exists() and not (tmp_path / "ev").exists()
    # and where training and generation pick their device (a child process, the Python API): refused too
    cfg = C.resolve(preset="smoke", overrides=["run.device=cuda"])
    for call in (lambda: sft_args(cfg, str(tmp_path / "t")), lambda: to_device(torch.nn.Linear(1, 1), "cuda")):
        with pytest.raises(ConfigError, match=r"run.device=cuda but torch .* run.device=cpu"):
            call()
