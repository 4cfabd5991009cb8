"""What each process of a GPU ``run-all`` builds and touches, without a GPU: a whole run-all (3 stages with stage-3
mining, both baselines, 6 evaluated models) on the unsloth backend with ``vllm.enabled``, each entry in a child
process (``run.process_per_entry``) that starts with a faked T4 and the unsloth / vllm stand-ins bound to the pinned
wheels' signatures (tests/gpu_children.py). The stand-ins load the tiny model on the CPU and the trainers train there
(``run.device=cpu`` places them); every engine decision follows the GPU path.

- at most one vLLM engine is built per process (a second does not fit beside the first on a T4);
- stage 3 mines through the engine its GRPO trainer then uses;
- one evaluation engine serves the base model (no LoRA) and every adapter (its own LoRA id);
- the orchestrating parent never creates a CUDA context (its ``torch.cuda`` raises if asked to) nor imports
  unsloth; it reads the GPU's memory from ``nvidia-smi`` for its fit check.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

import pytest
import torch
from click.testing import CliRunner

from recipe.cli import main
from recipe.store import rundir
from tests import gpu_children
from tests.test_gpu_backend import standin  # noqa: F401  (a fixture: unsloth findable in the parent, never imported)
from tests.test_plan import fake_nvidia_smi


class ParentCreatedCudaContext(AssertionError):
    pass


def no_context(*args, **kwargs):
    raise ParentCreatedCudaContext("the run-all parent asked torch for a CUDA context")


@pytest.mark.slow
def test_run_all_builds_at_most_one_engine_per_process_and_the_parent_no_cuda_context(
        cache_dir, tmp_path, monkeypatch, standin):  # noqa: F811
    log, smi_calls = tmp_path / "events.jsonl", tmp_path / "nvidia-smi.calls"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(gpu_children.SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(gpu_children.LOG_ENV, str(log))
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'bin', '15360, 258', smi_calls)}:{os.environ['PATH']}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the parent sees a GPU ...
    monkeypatch.setattr(torch.cuda, "_lazy_init", no_context)  # ... and may not initialise CUDA on it

    run_dir = tmp_path / "run"
    sets = [f"model.cache_dir={cache_dir}", "model.backend=unsloth", "vllm.enabled=true",
            "run.process_per_entry=true", "run.baselines=[sft, grpo]", "stage1.max_steps=1", "stage2.max_steps=1",
            "stage3.max_steps=1", "stage3.mining_limit=4", "stage3.mining_max_new_tokens=8",
            "stage2.max_completion_length=8", "stage3.max_completion_length=8", "stage2.log_completions=false",
            "stage3.log_completions=false", "eval.limit=3", "eval.max_new_tokens=8"]
    args = ["run-all", "--preset", "smoke", "--output-dir", str(run_dir)]
    result = CliRunner().invoke(main, [*args, *(a for kv in sets for a in ("--set", kv))], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    manifest = rundir.load_manifest(run_dir)
    trained = ["stage1", "stage2", "stage3", "baseline-sft", "baseline-grpo"]
    assert [manifest["entries"][n]["status"] for n in trained] == ["done"] * 5
    assert manifest["entries"]["stage3"]["metrics"]["failures"] > 0  # mining found work: stage 3 trained
    events = [json.loads(line) for line in log.read_text().splitlines()]
    by_pid = defaultdict(list)
    for event in events:
        by_pid[event["pid"]].append(event)
    assert len(by_pid) == 6 and not by_pid.get(os.getpid())  # 5 trainings + 1 evaluation, not here
    engines = {pid: [e for e in evs if e["event"] == "engine"] for pid, evs in by_pid.items()}
    assert all(len(built) <= 1 for built in engines.values()), engines

    def process_of(entry):
        return next(pid for pid, evs in by_pid.items() if any(e["event"] == "train" and e["entry"] == entry
                                                               for e in evs))

    for entry in ("stage2", "baseline-grpo"):  # GRPO: its process's one engine
        assert len(engines[process_of(entry)]) == 1
    for entry in ("stage1", "baseline-sft"):  # SFT: none
        assert engines[process_of(entry)] == []
    stage3 = by_pid[process_of("stage3")]
    (engine,) = engines[process_of("stage3")]
    mining = [e for e in stage3 if e["event"] == "generate"]
    stage2_adapter = str(run_dir / "stage2" / "model")
    assert mining and all(e["engine"] == engine["engine"] and e["lora"][1] == stage2_adapter for e in mining)
    assert [e["engine"] for e in stage3 if e["event"] == "train"] == [engine["engine"]]  # the trainer's engine

    (evaluation,) = [evs for evs in by_pid.values() if not any(e["event"] == "train" for e in evs)]
    (eval_engine,) = [e for e in evaluation if e["event"] == "engine"]
    served = {None if e["lora"] is None else tuple(e["lora"]) for e in evaluation if e["event"] == "generate"}
    adapters = {str(run_dir / n / "model") for n in trained}
    assert None in served and {path for _, path in served - {None}} == adapters  # base + 5 adapters, one engine
    assert len({lora_id for lora_id, _ in served - {None}}) == 5
    assert all(e["engine"] == eval_engine["engine"] for e in evaluation if e["event"] == "generate")
    assert len(list((run_dir / rundir.EVAL_DIR).glob(f"*/{rundir.RESULTS}"))) == 6
    assert (run_dir / rundir.REPORT_MD).is_file()

    assert "unsloth" not in sys.modules  # the parent only orchestrates
    assert "memory.total" in smi_calls.read_text()  # its fit check read the card without a CUDA context
