"""Several processes, one run: recipe.dist's single-process no-op path, its collectives on a real 2-process gloo
group, the batch/launcher checks through config.resolve, the vLLM server keys bound to TRL's GRPOConfig, the shipped
accelerate configs read by accelerate itself, and `accelerate launch` running the smoke preset on 2 CPU processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from recipe import dist
from recipe.config import core as C
from recipe.config import schema
from recipe.models import model as model_mod
from recipe.run.orchestrator import ENTRIES
from recipe.store import rundir
from recipe.train.grpo import grpo_args
from tests import forked

REPO = Path(__file__).resolve().parents[1]
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE")


@pytest.fixture
def launcher_env(monkeypatch):
    """Pretend to be one rank of a launched job (no process group: the env is what the launcher sets first)."""
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values):
        for key, value in values.items():
            monkeypatch.setenv(key, str(value))

    return set_env


# --------------------------------------------------------------------------------------------------------------------
# One process: everything is a no-op
# --------------------------------------------------------------------------------------------------------------------


def test_single_process_is_rank_0_of_1_and_helpers_pass_through(launcher_env):
    assert (dist.rank(), dist.world_size(), dist.is_main(), dist.is_distributed()) == (0, 1, True, False)
    dist.init()
    dist.barrier()
    assert dist.gather({"a": 1}) == [{"a": 1}]
    assert dist.shard(["x", "y", "z"]) == [(0, "x"), (1, "y"), (2, "z")]
    assert dist.gather_shards([(1, "b"), (0, "a")]) == ["a", "b"]
    calls = []
    with dist.main_process_first():
        calls.append("block")
    assert dist.only_main(calls.append, "fn") is None and calls == ["block", "fn"]


def test_launcher_env_makes_a_non_main_rank_skip_main_only_work(launcher_env):
    launcher_env(WORLD_SIZE=3, RANK=1, LOCAL_RANK=1)
    assert (dist.rank(), dist.world_size(), dist.is_main(), dist.describe()) == (1, 3, False, "rank 1/3")
    assert dist.shard(list("abcdefg")) == [(1, "b"), (4, "e")]
    calls = []
    assert dist.only_main(calls.append, "x", wait=False) is None and calls == []


# --------------------------------------------------------------------------------------------------------------------
# Two real processes over gloo
# --------------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_WORKER = """
import json, os, sys, time
from pathlib import Path
from recipe import dist
out = Path(sys.argv[1])
dist.init(cpu=True)
items = [f"p{i}" for i in range(7)]
mine = dist.shard(items)
merged = dist.gather_shards([(i, item.upper()) for i, item in mine])
if not dist.is_main():
    (out / "rank1_at_barrier").touch()
with dist.main_process_first():  # rank 0 writes first; rank 1 must already see the file
    if dist.is_main():  # write only once rank 1 stands at the barrier: without one it would read too early
        deadline = time.monotonic() + 60
        while not (out / "rank1_at_barrier").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        (out / "first.txt").write_text("rank 0")
    seen = (out / "first.txt").read_text()
written = dist.only_main((out / "only.txt").write_text, "x")
result = {"rank": dist.rank(), "world": dist.world_size(), "mine": [i for i, _ in mine], "merged": merged,
          "seen": seen, "only_main_returned": written, "only_exists_after_barrier": (out / "only.txt").exists()}
