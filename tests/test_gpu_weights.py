"""One set of weights for every stage: the repository Unsloth's loader would pick, decided once
from the pinned wheel's own tables (vendored by scripts/unsloth_mapper.py), passed to every load without remapping,
checked against an adapter's base, and recorded with its commit."""

from __future__ import annotations

import json
import types

import pytest

from recipe.config.schema import VllmConfig
from recipe.errors import WeightsError
from recipe.models import model as M
from recipe.models import unsloth_backend
from tests.test_gpu_backend import MAPPER, VLLM_ON, fake_gpu, make_cfg, standin  # noqa: F401  (standin: a fixture)

TABLES = types.SimpleNamespace(**{k: MAPPER[k] for k in ("FLOAT_TO_INT_MAPPER", "INT_TO_FLOAT_MAPPER",
                                                          "MAP_TO_UNSLOTH_16bit")})
PLAIN, DYNAMIC = "unsloth/Qwen2.5-3B-bnb-4bit", "unsloth/Qwen2.5-3B-unsloth-bnb-4bit"


@pytest.mark.parametrize(("name", "four_bit", "fast_inference", "expected"), [
    ("unsloth/Qwen2.5-3B", True, True, PLAIN),  # the T4 preset: vLLM loads the plain quant
    ("Qwen/Qwen2.5-3B", True, True, PLAIN),
    ("qwen/qwen2.5-3b", True, True, PLAIN),
    (DYNAMIC, True, True, PLAIN),  # asked for the dynamic quant with vLLM on: Unsloth may swap it, we always do
    ("unsloth/Qwen2.5-3B", True, False, DYNAMIC),  # no vLLM anywhere: the dynamic quant everywhere
    (PLAIN, True, False, PLAIN),  # an explicit quant is kept
    ("Qwen/Qwen2.5-3B", False, True, "unsloth/Qwen2.5-3B"),  # 16 bit: Unsloth's own copy of the weights
    ("google/gemma-4-E2B-it", True, True, "unsloth/gemma-4-E2B-it"),  # no plain twin: 16 bit, quantised on load
    ("someone/unknown-model", True, True, "someone/unknown-model"),
])
def test_one_repository_per_run(name, four_bit, fast_inference, expected):
    assert unsloth_backend.weights_repo(name, four_bit, fast_inference, TABLES) == expected


def test_every_load_of_a_run_uses_the_same_repo_and_the_record_says_which(cache_dir, tmp_path, standin,  # noqa: F811
                                                                         monkeypatch):
    fake_gpu(monkeypatch)
    # nothing may reach for the hub (tests/conftest.py sets HF_HUB_OFFLINE): the stand-in serves these ids
    standin.hub[PLAIN] = (cache_dir / "tiny-qwen2", "c0ffee" * 6 + "c0ff")
    standin.hub[DYNAMIC] = (cache_dir / "tiny-qwen2", "d" * 40)
    cfg, on = make_cfg(cache_dir, name_or_path="unsloth/Qwen2.5-3B"), VLLM_ON
    m1, tok = M.load(cfg, trainable=True, seed=1, vllm_cfg=on)  # stage 1 (SFT): no vLLM, yet the plain quant vLLM loads
    adapter = M.save(m1, tok, tmp_path / "stage1")
    m2, _ = M.load(cfg, init_from=adapter, trainable=True, seed=1, for_grpo=True, vllm_cfg=on)  # stage 2: vLLM
    m3, _ = M.load(cfg, init_from=adapter, trainable=False, seed=1, vllm_cfg=on)  # evaluation / mining
    froms = [a for name, a in standin.calls if name == "from_pretrained"]
    assert [a["fast_inference"] for a in froms] == [False, True, False]
    assert all(a["use_exact_model_name"] is True for a in froms)  # Unsloth's mapper does not get a second say
    assert froms[0]["model_name"] == PLAIN
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == PLAIN
    records = [M.weights_record(m) for m in (m1, m2, m3)]
    assert records == [{"repo": PLAIN, "revision": "c0ffee" * 6 + "c0ff"}] * 3


def test_an_adapter_on_other_weights_is_refused(cache_dir, tmp_path, standin, monkeypatch):  # noqa: F811
    fake_gpu(monkeypatch)
    standin.hub[DYNAMIC] = (cache_dir / "tiny-qwen2", "d" * 40)
    stage1 = make_cfg(cache_dir, name_or_path="unsloth/Qwen2.5-3B")
    model, tok = M.load(stage1, seed=1, vllm_cfg=VllmConfig(enabled=False))  # vLLM off: the dynamic quant
    adapter = M.save(model, tok, tmp_path / "stage1")
    with pytest.raises(WeightsError, match=f"trained on '{DYNAMIC}', but this run loads '{PLAIN}'"):
        M.load(stage1, init_from=adapter, seed=1, for_grpo=True, vllm_cfg=VLLM_ON)
