"""The run machinery on TRL trainers with the tiny local model: training changes weights, rewards steer length,
run-all resumes after a crash or a SIGKILL, --force cascades to later stages, baselines are entries like stages,
bad input gives one clear error, the data is checked before any model loads, and the same seed gives the same
weights."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from recipe.cli import main
from recipe.config import core as C
from recipe.errors import DataError, RunError
from recipe.run import orchestrator as run
from recipe.store import rundir
from tests.conftest import run_killed_after_save

# Shorter generations and mining than the smoke preset: the tests check plumbing, not what the model writes.
QUICK = ("stage2.max_completion_length=16", "stage3.max_completion_length=16", "stage3.mining_limit=8",
         "stage3.mining_max_new_tokens=16", "stage2.log_completions=false", "stage3.log_completions=false")


def smoke(cache_dir: Path, run_dir: Path, *extra: str) -> C.Config:
    return C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                                "eval.enabled=false", *QUICK, *extra])


def adapter_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "adapter_model.safetensors"))


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# An untrained model is always wrong, so the gated paper rewards give every completion -2: zero advantage, zero
# gradient (GRPO working as intended). A small length term gives the groups some spread.
SPREAD = "[{name: gated_brevity}, {name: length_only, weight: 0.01}]"


def test_each_stage_trains_and_changes_the_lora_weights(cache_dir, tmp_path):
    cfg = smoke(cache_dir, tmp_path / "run", "stage1.max_steps=2", "stage2.max_steps=2", "stage3.max_steps=2",
                f"stage2.rewards={SPREAD}", f"stage3.rewards={SPREAD.replace('gated_brevity', 'compression_ratio')}")
    run_dir = run.run_all(cfg)
    manifest = rundir.load_manifest(run_dir)
    assert [manifest["entries"][s]["status"] for s in rundir.STAGES] == ["done"] * 3

    s1 = adapter_weights(run_dir / "stage1" / "model")
    lora_b = [v for k, v in s1.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "stage 1 left LoRA B at its zero init"

    s2 = adapter_weights(run_dir / "stage2" / "model")
    assert s2.keys() == s1.keys(), "stage 2 must keep training the stage-1 adapter"
    assert any(not torch.equal(s1[k], s2[k]) for k in s1), "stage 2 did not change the adapter"

    stage3 = manifest["entries"]["stage3"]
    assert stage3["metrics"]["failures"] > 0  # an untrained tiny model gets (nearly) everything wrong
    assert (run_dir / "stage3" / "failures.jsonl").is_file()
    s3 = adapter_weights(run_dir / "stage3" / "model")
    assert any(not torch.equal(s2[k], s3[k]) for k in s2), "stage 3 did not change the adapter"

    for stage in rundir.STAGES:
        entry = manifest["entries"][stage]
        assert entry["data"]["n_rows"] > 0 and len(entry["data"]["sha256"]) == 64
        assert entry["wall_s"] > 0 and entry["trainer_config"]["max_steps"] == 2
    for stage in ("stage2", "stage3"):  # the effective value, read back from the built trainer's args
        assert manifest["entries"][stage]["trainer_config"]["vllm_importance_sampling_correction"] is True
    assert (run_dir / "config.yaml").is_file()


def _length_curve(cache_dir: Path, run_dir: Path, sign: int, steps: int) -> list[float]:
    """Mean completion length per step of stage-2 GRPO with a length-only reward (full fine-tuning, high lr)."""
    cfg = smoke(cache_dir, run_dir, "model.use_lora=false", "stage2.learning_rate=1e-2", f"stage2.max_steps={steps}",
                "stage2.num_generations=8", "stage2.per_device_train_batch_size=8",
                "stage2.max_completion_length=32", "stage2.save_steps=1000", "stage2.log_completions=false",
                f"stage2.rewards=[{{name: length_only, params: {{sign: {sign}}}}}]", "stage2.length_unit=tokens")
    run.run_one(cfg, "stage2")
    log = json.loads((run_dir / "stage2" / "trainer_log.json").read_text())
    return [row["completions/mean_length"] for row in log if "completions/mean_length" in row]


@pytest.mark.slow
def test_sign_check_length_reward_steers_completion_length(cache_dir, tmp_path):
    """GRPO through the stage-2 code with only a length reward: -length shortens completions, +length does not."""
    shorter = _length_curve(cache_dir, tmp_path / "neg", sign=-1, steps=30)
    head, tail = sum(shorter[:3]) / 3, sum(shorter[-3:]) / 3
    assert tail < 0.5 * head, f"-length reward should shorten completions: {head:.1f} -> {tail:.1f} ({shorter})"
    longer = _length_curve(cache_dir, tmp_path / "pos", sign=+1, steps=10)
    assert sum(longer[-3:]) / 3 > max(tail + 10, 0.8 * head), f"+length reward shortened completions: {longer}"


def _with_train(name: str, train):
    """``run.TRAINERS`` with entry ``name`` trained by ``train`` (the train functions are the run machinery's seam)."""
    return {**run.TRAINERS, name: train}


def test_crash_after_stage1_resumes_without_redoing_it(cache_dir, tmp_path, monkeypatch):
    cfg = smoke(cache_dir, tmp_path / "run", "stage1.max_steps=2", "stage2.max_steps=1", "stage3.max_steps=1")

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(run, "TRAINERS", _with_train("stage2", boom))
        with pytest.raises(RuntimeError, match="simulated crash"):
            run.run_all(cfg)
    manifest = rundir.load_manifest(tmp_path / "run")
    assert manifest["entries"]["stage1"]["status"] == "done"
    assert manifest["entries"]["stage2"]["status"] == "failed"
    before = tree_digest(tmp_path / "run" / "stage1")
    stage1_entry = manifest["entries"]["stage1"]

    with monkeypatch.context() as m:
        m.setattr(run, "TRAINERS", _with_train("stage1", lambda *a, **k: pytest.fail("finished stage 1 was recomputed")))
        run.run_all(cfg)
    manifest = rundir.load_manifest(tmp_path / "run")
    assert [manifest["entries"][s]["status"] for s in rundir.STAGES] == ["done"] * 3
    assert manifest["entries"]["stage1"] == stage1_entry
    assert tree_digest(tmp_path / "run" / "stage1") == before


def test_changed_config_of_a_finished_stage_is_refused_unless_forced(cache_dir, tmp_path):
    cfg = smoke(cache_dir, tmp_path / "run", "stage1.max_steps=1", "stage2.enabled=false", "stage3.enabled=false")
    run.run_all(cfg)
    changed = smoke(cache_dir, tmp_path / "run", "stage1.max_steps=1", "stage1.learning_rate=0.5",
                    "stage2.enabled=false", "stage3.enabled=false")
    with pytest.raises(RunError, match="stage1.learning_rate"):
        run.run_all(changed)
    # a key that no finished stage depends on may change freely
    run.run_all(smoke(cache_dir, tmp_path / "run", "stage1.max_steps=1", "stage2.enabled=false",
                             "stage3.enabled=false", "eval.limit=3"))
    run.run_all(changed, force=True)
    entry = rundir.load_manifest(tmp_path / "run")["entries"]["stage1"]
    assert entry["status"] == "done" and entry["trainer_config"]["learning_rate"] == 0.5


def test_sigkill_mid_stage2_then_rerun_resumes_and_finishes(cache_dir, tmp_path):
    """The child run SIGKILLs itself right after stage 2 saved checkpoint-2 (tests/fault_injection.py, through the callback seam), so the
    kill lands at a known point; the same command then resumes stage 2 from that checkpoint."""
    run_dir = tmp_path / "run"
    args = ["run-all", "--preset", "smoke", "--output-dir", str(run_dir), "--set", f"model.cache_dir={cache_dir}",
            "--set", "eval.enabled=false", "--set", "stage1.max_steps=1", "--set", "stage2.max_steps=4",
            "--set", "stage2.save_steps=2", "--set", "stage2.log_completions=false",
            "--set", "stage2.max_completion_length=8", "--set", "stage3.max_steps=1", "--set", "stage3.mining_limit=4",
            "--set", "stage3.mining_max_new_tokens=8", "--set", "stage3.max_completion_length=8"]
    run_killed_after_save(args, "stage2:2", tmp_path / "killed.log")
    manifest = rundir.load_manifest(run_dir)
    assert manifest["entries"]["stage1"]["status"] == "done"
    assert manifest["entries"]["stage2"]["status"] == "running"
    assert (run_dir / "stage2" / "trainer" / "checkpoint-2" / "trainer_state.json").is_file()
    stage1_digest = tree_digest(run_dir / "stage1")

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = rundir.load_manifest(run_dir)
    stage2 = manifest["entries"]["stage2"]
    assert stage2["status"] == "done" and stage2["resumed_from"], "stage 2 should resume from its checkpoint"
    assert stage2["resumed_from"].endswith("checkpoint-2") and stage2["metrics"]["steps"] == 4
    assert stage2["attempts"] == 2
    assert manifest["entries"]["stage3"]["status"] == "done"
    assert tree_digest(run_dir / "stage1") == stage1_digest


def test_force_on_a_stage_marks_later_stages_stale_and_baselines_are_entries(cache_dir, tmp_path):
    cfg = smoke(cache_dir, tmp_path / "run", "stage1.max_steps=1", "stage2.max_steps=1", "stage3.enabled=false",
                "run.baselines=[sft]")
    run_dir = run.run_all(cfg)
    manifest = rundir.load_manifest(run_dir)
    assert [manifest["entries"][n]["status"] for n in ("stage1", "stage2", "baseline-sft")] == ["done"] * 3
    baseline = manifest["entries"]["baseline-sft"]
    assert baseline["init_from"] is None and baseline["data"]["n_rows"] > 0
    assert (run_dir / "baseline-sft" / "model" / "adapter_model.safetensors").is_file()

    run.run_one(cfg, "stage1", force=True)
    manifest = rundir.load_manifest(run_dir)
    assert manifest["entries"]["stage1"]["status"] == "done"
    assert manifest["entries"]["stage2"]["status"] == "stale", "stage 2 was trained on the old stage-1 weights"
    assert not (run_dir / "stage2").exists()
    assert manifest["entries"]["baseline-sft"] == baseline, "the baseline does not start from stage 1"
    run.run_all(cfg)
    assert rundir.load_manifest(run_dir)["entries"]["stage2"]["status"] == "done"


def test_bad_inputs_give_one_clear_error(cache_dir, tmp_path):
    runner = CliRunner()
    bad_data = tmp_path / "broken.parquet"
    bad_data.write_text("this is not parquet")
    result = runner.invoke(main, ["stage1", "--preset", "smoke", "--output-dir", str(tmp_path / "a"),
                                  "--set", f"model.cache_dir={cache_dir}", "--set", f"data.source={bad_data}"])
    assert result.exit_code == 2 and "broken.parquet" in result.output and "Traceback" not in result.output

    missing = tmp_path / "no-such-model"
    result = runner.invoke(main, ["stage1", "--preset", "smoke", "--output-dir", str(tmp_path / "b"),
                                  "--set", f"model.name_or_path={missing}"])
    assert result.exit_code == 2 and "no-such-model" in result.output and "Traceback" not in result.output


def test_unsloth_backend_without_a_gpu_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["run-all", "--preset", "smoke", "--output-dir", str(tmp_path / "run"),
                                       "--set", "model.backend=unsloth"])
    assert result.exit_code == 2 and "CUDA" in result.output and "model.backend=hf" in result.output
    assert not (tmp_path / "run").exists(), "nothing should be written before the backend is known to work"
    assert "unsloth" not in sys.modules


