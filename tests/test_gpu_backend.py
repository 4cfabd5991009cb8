"""The GPU path without a GPU: unsloth / unsloth_zoo stand-ins whose functions bind every call against the real
signatures of the pinned release (vendored from the wheels by scripts/unsloth_api.py), a faked CUDA device, and
the properties it must keep: engine lifetime, T4 environment, precision, import order, use_vllm, seed
(the pins and the vendored signatures themselves: test_gpu_install.py).
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from recipe.config.schema import ModelConfig, VllmConfig
from recipe.errors import EngineError, PrecisionError
from recipe.models import model as M
from recipe.models import precision, unsloth_backend

ROOT = Path(__file__).resolve().parents[1]
API = json.loads((ROOT / "tests" / "data" / "unsloth_api_2026.10.x.json").read_text())
MAPPER = json.loads((ROOT / "tests" / "data" / "unsloth_mapper_2026.10.9.json").read_text())  # scripts/unsloth_mapper.py
STANDIN_MODULES = ("unsloth", "unsloth.models", "unsloth.models.mapper", "unsloth_zoo", "unsloth_zoo.vllm_utils")
PACKAGES = ("unsloth", "unsloth.models", "unsloth_zoo")


# ----------------------------------------------------------------------------------------------------------------
# the stand-in: real signatures, recorded calls, counted engines
# ----------------------------------------------------------------------------------------------------------------


def real_signature(qualname: str) -> inspect.Signature:
    """The vendored signature, without its ``**kwargs``: a keyword the recipe passes must be a named parameter
    (unsloth swallows unknown keywords into ``**kwargs``, so a misspelt one would otherwise be silently ignored)."""
    params = []
    for p in API["functions"][qualname]["parameters"]:
        kind = getattr(inspect.Parameter, p["kind"])
        if kind is not inspect.Parameter.VAR_KEYWORD:
            default = None if p["has_default"] else inspect.Parameter.empty
            params.append(inspect.Parameter(p["name"], kind, default=default))
    return inspect.Signature(params)


REAL_IS_AVAILABLE = torch.cuda.is_available


@contextmanager
def real_cuda_answer():
    """The stand-in loads on this CPU: peft/safetensors must not believe in the faked GPU."""
    faked = torch.cuda.is_available
    torch.cuda.is_available = REAL_IS_AVAILABLE
    try:
        yield
    finally:
        torch.cuda.is_available = faked


class Engine:
    def __init__(self):
        self.llm_engine = types.SimpleNamespace(model_executor=object())


class Holder:
    """A model that holds an engine (weak-referenceable, as an nn.Module is)."""

    def __init__(self, engine: Engine):
        self.vllm_engine = engine


class StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Importable ``unsloth`` and ``unsloth_zoo.vllm_utils`` that load the tiny model with transformers/peft."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.alive: list[Engine] = []
        self.engines_started = 0
        self.imported_with: dict | None = None
        self.hub: dict[str, tuple[Path, str]] = {}  # hub id -> (local folder standing in for it, its commit)
        self.engine_factory = lambda base: Engine()  # base weights (folder or hub id) -> the vLLM engine stand-in

    def bind(self, qualname: str, *args, **kwargs) -> dict:
        arguments = dict(real_signature(qualname).bind(*args, **kwargs).arguments)  # TypeError when it does not fit
        self.calls.append((qualname.rsplit(".", 1)[-1], arguments))
        return arguments

    # -- the functions ------------------------------------------------------------------------------------------
    def from_pretrained(self, *args, **kwargs):
        from peft import PeftModel

        a = self.bind("unsloth.FastLanguageModel.from_pretrained", *args, **kwargs)
        folder = Path(a["model_name"])
        with real_cuda_answer():
            base = str(folder)
            if M.is_adapter_dir(folder):  # unsloth: the base named in adapter_config.json + the adapter
                base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
                model = PeftModel.from_pretrained(self.base_model(base), folder, is_trainable=True)
            else:
                model = self.base_model(base)
        if a.get("fast_inference"):
            if self.alive:  # what a 15 GB T4 does with a second engine
                raise RuntimeError("CUDA out of memory: a vLLM engine is already running")
            engine = self.engine_factory(base)  # vLLM holds the base weights; adapters come as LoRA requests
            self.alive.append(engine)
            self.engines_started += 1
            # unsloth sets it on the model it built, before wrapping an adapter around it
            (model.get_base_model() if isinstance(model, PeftModel) else model).vllm_engine = engine
        return model, M.load_tokenizer(str(self.hub.get(str(folder), (folder,))[0]))

    def base_model(self, name: str):
        """A folder as it is; a hub id in :attr:`hub` from its stand-in folder, named and versioned as the hub's."""
        from transformers import AutoModelForCausalLM

        if name not in self.hub:
            return AutoModelForCausalLM.from_pretrained(name)
        folder, commit = self.hub[name]
        model = AutoModelForCausalLM.from_pretrained(folder)
        model.config._name_or_path, model.config._commit_hash, model.name_or_path = name, commit, name
        return model

    def get_peft_model(self, *args, **kwargs):
        from peft import LoraConfig, get_peft_model

        a = self.bind("unsloth.FastLanguageModel.get_peft_model", *args, **kwargs)
        return get_peft_model(a["model"], LoraConfig(r=a["r"], lora_alpha=a["lora_alpha"],
                                                     target_modules=a["target_modules"]))

    def for_inference(self, *args, **kwargs):
        self.bind("unsloth.FastLanguageModel.for_inference", *args, **kwargs)

    def delete_vllm(self, *args, **kwargs):
        a = self.bind("unsloth_zoo.vllm_utils.delete_vllm", *args, **kwargs)
        self.alive.remove(a["llm"])

    # -- import machinery ---------------------------------------------------------------------------------------
    def find_spec(self, name, path=None, target=None):
        if name in STANDIN_MODULES:
            return importlib.machinery.ModuleSpec(name, self, is_package=name in PACKAGES)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        if module.__name__ == "unsloth":
            self.imported_with = {"env": os.environ.get(unsloth_backend.NO_FLASHINFER)}
            module.FastLanguageModel = types.SimpleNamespace(
                from_pretrained=self.from_pretrained, get_peft_model=self.get_peft_model,
                for_inference=self.for_inference)
        elif module.__name__ == "unsloth_zoo.vllm_utils":
            module.delete_vllm = self.delete_vllm
        elif module.__name__ == "unsloth.models.mapper":  # the pinned wheel's tables (their vendored part)
            for table in ("FLOAT_TO_INT_MAPPER", "INT_TO_FLOAT_MAPPER", "MAP_TO_UNSLOTH_16bit"):
                setattr(module, table, dict(MAPPER[table]))


