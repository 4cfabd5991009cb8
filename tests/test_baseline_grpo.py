"""The plain-GRPO baseline (``cotrecipe baseline grpo``) through the run machinery with the tiny local model: what
GRPOTrainer is given holds no teacher text, the completions it samples equal stages 2+3's on the smoke preset, it
resumes after a SIGKILL like a stage, and the report shows its row and the training curves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe import config as C
from recipe import evaluate, run, rundir
from recipe.cli import main
from recipe.stages import common
from recipe.stages.common import KILL_AFTER_SAVE_ENV, train_problems

REPO = Path(__file__).resolve().parents[1]
QUIET = ("stage2.log_completions=false", "stage3.log_completions=false", "stage3.mining_limit=8",
         "stage3.mining_max_new_tokens=16", "stage2.max_completion_length=16", "stage3.max_completion_length=16")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


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

    def counting_rewards(st, answer_label):
        calls.append([])
        return [Counting(r, calls[-1]) for r in real(st, answer_label)]

    real = common.make_rewards
    monkeypatch.setattr(common, "make_rewards", counting_rewards)
    cfg = smoke(cache_dir, tmp_path / "run", "stage1.max_steps=1", "run.baselines=[grpo]")
    run.run_all(cfg)
    manifest = rundir.load_manifest(tmp_path / "run")
    assert manifest["stages"]["stage3"]["metrics"]["failures"] > 0, "stage 3 trained (the tiny model fails all)"
    assert len(calls) == 3
    stage2, stage3, baseline = (sum(n for _, n, _ in c) for c in calls)
    assert (stage2, stage3) == (3 * 4, 2 * 4)  # smoke: max_steps x per-device batch
    assert baseline == stage2 + stage3
    record = manifest["stages"]["baseline-grpo"]
    assert record["budget"]["completions"] == baseline and record["budget"]["stage3_rows_from"].startswith("mined")
    assert record["trainer_config"]["max_steps"] == 5 and record["init_from"] is None

    problems = train_problems(cfg, "stage1") + train_problems(cfg, "stage2")
    allowed = {evaluate.build_prompt(p.question, "paper", cfg.data.answer_label) for p in problems}
    steps = {s for p in problems for s in p.steps}
    for prompts, _, kwargs in calls[2]:
        assert prompts and set(prompts) <= allowed
        assert not any(step in prompt for prompt in prompts for step in steps)
        assert not {k for k in kwargs if k.startswith("teacher")}, "correctness reward needs no teacher column"
    # the check can see teacher text: stage 2's prompts (partial teacher solutions) do contain steps
    assert any(step in prompt for prompts, _, _ in calls[0] for prompt in prompts for step in steps)


def test_budget_uses_configured_stage3_before_mining_and_brevity_adds_stage2_reward(cache_dir, tmp_path):
    from recipe.stages import baseline_grpo

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
    env = {**os.environ, "PYTHONPATH": str(REPO), KILL_AFTER_SAVE_ENV: "baseline-grpo:2"}
    proc = subprocess.run([sys.executable, "-m", "recipe.cli", *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == -signal.SIGKILL, "the run should have killed itself after the baseline's checkpoint-2"
    manifest = rundir.load_manifest(run_dir)
    assert manifest["stages"]["baseline-grpo"]["status"] == "running"
    assert (run_dir / "baseline-grpo" / "trainer" / "checkpoint-2" / "trainer_state.json").is_file()

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = rundir.load_manifest(run_dir)["stages"]["baseline-grpo"]
    assert record["status"] == "done" and record["resumed_from"].endswith("checkpoint-2")
    assert record["metrics"]["steps"] == 5 and record["attempts"] == 2
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| baseline-grpo" in md and "report_curves.png" in md
    assert (run_dir / "report_curves.png").stat().st_size > 1000
