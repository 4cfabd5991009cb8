"""One GRPO objective on both backends: the clip and truncation keys survive Unsloth's
``GRPOConfig`` override rule, the manifest records what the built trainer holds, and the KL reference is the stage's
starting policy or the stage is refused.

The Unsloth parts are stand-ins that reproduce, in our own words, what unsloth 2026.10.9 does (read in its wheel):
``unsloth/models/rl.py`` (``_patch_trl_rl_trainers_impl``: the grpo_trainer replacement ``mask_truncated_completions =
None`` and the ``check_dr_grpo`` block; the ref-adapter branch removed from the trainer source by ``peft_pattern``).
"""

from __future__ import annotations

import copy

import pytest
import yaml
from click.testing import CliRunner
from trl import GRPOConfig, GRPOTrainer

from recipe.cli import main
from recipe.config import core as config
from recipe.errors import ConfigError
from recipe.models import model as M
from recipe.train import grpo


def unsloth_grpo_config(**kwargs) -> GRPOConfig:
    """Unsloth's patched ``GRPOConfig``: ``mask_truncated_completions`` defaults to None (TRL: False); an explicit
    ``loss_type='dapo'`` turns a None into True and a None ``epsilon_high`` (TRL's default) into 0.28; a None that is
    left becomes False. Everything else goes to TRL's real ``GRPOConfig``."""
    kwargs.setdefault("mask_truncated_completions", None)
    kwargs.setdefault("vllm_importance_sampling_correction", False)  # Unsloth's default (TRL's: True)
    explicit_loss = kwargs.get("loss_type") is not None
    kwargs["loss_type"] = kwargs.get("loss_type") or "dapo"
    if explicit_loss and kwargs["loss_type"].lower() == "dapo":
        if kwargs["mask_truncated_completions"] is None:
            kwargs["mask_truncated_completions"] = True
        if kwargs.get("epsilon_high") is None:
            kwargs["epsilon_high"] = 0.28
    if kwargs["mask_truncated_completions"] is None:
        kwargs["mask_truncated_completions"] = False
    return GRPOConfig(**kwargs)


def objective_of(args) -> tuple:
    return (args.loss_type, args.epsilon, args.epsilon_high, args.mask_truncated_completions,
            args.vllm_importance_sampling_correction)


def test_the_standin_overrides_unset_values_as_unsloth_does(tmp_path):
    changed = unsloth_grpo_config(output_dir=str(tmp_path), loss_type="dapo", use_cpu=True)
    assert (changed.epsilon_high, changed.mask_truncated_completions) == (0.28, True)
    kept = unsloth_grpo_config(output_dir=str(tmp_path), use_cpu=True)  # TRL's default loss: left as TRL has it
    assert (kept.epsilon_high, kept.mask_truncated_completions) == (None, False)
    assert kept.vllm_importance_sampling_correction is False
    assert GRPOConfig(output_dir=str(tmp_path), use_cpu=True).vllm_importance_sampling_correction is True  # TRL 1.14.2


@pytest.mark.parametrize("overrides", [[], ["stage2.epsilon_high=0.3", "stage2.mask_truncated_completions=true",
                                            "stage2.vllm_importance_sampling_correction=false"]])
def test_our_values_survive_unsloths_rule_and_match_trl_alone(tmp_path, monkeypatch, overrides):
    cfg = config.resolve(preset="smoke", overrides=overrides)
    on_hf = grpo.grpo_args(cfg, "stage2", str(tmp_path))
    monkeypatch.setattr(grpo, "GRPOConfig", unsloth_grpo_config)
    on_unsloth = grpo.grpo_args(cfg, "stage2", str(tmp_path))
    expected = ("dapo", 0.2, cfg.stage2.epsilon_high, cfg.stage2.mask_truncated_completions,
                cfg.stage2.vllm_importance_sampling_correction)
    assert objective_of(on_hf) == objective_of(on_unsloth) == expected


def test_every_grpo_section_shows_the_objective_keys():
    for preset in ("qwen2.5-3b-t4", "paper", "smoke"):
        cfg = config.resolve(preset=preset)
        for stage in (cfg.stage2, cfg.stage3):
            assert (stage.epsilon_high, stage.mask_truncated_completions) == (0.2, False)
            assert stage.vllm_importance_sampling_correction is True