def fake_gpu(monkeypatch, capability=(7, 5)) -> None:
    """torch believes in one CUDA GPU of ``capability`` (7.5: a T4, bfloat16 only by emulation)."""
    native = capability[0] >= 8
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)


@pytest.fixture
def standin(monkeypatch):
    s = StandIn()
    for name in STANDIN_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [s, *sys.meta_path])
    monkeypatch.delenv(unsloth_backend.NO_FLASHINFER, raising=False)
    unsloth_backend._held.update(engine=None, model=None)
    yield s
    for name in STANDIN_MODULES:
        sys.modules.pop(name, None)
    unsloth_backend._held.update(engine=None, model=None)


def make_cfg(cache: Path, **changes) -> ModelConfig:
    base = ModelConfig(name_or_path=M.TINY, backend="unsloth", load_in_4bit=True, dtype="auto", use_lora=True,
                       lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"], cache_dir=str(cache))
    return dataclasses.replace(base, **changes)


VLLM_ON = VllmConfig(enabled=True, gpu_memory_utilization=0.45)  # a run's `vllm` section with the engine on


def lora_a(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_A" in k}


def test_standin_rejects_a_misspelt_or_removed_keyword(standin):
    with pytest.raises(TypeError):
        standin.bind("unsloth.FastLanguageModel.from_pretrained", model_name="x", fast_inferance=True)
    with pytest.raises(TypeError):
        standin.bind("unsloth.FastLanguageModel.get_peft_model", object(), rank=8)
    with pytest.raises(TypeError):
        standin.bind("unsloth_zoo.vllm_utils.delete_vllm", engine=None)
    assert standin.bind("unsloth.FastLanguageModel.from_pretrained", model_name="x", random_state=1)


# ----------------------------------------------------------------------------------------------------------------
# 3: one engine, only where GRPO generates, freed before the next load
# ----------------------------------------------------------------------------------------------------------------


def test_run_all_load_sequence_holds_at_most_one_engine(cache_dir, tmp_path, standin, monkeypatch):
    fake_gpu(monkeypatch)
    cfg, on = make_cfg(cache_dir), VLLM_ON
    m1, tok = M.load(cfg, trainable=True, seed=1, vllm_cfg=on)  # stage 1 (SFT): no engine
    assert standin.engines_started == 0 and not hasattr(m1, "vllm_engine")
    adapter = M.save(m1, tok, tmp_path / "stage1")
    m2, _ = M.load(cfg, init_from=adapter, trainable=True, seed=1, for_grpo=True, vllm_cfg=on)  # stage 2 (GRPO)
    assert standin.engines_started == 1 and unsloth_backend.engine_of(m2) is m2.vllm_engine is not None
    M.load(cfg, init_from=adapter, trainable=False, seed=1, vllm_cfg=on)  # eval / mining: frees stage 2's engine
    assert standin.alive == [] and M.release_engine() is False and not hasattr(m2, "vllm_engine")
    m3, _ = M.load(cfg, init_from=adapter, trainable=True, seed=1, for_grpo=True, vllm_cfg=on)  # stage 3 (GRPO)
    assert standin.engines_started == 2 and len(standin.alive) == 1
    assert M.release_engine() is True and standin.alive == [] and M.release_engine() is False
    froms = [a for name, a in standin.calls if name == "from_pretrained"]
    assert [a["fast_inference"] for a in froms] == [False, True, False, True]
    assert all(a["gpu_memory_utilization"] == on.gpu_memory_utilization for a in froms)


def test_unsloth_wiring_binds_and_an_adapter_round_trips(cache_dir, tmp_path, standin, monkeypatch):
    from peft import PeftModel

    fake_gpu(monkeypatch)
    cfg = make_cfg(cache_dir, max_seq_length=256, gradient_checkpointing=True)  # no vllm section: no engine
    model, tokenizer = M.load(cfg, seed=7)
    assert isinstance(model, PeftModel) and M.trainer_peft_config(model, cfg) is None
    (_, first), (_, peft) = standin.calls
    assert first["model_name"] == M.resolve_model_path(cfg) and first["max_seq_length"] == 256
    assert first["load_in_4bit"] is True and first["max_lora_rank"] == 4 and first["full_finetuning"] is False
    assert (peft["r"], peft["lora_alpha"], peft["target_modules"], peft["use_gradient_checkpointing"]) == \
        (4, 8, ["q_proj", "v_proj"], "unsloth")
    adapter = M.save(model, tokenizer, tmp_path / "adapter")
    standin.calls.clear()
    again, _ = M.load(cfg, init_from=adapter, trainable=False, seed=7)
    assert isinstance(again, PeftModel) and not any(p.requires_grad for p in again.parameters())
    assert [c[0] for c in standin.calls] == ["from_pretrained", "for_inference"]
    assert standin.calls[0][1]["model_name"] == str(adapter)
    full, _ = M.load(dataclasses.replace(cfg, use_lora=False), seed=7)  # full fine-tuning: no 4-bit, no LoRA
    assert standin.calls[-1][1]["full_finetuning"] is True and standin.calls[-1][1]["load_in_4bit"] is False
    assert not isinstance(full, PeftModel)


def test_a_second_engine_is_refused_while_one_is_held(standin):
    first, second = Holder(Engine()), Holder(Engine())
    unsloth_backend._hold(first)
    unsloth_backend._hold(first)  # the same engine again is fine
    with pytest.raises(EngineError, match="already held"):
        unsloth_backend._hold(second)


def test_grpo_releases_the_engine_when_training_ends_or_fails(standin, monkeypatch, tmp_path):
    from recipe.config import core as config
    from recipe.train import grpo

    standin.alive.append(engine := Engine())
    holder = Holder(engine)
    unsloth_backend._hold(holder)

    class Trainer:  # TRL's GRPOTrainer, running out of memory mid-stage
        def __init__(self, **kwargs):
            self.args, self.model, self.ref_model = kwargs["args"], kwargs["model"], None

        def train(self, resume_from_checkpoint=None):
            raise RuntimeError("OOM mid-stage")

    monkeypatch.setattr(grpo, "GRPOTrainer", Trainer)
    cfg = config.resolve(preset="smoke")
    with pytest.raises(RuntimeError, match="OOM mid-stage"):
        grpo.train_grpo(cfg, "stage2", None, None, [{"prompt": "p", "answer": "1"}], tmp_path)
    assert standin.alive == [] and M.release_engine() is False and not hasattr(holder, "vllm_engine")


# ----------------------------------------------------------------------------------------------------------------
# 4, 6: the T4 environment and the import order
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "1"), ((8, 0), None)])
def test_flashinfer_is_switched_off_before_unsloth_imports_on_pre_ampere(cache_dir, standin, monkeypatch,
                                                                        capability, expected):
    fake_gpu(monkeypatch, capability)
    M.prepare_backend(make_cfg(cache_dir))
    assert standin.imported_with == {"env": expected}