(out / f"rank{dist.rank()}.json").write_text(json.dumps(result))
"""


def test_collectives_on_two_gloo_processes(tmp_path):
    port = _free_port()
    procs = []
    for rank in (0, 1):  # two processes (forks of tests.forked's server, which imported torch and accelerate once)
        env = {**os.environ, "PYTHONPATH": str(REPO), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        output = tmp_path / f"rank{rank}.log"
        procs.append((forked.start(["-c", _WORKER, str(tmp_path)], output, env=env), output))
    for proc, output in procs:
        done = forked.wait(proc, output, timeout=120)
        assert done.returncode == 0, done.output
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], r1["world"]) == (2, 2)
    assert r0["mine"] == [0, 2, 4, 6] and r1["mine"] == [1, 3, 5]
    assert r0["merged"] == r1["merged"] == ["P0", "P1", "P2", "P3", "P4", "P5", "P6"]
    assert r0["seen"] == r1["seen"] == "rank 0"
    assert r1["only_main_returned"] is None and r0["only_main_returned"] == 1  # write_text's count, rank 0 only
    assert r0["only_exists_after_barrier"] and r1["only_exists_after_barrier"]


# --------------------------------------------------------------------------------------------------------------------
# Checks at config time
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_device, accum, gens, procs, ok", [
    (4, 1, 4, 1, True), (2, 1, 4, 2, True), (1, 2, 4, 2, True), (2, 1, 4, 1, False), (2, 1, 4, 3, False),
    (3, 3, 9, 1, True)])
def test_generation_batch_rule(per_device, accum, gens, procs, ok):
    error = dist.generation_batch_error("stage3", per_device, accum, gens, processes=procs)
    assert (error is None) == ok
    if not ok:
        for key in ("stage3.per_device_train_batch_size", "stage3.gradient_accumulation_steps",
                    "stage3.num_generations", f"processes ({procs})"):
            assert key in error


def test_config_checks_the_batch_across_the_launchers_processes(launcher_env):
    small = ["stage2.per_device_train_batch_size=2", "stage2.num_generations=4"]
    with pytest.raises(C.ConfigError, match=r"processes \(1\).*multiple of stage2.num_generations"):
        C.resolve(preset="smoke", overrides=small)
    launcher_env(WORLD_SIZE=2, RANK=0)
    assert C.resolve(preset="smoke", overrides=small).stage2.per_device_train_batch_size == 2
    launcher_env(WORLD_SIZE=3)
    with pytest.raises(C.ConfigError, match=r"processes \(3\) .* = 6 must be a multiple of stage2.num_generations"):
        C.resolve(preset="smoke", overrides=small)


def test_launcher_refuses_unsloth_and_qlora_with_zero3(launcher_env):
    launcher_env(WORLD_SIZE=2)
    with pytest.raises(C.ConfigError, match="model.backend=unsloth under 2 processes"):
        C.resolve(preset="smoke", overrides=["model.backend=unsloth"])
    launcher_env(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE=3)
    with pytest.raises(C.ConfigError, match="model.load_in_4bit=true with DeepSpeed ZeRO-3"):
        C.resolve(preset="smoke", overrides=["model.load_in_4bit=true"])
    assert C.resolve(preset="smoke", overrides=["model.load_in_4bit=false"]).model.load_in_4bit is False
    launcher_env(ACCELERATE_DEEPSPEED_ZERO_STAGE=2)
    assert C.resolve(preset="smoke", overrides=["model.load_in_4bit=true"]).model.load_in_4bit is True


def test_auto_backend_is_hf_under_a_launcher(launcher_env, monkeypatch):
    import importlib.util

    import torch

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "unsloth"
                        else real_find_spec(name, *a))
    auto = schema.ModelConfig(backend="auto")
    assert model_mod.pick_backend(auto) == "unsloth"  # one process, CUDA and unsloth: the fast path
    launcher_env(WORLD_SIZE=2)
    assert model_mod.pick_backend(auto) == "hf"


# --------------------------------------------------------------------------------------------------------------------
# vLLM server mode -> TRL's GRPOConfig
# --------------------------------------------------------------------------------------------------------------------


SERVER = ["vllm.enabled=true", "vllm.mode=server", "model.backend=hf", "vllm.server_host=10.0.0.7",
          "vllm.server_port=8123", "vllm.server_timeout=30"]


def test_vllm_server_keys_reach_trls_grpo_config(launcher_env, tmp_path):
    cfg = C.resolve(preset="smoke", overrides=SERVER)
    args = grpo_args(cfg, "stage2", str(tmp_path))
    assert (args.vllm_mode, args.vllm_server_host, args.vllm_server_port, args.vllm_server_timeout) == \
        ("server", "10.0.0.7", 8123, 30.0)
    assert args.vllm_server_base_url is None
    assert args.use_vllm is False  # the smoke preset runs on the CPU, where vLLM never runs
    url = C.resolve(preset="smoke", overrides=["vllm.server_base_url=http://gen:9000"])
    assert grpo_args(url, "stage3", str(tmp_path)).vllm_server_base_url == "http://gen:9000"
    # where completions are sampled is not part of an entry's fingerprint: switching it never blocks a resume
    colocated = C.resolve(preset="smoke", overrides=["vllm.enabled=true", "model.backend=hf"])
    assert rundir.entry_config(cfg, ENTRIES["stage3"]) == rundir.entry_config(colocated, ENTRIES["stage3"])


def test_vllm_server_mode_on_a_gpu_binds_to_grpo_config(launcher_env, monkeypatch, tmp_path):
    """On a GPU (faked: TrainingArguments cannot be built without one) the GRPOConfig keywords ask for TRL's vLLM
    in server mode, and they bind to GRPOConfig's real signature."""
    import inspect

    import torch

    from recipe.train import grpo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (8, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    real = grpo.GRPOConfig
    monkeypatch.setattr(grpo, "GRPOConfig", lambda **kw: inspect.signature(real).bind(**kw).arguments)
    cfg = C.resolve(preset="smoke", overrides=[*SERVER, "run.device=cuda"])
    kw = grpo.grpo_args(cfg, "stage2", str(tmp_path))
    assert (kw["use_vllm"], kw["vllm_mode"], kw["vllm_server_port"], kw["use_cpu"]) == (True, "server", 8123, False)
    colocated = C.resolve(preset="smoke", overrides=["vllm.enabled=true", "run.device=cuda"])
    assert grpo.grpo_args(colocated, "stage2", str(tmp_path))["vllm_mode"] == "colocate"
    off = C.resolve(preset="smoke", overrides=["run.device=cuda"])
    assert grpo.grpo_args(off, "stage2", str(tmp_path))["use_vllm"] is False  # vLLM only where asked for


def test_vllm_server_mode_needs_trls_vllm_on_the_hf_backend():
    with pytest.raises(C.ConfigError, match="'vllm.mode'.*model.backend=hf"):
        C.resolve(preset="smoke", overrides=[*SERVER, "model.backend=unsloth"])
    with pytest.raises(C.ConfigError, match="'vllm.mode'.*vllm.enabled=true"):
        C.resolve(preset="smoke", overrides=["vllm.mode=server", "model.backend=hf"])
    with pytest.raises(C.ConfigError, match="'vllm.server_port'"):
        C.resolve(preset="smoke", overrides=["vllm.server_port=70000"])


# --------------------------------------------------------------------------------------------------------------------
# Shipped accelerate configs, read by accelerate's own loader
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kind, zero", [("cpu", "MULTI_GPU", None), ("ddp", "MULTI_GPU", None),
                                              ("zero2", "DEEPSPEED", 2), ("zero3", "DEEPSPEED", 3)])
