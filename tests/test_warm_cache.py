"""The warm-up's cache: a second run with the same warm-up copies the first one's merged weights from
``model.cache_dir`` instead of training; a warm-up whose inputs differ trains."""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file

from recipe.config import core as C
from recipe.eval.costs import cost_section
from recipe.run import orchestrator as run
from recipe.store import rundir
from recipe.store.rundir import TRAINER_DIR
from recipe.train import warm_cache

WARM = ("warmup.enabled=true", "data.warmup_rows=[160, 200]", "warmup.max_steps=2", "warmup.save_steps=1",
        "warmup.per_device_train_batch_size=4", "warmup.max_length=384", "warmup.learning_rate=1e-3",
        "eval.enabled=false")


def warm(cache, run_dir, *extra: str) -> C.Config:
    return C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache}", f"run.output_dir={run_dir}", *WARM, *extra])


def weights(run_dir):
    return load_file(str(run_dir / "warmup" / "merged" / "model.safetensors"))


def test_a_second_run_copies_the_cached_warmup_and_a_changed_one_trains(tmp_path):
    cache = tmp_path / "cache"  # its own cache folder: the tiny model is built into it, the warm-up cached there
    first = tmp_path / "first"
    run.run_one(warm(cache, first), "warmup")
    record = rundir.load_manifest(first)["entries"]["warmup"]
    assert record["status"] == "done" and "cached_from" not in record
    assert (first / "warmup" / TRAINER_DIR).is_dir()  # trained: its checkpoints are there

    second = tmp_path / "second"  # another run, another slice of stage rows: the warm-up's inputs are the same
    run.run_one(warm(cache, second, "data.stage1_rows=[0, 40]"), "warmup")
    copied = rundir.load_manifest(second)["entries"]["warmup"]
    assert copied["status"] == "done" and copied["cached_from"].startswith(str(cache))
    assert not (second / "warmup" / TRAINER_DIR).exists()  # nothing trained
    assert rundir.absolute(second, copied["output"]) == str(second / "warmup" / "merged")
    assert copied["data"] == record["data"] and copied["metrics"] == record["metrics"]
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (second / "warmup" / "model" / "adapter_config.json").is_file()  # the adapter comes along
    assert any(line.startswith("| warmup (copied from the cache) |") for line in cost_section(second))
    assert any(line.startswith("| warmup |") for line in cost_section(first))

    third = tmp_path / "third"  # a different learning rate: a different warm-up, trained
    run.run_one(warm(cache, third, "warmup.learning_rate=5e-4"), "warmup")
    assert "cached_from" not in rundir.load_manifest(third)["entries"]["warmup"]
    assert (third / "warmup" / TRAINER_DIR).is_dir()
    c = weights(third)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_prune_keeps_the_entries_used_last_and_leaves_other_folders(tmp_path):
    for age, name in enumerate(["newest", "second", "third", "oldest"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / warm_cache.RECORD).write_text("{}")
        os.utime(tmp_path / name / warm_cache.RECORD, (1e9 - age * 100, 1e9 - age * 100))
    (tmp_path / "not-ours").mkdir()  # no record.json: not an entry the cache wrote (or one still being written)
    (tmp_path / "not-ours" / "weights.bin").write_bytes(b"x")
    removed = warm_cache.prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["oldest", "third"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newest", "not-ours", "second"]
    assert (tmp_path / "not-ours" / "weights.bin").is_file()
