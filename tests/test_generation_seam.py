"""One generation seam: evaluation, stage-3 mining and ``teach``'s ``hf:`` teacher all generate
through :func:`recipe.models.generation.generate`, and :func:`recipe.models.generation.choose_decoder` is the one
place that picks vLLM, pruned HF greedy or HF ``generate``."""

from __future__ import annotations

import re
import types

import pytest
from test_imports import GRAPH, MODULES

from recipe.config import core as C
from recipe.eval.evaluate import evaluate_weights
from recipe.fsio import read_jsonl
from recipe.models import generation, unsloth_backend
from recipe.models.model import load as load_model
from recipe.teacher.teach import TeachOptions, load_problems, run_teach
from recipe.train import stage3
from recipe.train.rows import train_problems

DECODERS = ("recipe.models.hf_generation", "recipe.models.vllm_generation")


@pytest.fixture(scope="module")
def tiny(cache_dir):
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}"])
    model, tokenizer = load_model(cfg.model, trainable=False)
    return model, tokenizer


def test_the_decoder_is_chosen_in_one_place(tiny, monkeypatch):
    model, _ = tiny
    choose = generation.choose_decoder
    assert choose(model).name == generation.HF_PRUNED  # greedy, one answer, a bare-argmax model
    assert choose(model, prune=False).name == generation.HF_GENERATE
    assert choose(model, temperature=0.7).name == generation.HF_GENERATE
    assert choose(model, num_return_sequences=2).name == generation.HF_GENERATE
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.3)  # a logits processor
    assert choose(model).name == generation.HF_GENERATE
    monkeypatch.undo()

    engine = object()
    monkeypatch.setitem(unsloth_backend._held, "engine", engine)  # this process holds an engine ...
    assert choose(model).name == generation.HF_PRUNED  # ... of another model: not this model's decoder
    holder = types.SimpleNamespace(vllm_engine=engine)
    for request in ({}, {"temperature": 0.7, "num_return_sequences": 4}, {"prune": False}):
        chosen = choose(holder, **request)
        assert chosen.name == generation.VLLM and chosen.engine is engine  # every request: the engine serves it


def test_generate_runs_the_chosen_decoder_and_nothing_else_picks_one(tiny, monkeypatch):
    model, tokenizer = tiny
    calls = []
    monkeypatch.setattr(generation, "generate_hf", lambda m, t, p, **kw: calls.append(("hf", kw)) or [[]] * len(p))
    monkeypatch.setattr(generation, "generate_vllm", lambda e, t, p, **kw: calls.append(("vllm", e, kw)) or
                        [[]] * len(p))
    for name in (generation.HF_PRUNED, generation.HF_GENERATE):
        monkeypatch.setattr(generation, "choose_decoder", lambda *a, name=name, **k: generation.Decoder(name))
        assert generation.generate(model, tokenizer, ["a", "b"], batch_size=3, max_new_tokens=7) == [[], []]
    engine = object()
    monkeypatch.setattr(generation, "choose_decoder", lambda *a, **k: generation.Decoder(generation.VLLM, engine))
    generation.generate(model, tokenizer, ["a"], adapter="/x/stage2/model", batch_size=3, max_new_tokens=7)
    (hf1, pruned), (hf2, plain), (vllm, got_engine, vkw) = calls
    assert (hf1, pruned["pruned"], pruned["batch_size"]) == ("hf", True, 3)
    assert (hf2, plain["pruned"], plain["max_new_tokens"]) == ("hf", False, 7)
    assert vllm == "vllm" and got_engine is engine and vkw["adapter"] == "/x/stage2/model"
    assert vkw["eos_ids"] == generation.eos_ids_of(model, tokenizer) and "batch_size" not in vkw

    # the decoders are reached through the seam only: no other module imports them (vLLM's builds on the hf rows)
    importers = {name for name, found in GRAPH.items() for target, _, _ in found if target in DECODERS}
    assert importers == {"recipe.models.generation", "recipe.models.vllm_generation"}
    # and nothing outside the seam asks which decoder to run
    deciders = {name for name, path in MODULES.items() if name != "recipe.models.generation"
                and re.search(r"\b(engine_of|plain_greedy|generate_hf|generate_vllm)\(",
                              path.read_text(encoding="utf-8").replace("def ", "def_"))}
    assert deciders == set(), f"modules that pick a decoder outside recipe.models.generation: {sorted(deciders)}"


def test_eval_mining_and_teach_hf_generate_through_the_seam(cache_dir, tmp_path, monkeypatch):
    seen: list[dict] = []
    real = generation.generate
    chosen: list[str] = []
    real_choose = generation.choose_decoder

    def observed(model, tokenizer, prompts, **kwargs):
        seen.append({"n": len(prompts), **kwargs})
        return real(model, tokenizer, prompts, **kwargs)

    def observed_choice(*args, **kwargs):
        chosen.append(real_choose(*args, **kwargs).name)
        return generation.Decoder(chosen[-1])

    monkeypatch.setattr(generation, "generate", observed)
    monkeypatch.setattr(generation, "choose_decoder", observed_choice)
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", "eval.limit=3", "eval.max_new_tokens=8",
                                               "stage3.mining_limit=2", "stage3.mining_max_new_tokens=8",
                                               "stage3.mining_k=2", "stage3.mining_temperature=0.7"])

    evaluate_weights(cfg, tmp_path / "eval", {"w": 1})
    assert len(read_jsonl(tmp_path / "eval" / "generations.jsonl")) == 3
    assert len(seen) == 1 and seen[0]["n"] == 3 and seen[0]["max_new_tokens"] == 8 and seen[0]["temperature"] == 0.0

    stage3.mine_failures(cfg, train_problems(cfg, "stage3"), None, *stage3.load_policy(cfg, None))
    assert len(seen) == 2 and seen[1]["n"] == 2 and seen[1]["num_return_sequences"] == 2
    assert seen[1]["temperature"] == 0.7 and seen[1]["adapter"] is None

    tiny_path = str(cache_dir / "tiny-qwen2")
    opts = TeachOptions(source=f"hf:{tiny_path}", output=str(tmp_path / "t.jsonl"), batch_size=2, max_new_tokens=6)
    summary = run_teach(cfg, opts, load_problems(cfg, limit=3))
    assert summary.requested == 3
    assert [s["n"] for s in seen[2:]] == [2, 1] and all(s["max_new_tokens"] == 6 for s in seen[2:])

    # every call was decided by the one chooser: greedy eval pruned, sampled mining on HF generate
    assert chosen == [generation.HF_PRUNED, generation.HF_GENERATE, generation.HF_PRUNED, generation.HF_PRUNED]
