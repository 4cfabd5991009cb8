"""``model.cpu_autocast``: float32 master weights trained under bf16 autocast on the CPU (TRL ``bf16=True`` with
``use_cpu``), refused where it cannot mean that."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from recipe.config import core as C
from recipe.errors import ConfigError, PrecisionError
from recipe.models import precision
from recipe.run import orchestrator as run
from recipe.train.grpo import grpo_args
from recipe.train.sft import sft_args


def test_decide_keeps_float32_weights_and_turns_on_bf16_flags_on_cpu():
    assert precision.decide("float32", cuda=False, cpu_autocast="bfloat16") == precision.Precision("float32", True, False)
    assert precision.decide("auto", cuda=False) == precision.Precision("float32", False, False)
    with pytest.raises(PrecisionError, match="float32 master weights"):
        precision.decide("bfloat16", cuda=False, cpu_autocast="bfloat16")
    with pytest.raises(PrecisionError, match="cpu_autocast"):
        precision.decide("float32", cuda=False, cpu_autocast="fp8")
    # a GPU decides by model.dtype alone
    assert precision.decide("float32", cuda=True, cpu_autocast="bfloat16").trainer_flags() == {"bf16": False,
                                                                                                "fp16": False}


@pytest.mark.parametrize("flags, native", [("fpu avx2 avx512f avx512_bf16 amx_tile", True), ("fpu amx_bf16", True),
                                           ("fpu sse4_2 avx2 avx512f", False)])
def test_auto_autocasts_only_on_a_cpu_with_native_bf16(tmp_path, monkeypatch, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert precision.cpu_native_bf16(str(cpuinfo)) is native
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    assert precision.decide("auto", cuda=False, cpu_autocast="auto") == precision.Precision("float32", native, False)
    # 16-bit weights never autocast (no float32 master copy), with or without native bf16
    assert precision.decide("bfloat16", cuda=False, cpu_autocast="auto") == precision.Precision("bfloat16", False, False)
    assert precision.decide("auto", cuda=True, cpu_autocast="auto").dtype in ("bfloat16", "float16")


def test_cpuinfo_that_cannot_be_read_means_no_native_bf16(tmp_path):
    assert precision.cpu_native_bf16(str(tmp_path / "absent")) is False


def test_trainer_args_carry_the_autocast_flag(tmp_path):
    cfg = C.resolve(preset="smoke", overrides=["model.cpu_autocast=bfloat16"])
    for args in (sft_args(cfg, str(tmp_path)), grpo_args(cfg, "stage2", str(tmp_path))):
        assert args.bf16 is True and args.fp16 is False and args.use_cpu is True
    assert sft_args(C.resolve(preset="smoke"), str(tmp_path)).bf16 is False
    with pytest.raises(ConfigError, match="model.cpu_autocast"):
        C.resolve(preset="smoke", overrides=["model.cpu_autocast=float16"])


def test_an_autocast_stage_trains_float32_weights(cache_dir, tmp_path):
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={tmp_path / 'run'}",
                                               "model.cpu_autocast=bfloat16", "stage1.max_steps=2",
                                               "stage2.enabled=false", "stage3.enabled=false", "eval.enabled=false"])
    run_dir = run.run_all(cfg)
    weights = load_file(str(run_dir / "stage1" / "model" / "adapter_model.safetensors"))
    assert weights and all(t.dtype == torch.float32 for t in weights.values())
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert any(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)  # it trained