def test_a_user_setting_of_the_flashinfer_switch_wins(cache_dir, standin, monkeypatch):
    fake_gpu(monkeypatch, (7, 5))
    monkeypatch.setenv(unsloth_backend.NO_FLASHINFER, "0")
    M.prepare_backend(make_cfg(cache_dir))
    assert standin.imported_with == {"env": "0"}


def test_eval_imports_unsloth_before_transformers_trl_and_peft(tmp_path):
    """A fresh interpreter (nothing imported yet), a faked T4 and an on-disk unsloth that records what was
    imported before it: `cotrecipe eval` must pick the backend and import unsloth first."""
    fake = tmp_path / "site" / "unsloth"
    fake.mkdir(parents=True)
    record = tmp_path / "record.json"
    (fake / "__init__.py").write_text(textwrap.dedent(f"""
        import json, os, sys
        early = sorted(m for m in ("transformers", "trl", "peft") if m in sys.modules)
        json.dump({{"early": early, "env": os.environ.get("UNSLOTH_VLLM_NO_FLASHINFER")}}, open({str(record)!r}, "w"))
        raise ImportError("the stand-in stops here")
        """))
    driver = textwrap.dedent(f"""
        import sys, torch
        torch.cuda.is_available = lambda: True
        torch.cuda.get_device_capability = lambda *a, **k: (7, 5)
        sys.path.insert(0, {str(tmp_path / "site")!r})
        from recipe.cli import main
        main(["eval", "--preset", "smoke", "--set", "model.backend=unsloth", "--set", "run.device=auto",
              "--limit", "1", "--output-dir", {str(tmp_path / "out")!r}], standalone_mode=False)
        """)
    env = {k: v for k, v in os.environ.items() if k != "UNSLOTH_VLLM_NO_FLASHINFER"}
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run([sys.executable, "-c", driver], cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert record.is_file(), "unsloth was never imported"
    assert json.loads(record.read_text()) == {"early": [], "env": "1"}


# ----------------------------------------------------------------------------------------------------------------
# 5: one precision decision, followed by loading and by TRL
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("capability", "dtype", "bf16", "fp16"),
                         [((7, 5), "float16", False, True), ((8, 0), "bfloat16", True, False)])
