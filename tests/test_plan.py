"""``cotrecipe plan``: per-stage memory estimates, fit verdicts and proposals that really fit."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from recipe.cli import main
from recipe.config.core import preset_names, resolve
from recipe.errors import PlanError
from recipe.run import orchestrator as run
from recipe.tools import gpu_memory, plan, plan_time
from tests.helpers import cfg_no_eval, fake_trainers

QWEN3B = plan.model_dims("Qwen/Qwen2.5-3B")


def _resolve(preset, *overrides, tmp=None):
    extra = [f"model.cache_dir={tmp}"] if tmp else []
    return resolve(preset=preset, overrides=list(overrides) + extra)


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_gets_per_stage_estimates_and_a_verdict(preset, tmp_path):
    cfg = _resolve(preset, tmp=tmp_path)
    plans = plan.plan_config(cfg, 15.0)
    assert [p.stage for p in plans] == ["stage1", "stage2", "mining", "stage3", "eval"]
    for p in plans:
        assert p.total == pytest.approx(sum(p.terms.values()))
        assert p.terms["cuda context"] > 0 and p.fits == (p.total <= 15.0)
    assert plan.smallest_card(cfg) is not None


def test_qwen_dimensions_match_the_published_parameter_count():
    # Qwen2.5-3B's model card: 3.09B parameters (embedding tied); the q/k/v biases (~0.3M) are left out here.
    assert QWEN3B.n_params() == pytest.approx(3.09e9, rel=0.01)
    assert plan.model_dims("unsloth/Qwen2.5-3B-Instruct-bnb-4bit") == QWEN3B


def test_unknown_model_names_the_way_out_and_a_local_config_is_read(tmp_path):
    with pytest.raises(PlanError, match="--model-config"):
        plan.model_dims("someone/Unknown-7B")
    config = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps(config))
    dims = plan.model_dims(str(tmp_path))
    assert (dims.layers, dims.head_dim, dims.tied) == (2, 16, False)


@pytest.mark.parametrize("kind", ["sft", "grpo", "generate"])
@pytest.mark.parametrize("knob", ["batch", "completion"])
def test_estimate_grows_with_batch_and_completion_length(kind, knob):
    setup = plan.setup_from_config(_resolve("qwen2.5-3b-t4"))
    setup = dataclasses.replace(setup, fast_inference=False)  # a fixed vLLM block would hide the growth
    totals = []
    for value in (1, 2, 4, 8, 16) if knob == "batch" else (64, 128, 256, 512):
        w = plan.Workload(kind, batch=4, prompt=256, completion=128, gen_batch=4)
        w = dataclasses.replace(w, **({"batch": value, "gen_batch": value} if knob == "batch" else {knob: value}))
        totals.append(sum(plan.estimate_memory(QWEN3B, setup, w, 15.0, "adamw_8bit").values()))
    assert totals == sorted(totals) and totals[-1] > totals[0]


def test_eight_bit_adam_and_four_bit_weights_cost_less():
    cfg = _resolve("paper")
    setup = plan.setup_from_config(cfg)
    w = plan.Workload("sft", 2, 512, 0)
    full = sum(plan.estimate_memory(QWEN3B, setup, w, 24.0, "adamw_torch").values())
    assert sum(plan.estimate_memory(QWEN3B, setup, w, 24.0, "adamw_8bit").values()) < full
    four = dataclasses.replace(setup, four_bit=True)
    assert sum(plan.estimate_memory(QWEN3B, four, w, 24.0, "adamw_torch").values()) < full - 3  # ~6 -> ~2 GiB weights


def test_t4_preset_fits_15_gb_and_paper_needs_a_bf16_24_gb_card():
    assert all(p.fits for p in plan.plan_config(_resolve("qwen2.5-3b-t4"), 15.0))
    assert all(p.fits for p in plan.plan_config(_resolve("qwen2.5-3b-t4"), plan.PRESET_CARDS["qwen2.5-3b-t4"]))
    label, gib = plan.smallest_card(_resolve("paper"))
    assert gib >= 22 and "T4" not in label  # bfloat16: not a T4, whatever the memory says


def test_published_runs_fit_by_the_estimate_and_minimums_are_close():
    # Unsloth's Qwen2.5 (3B) GRPO notebook ran on a 14.74 GiB T4: 4-bit, vLLM at 0.5, LoRA r64 on all 7 projections,
    # 8 completions of 256 + 200 tokens, adamw_8bit. Unsloth's requirements page: 3B QLoRA >= 3.5 GB, LoRA >= 8 GB.
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    grpo = plan.Setup(True, 2, 64, targets, True, True, True, True, 0.5)
    assert sum(plan.estimate_memory(QWEN3B, grpo, plan.Workload("grpo", 8, 256, 200, 8), 14.74,
                                    "adamw_8bit").values()) <= 14.74
    sft = plan.Workload("sft", 1, 512, 0)
    qlora = plan.Setup(True, 2, 16, targets, True, True, True, False, 0.5)
    lora = dataclasses.replace(qlora, four_bit=False)
    assert sum(plan.estimate_memory(QWEN3B, qlora, sft, 24, "adamw_8bit").values()) == pytest.approx(3.5, rel=0.15)
    assert sum(plan.estimate_memory(QWEN3B, lora, sft, 24, "adamw_8bit").values()) == pytest.approx(8.0, rel=0.15)


def test_too_small_card_says_no_and_its_proposal_fits():
    cfg = _resolve("qwen2.5-3b-t4", "stage1.per_device_train_batch_size=32")
    stage1 = next(p for p in plan.plan_config(cfg, 15.0) if p.stage == "stage1")
    assert not stage1.fits and stage1.proposals
    fixed = _resolve("qwen2.5-3b-t4", *stage1.proposals[0].split())
    assert next(p for p in plan.plan_config(fixed, 15.0) if p.stage == "stage1").fits
    warnings = plan.check_fits(cfg, gpu_gib=15.0)
    assert len(warnings) == 1 and "stage1" in warnings[0] and "--set" in warnings[0]
    assert plan.check_fits(_resolve("qwen2.5-3b-t4"), gpu_gib=15.0) == []


def test_grpo_proposal_fits_when_generations_do_not():
    cfg = _resolve("qwen2.5-3b-t4", "stage2.num_generations=48", "stage2.per_device_train_batch_size=48",
                   "stage2.max_completion_length=512")
    stage2 = next(p for p in plan.plan_config(cfg, 15.0) if p.stage == "stage2")
    assert not stage2.fits
    fixed = _resolve("qwen2.5-3b-t4", "stage2.max_completion_length=512", *stage2.proposals[0].split())
    assert next(p for p in plan.plan_config(fixed, 15.0) if p.stage == "stage2").fits


def test_cli_prints_tables_and_verdict_with_exit_code():
    ok = CliRunner().invoke(main, ["plan", "--preset", "qwen2.5-3b-t4"])
    assert ok.exit_code == 0, ok.output
    assert "stage2" in ok.output and "vLLM block" in ok.output and "verdict: fits" in ok.output
    small = CliRunner().invoke(main, ["plan", "--preset", "paper", "--gpu-mem", "8"])
    assert small.exit_code == 1 and "does NOT fit" in small.output and "--set" in small.output
    paper = CliRunner().invoke(main, ["plan", "--preset", "paper"])
    assert "smallest card that fits every stage: L4" in paper.output


def fake_nvidia_smi(folder: Path, answer: str, calls: Path) -> Path:
    """A folder with an ``nvidia-smi`` that prints ``answer`` to a query naming ``memory.reserved`` and fails any
    other (``answer`` "" : a driver that does not know the field, answering the plain ``memory.total`` query with
    15360), noting each call's arguments in ``calls``."""
    folder.mkdir(parents=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f'#!/bin/sh\necho "$@" >> {calls}\ncase "$*" in\n  *reserved*) [ -n "{answer}" ] || exit 2; '
                   f'echo "{answer}";;\n  *) echo 15360;;\nesac\n')
    exe.chmod(0o755)
    return folder


