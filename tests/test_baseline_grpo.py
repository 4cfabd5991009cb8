"""The plain-GRPO baseline (``cotrecipe baseline grpo``) through the run machinery with the tiny local model: what
GRPOTrainer is given holds no teacher text, the completions it samples equal stages 2+3's on the smoke preset, it
resumes after a SIGKILL like a stage, and the report shows its row and the training curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe.cli import main
from recipe.config import core as C
from recipe.data import prompts
from recipe.eval import evaluate
from recipe.models import model as model_mod
from recipe.run import orchestrator as run
from recipe.store import rundir
from recipe.train import baseline_concise, baseline_grpo, grpo
from recipe.train.rows import train_problems
from recipe.train.sft import train_sft
from tests.conftest import run_killed_after_save

QUIET = ("stage2.log_completions=false", "stage3.log_completions=false", "stage3.mining_limit=8",
         "stage3.mining_max_new_tokens=16", "stage2.max_completion_length=16", "stage3.max_completion_length=16")


def smoke(cache_dir: Path, run_dir: Path, *extra: str) -> C.Config:
    return C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                                "eval.enabled=false", *QUIET, *extra])


class Counting:
    """Wraps a reward: counts the completions (and keeps the prompts) it is asked to score."""

    def __init__(self, reward, seen: list):
        self.reward, self.seen, self.__name__ = reward, seen, reward.__name__

    def __call__(self, prompts=None, completions=(), **kwargs):
        self.seen.append((list(prompts or []), len(completions), kwargs))
        return self.reward(prompts=prompts, completions=completions, **kwargs)


def test_no_teacher_text_in_prompts_and_budget_equals_stages_2_and_3(cache_dir, tmp_path, monkeypatch):
    """One smoke run-all with the GRPO baseline: every GRPO call's scored completions are counted at the reward (what
    GRPOTrainer really sampled); the baseline's prompts are the evaluation prompt of a stage-1/2 question, with no
    teacher step, and its reward sees no teacher column."""
    calls: list[list] = []  # one list per GRPO trainer, in the order they are built: stage2, stage3, baseline

    def counting_rewards(*args, **kwargs):
        calls.append([])
        return [Counting(r, calls[-1]) for r in real(*args, **kwargs)]

    real = grpo.make_rewards
    monkeypatch.setattr(grpo, "make_rewards", counting_rewards)
    cfg = smoke(cache_dir, tmp_path / "run", "stage1.max_steps=1", "run.baselines=[grpo]")
    run.run_all(cfg)
    manifest = rundir.load_manifest(tmp_path / "run")
    assert manifest["entries"]["stage3"]["metrics"]["failures"] > 0, "stage 3 trained (the tiny model fails all)"
    assert len(calls) == 3
    stage2, stage3, baseline = (sum(n for _, n, _ in c) for c in calls)
    assert (stage2, stage3) == (3 * 4, 2 * 4)  # smoke: max_steps x per-device batch
    assert baseline == stage2 + stage3
    record = manifest["entries"]["baseline-grpo"]
    assert record["budget"]["completions"] == baseline and record["budget"]["stage3_rows_from"].startswith("mined")
    assert record["trainer_config"]["max_steps"] == 5 and record["init_from"] is None

    problems = train_problems(cfg, "stage1") + train_problems(cfg, "stage2")
    allowed = {evaluate.build_prompt(p.question, "paper", cfg.data.answer_label) for p in problems}
    steps = {s for p in problems for s in p.steps}
    for texts, _, kwargs in calls[2]:
        assert texts and set(texts) <= allowed
        assert not any(step in prompt for prompt in texts for step in steps)
        assert not {k for k in kwargs if k.startswith("teacher")}, "correctness reward needs no teacher column"
    # the check can see teacher text: stage 2's prompts (partial teacher solutions) do contain steps
    assert any(step in prompt for texts, _, _ in calls[0] for prompt in texts for step in steps)


def test_budget_uses_configured_stage3_before_mining_and_brevity_adds_stage2_reward(cache_dir, tmp_path):
    cfg = smoke(cache_dir, tmp_path / "run", "baseline_grpo.reward=correctness+brevity")
    n3, source = baseline_grpo.stage3_rows(cfg, tmp_path / "run")
    assert (n3, source.split()[0]) == (8, "configured")  # mining_limit=8 of the 32-row slice
    budget = baseline_grpo.matched_budget(cfg, 64, n3, source)
    assert (budget["max_steps"], budget["completions"]) == (5, 20)
    assert baseline_grpo.matched_budget(cfg, 64, 0, "mined")["max_steps"] == 3  # no failures: stage 3 trains nothing
    derived = baseline_grpo.baseline_config(cfg, 5)
    assert [r.name for r in derived.stage2.rewards] == [r.name for r in cfg.stage2.rewards]
    rows = baseline_grpo.build_rows(train_problems(cfg, "stage1"), brevity=True)
    assert all(isinstance(r["teacher_steps"], int) and "teacher_solution" not in r for r in rows)


def test_sigkill_mid_baseline_then_rerun_resumes_evaluates_and_reports(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = ["baseline", "grpo", "--preset", "smoke", "--output-dir", str(run_dir), "--set",
            f"model.cache_dir={cache_dir}", "--set", "eval.limit=4", *[a for q in QUIET for a in ("--set", q)]]
    run_killed_after_save(args, "baseline-grpo:2", tmp_path / "killed.log")
    manifest = rundir.load_manifest(run_dir)
    assert manifest["entries"]["baseline-grpo"]["status"] == "running"
    assert (run_dir / "baseline-grpo" / "trainer" / "checkpoint-2" / "trainer_state.json").is_file()

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = rundir.load_manifest(run_dir)["entries"]["baseline-grpo"]
    assert record["status"] == "done" and record["resumed_from"].endswith("checkpoint-2")
    assert record["metrics"]["steps"] == 5 and record["attempts"] == 2
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| baseline-grpo" in md and "- baseline-grpo: " in md.split("## Training curves")[1]  # its signal line


# --- learning signal -------------------------------------------------------------------------------------------------
FILLER = "Check: the numbers above are right."


def _signal_cfg(cache_dir: Path, run_dir: Path, weight: float) -> C.Config:
    return C.resolve(preset="smoke", overrides=[
        f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}", "eval.enabled=false", "model.use_lora=false",
        "data.source=synthetic:40:2", "data.stage1_rows=[0,2]", "data.stage2_rows=[2,4]", "stage3.enabled=false",
        "stage1.learning_rate=1e-2", "stage1.max_steps=150", "stage1.per_device_train_batch_size=8",
        "stage1.save_steps=1000", "stage2.learning_rate=3e-4", "stage2.max_steps=16", "stage2.num_generations=8",
        "stage2.per_device_train_batch_size=16", "stage2.max_completion_length=100", "stage2.save_steps=1000",
        "stage2.log_completions=false", "baseline_grpo.reward=correctness+brevity", "stage2.temperature=0.7",
        f"stage2.rewards=[{{name: gated_brevity, weight: {weight}}}]"])


def _curve(run_dir: Path) -> tuple[list[float], list[float]]:
    history = json.loads((run_dir / "baseline-grpo" / "trainer_log.json").read_text())
    reward = [r["rewards/gated_brevity/mean"] for r in history if "rewards/gated_brevity/mean" in r]
    length = [r["completions/mean_length"] for r in history if "completions/mean_length" in r]
    return reward, length


def _head_tail(values: list[float], k: int = 3) -> tuple[float, float]:
    return sum(values[:k]) / k, sum(values[-k:]) / k


# 150 SFT steps and two 16-step GRPO runs: ~38 CPU seconds on one core, the quick suite's largest test; CI's slow step
# (`pytest -m slow`) runs it
@pytest.mark.slow
def test_learning_signal_paper_stage2_reward_follows_its_sign(cache_dir, tmp_path):
    """What this shows, honestly: the tiny random model gets nothing right, so it is first taught (150 full
    fine-tuning SFT steps at lr 1e-2) two correct answers to each of 4 training questions — a short one (one step,
    ~15 words) and a long one (the two teacher steps plus a filler check, ~37 words). Sampling at temperature 0.7
    then mixes short, long and broken answers, so the groups have a learning signal. Sixteen GRPO steps of the
    plain-GRPO baseline with the paper's stage-2 reward (gated_brevity: -2 wrong, else 1 + step bonus + length term):
    with the right sign the reward stays near its start (the taught model is already mostly right, so there is
    little room to rise; measured 1.09 -> 0.84 over the first/last 3 steps) and the completions get shorter
    (46 -> 33 tokens); with the sign flipped (weight -1) the reward collapses (1.01 -> -1.45: GRPO learns to be
    wrong). The flipped run's completions get shorter too (its wrong answers are short), so length is only checked
    for the right sign. It checks that the reward reaches the trainer with its sign and that GRPO follows it, not
    that GRPO teaches arithmetic."""
    sft_cfg = _signal_cfg(cache_dir, tmp_path / "sft", 1)
    rows = []
    for p in train_problems(sft_cfg, "stage1") + train_problems(sft_cfg, "stage2"):
        prompt = evaluate.build_prompt(p.question, "paper")
        for steps in (p.steps[-1:], [*p.steps, FILLER]):
            rows.append({"prompt": prompt, "completion": "\n" + prompts.render_solution(steps, p.answer)})
    model, tokenizer = model_mod.load(sft_cfg.model, trainable=True, seed=0)
    train_sft(sft_cfg, model, tokenizer, rows, tmp_path / "sft")
    taught = str(tmp_path / "sft" / "model")

    curves = {}
    for weight in (1, -1):
        cfg = _signal_cfg(cache_dir, tmp_path / f"grpo{weight}", weight)
        run.run_one(cfg, "baseline-grpo", init_from=taught)
        curves[weight] = _curve(tmp_path / f"grpo{weight}")
    (r0, r1), (l0, l1) = (_head_tail(v) for v in curves[1])
    (f0, f1), _ = (_head_tail(v) for v in curves[-1])
    assert r0 > 0, f"the taught model should start mostly right: {curves[1][0]}"
    assert r1 > r0 - 0.5 and r1 > f1 + 1.0, f"right sign: reward should hold, flipped: fall ({curves})"
    assert l1 < l0 - 5, f"right sign: completions should get shorter: {curves[1][1]}"
    assert f1 < f0 - 1.0, f"flipped sign: the paper's reward should fall: {curves[-1][0]}"


@pytest.mark.parametrize("section", ["baseline_grpo", "baseline_concise"])
def test_an_rl_baselines_learning_rate_is_stage_2s_or_its_own_and_reaches_trl(cache_dir, tmp_path, section):
    derive = baseline_grpo.baseline_config if section == "baseline_grpo" else baseline_concise.concise_config
    cfg = smoke(cache_dir, tmp_path / "run", "stage2.learning_rate=3e-4")
    assert getattr(cfg, section).learning_rate == "stage2"
    assert grpo.grpo_args(derive(cfg, 5), "stage2", str(tmp_path)).learning_rate == 3e-4
    own = smoke(cache_dir, tmp_path / "run", "stage2.learning_rate=3e-4", f"{section}.learning_rate=2e-5")
    args = grpo.grpo_args(derive(own, 5), "stage2", str(tmp_path))
    assert (args.learning_rate, args.max_steps) == (2e-5, 5)
    assert own.stage2.learning_rate == 3e-4  # the curriculum's stage 2 keeps its own
    with pytest.raises(C.ConfigError, match=rf"{section}.learning_rate"):
        smoke(cache_dir, tmp_path / "run", f"{section}.learning_rate=0")
