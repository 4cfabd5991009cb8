"""Evaluation and stage-3 mining through vLLM, without a GPU: a ``vllm`` stand-in whose
``SamplingParams``, ``LoRARequest``, ``LLM.generate``, prompts and outputs bind to vllm 0.27.1's real signatures
(vendored from the wheel by scripts/vllm_api.py), and an engine that decodes greedily with the tiny model the way
vLLM does (stop strings, stop token ids, ``max_tokens``, the LoRA of the request). The rows must be the HF path's."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import inspect
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from recipe.config import core as config
from recipe.eval import engine
from recipe.eval.evaluate import evaluate_weights
from recipe.fsio import read_jsonl
from recipe.models import model as M
from recipe.models import unsloth_backend, vllm_generation
from recipe.models.generation import eos_ids_of, generate
from tests.test_gpu_backend import fake_gpu, real_cuda_answer, standin  # noqa: F401  (standin is a fixture)

ROOT = Path(__file__).resolve().parents[1]
API = json.loads((ROOT / "tests" / "data" / "vllm_api_0.27.1.json").read_text())
MODULES = ("vllm", "vllm.lora", "vllm.lora.request")


def signature(qualname: str, drop_self: bool = False) -> inspect.Signature:
    params = [inspect.Parameter(p["name"], getattr(inspect.Parameter, p["kind"]),
                                default=p.get("default") if p["has_default"] else inspect.Parameter.empty)
              for p in API["functions"][qualname]["parameters"]]
    return inspect.Signature(params[1:] if drop_self else params)


class Struct:
    """A vLLM msgspec struct or dataclass: constructed only with its real fields, defaults as in the wheel."""

    QUALNAME = ""

    def __init__(self, *args, **kwargs):
        bound = signature(self.QUALNAME).bind(*args, **kwargs)  # TypeError for a field vLLM does not have
        bound.apply_defaults()
        self.__dict__.update(bound.arguments)


class SamplingParams(Struct):
    QUALNAME = "vllm.SamplingParams"


class LoRARequest(Struct):
    QUALNAME = "vllm.lora.request.LoRARequest"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        assert self.lora_int_id >= 1 and self.lora_path, "vLLM: id must be > 0 and lora_path non-empty"


class CompletionOutput(Struct):
    QUALNAME = "vllm.outputs.CompletionOutput"


class FakeLLM:
    """``vllm.LLM`` on the CPU: greedy decoding of one prompt at a time with the base weights plus the request's
    LoRA; stops as vLLM stops (a stop token, which is kept in ``token_ids``; a stop string; ``max_tokens``)."""

    def __init__(self, load_base, tokenizer):
        self.load_base, self.tokenizer = load_base, tokenizer  # () -> the base model, fresh; the engine's tokenizer
        self.calls: list[dict] = []
        self._models: dict = {}

    def model_for(self, request):
        from peft import PeftModel

        key = None if request is None else request.lora_path
        if key not in self._models:
            with real_cuda_answer():
                base = self.load_base()
                self._models[key] = base if key is None else PeftModel.from_pretrained(base, key)
            self._models[key].eval()
        return self._models[key]

    def generate(self, *args, **kwargs):
        bound = signature("vllm.LLM.generate", drop_self=True).bind(*args, **kwargs)
        prompts, params = bound.arguments["prompts"], bound.arguments["sampling_params"]
        request = bound.arguments.get("lora_request")
        self.calls.append({"n_prompts": len(prompts), "params": params, "lora_request": request})
        assert params.temperature == 0.0 and params.n == 1, "the stand-in decodes greedily only"
        prompt_keys = {p["name"] for p in API["functions"]["vllm.inputs.TokensPrompt"]["parameters"]}
        model = self.model_for(request)
        outputs = []
        for prompt in prompts:
            assert set(prompt) <= prompt_keys and "prompt_token_ids" in prompt
            outputs.append(types.SimpleNamespace(**signature("vllm.outputs.RequestOutput.__init__", True).bind(
                request_id=str(len(outputs)), prompt=None, prompt_token_ids=prompt["prompt_token_ids"],
                prompt_logprobs=None, outputs=[self.decode(model, prompt["prompt_token_ids"], params)],
                finished=True).arguments))
        return outputs

    @torch.no_grad()
    def decode(self, model, prompt_ids, params) -> CompletionOutput:
        ids = torch.tensor([prompt_ids])
        written: list[int] = []
        reason = "length"
        for _ in range(params.max_tokens):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            written.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            if token in (params.stop_token_ids or []):
                reason = "stop"
                break
            if any(stop in self.tokenizer.decode(written, skip_special_tokens=True) for stop in params.stop or []):
                reason = "stop"
                break
        return CompletionOutput(index=0, text="", token_ids=written, cumulative_logprob=None, logprobs=None,
                                finish_reason=reason)


class VllmStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in MODULES:
            return importlib.machinery.ModuleSpec(name, self, is_package=name != "vllm.lora.request")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        if module.__name__ == "vllm":
            assert {"SamplingParams", "LLM"} <= set(API["exports"])
            module.SamplingParams = SamplingParams
        elif module.__name__ == "vllm.lora.request":
            module.LoRARequest = LoRARequest


@pytest.fixture
def vllm_standin(monkeypatch):
    for name in MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [VllmStandIn(), *sys.meta_path])
    monkeypatch.setattr(vllm_generation, "_LORA_IDS", {})
    yield
    for name in MODULES:
        sys.modules.pop(name, None)


def smoke(cache_dir, *overrides):
    return config.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", "eval.limit=6",
                                                     "eval.max_new_tokens=24", *overrides])


def trained_adapter(cfg, tmp_path) -> str:
    """A saved LoRA whose B is not zero, so the adapter changes what is generated."""
    from peft import get_peft_model

    model, tokenizer = M.load(cfg.model, seed=0)
    peft = get_peft_model(model, M.lora_config(cfg.model))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return str(M.save(peft, tokenizer, tmp_path / "stage2" / "model"))


def test_vllm_calls_bind_and_rows_equal_the_hf_path(cache_dir, tmp_path, vllm_standin):
    cfg = smoke(cache_dir)
    adapter = trained_adapter(cfg, tmp_path)
    model, tokenizer = M.load(cfg.model, init_from=adapter, trainable=False)
    prompts = [f"Question: what is {i} + {i}?\nReasoning:" for i in range(6)]
    hf = generate(model, tokenizer, prompts, max_new_tokens=24, batch_size=3)
    middle = hf[0][0].raw[len(hf[0][0].raw) // 2:][:6]  # a stop text the model does write: the stop path runs
    engine = FakeLLM(lambda: M.load(cfg.model, trainable=False)[0], tokenizer)
    for stop_texts, rule in (((), "answer_line"), ((middle,), "paper"), ((middle,), "answer_line")):
        kwargs = dict(max_new_tokens=24, stop_texts=stop_texts, stop_rule=rule, answer_label="Final Answer:")
        expected = generate(model, tokenizer, prompts, batch_size=3, **kwargs)
        got = vllm_generation.generate_vllm(engine, tokenizer, prompts, adapter=adapter,
                                            eos_ids=eos_ids_of(model, tokenizer), **kwargs)
        assert got == expected
    assert any(g[0].n_tokens < 24 and not g[0].truncated for g in got)  # some rows were stopped, not cut at 24
    call = engine.calls[-1]
    assert call["lora_request"].lora_path == adapter
    assert call["lora_request"].lora_int_id == vllm_generation.FIRST_LORA_ID  # clear of unsloth_zoo's 1, 2, ...
    assert call["params"].max_tokens == 24 and call["params"].stop == [middle]
    assert call["params"].stop_token_ids == eos_ids_of(model, tokenizer)


def test_stop_point_replays_the_hf_stop_rule_token_by_token():
    chars = types.SimpleNamespace(decode=lambda ids, skip_special_tokens=True: "".join(chr(i) for i in ids if i))
    text = "Step 1: 2+2=4\nFinal Answer: 4\nQuestion: next"
    ids = [ord(c) for c in text]
    done = vllm_generation.partial(vllm_generation.is_finished, rule="answer_line", stop_texts=("Question:",),
                                   answer_label="Final Answer:")
    assert vllm_generation.stop_point(ids, chars, [], done) == text.index("4\nQuestion") + 2  # after the line's \n
    assert vllm_generation.stop_point(ids[:20], chars, [], done) is None  # no answer line yet: goes on
    assert vllm_generation.stop_point([*ids[:5], 0, *ids[5:]], chars, [0], done) == 6  # EOS first
    assert vllm_generation.stop_point(ids, chars, [], None) is None  # no stop rule


def test_a_misspelt_vllm_field_is_refused(vllm_standin):
    with pytest.raises(TypeError):
        SamplingParams(max_new_tokens=5)
    with pytest.raises(TypeError):
        LoRARequest(lora_name="a", lora_id=1, lora_path="x")
    with pytest.raises(AssertionError):
        LoRARequest(lora_name="a", lora_int_id=0, lora_path="x")


def test_eval_goes_through_the_held_engine_with_the_stage_adapter(cache_dir, tmp_path, vllm_standin, monkeypatch,
                                                                   standin):  # noqa: F811
    hf_cfg = smoke(cache_dir)
    adapter = trained_adapter(hf_cfg, tmp_path)
    hf = evaluate_weights(hf_cfg, tmp_path / "eval-hf", {"w": 1}, init_from=adapter)

    fake_gpu(monkeypatch)
    engines = []

    def engine_for(base):
        engine = FakeLLM(lambda: standin.base_model(base), M.load_tokenizer(base))
        engines.append(engine)
        return engine

    standin.engine_factory = engine_for
    gpu_cfg = smoke(cache_dir, "model.backend=unsloth", "vllm.enabled=true")
    fast = evaluate_weights(gpu_cfg, tmp_path / "eval-vllm", {"w": 1}, init_from=adapter, reuse=False)
    assert [a["fast_inference"] for name, a in standin.calls if name == "from_pretrained"] == [True]
    assert engines and engines[0].calls and engines[0].calls[0]["lora_request"].lora_path == adapter
    assert fast["metrics"] == hf["metrics"]
    assert read_jsonl(tmp_path / "eval-vllm" / "generations.jsonl") == read_jsonl(tmp_path / "eval-hf" /
                                                                                 "generations.jsonl")
    assert M.release_engine() is True and M.release_engine() is False  # held after the evaluation, then freed


def test_mining_goes_through_the_held_engine_and_finds_the_same_failures(cache_dir, tmp_path, vllm_standin,
                                                                         monkeypatch, standin):  # noqa: F811
    from recipe.train import stage3
    from recipe.train.rows import train_problems

    hf_cfg = smoke(cache_dir, "stage3.mining_limit=6", "stage3.mining_max_new_tokens=24")
    adapter = trained_adapter(hf_cfg, tmp_path)
    problems = train_problems(hf_cfg, "stage3")
    on_hf = stage3.mine_failures(hf_cfg, problems, adapter, *stage3.load_policy(hf_cfg, adapter))

    fake_gpu(monkeypatch)
    engines = []
    standin.engine_factory = lambda base: engines.append(FakeLLM(lambda: standin.base_model(base),
                                                                 M.load_tokenizer(base))) or engines[-1]
    gpu_cfg = smoke(cache_dir, "stage3.mining_limit=6", "stage3.mining_max_new_tokens=24", "model.backend=unsloth",
                    "vllm.enabled=true")
    policy = stage3.load_policy(gpu_cfg, adapter)  # the model stage 3 trains: its engine mines
    on_vllm = stage3.mine_failures(gpu_cfg, problems, adapter, *policy)
    assert len(engines) == 1 and engines[0].calls[0]["lora_request"].lora_path == adapter
    assert unsloth_backend.engine_of(policy[0]) is engines[0]  # still held: GRPO generates with it next
    assert engines[0].calls[0]["n_prompts"] == 6 and engines[0].calls[0]["params"].max_tokens == 24
    assert on_vllm == on_hf and len(on_hf) > 0


def test_a_row_vllm_writes_past_its_answer_line_is_cut_where_the_hf_decoder_stops(cache_dir, vllm_standin):
    tokenizer = M.load_tokenizer(str(cache_dir / "tiny-qwen2"))
    written = tokenizer("Step 1: 2+2=4\nFinal Answer: 4\nStep 2: and it goes on and on",
                        add_special_tokens=False)["input_ids"]

    class Scripted:  # vLLM knows nothing of the answer line: it writes on until max_tokens
        def generate(self, *args, **kwargs):
            bound = signature("vllm.LLM.generate", drop_self=True).bind(*args, **kwargs)
            return [types.SimpleNamespace(outputs=[CompletionOutput(
                index=0, text="", token_ids=written[:bound.arguments["sampling_params"].max_tokens],
                cumulative_logprob=None, logprobs=None, finish_reason="length")]) for _ in bound.arguments["prompts"]]

    for rule in ("answer_line", "paper"):
        (row,), = vllm_generation.generate_vllm(Scripted(), tokenizer, ["Q"], adapter=None, eos_ids=[],
                                                 max_new_tokens=len(written), stop_rule=rule)
        assert row.text == "Step 1: 2+2=4\nFinal Answer: 4" and not row.truncated
        assert row.n_tokens < len(written) and "Step 2" not in row.raw and row.raw.startswith(row.text)
    (row,), = vllm_generation.generate_vllm(Scripted(), tokenizer, ["Q"], adapter=None, eos_ids=[],
                                             max_new_tokens=5)
    assert row.truncated and row.n_tokens == 5  # cut by max_tokens before any answer: truncated, as on HF


def test_one_engine_serves_the_base_and_every_adapter_with_the_rows_of_their_own_loads(cache_dir, tmp_path,
                                                                                     vllm_standin, monkeypatch,
                                                                                     standin):  # noqa: F811
    hf_cfg = smoke(cache_dir)
    targets = [None, trained_adapter(hf_cfg, tmp_path / "a"), trained_adapter(hf_cfg, tmp_path / "b")]
    hf = [evaluate_weights(hf_cfg, tmp_path / f"hf-{i}", {"w": i}, init_from=w) for i, w in enumerate(targets)]

    fake_gpu(monkeypatch)
    engines = []
    standin.engine_factory = lambda base: engines.append(FakeLLM(lambda: standin.base_model(base),
                                                                 M.load_tokenizer(base))) or engines[-1]
    gpu_cfg = smoke(cache_dir, "model.backend=unsloth", "vllm.enabled=true")
    assert engine.shares_engine(gpu_cfg) and not engine.shares_engine(hf_cfg)
    assert [len(g) for g in engine.engine_groups([(str(i), w) for i, w in enumerate(targets)])] == [3]
    served = engine.EngineModel(gpu_cfg)
    fast = [evaluate_weights(gpu_cfg, tmp_path / f"vllm-{i}", {"w": i}, init_from=w, reuse=False, served=served)
            for i, w in enumerate(targets)]
    served.close()
    assert len(engines) == 1 and M.release_engine() is False  # one engine, freed at the end
    requests = [call["lora_request"] for call in engines[0].calls]
    assert requests[0] is None and [(r.lora_int_id, r.lora_path) for r in requests[1:]] == [
        (vllm_generation.FIRST_LORA_ID, targets[1]), (vllm_generation.FIRST_LORA_ID + 1, targets[2])]
    assert [r["metrics"] for r in fast] == [r["metrics"] for r in hf]
    for i in range(len(targets)):
        assert read_jsonl(tmp_path / f"vllm-{i}" / "generations.jsonl") == read_jsonl(tmp_path / f"hf-{i}" /
                                                                                     "generations.jsonl")