def test_precision_reaches_unsloth_and_matches_the_trainer_flags(cache_dir, standin, monkeypatch, capability, dtype,
                                                                bf16, fp16):
    fake_gpu(monkeypatch, capability)
    cfg = make_cfg(cache_dir)
    M.load(cfg, seed=0)
    assert standin.calls[0][1]["dtype"] == getattr(torch, dtype)  # not None: unsloth would pick its own
    assert precision.for_device(cfg.dtype, "auto", cfg.cpu_autocast).trainer_flags() == {"bf16": bf16, "fp16": fp16}


def test_precision_table_and_errors(monkeypatch):
    assert precision.decide("auto", cuda=False) == precision.Precision("float32", False, False)
    fake_gpu(monkeypatch, (7, 5))
    assert precision.decide("auto", cuda=True).dtype == "float16"  # emulated bf16 does not count
    assert precision.decide("float32", cuda=True).trainer_flags() == {"bf16": False, "fp16": False}
    with pytest.raises(PrecisionError, match="no native bfloat16"):
        precision.decide("bfloat16", cuda=True)
    with pytest.raises(PrecisionError, match="unknown model.dtype 'half'"):
        precision.decide("half", cuda=False)


def test_hf_backend_on_a_t4_loads_float16(cache_dir, monkeypatch):
    fake_gpu(monkeypatch, (7, 5))
    model, _ = M.load(make_cfg(cache_dir, backend="hf", load_in_4bit=False))
    assert model.dtype == torch.float16