def test_config_command_shows_the_correction_for_both_grpo_stages():
    result = CliRunner().invoke(main, ["config", "--preset", "qwen2.5-3b-t4"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert [shown[s]["vllm_importance_sampling_correction"] for s in ("stage2", "stage3")] == [True, True]


def test_bad_epsilon_high_is_named():
    with pytest.raises(ConfigError, match="stage3.epsilon_high"):
        config.resolve(preset="smoke", overrides=["stage3.epsilon_high=-0.1"])


# ----------------------------------------------------------------------------------------------------------------
# the manifest reads the built trainer; the KL reference
# ----------------------------------------------------------------------------------------------------------------


class UnslothLikeTrainer(GRPOTrainer):
    """Unsloth's compiled trainer with respect to the reference: TRL's ``add_adapter("ref", ...)`` never runs, so the
    reference log-probs come from ``use_adapter(model, None)``, i.e. adapters disabled."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "ref" in self.model.peft_config:
            self.model.delete_adapter("ref")


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(GRPOTrainer, "train", lambda self, resume_from_checkpoint=None: None)


def grpo_record(cfg, tmp_path, init_from=None, trainer=GRPOTrainer, monkeypatch=None):
    monkeypatch.setattr(grpo, "GRPOTrainer", trainer)
    model, tokenizer = M.load(cfg.model, init_from=init_from, trainable=True, seed=0, for_grpo=True)
    rows = [{"prompt": "Question: 1 + 1?\nReasoning:", "answer": "2", "teacher_steps": 1, "teacher_words": 5}] * 4
    return grpo.train_grpo(cfg, "stage2", model, tokenizer, rows, tmp_path / "stage2", init_from=init_from)


def saved_adapter(cfg, tmp_path):
    from peft import get_peft_model

    model, tokenizer = M.load(cfg.model, seed=0)
    return str(M.save(get_peft_model(model, M.lora_config(cfg.model)), tokenizer, tmp_path / "stage1"))


def smoke(cache_dir, *overrides):
    return config.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", *overrides])


def test_the_record_holds_what_the_trainer_holds(cache_dir, tmp_path, monkeypatch, no_training):
    cfg = smoke(cache_dir, "stage2.epsilon_high=0.27")
    record = grpo_record(cfg, tmp_path, monkeypatch=monkeypatch)
    assert record["trainer_config"]["epsilon_high"] == 0.27
    assert record["trainer_config"]["mask_truncated_completions"] is False
    assert record["trainer_config"]["vllm_importance_sampling_correction"] is True
    assert record["kl_reference"] == grpo.NO_KL

    class Rewriting(GRPOTrainer):  # a trainer that changes its args on the way in: the record follows the trainer
        def __init__(self, *args, **kwargs):
            kwargs["args"] = copy.copy(kwargs["args"])  # as Unsloth's trainer builds its own config object
            kwargs["args"].mask_truncated_completions = True
            kwargs["args"].vllm_importance_sampling_correction = False
            super().__init__(*args, **kwargs)

    rewritten = grpo_record(cfg, tmp_path, trainer=Rewriting, monkeypatch=monkeypatch)["trainer_config"]
    assert rewritten["mask_truncated_completions"] is True and rewritten["vllm_importance_sampling_correction"] is False


def test_hf_reference_is_a_frozen_copy_of_the_starting_adapter(cache_dir, tmp_path, monkeypatch, no_training):
    cfg = smoke(cache_dir, "stage2.beta=0.1")
    record = grpo_record(cfg, tmp_path, init_from=saved_adapter(cfg, tmp_path), monkeypatch=monkeypatch)
    assert record["kl_reference"] == grpo.REF_ADAPTER
    assert grpo_record(cfg, tmp_path / "fresh", monkeypatch=monkeypatch)["kl_reference"] == grpo.BASE_IS_START


def test_a_base_model_reference_after_an_adapter_is_refused(cache_dir, tmp_path, monkeypatch, no_training):
    cfg = smoke(cache_dir, "stage2.beta=0.1")
    adapter = saved_adapter(cfg, tmp_path)
    with pytest.raises(ConfigError, match=r"stage2.beta=0.1: .*base model"):
        grpo_record(cfg, tmp_path, init_from=adapter, trainer=UnslothLikeTrainer, monkeypatch=monkeypatch)
    fresh = grpo_record(cfg, tmp_path / "fresh", trainer=UnslothLikeTrainer, monkeypatch=monkeypatch)
    assert fresh["kl_reference"] == grpo.BASE_IS_START  # a fresh adapter starts from the base: allowed


def test_unsloth_with_beta_after_an_adapter_is_refused_before_any_work(cache_dir, tmp_path, monkeypatch):
    from recipe.train import baseline_grpo, stage2, stage3

    cfg = smoke(cache_dir, "stage2.beta=0.1", "stage3.beta=0.1")
    adapter = saved_adapter(cfg, tmp_path)
    monkeypatch.setattr(M, "pick_backend", lambda model_cfg: "unsloth")
    monkeypatch.setattr(M, "load", lambda *a, **k: pytest.fail("loaded a model before refusing"))
    for run, stage in ((stage2.run, "stage2"), (stage3.run, "stage3"), (baseline_grpo.run, "stage2")):
        with pytest.raises(ConfigError, match=rf"{stage}.beta=0.1 on model.backend=unsloth"):
            run(cfg, tmp_path / "run" / stage, init_from=adapter)
    grpo.refuse_base_reference(cfg, "stage2", None)  # fresh adapter: the base is the starting policy
    monkeypatch.setattr(M, "pick_backend", lambda model_cfg: "hf")
    grpo.refuse_base_reference(cfg, "stage2", adapter)  # TRL alone copies the adapter