def test_shipped_accelerate_configs_load(name, kind, zero):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "recipe" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.name == kind and cfg.num_processes == 2 and cfg.mixed_precision == "no"
    assert (cfg.deepspeed_config or {}).get("zero_stage") == zero
    if zero == 3:  # recipe.dist.full_state_dict gathers the shards at save time: needs the 16-bit save
        assert cfg.deepspeed_config["zero3_save_16bit_model"] is True


# --------------------------------------------------------------------------------------------------------------------
# accelerate launch: 2 CPU processes, smoke preset, end to end
# --------------------------------------------------------------------------------------------------------------------

SHORT = ["stage1.max_steps=2", "stage2.max_steps=2", "stage3.max_steps=1", "stage3.mining_limit=8", "eval.limit=4",
         "eval.max_new_tokens=16"]


def _accelerate_cli() -> str | None:
    beside = Path(sys.executable).with_name("accelerate")
    return str(beside) if beside.is_file() else shutil.which("accelerate")


def _sets(cache: Path, run_dir: Path, extra=()) -> list[str]:
    out = ["--preset", "smoke", "--output-dir", str(run_dir), "--set", f"model.cache_dir={cache}"]
    for item in [*SHORT, *extra]:
        out += ["--set", item]
    return out


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _launch(cache: Path, run_dir: Path, extra=()) -> str:
    cli = _accelerate_cli()
    if cli is None:
        pytest.skip("the accelerate CLI is not installed")
    cmd = [cli, "launch", "--config_file", str(REPO / "recipe" / "accelerate" / "cpu.yaml"),
           "--main_process_port", str(_free_port()), "-m", "recipe.cli", "run-all", *_sets(cache, run_dir, extra)]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def _shape(run_dir: Path) -> set[str]:
    """Every path of a run directory, with the per-process RNG files of a checkpoint folded into one name."""
    out = set()
    for p in run_dir.rglob("*"):
        rel = str(p.relative_to(run_dir))
        if p.name.startswith("rng_state"):
            rel = str(p.parent.relative_to(run_dir) / "rng_state*.pth")
        out.add(rel)
    return out


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    run_dir = tmp_path_factory.mktemp("launched") / "run"
    return cache, run_dir, _launch(cache, run_dir)