# ----------------------------------------------------------------------------------------------------------------
# 7: vLLM on the hf backend only when asked for
# ----------------------------------------------------------------------------------------------------------------


def test_use_vllm_only_where_asked_for(cache_dir, standin, monkeypatch):
    fake_gpu(monkeypatch)
    hf, off = make_cfg(cache_dir, backend="hf"), VllmConfig()
    from recipe.train.grpo import vllm_args

    def keys(model_cfg, vllm_cfg, use_cpu=False):
        return vllm_args(types.SimpleNamespace(model=model_cfg, vllm=vllm_cfg), use_cpu)

    assert keys(hf, off)["use_vllm"] is False  # off by default, on hf too
    assert keys(hf, VLLM_ON)["use_vllm"] is True  # TRL's own engine on hf
    on_unsloth = keys(make_cfg(cache_dir), VLLM_ON)
    assert {k: on_unsloth[k] for k in ("use_vllm", "vllm_mode", "vllm_gpu_memory_utilization")} == {
        "use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.45}
    assert keys(make_cfg(cache_dir), off)["use_vllm"] is False
    assert keys(make_cfg(cache_dir), VLLM_ON, use_cpu=True)["use_vllm"] is False


# ----------------------------------------------------------------------------------------------------------------
# 8: run.seed reaches model loading
# ----------------------------------------------------------------------------------------------------------------


def test_seed_reaches_unsloth_and_fixes_the_lora_init(cache_dir, standin, monkeypatch):
    fake_gpu(monkeypatch)
    cfg = make_cfg(cache_dir)
    a, _ = M.load(cfg, seed=11)
    torch.manual_seed(999)  # whatever happened in between
    b, _ = M.load(cfg, seed=11)
    c, _ = M.load(cfg, seed=12)
    la, lb, lc = lora_a(a), lora_a(b), lora_a(c)
    assert la and all(torch.equal(la[k], lb[k]) for k in la) and any(not torch.equal(la[k], lc[k]) for k in la)
    seeds = [(name, args["random_state"]) for name, args in standin.calls if "random_state" in args]
    assert seeds == [("from_pretrained", 11), ("get_peft_model", 11), ("from_pretrained", 11),
                     ("get_peft_model", 11), ("from_pretrained", 12), ("get_peft_model", 12)]


def test_seed_fixes_the_lora_the_trainer_adds_on_hf(cache_dir):
    from peft import get_peft_model

    cfg = make_cfg(cache_dir, backend="hf", load_in_4bit=False, dtype="float32")
    adapters = []
    for seed in (5, 5, 6):
        model, _ = M.load(cfg, seed=seed)
        adapters.append(lora_a(get_peft_model(model, M.lora_config(cfg))))  # what TRL does with peft_config
    same, other = adapters[1], adapters[2]
    assert all(torch.equal(adapters[0][k], same[k]) for k in same)
    assert any(not torch.equal(adapters[0][k], other[k]) for k in other)


class Loaded(Exception):
    pass


def test_every_stage_load_gets_run_seed_and_only_grpo_or_generation_asks_for_an_engine(tmp_path, monkeypatch):
    from recipe.config import core as config
    from recipe.train import baseline_sft, stage1, stage2, stage3

    cfg = config.resolve(preset="smoke", overrides=["run.seed=123"])
    seen = []

    def record(model_cfg, init_from=None, trainable=True, seed=0, for_grpo=False, vllm=False, vllm_cfg=None):
        assert vllm_cfg is cfg.vllm  # every load gets the run's vllm section (the unsloth weights follow it)
        seen.append((seed, for_grpo or vllm))
        raise Loaded

    monkeypatch.setattr(M, "load", record)
    for call in (lambda: stage1.run(cfg, tmp_path / "s1"), lambda: stage2.run(cfg, tmp_path / "s2"),
                 lambda: stage3.run(cfg, tmp_path / "s3"), lambda: baseline_sft.run(cfg, tmp_path / "b")):
        with pytest.raises(Loaded):
            call()
    assert seen == [(123, False), (123, True), (123, True), (123, False)]  # stage 3 loads once: mines, then trains