def test_gpu_memory_is_read_from_the_driver_without_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *_: pytest.fail("a CUDA context was asked for"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpu_memory.gpu_total_gib() is None  # no driver tool: no GPU to judge against
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "t4", "15360, 258", calls)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_memory.gpu_total_gib() == pytest.approx(14.748, abs=1e-3)  # a T4 as CUDA reports it: 14.74 GiB
    assert calls.read_text().startswith("--id=0 --query-gpu=memory.total,memory.reserved")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234,0")
    gpu_memory.gpu_total_gib()
    assert calls.read_text().splitlines()[-1].startswith("--id=GPU-1234 ")  # the device torch calls cuda:0
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "old", "", tmp_path / "old-calls")))
    assert gpu_memory.gpu_total_gib() == 15.0  # an older driver: memory.total alone
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_memory.gpu_total_gib() is None


def test_run_all_warns_before_training_when_the_plan_does_not_fit_the_cuda_card(tmp_path, monkeypatch, caplog):
    """On CUDA, `run-all` logs `cotrecipe plan`'s warning before the first stage trains (a faked 0.5 GiB card read
    from a stand-in nvidia-smi; the trainers are stand-ins that write a valid adapter, so nothing touches a GPU).
    Without CUDA it says nothing."""
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'bin', '512, 0', tmp_path / 'calls')}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for cuda, expected in ((False, 0), (True, 1)):
        trained: list[str] = []
        fake_trainers(monkeypatch, trained)
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="recipe"):
            run.run_all(cfg_no_eval(tmp_path / f"run-{cuda}", "stage1.per_device_train_batch_size=64",
                                "stage1.max_length=1024"))
        warned = [r.getMessage() for r in caplog.records if "may not fit" in r.getMessage()]
        assert trained[0] == "stage1"
        assert (len(warned) >= 1) == bool(expected), warned
        if expected:
            assert "0.5 GiB GPU" in warned[0] and "cotrecipe plan" in warned[0]