def test_eval_split_of_a_folder_is_checked_by_the_data_check(tmp_path):
    """A folder source may hold other splits: config accepts the name, the pre-load data check refuses a missing
    file naming it."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"question": "Q?", "answer": "a = 1.\\n#### 1"}\n', encoding="utf-8")
    cfg = C.resolve(preset="smoke", overrides=[f"data.source={folder}", "data.eval_source=", "eval.split=tset"])
    with pytest.raises(DataError, match="tset"):
        run.check_data(cfg, [], eval_split=True)


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the data check")


@pytest.mark.parametrize("override, message", [
    ("data.stage2_rows=[300, 100000]", r"data.stage2_rows \[300, 100000\) does not fit"),
    ("data.source={empty}", "empty"),
])
def test_data_is_checked_before_any_model_loads(override, message, tmp_path, monkeypatch):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    monkeypatch.setattr("recipe.models.model.load", _no_model)
    cfg = C.resolve(preset="smoke", overrides=[f"run.output_dir={tmp_path / 'run'}", override.format(empty=empty)])
    with pytest.raises(DataError, match=message):
        run.run_all(cfg)
    result = CliRunner().invoke(main, ["stage2", "--preset", "smoke", "--output-dir", str(tmp_path / "r2"),
                                       "--set", override.format(empty=empty)])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output and not Path(tmp_path / "r2" / "stage2" / "model").exists()


def stage1_adapter(cache_dir: Path, run_dir: Path, seed: int) -> bytes:
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                               f"run.seed={seed}", "stage1.max_steps=2", "stage1.save_steps=2",
                                               "eval.enabled=false"])
    run.run_one(cfg, "stage1")
    return (run_dir / "stage1" / "model" / "adapter_model.safetensors").read_bytes()


@pytest.mark.slow  # three short stage-1 trainings: ~20-30 s of CPU
def test_same_seed_same_adapter_bytes_other_seed_differs(cache_dir, tmp_path):
    first = stage1_adapter(cache_dir, tmp_path / "a", seed=7)
    again = stage1_adapter(cache_dir, tmp_path / "b", seed=7)
    other = stage1_adapter(cache_dir, tmp_path / "c", seed=8)
    assert first == again
    assert first != other
