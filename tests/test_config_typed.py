"""The config's type checks (``recipe.config.core.checked``: the schema's pydantic dataclasses, a trainer section's
other TRL keys typed from TRL's source): what is accepted and coerced, what is refused, and the exact one-line error
for it."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from recipe.config import core as C
from recipe.config.schema import Config, RewardSpec, Stage2Config
from recipe.errors import ConfigError

REFUSED = [
    ({"stage2": {"learning_rate": "nan"}}, "bad value for 'stage2.learning_rate': 'nan' (expected float)"),
    ({"stage2": {"learning_rate": "inf"}}, "bad value for 'stage2.learning_rate': 'inf' (expected float)"),
    ({"stage2": {"learning_rate": float("inf")}}, "bad value for 'stage2.learning_rate': inf (expected float)"),
    ({"stage2": {"learning_rate": True}}, "bad value for 'stage2.learning_rate': True (expected float)"),
    ({"stage2": {"learning_rate": None}}, "bad value for 'stage2.learning_rate': None (expected float)"),
    ({"stage2": {"learning_rate": [1]}}, "bad value for 'stage2.learning_rate': [1] (expected float)"),
    ({"stage2": {"learning_rate": "fast"}}, "bad value for 'stage2.learning_rate': 'fast' (expected float)"),
    ({"stage2": {"max_steps": 1.0}}, "bad value for 'stage2.max_steps': 1.0 (expected -1 | int)"),
    ({"stage2": {"max_steps": True}}, "bad value for 'stage2.max_steps': True (expected -1 | int)"),
    ({"stage2": {"max_steps": "3"}}, "bad value for 'stage2.max_steps': '3' (expected -1 | int)"),
    ({"stage2": {"log_completions": 1}}, "bad value for 'stage2.log_completions': 1 (expected bool)"),
    ({"stage2": {"log_completions": "yes"}}, "bad value for 'stage2.log_completions': 'yes' (expected bool)"),
    ({"stage2": {"loss_type": 3}}, "bad value for 'stage2.loss_type': 3 (expected 'grpo' | 'dr_grpo' | 'dapo' | 'bnpo' | 'cispo' | 'sapo' | "
                                        "'luspo' | 'vespo')"),
    ({"model": {"backend": "tpu"}}, "bad value for 'model.backend': 'tpu' (expected 'auto' | 'hf' | 'unsloth')"),
    ({"model": {"backend": ["hf"]}}, "bad value for 'model.backend': ['hf'] (expected 'auto' | 'hf' | 'unsloth')"),
    ({"model": {"lora_target_modules": ("q",)}},
     "bad value for 'model.lora_target_modules': ('q',) (expected list of str)"),
    ({"model": {"lora_target_modules": "q_proj"}},
     "bad value for 'model.lora_target_modules': 'q_proj' (expected list of str)"),
    ({"model": {"lora_target_modules": ["q", None, 2]}},
     "bad value for 'model.lora_target_modules[1]': None (expected str)"),
    ({"data": {"stage1_rows": [0, 1.5]}}, "bad value for 'data.stage1_rows[1]': 1.5 (expected int)"),
    ({"stage2": {"rewards": [{"name": "x", "weight": "heavy"}]}},
     "bad value for 'stage2.rewards[0].weight': 'heavy' (expected float)"),
    ({"stage2": {"rewards": [{"name": "correctness"}, {"nme": "x"}]}},
     "unknown key 'stage2.rewards[1].nme' (did you mean 'stage2.rewards[1].name'?)"),
    ({"stage2": {"rewards": [{"name": "correctness"}, "x"]}},
     "bad value for 'stage2.rewards[1]': 'x' (expected mapping)"),
    ({"stage2": {"rewards": {"name": "x"}}},
     "bad value for 'stage2.rewards': {'name': 'x'} (expected list of mapping)"),
    ({"stage2": {"rewards": [{"name": "correctness", "params": [1]}]}},
     "bad value for 'stage2.rewards[0].params': [1] (expected dict)"),
    ({"stage2": "x"}, "bad value for 'stage2': 'x' (expected mapping)"),
    ({"stage2": None}, "bad value for 'stage2': None (expected mapping)"),
    ({"stage2": []}, "bad value for 'stage2': [] (expected mapping)"),
    ({"stage2": RewardSpec("x")}, "bad value for 'stage2': RewardSpec(name='x', weight=1.0, params={}) "
                                  "(expected mapping)"),
    ({"modle": {}}, "unknown key 'modle' (did you mean 'model'?)"),
    ({"xyzzy": 1}, "unknown key 'xyzzy' (allowed: baseline_concise, baseline_grpo, baseline_sft, data, description, eval, "
                   "model, run, stage1, stage2, stage3, vllm, warmup)"),
    ({"run": {"process_per_entry": "x"}}, "bad value for 'run.process_per_entry': 'x' (expected 'auto' | bool)"),
    ({"run": {"process_per_entry": 1}}, "bad value for 'run.process_per_entry': 1 (expected 'auto' | bool)"),
    ({"run": {"report_to": ["none"], "baselines": ["sft", 3]}}, "bad value for 'run.baselines[1]': 3 (expected 'sft' | 'grpo' | 'concise')"),
    ({"eval": {"stages": "base"}}, "bad value for 'eval.stages': 'base' (expected list of 'base' | 'stage1' | 'stage2' | 'stage3')"),
    ({"description": 5}, "bad value for 'description': 5 (expected str)"),
    ({"warmup": {"max_steps": 0}}, "bad value for 'warmup.max_steps': 0 (-1 or a positive count)"),  # off, checked
    # several problems: the first in the data's own order is named (as a key-by-key check stops at it)
    ({"stage2": {"lerning_rate": 1, "temperature": "hot"}},
     "unknown key 'stage2.lerning_rate' (did you mean 'stage2.learning_rate'?)"),
    ({"stage2": {"temperature": "hot", "lerning_rate": 1}},
     "bad value for 'stage2.temperature': 'hot' (expected float)"),
    ({"stage2": {"temperature": "hot"}, "modle": 1}, "bad value for 'stage2.temperature': 'hot' (expected float)"),
    ({"modle": 1, "stage2": {"temperature": "hot"}}, "unknown key 'modle' (did you mean 'model'?)"),
    ({"model": {"lora_r": "x"}, "stage2": {"rewards": [{"name": "a"}, {"weight": "y"}]}},
     "bad value for 'model.lora_r': 'x' (expected int)"),
    # the hand-written checker raised OverflowError / TypeError on these; now one line like the rest
    ({"stage2": {"learning_rate": 10**400}}, "bad value for 'stage2.learning_rate': "
                                             f"{str(10**400)[:38]}...{str(10**400)[-39:]} (expected float)"),
    ({"stage2": {1: 2}}, "unknown key 'stage2.1' (the recipe's keys: cut_after_answer, enabled, length_unit, "
                         "mask_ratio, min_masked, question_only_share, rewards; or a field of TRL's GRPOConfig)"),
]


@pytest.mark.parametrize(("data", "message"), REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_refused_values_get_one_exact_line(data, message):
    with pytest.raises(ConfigError) as info:
        C.checked(Config, data)
    assert str(info.value) == message


def test_accepted_values_and_their_coercions():
    cfg = C.checked(Config, {
        "stage2": {"learning_rate": "1e-5", "temperature": " 2.5E-1 ", "top_p": 1, "max_steps": 10**30,
                   "rewards": [{"name": "correctness", "weight": 2, "params": OrderedDict(wrong=-1)}]},
        "stage1": {"learning_rate": "1_000"},
        "run": {"process_per_entry": True},
        "data": {"stage1_rows": [0, -1]},
    })
    assert cfg.stage2.learning_rate == 1e-5 and cfg.stage2.temperature == 0.25 and cfg.stage1.learning_rate == 1000.0
    assert type(cfg.stage2.top_p) is float and cfg.stage2.top_p == 1.0  # an int given for a float becomes a float
    assert cfg.stage2.max_steps == 10**30  # any size here: recipe.config.core.validate bounds ints to 64 bits, naming the key
    assert cfg.stage2.rewards == [RewardSpec("correctness", 2.0, {"wrong": -1})]
    assert type(cfg.stage2.rewards[0].weight) is float and type(cfg.stage2.rewards[0].params) is dict
    assert cfg.run.process_per_entry is True and cfg.data.stage1_rows == [0, -1]
    assert cfg.model == Config().model and cfg.stage3 == Config().stage3  # untouched sections keep their defaults
    assert C.checked(Config, {}) == Config()
    assert C.checked(Config, {"run": {"process_per_entry": "auto"}}).run.process_per_entry == "auto"


def test_given_lists_and_dicts_are_copied():
    modules, params = ["q_proj"], {"wrong": -1.0}
    cfg = C.checked(Config, {"model": {"lora_target_modules": modules}, "stage2": {"rewards": [{"name": "x", "params": params}]}})
    assert cfg.model.lora_target_modules == modules and cfg.model.lora_target_modules is not modules
    assert cfg.stage2.rewards[0].params == params and cfg.stage2.rewards[0].params is not params


def test_a_nested_key_is_named_with_its_section():
    with pytest.raises(ConfigError, match=r"^unknown key 'stage2\.rewards\[0\]\.nam' \(did you mean "
                                          r"'stage2\.rewards\[0\]\.name'\?\)$"):
        C.checked(Config, {"stage2": {"rewards": [{"nam": 1}]}})
    assert C.checked(Config, {"stage2": {"beta": 1}}).stage2 == Stage2Config().replace(beta=1.0)


def test_resolve_names_the_override_key_in_one_line():
    with pytest.raises(ConfigError) as info:
        C.resolve(preset="smoke", overrides=["stage2.rewards=[{name: correctness}, {name: x, weight: heavy}]"])
    assert str(info.value) == "bad value for 'stage2.rewards[1].weight': 'heavy' (expected float)"
