"""Config schema, presets, overrides and the fix-it errors."""

from __future__ import annotations

import pytest
import yaml

from recipe.config import core as C
from recipe.train.grpo import grpo_args
from recipe.train.sft import sft_args


@pytest.mark.parametrize("name", C.preset_names())
def test_every_preset_loads_and_validates(name):
    cfg = C.resolve(preset=name)
    assert isinstance(cfg, C.Config)
    text = C.preset_text(name)
    first = text.splitlines()[0]
    # torchtune-style header: the first line is the command that runs this preset
    assert first.startswith("# ") and "cotrecipe" in first and f"--preset {name}" in first
    assert C.preset_summary(name), f"preset {name} needs a description"


def test_required_presets_exist():
    assert {"smoke", "demo", "paper", "qwen2.5-3b-t4"} <= set(C.preset_names())


def test_paper_preset_carries_the_authors_numbers():
    cfg = C.resolve(preset="paper")
    assert cfg.stage1.mask_prob == 0.7
    assert (cfg.stage2.min_masked, cfg.stage2.mask_ratio) == (3, 0.5)
    assert cfg.data.stage1_rows == [0, 2000] and cfg.data.stage2_rows == [2000, 4000]
    assert cfg.eval.max_new_tokens == 512 and cfg.eval.prompt == "paper"
    assert [r.name for r in cfg.stage2.rewards] == ["gated_brevity"]


def test_override_precedence_and_yaml_values(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("stage2:\n  learning_rate: 0.5\n  temperature: 0.3\n")
    cfg = C.resolve(preset="smoke", config_file=extra, overrides=["stage2.temperature=0.9", "run.seed=7"])
    assert cfg.stage2.learning_rate == 0.5  # file over preset
    assert cfg.stage2.temperature == 0.9  # --set over file
    assert cfg.run.seed == 7
    assert cfg.model.name_or_path == "builtin:tiny-qwen2"  # preset over defaults


def test_exponent_floats_without_a_dot_are_numbers():
    # YAML 1.1 reads 1e-5 as a string; users type it that way on the command line
    assert C.resolve(preset="smoke", overrides=["stage2.learning_rate=1e-5"]).stage2.learning_rate == 1e-5


def test_reward_list_override():
    cfg = C.resolve(preset="smoke", overrides=['stage2.rewards=[{name: cosine_length, weight: 2.0}]'])
    assert cfg.stage2.rewards[0].name == "cosine_length" and cfg.stage2.rewards[0].weight == 2.0


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("stage2.lerning_rate=1", "did you mean 'stage2.learning_rate'"),
        ("modle.lora_r=4", "did you mean 'model'"),
        ("stage1.mask_prob=1.5", "stage1.mask_prob"),
        ("stage2.question_only_share=-0.1", "stage2.question_only_share"),
        ("stage2.num_generations=1", "at least 2 generations"),
        ("model.backend=tpu", "'auto' | 'hf' | 'unsloth'"),
        ("stage1.learning_rate=fast", "stage1.learning_rate"),
        ("stage1.learning_rate=.nan", "stage1.learning_rate"),
        ("model.use_lora=maybe", "model.use_lora"),
        ("stage2.rewards=[{name: shortest}]", "stage2.rewards[0].name"),
        ("data.stage2_rows=[5, 2]", "data.stage2_rows"),
        ("stage2.per_device_train_batch_size=3", "multiple of stage2.num_generations"),
        ("eval.stages=[base, stage9]", "eval.stages"),
        ("nonsense", "key.path=value"),
        ("stage3.rewards=[{name: compression_ratio, params: {ratio_cap: 2}}]", "stage3.rewards[0].params"),
        ("stage3.rewards=[{name: compression_ratio, params: {neutral_hi: -5.0}}]",
         "'stage3.rewards[0].params': {'neutral_hi': -5.0} ('compression_ratio: need 0 <= best_rat"),
    ],
)
def test_bad_values_name_key_value_and_allowed(override, needle):
    with pytest.raises(C.ConfigError) as info:
        C.resolve(preset="smoke", overrides=[override])
    assert needle in str(info.value)


def test_unknown_preset_suggests_nearest():
    with pytest.raises(C.ConfigError, match="did you mean 'smoke'"):
        C.resolve(preset="smoek")


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(C.ConfigError, match="config file not found"):
        C.resolve(config_file=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(C.ConfigError, match="mapping"):
        C.resolve(config_file=bad)


def test_dump_round_trips():
    cfg = C.resolve(preset="paper", overrides=["stage3.mining_k=4"])
    again = C.from_dict(yaml.safe_load(C.dump_yaml(cfg)))
    assert again == cfg


def test_trl_configs_are_built_from_the_schema(tmp_path):
    cfg = C.resolve(preset="smoke", overrides=["stage2.beta=0.05", "stage2.temperature=0.7",
                                               "stage2.rewards=[{name: gated_brevity, weight: 2.0}]"])
    sft = sft_args(cfg, str(tmp_path / "s1"))
    assert sft.completion_only_loss is True and sft.learning_rate == cfg.stage1.learning_rate
    assert sft.max_steps == cfg.stage1.max_steps and sft.use_cpu is True
    grpo = grpo_args(cfg, "stage2", str(tmp_path / "s2"))
    assert grpo.beta == 0.05 and grpo.temperature == 0.7
    assert grpo.num_generations == cfg.stage2.num_generations
    assert grpo.reward_weights == [2.0]
    assert grpo.use_vllm is False  # never on CPU


def test_sampling_keys_are_checked_as_transformers_generate_builds_them_but_left_to_vllm(tmp_path):
    good = ["stage2.top_k=50", "stage2.min_p=0.05", "stage2.repetition_penalty=1.1"]
    assert grpo_args(C.resolve(preset="smoke", overrides=good), "stage2", str(tmp_path), for_check=True).top_k == 50
    with pytest.raises(C.ConfigError, match=r"'stage2.top_k': -1 \(transformers' TopKLogitsWarper"):
        grpo_args(C.resolve(preset="smoke", overrides=["stage2.top_k=-1"]), "stage2", str(tmp_path), for_check=True)
    # vLLM reads top_k -1 as "no top-k" and checks its own sampling parameters
    on_vllm = C.resolve(preset="smoke", overrides=["stage2.top_k=-1", "vllm.enabled=true"])
    assert grpo_args(on_vllm, "stage2", str(tmp_path), for_check=True).top_k == -1


def test_label_smoothing_is_passed_with_the_plain_loss_that_trl_can_smooth(tmp_path):
    smoothed = C.resolve(preset="smoke", overrides=["stage1.label_smoothing_factor=0.1", "stage1.loss_type=nll"])
    args = sft_args(smoothed, str(tmp_path), for_check=True)
    assert (args.label_smoothing_factor, args.loss_type) == (0.1, "nll")