def _rank_lines(log: str, rank: int, text: str) -> list[str]:
    return [line for line in log.splitlines() if f"[rank {rank}/2]" in line and text in line]


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_run_the_smoke_preset(launched):
    cache, run_dir, log = launched
    for rank in (0, 1):
        assert _rank_lines(log, rank, "process group up, backend gloo"), log[-3000:]
        for stage in ("stage1", "stage2", "stage3"):
            assert _rank_lines(log, rank, f"{stage} done in"), f"rank {rank} did not log {stage}"
    # only rank 0 evaluates
    assert _rank_lines(log, 0, "stage2: accuracy") and not _rank_lines(log, 1, "accuracy")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {s: (e["status"], e["processes"]) for s, e in manifest["entries"].items()} == \
        {s: ("done", 2) for s in ("stage1", "stage2", "stage3")}
    # the trainer really ran data-parallel: one RNG state per process in its checkpoints
    assert sorted(p.name for p in (run_dir / "stage2/trainer/checkpoint-2").glob("rng_state*")) == \
        ["rng_state_0.pth", "rng_state_1.pth"]
    # mining was split across the ranks and merged back in the slice's order
    from recipe.data.gsm8k import load_gsm8k, slice_rows

    problems, _ = load_gsm8k("synthetic:400", split="train")
    order = [p.question for p in slice_rows(problems, 128, 160)[:8]]
    mined = [json.loads(line)["question"] for line in (run_dir / "stage3/failures.jsonl").read_text().splitlines()]
    assert mined and mined == [q for q in order if q in mined]
    assert (run_dir / "report.md").is_file()


@pytest.mark.slow
def test_launched_run_directory_has_the_single_process_shape(launched, tmp_path):
    cache, run_dir, _ = launched
    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, "-m", "recipe.cli", "run-all", *_sets(cache, single)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert _shape(run_dir) == _shape(single)


@pytest.mark.slow
def test_launched_run_resumes_an_interrupted_stage_from_its_checkpoint(launched, tmp_path):
    cache, first, _ = launched
    run_dir = tmp_path / "run"
    shutil.copytree(first, run_dir)
    # what a kill during stage 2's second step leaves: checkpoint-1 only, no model, status running, no stage 3
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["entries"]["stage2"] = {k: manifest["entries"]["stage2"][k] for k in ("started", "config", "init_from")}
    manifest["entries"]["stage2"]["status"] = "running"
    manifest["entries"].pop("stage3")
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    for gone in ("stage2/model", "stage2/trainer/checkpoint-2", "stage3"):
        shutil.rmtree(run_dir / gone)
    stage1_model = (run_dir / "stage1/model/adapter_model.safetensors").read_bytes()

    log = _launch(cache, run_dir, extra=["stage3.enabled=false", "eval.enabled=false"])
    for rank in (0, 1):
        assert _rank_lines(log, rank, "stage1 already done; skipped")
        assert _rank_lines(log, rank, "resuming from") and "checkpoint-1" in log
        assert _rank_lines(log, rank, "stage2 done in")
    after = json.loads((run_dir / "manifest.json").read_text())["entries"]
    assert after["stage2"]["status"] == "done" and after["stage2"]["attempts"] == 2
    assert after["stage2"]["resumed_from"].endswith("checkpoint-1") and after["stage2"]["metrics"]["steps"] == 2
    assert (run_dir / "stage1/model/adapter_model.safetensors").read_bytes() == stage1_model
