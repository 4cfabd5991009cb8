"""The report's cost section (recipe/eval/costs.py): each task's wall time and memory, the baselines' budgets beside
the curriculum's, and the run-all invocations a real run records."""

from __future__ import annotations

import json

from recipe.config import core as C
from recipe.eval import costs
from recipe.fsio import read_jsonl, write_json
from recipe.run import orchestrator as run
from recipe.store import rundir


def grpo_record(steps: int, wall_s: float, rss: float) -> dict:
    return {"status": "done", "started": "2026-12-03T10:00:00+00:00", "wall_s": wall_s, "peak_rss_mb": rss,
            "processes": 1, "metrics": {"steps": steps},
            "trainer_config": {"num_generations": 4, "per_device_train_batch_size": 16,
                               "gradient_accumulation_steps": 1, "num_iterations": 1}}


def fake_run(tmp_path):
    records = {"stage1": {"status": "done", "wall_s": 60.0, "peak_rss_mb": 2048.0, "metrics": {"steps": 3},
                          "trainer_config": {"per_device_train_batch_size": 4}},
               "stage2": grpo_record(40, 600.0, 4096.0), "stage3": grpo_record(20, 300.0, 3072.0),
               "baseline-sft": {"status": "done", "wall_s": 120.0, "peak_rss_mb": 1024.0, "metrics": {"steps": 9},
                                "trainer_config": {}},
               "baseline-grpo": grpo_record(60, 900.0, 5120.0),
               "warmup": {"status": "failed"}}
    write_json(tmp_path / rundir.MANIFEST_FILE, {"entries": records})
    tokens = {"stage1": 1000, "stage2": 3000, "stage3": 2000, "baseline-sft": 6600, "baseline-grpo": 9000}
    for name, n in tokens.items():
        write_json(tmp_path / name / rundir.TRAINER_LOG, [{"num_tokens": n / 2}, {"loss": 1.0},
                                                          {"num_tokens": float(n)}, {"train_runtime": 5}])
    write_json(tmp_path / "eval" / "base" / rundir.RESULTS, {"wall_s": 90.0, "peak_rss_mb": 1536.0})
    write_json(tmp_path / "eval" / "stage2" / rundir.RESULTS, {"wall_s": 30.0})  # recorded before peak_rss_mb
    return tmp_path


def test_the_cost_table_has_a_row_per_finished_task_with_its_numbers(tmp_path):
    lines = costs.cost_section(fake_run(tmp_path))
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| task | wall (min) | peak RSS (GB) | tokens trained | completions sampled |"
    assert table[1:] == ["| stage1 | 1.0 | 2.0 | 1,000 | - |", "| stage2 | 10.0 | 4.0 | 3,000 | 640 |",
                         "| stage3 | 5.0 | 3.0 | 2,000 | 320 |", "| baseline-sft | 2.0 | 1.0 | 6,600 | - |",
                         "| baseline-grpo | 15.0 | 5.0 | 9,000 | 960 |", "| eval:base | 1.5 | 1.5 | - | - |",
                         "| eval:stage2 | 0.5 | - | - | - |"]  # the failed warm-up has no row


def test_the_budgets_put_each_baseline_beside_the_curriculum(tmp_path):
    lines = costs.cost_section(fake_run(tmp_path))
    assert "- Tokens trained: curriculum (stage1 + stage2 + stage3) 6,000; baseline-sft 6,600 (1.100x the " \
           "curriculum's)." in lines
    assert "- Completions sampled: curriculum (stage2 + stage3) 960; baseline-grpo 960 (1.000x)." in lines


def test_the_concise_baseline_counts_both_phases_and_sits_beside_stage1_and_stages_2_3(tmp_path):
    fake_run(tmp_path)
    manifest = json.loads((tmp_path / rundir.MANIFEST_FILE).read_text())
    manifest["entries"]["baseline-concise"] = {**grpo_record(60, 600.0, 4096.0), "sft_phase": {"metrics": {}}}
    write_json(tmp_path / rundir.MANIFEST_FILE, manifest)
    write_json(tmp_path / "baseline-concise" / rundir.TRAINER_LOG, [{"num_tokens": 7000.0}])  # the GRPO phase
    write_json(tmp_path / "baseline-concise" / "sft" / rundir.TRAINER_LOG, [{"num_tokens": 800.0}])  # the SFT phase
    lines = costs.cost_section(tmp_path)
    assert "| baseline-concise | 10.0 | 4.0 | 7,800 | 960 |" in lines
    assert ("- baseline-concise: SFT phase 800 tokens against stage1's 1,000 (0.800x); GRPO phase 960 completions "
            "against stage2 + stage3's 960 (1.000x).") in lines


def test_no_finished_task_means_no_section(tmp_path):
    assert costs.cost_section(tmp_path) == []


def test_a_run_records_its_invocations_and_the_report_shows_its_cost(cache_dir, tmp_path):
    cfg = C.resolve(preset="smoke", overrides=[
        f"model.cache_dir={cache_dir}", f"run.output_dir={tmp_path / 'run'}", "stage1.max_steps=1",
        "stage2.enabled=false", "stage3.enabled=false", "eval.limit=4", "eval.max_new_tokens=8",
        "eval.stages=[stage1]"])
    run_dir = run.run_all(cfg)
    run.run_all(cfg)  # again: nothing left to train, a second invocation
    calls = read_jsonl(run_dir / rundir.INVOCATIONS)
    assert [c["done_before"] for c in calls] == [[], ["stage1"]]
    assert all(c["wall_s"] > 0 and c["peak_rss_mb_self"] > 100 and c["parallel_entries"] == 1 for c in calls)
    record = rundir.load_manifest(run_dir)["entries"]["stage1"]
    assert record["peak_rss_mb"] > 100
    assert json.loads((run_dir / "eval" / "stage1" / rundir.RESULTS).read_text())["peak_rss_mb"] > 100
    report = (run_dir / rundir.REPORT_MD).read_text()
    assert "## Cost" in report and "- `run-all` from an empty run directory:" in report
    assert "- `run-all` resuming (stage1 done before):" in report and "| eval:stage1 |" in report