def test_time_estimate_counts_the_configured_work_and_vllm_generation():
    cfg = _resolve("qwen2.5-3b-t4")
    dims = plan.model_dims(cfg.model.name_or_path)
    hours = plan_time.stage_hours(cfg, dims)
    assert list(hours) == ["stage1", "stage2", "mining", "stage3", "eval base", "eval stage1", "eval stage2",
                           "eval stage3"]
    assert all(h > 0 for h in hours.values())
    hf = plan_time.stage_hours(_resolve("qwen2.5-3b-t4", "vllm.enabled=false"), dims)
    assert hf["eval base"] > hours["eval base"] and hf["mining"] > hours["mining"]  # batch 64 vs a KV-block batch
    assert hf["stage1"] == hours["stage1"]  # SFT does not generate
    longer = plan_time.stage_hours(_resolve("qwen2.5-3b-t4", "stage2.max_steps=500"), dims)
    assert longer["stage2"] == pytest.approx(2 * hours["stage2"])
    fewer = plan_time.stage_hours(_resolve("qwen2.5-3b-t4", "eval.limit=100"), dims)
    assert fewer["eval base"] < hours["eval base"] / 5
    out = CliRunner().invoke(main, ["plan", "--preset", "qwen2.5-3b-t4"]).output
    assert "never measured" in out and f"stage2: {hours['stage2']:.2f} h" in out


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("size", ["-4", "0", "nan", "inf"])
def test_a_card_size_that_is_not_above_zero_is_one_line_naming_the_flag(size):
    line = _one_error_line(CliRunner().invoke(main, ["plan", "--preset", "qwen2.5-3b-t4", "--gpu-mem", size]))
    assert "'--gpu-mem'" in line and "> 0" in line


def test_a_sequence_length_above_the_models_position_limit_is_refused_and_none_makes_plan_search_long():
    """Qwen2.5-3B's config.json says max_position_embeddings 32768: 10**9 is refused in one line. A config.json that
    gives no limit is planned at 10**9 too: the largest length that fits is bisected, not walked 64 tokens at a time
    (~15.6 million estimates, hours), so the command returns with its proposals."""
    line = _one_error_line(CliRunner().invoke(main, ["plan", "--preset", "qwen2.5-3b-t4",
                                                     "--set", "model.max_seq_length=1000000000"]))
    assert "'model.max_seq_length'" in line and "1000000000" in line and "32768" in line
    ok = CliRunner().invoke(main, ["plan", "--preset", "qwen2.5-3b-t4", "--set", "model.max_seq_length=32768"])
    assert ok.exit_code in (0, 1) and "verdict:" in ok.output, ok.output


def _stage1(dims, *sets):
    cfg = _resolve("qwen2.5-3b-t4", "model.max_seq_length=1000000000", "vllm.enabled=false", *sets)
    return next(p for p in plan.plan_config(cfg, 15.0, dims) if p.stage == "stage1")


@pytest.mark.parametrize("key", ["per_device_train_batch_size", "max_length"])
def test_huge_values_are_bisected_to_the_largest_that_fits(key, tmp_path):
    """A length or batch of 10**9 (no position limit in this config.json): the proposal for it is the largest value
    that fits (one step more does not), found without walking the range."""
    config = json.loads((plan.shipped_configs()["qwen2.5-3b"]).read_text())
    del config["max_position_embeddings"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    dims = plan.model_dims(str(tmp_path))
    assert dims.max_positions is None
    stage1 = _stage1(dims, f"stage1.{key}=1000000000")
    proposal = next(p for p in stage1.proposals if p.startswith(f"stage1.{key}="))
    value = int(proposal.split("=")[1])
    step = 1 if key == "per_device_train_batch_size" else 64
    assert not stage1.fits and 1 <= value < 10**9
    assert _stage1(dims, f"stage1.{key}={value}").fits and not _stage1(dims, f"stage1.{key}={value + step}").fits
    result = CliRunner().invoke(main, ["plan", "--preset", "qwen2.5-3b-t4", "--model-config", str(tmp_path),
                                       "--gpu-mem", "15", "--set", "model.max_seq_length=1000000000",
                                       "--set", "vllm.enabled=false", "--set", f"stage1.{key}=1000000000"])
    assert result.exit_code == 1 and f"--set {proposal}" in result.output, result.output


@pytest.mark.parametrize("content, why", [
    ('{"hidden_size": 64,\n  oops}\n', "not valid JSON: Expecting property name enclosed in double quotes at line 2"),
    (b"\xff\xfe{}", "not UTF-8 text"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"hidden_size": 64}', "intermediate_size, num_hidden_layers, num_attention_heads, vocab_size must be positive"),
    ('{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 0, '
     '"vocab_size": 10}', "num_attention_heads must be positive"),
])
def test_a_model_config_that_is_not_a_config_json_is_one_line_naming_the_file(content, why, tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for given in (path, tmp_path):  # the file itself, or the folder holding it
        line = _one_error_line(CliRunner().invoke(main, ["plan", "--preset", "smoke", "--model-config", str(given)]))
        assert str(path) in line and why in line, line
