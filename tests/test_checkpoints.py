"""Resume points: a newest TRL checkpoint that does not load (trainer state, weights, optimizer or rng state) is set
aside and training resumes from the previous intact one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recipe.train.trainer import last_checkpoint
from tests.helpers import safetensors_bytes


def _checkpoint(folder: Path, step: int, damage: str | None = None) -> Path:
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    (ckpt / "adapter_model.safetensors").write_bytes(safetensors_bytes())
    torch.save({"python": (3, (1, 2), None), "cpu": torch.zeros(4, dtype=torch.uint8)}, ckpt / "rng_state.pth")
    torch.save({"state": {0: {"exp_avg": torch.zeros(4)}}, "param_groups": []}, ckpt / "optimizer.pt")
    if damage == "trainer_state":
        (ckpt / "trainer_state.json").write_text('{"global_st', encoding="utf-8")
    elif damage:
        path = ckpt / damage
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return ckpt


@pytest.mark.parametrize("damage", ["adapter_model.safetensors", "optimizer.pt", "rng_state.pth", "trainer_state"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(damage, tmp_path, caplog):
    trainer = tmp_path / "trainer"
    _checkpoint(trainer, 2)
    _checkpoint(trainer, 4, damage)
    (trainer / "checkpoint-6").mkdir()  # unfinished: no trainer_state.json yet
    assert last_checkpoint(trainer) == str(trainer / "checkpoint-2")
    assert "checkpoint-4 is damaged" in caplog.text and "previous intact checkpoint" in caplog.text
    assert not (trainer / "checkpoint-4").exists() and (trainer / ".damaged-checkpoint-4").is_dir()
    assert last_checkpoint(tmp_path / "none") is None
