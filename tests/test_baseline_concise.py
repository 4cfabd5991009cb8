"""The concise-RL baseline (``baseline-concise``) through the run machinery with the tiny local model: its SFT phase
trains at stage 1's budget from the base model, its GRPO phase starts from that adapter and samples as many
completions as stages 2+3 with the all-correct length reward, it is evaluated, has a report row, paired tests and
cost lines, and it resumes after a SIGKILL in its GRPO phase without retraining the SFT phase."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe.cli import main
from recipe.config import core as C
from recipe.models import model as model_mod
from recipe.run import orchestrator as run
from recipe.store import rundir
from recipe.train import baseline_concise, grpo
from tests.conftest import run_killed_after_save

QUIET = ("stage2.log_completions=false", "stage3.log_completions=false", "stage3.mining_limit=8",
         "stage3.mining_max_new_tokens=16", "stage2.max_completion_length=16", "stage3.max_completion_length=16")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.mark.slow  # 26 s on one idle core (--durations)
def test_run_all_trains_sft_then_concise_grpo_at_the_curriculums_budgets_and_reports_it(cache_dir, tmp_path,
                                                                                       monkeypatch):
    scored: list[list[int]] = []  # completions each GRPO trainer's rewards scored: stage2, stage3, baseline
    loads: list[tuple[str | None, bool]] = []

    def counting_rewards(*args, **kwargs):
        rewards = real_rewards(*args, **kwargs)
        scored.append([])
        counts = scored[-1]

        def count(reward):
            def call(prompts=None, completions=(), **kw):
                counts.append(len(completions))
                return reward(prompts=prompts, completions=completions, **kw)
            call.__name__ = reward.__name__
            return call
        return [count(r) for r in rewards]

    def spying_load(model_cfg, init_from=None, **kwargs):
        loads.append((init_from, kwargs.get("for_grpo", False)))
        return real_load(model_cfg, init_from=init_from, **kwargs)

    real_rewards, real_load = grpo.make_rewards, model_mod.load
    monkeypatch.setattr(grpo, "make_rewards", counting_rewards)
    monkeypatch.setattr(model_mod, "load", spying_load)
    run_dir = tmp_path / "run"
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                               "stage1.max_steps=2", "run.baselines=[concise]", "eval.limit=8",
                                               "eval.max_new_tokens=16", *QUIET])
    run.run_all(cfg)

    record = rundir.load_manifest(run_dir)["entries"]["baseline-concise"]
    assert record["status"] == "done" and record["init_from"] is None
    # phase 1: the SFT baseline's rows at stage 1's budget (2 steps here), from the base model
    phase = record["sft_phase"]
    assert phase["trainer_config"]["max_steps"] == cfg.stage1.max_steps == phase["metrics"]["steps"]
    assert phase["data"]["n_rows"] == 128  # the stage-1 and stage-2 slices' full solutions
    grpo_load = loads.index((str(run_dir / "baseline-concise" / "sft" / "model"), True))
    assert loads[grpo_load - 1] == (None, False)  # the SFT phase's load, just before
    # phase 2: as many completions as stages 2 and 3 sampled, all scored by the one all-correct length reward
    assert len(scored) == 3
    stage2, stage3, concise = (sum(c) for c in scored)
    assert stage3 > 0 and concise == stage2 + stage3 == record["budget"]["completions"]
    assert all(n % cfg.stage2.num_generations == 0 for n in scored[2])  # whole groups reach the reward
    assert [k for k in record["metrics"] if k.startswith("rewards/")] == ["rewards/all_correct_length/mean_last"]

    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| baseline-concise" in md  # its row
    assert "| baseline-concise vs base |" in md and "| stage3 vs baseline-concise |" in md  # paired tests
    assert "- baseline-concise: SFT phase" in md and f"against stage2 + stage3's {stage2 + stage3}" in md
    assert re.search(r"^- baseline-concise: \d+% of GRPO groups had a learning signal", md, re.M)  # curves


@pytest.mark.slow  # 31 s on one idle core (--durations)
def test_sigkill_in_the_grpo_phase_then_rerun_reuses_the_sft_phase_and_resumes(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = ["baseline", "concise", "--preset", "smoke", "--output-dir", str(run_dir), "--set",
            f"model.cache_dir={cache_dir}", "--set", "eval.limit=4", "--set", "eval.max_new_tokens=16",
            *[a for q in QUIET for a in ("--set", q)]]
    run_killed_after_save(args, "baseline-concise:2", tmp_path / "killed.log")
    entry = run_dir / "baseline-concise"
    assert rundir.load_manifest(run_dir)["entries"]["baseline-concise"]["status"] == "running"
    assert (entry / baseline_concise.SFT_DIR / baseline_concise.PHASE_RECORD).is_file()
    assert (entry / "trainer" / "checkpoint-2" / "trainer_state.json").is_file()
    sft_weights = sorted(p.name for p in (entry / "sft" / "model").iterdir())

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = rundir.load_manifest(run_dir)["entries"]["baseline-concise"]
    assert record["status"] == "done" and record["attempts"] == 2
    assert record["resumed_from"].endswith("checkpoint-2") and record["metrics"]["steps"] == 5  # smoke: 3x4 + 2x4
    assert record["sft_phase"]["reused"] is True
    assert sorted(p.name for p in (entry / "sft" / "model").iterdir()) == sft_weights
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "| baseline-concise" in md and "- baseline-concise: " in md.split("## Training curves")[1]
