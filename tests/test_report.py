"""report.md / report.png from stored results.json files: rows, deltas computed by hand, the accuracy–length frontier
(its 95 % intervals in a table, a decodable image; none without figures) and clear errors when there is nothing (or
something broken) to report."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
from click.testing import CliRunner

from recipe import fsio
from recipe.cli import main
from recipe.errors import EvalError
from recipe.eval.report import build_report, collect_results
from recipe.fsio import write_json, write_jsonl, write_text
from recipe.store import rundir
from tests.conftest import first_table

PROTOCOL = {"prompt": "paper", "greedy": True, "max_new_tokens": 512, "answer_label": "Final Answer:",
            "split": "test", "limit": -1}
DATA = {"source": "synthetic:40", "split": "test", "n": 40, "sha256": "ab" * 32}


def put(run_dir: Path, name: str, accuracy: float, avg_tokens: float, truncation: float = 0.0,
        fmt: float = 1.0, protocol: dict = PROTOCOL, data: dict = DATA, n: int = 40) -> None:
    write_json(run_dir / "eval" / name / "results.json", {
        "name": name, "protocol": protocol, "data": data, "model": {"name_or_path": "m"},
        "metrics": {"accuracy": accuracy, "n": n, "n_correct": round(n * accuracy), "avg_tokens": avg_tokens,
                    "avg_words": avg_tokens / 2, "truncation_rate": truncation, "format_rate": fmt}})


def table(md: str) -> dict[str, list[str]]:
    """Markdown table body -> {row name: cells}."""
    rows = [line for line in first_table(md) if "accuracy (%)" not in line]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
    return {c[0]: c[1:] for c in cells}


def test_report_rows_and_deltas(tmp_path):
    run = tmp_path / "run"
    put(run, "stage2", 0.70, 150.0, truncation=0.025)
    put(run, "base", 0.60, 200.0, truncation=0.1, fmt=0.5)
    put(run, "baseline-sft", 0.65, 220.0)
    put(run, "stage1", 0.625, 210.0)
    md_path, = build_report(run, figures=False)

    md = md_path.read_text(encoding="utf-8")
    rows = table(md)
    assert list(rows) == ["base", "stage1", "stage2", "baseline-sft"]  # curriculum order, then baselines
    # accuracy %, Δ points, avg tokens, Δ% length, truncation %, format %, n (then the official column)
    assert rows["base"][:7] == ["60.00", "+0.00", "200.0", "+0.0%", "10.0", "50.0", "40"]
    assert rows["stage1"][:7] == ["62.50", "+2.50", "210.0", "+5.0%", "0.0", "100.0", "40"]
    assert rows["stage2"][:7] == ["70.00", "+10.00", "150.0", "-25.0%", "2.5", "100.0", "40"]
    assert rows["baseline-sft"][:7] == ["65.00", "+5.00", "220.0", "+10.0%", "0.0", "100.0", "40"]
    assert "different protocol" not in md


def test_report_without_base_shows_dashes_and_flags_protocol_mismatch(tmp_path):
    run = tmp_path / "run"
    put(run, "stage1", 0.5, 100.0)
    put(run, "stage3", 0.75, 80.0, protocol={**PROTOCOL, "max_new_tokens": 256})
    md = build_report(run, figures=False)[0].read_text(encoding="utf-8")
    rows = table(md)
    assert list(rows) == ["stage1", "stage3"]
    assert rows["stage3"][:4] == ["75.00", "-", "80.0", "-"]
    assert "**stage3** was evaluated with a different protocol" in md


def test_report_errors_name_the_problem(tmp_path):
    with pytest.raises(EvalError, match=r"no evaluation results in .*eval"):
        build_report(tmp_path)
    write_text(tmp_path / "eval" / "stage1" / "results.json", "{not json")
    assert collect_results(tmp_path) == []  # skipped with a warning (test_report_skips_a_hand_edited_results_file_with_a_warning)


def test_report_command_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["report", "--run", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: no evaluation results")
    assert "Traceback" not in result.output


def put_generations(run_dir: Path, name: str, correct: list[bool], tokens: list[int]) -> None:
    """A row's results.json and the per-problem generations.jsonl behind it."""
    n = len(correct)
    put(run_dir, name, sum(correct) / n, sum(tokens) / n, n=n)
    write_jsonl(run_dir / "eval" / name / "generations.jsonl",
                [{"id": i, "correct": c, "n_tokens": t} for i, (c, t) in enumerate(zip(correct, tokens))])


def section_lines(run_dir: Path, title: str) -> list[str]:
    """The lines of report.md's section ``title`` up to its first blank line, the report built without figures."""
    md = build_report(run_dir, figures=False)[0].read_text(encoding="utf-8")
    return md.split(f"## {title}\n\n")[1].split("\n\n")[0].splitlines()


def frontier_table(md: str) -> dict[str, list[str]]:
    """The frontier section's table -> {row name: [n, accuracy [CI], tokens [CI]]}."""
    section = md.split("## Accuracy–length frontier", 1)[1].split("\n## ", 1)[0]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")]
                                               for line in first_table(section)[1:])}


def test_report_frontier_plot_its_intervals_and_table(tmp_path):
    # base: 37 of 50 right, every answer 100 tokens; stage1: no generations (no token interval); a baseline
    put_generations(tmp_path, "base", [i < 37 for i in range(50)], [100] * 50)
    put(tmp_path, "stage1", 0.9, 90.0)
    put_generations(tmp_path, "stage2", [True] * 50, [60 + 20 * (i % 2) for i in range(50)])  # mean 70
    put_generations(tmp_path, "baseline-sft", [False] * 50, [120] * 50)
    result = CliRunner().invoke(main, ["report", "--run", str(tmp_path)])  # no config.yaml: figures drawn
    assert result.exit_code == 0, result.output
    # the paths written come last (after the warning that stage1 has no generations)
    assert result.output.splitlines()[-2:] == [str(tmp_path / "report.md"), str(tmp_path / "report.png")]

    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "![accuracy vs length, 95% intervals](report.png)" in md
    rows = frontier_table(md)
    assert list(rows) == ["base", "stage1", "stage2", "baseline-sft"]
    # Wilson 37/50 by hand: centre (0.74 + z²/100) / (1 + z²/50), half-width z/(1 + z²/50) * sqrt(.74*.26/50 + z²/1e4)
    assert rows["base"] == ["50", "74.0 [60.4, 84.1]", "100.0 [100.0, 100.0]"]
    assert rows["stage1"] == ["40", "90.0 [76.9, 96.0]", "90.0"]  # 36/40; no generations: no token interval
    # 50/50: [50 / (50 + z²), 1]; 0/50: [0, z² / (50 + z²)]
    assert rows["stage2"][1] == "100.0 [92.9, 100.0]" and rows["baseline-sft"][1] == "0.0 [0.0, 7.1]"
    tok = rows["stage2"][2]  # tokens 60/80 alternating: mean 70, sd 10, so the interval is about 70 ± 1.96 * 10/√50
    lo, hi = (float(v) for v in tok.split("[")[1].rstrip("]").split(","))
    assert tok.startswith("70.0 [") and 66.0 < lo < 68.5 < 71.5 < hi < 74.0

    data = (tmp_path / "report.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(tmp_path / "report.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0  # not a blank canvas


def test_report_without_figures_writes_the_whole_markdown_and_links_no_image(tmp_path):
    put_generations(tmp_path, "base", [True, False], [5, 7])
    put_generations(tmp_path, "stage1", [True, True], [4, 4])
    write_json(tmp_path / "stage1" / "trainer_log.json", [{"step": s, "loss": 2.0 / s} for s in (1, 2, 3)])
    result = CliRunner().invoke(main, ["report", "--run", str(tmp_path), "--no-figures"])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(tmp_path / "report.md")]
    assert not list(tmp_path.glob("*.png"))
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Training curves" in md and "## Paired comparisons" in md
    assert list(frontier_table(md)) == ["base", "stage1"]
    assert "](" not in md  # no link to an image that was not drawn


def grpo_log(signal: float, steps: int = 4) -> list[dict]:
    """A TRL GRPO log history: reward rising, completions shortening, ``1 - signal`` of groups with equal rewards."""
    return [{"step": s, "reward": -2.0 + 0.5 * s, "completions/mean_length": 60.0 - 5 * s,
             "frac_reward_zero_std": 1.0 - signal, "loss": 0.1} for s in range(1, steps + 1)]


def test_report_baseline_rows_verdict_and_training_curves(tmp_path):
    run = tmp_path / "run"
    put(run, "base", 0.40, 200.0)
    put(run, "stage3", 0.55, 120.0)
    put(run, "baseline-sft", 0.60, 210.0)
    put(run, "baseline-grpo", 0.50, 150.0, fmt=0.9)
    write_json(run / "stage1" / "trainer_log.json", [{"step": s, "loss": 2.0 / s} for s in (1, 2, 3)])
    write_json(run / "stage3" / "trainer_log.json", grpo_log(signal=0.0))  # every group uniform: no signal
    # an unfinished entry: its newest complete checkpoint's trainer_state.json
    write_json(run / "baseline-grpo" / "trainer" / "checkpoint-2" / "trainer_state.json",
               {"global_step": 2, "log_history": grpo_log(signal=0.5, steps=2)})
    write_json(run / "baseline-grpo" / "trainer" / "checkpoint-1" / "trainer_state.json",
               {"global_step": 1, "log_history": grpo_log(signal=0.5, steps=1)})
    paths = build_report(run)
    assert [p.name for p in paths] == ["report.md", "report.png", "report_curves.png"]

    md = paths[0].read_text(encoding="utf-8")
    rows = table(md)
    assert list(rows) == ["base", "stage3", "baseline-grpo", "baseline-sft"]
    assert rows["baseline-grpo"][:7] == ["50.00", "+10.00", "150.0", "-25.0%", "0.0", "90.0", "40"]
    # 60 vs 55 points; 120 vs 150 tokens = 30 fewer, 20% of 150
    assert ("Best on accuracy: baseline-sft (60.0%), +5.0 points over stage3 (55.0%). "
            "Fewest tokens: stage3 (120.0), 30.0 tokens (20.0%) fewer than baseline-grpo (150.0).") in md
    assert "![training curves](report_curves.png)" in md
    assert "- stage3: 0% of GRPO groups had a learning signal" in md
    assert "- baseline-grpo: 50% of GRPO groups" in md
    warnings = [line for line in md.splitlines() if line.startswith("> **Warning**")]
    assert len(warnings) == 1 and warnings[0].startswith("> **Warning**: stage3: only 0%")

    image = matplotlib.image.imread(paths[2])
    assert image.shape[1] > 2 * image.shape[0]  # four panels side by side: reward, length, signal, SFT loss
    assert image[..., :3].std() > 0


def test_report_verdict_breaks_ties_honestly(tmp_path):
    put(tmp_path, "stage2", 0.5, 100.0)
    put(tmp_path, "baseline-grpo", 0.5, 100.0)
    md = build_report(tmp_path, figures=False)[0].read_text(encoding="utf-8")
    assert "(tied), +0.0 points over" in md


def test_report_skips_a_hand_edited_results_file_with_a_warning(tmp_path, caplog):
    good = {"metrics": {"accuracy": 0.5, "n": 4, "avg_tokens": 10.0, "truncation_rate": 0.0, "format_rate": 1.0}}
    fsio.write_json(rundir.eval_dir(tmp_path, "base") / rundir.RESULTS, good)
    fsio.write_json(rundir.eval_dir(tmp_path, "stage1") / rundir.RESULTS,
                    {"metrics": {**good["metrics"], "accuracy": "abc"}})
    fsio.write_text(rundir.eval_dir(tmp_path, "stage2") / rundir.RESULTS, '{"metrics": {"accura')
    fsio.write_json(rundir.eval_dir(tmp_path, "stage3") / rundir.RESULTS, {**good, "metrics": [1]})
    assert [name for name, _ in collect_results(tmp_path)] == ["base"]
    assert "stage1/results.json (metrics.accuracy is 'abc'" in caplog.text
    build_report(tmp_path, figures=False)
    result = CliRunner().invoke(main, ["report", "--run", str(tmp_path)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


def test_report_says_which_row_to_pick_from_paired_tests(tmp_path):
    # 60 problems: stage 2 right on 40 at 90 tokens; the SFT baseline right on the same 40 and 8 more at 150 tokens
    # (8 won, 0 lost: p = 0.0078); stage 3 right on 46 (6 of those 8) at 100 tokens (2 lost against SFT: p = 0.5)
    put_generations(tmp_path, "stage2", [i < 40 for i in range(60)], [90] * 60)
    put_generations(tmp_path, "baseline-sft", [i < 48 for i in range(60)], [150] * 60)
    put_generations(tmp_path, "stage3", [i < 46 for i in range(60)], [100] * 60)
    put(tmp_path, "stage1", 0.9, 80.0)  # no per-problem rows: cannot be paired, so it is not offered
    section = section_lines(tmp_path, "Which row to pick")
    assert section == [
        "- For accuracy: **baseline-sft** (80.0 %, 150.0 tokens); not detectably less accurate on the same 60 "
        "problems: stage3 (76.7 %, p = 0.5); detectably less: stage2 (66.7 %, p = 0.0078).",
        "- For short answers at that accuracy: **stage3** (100.0 tokens, 33.3 % fewer than baseline-sft).",
        "- Shortest of all: stage2 (90.0 tokens), 13.3 points less accurate than baseline-sft (p = 0.0078)."]


def test_report_pick_when_the_most_accurate_row_is_also_the_shortest(tmp_path):
    put_generations(tmp_path, "stage2", [i < 30 for i in range(40)], [80] * 40)
    put_generations(tmp_path, "baseline-sft", [i < 29 for i in range(40)], [120] * 40)
    section = section_lines(tmp_path, "Which row to pick")
    assert section == [
        "- For accuracy: **stage2** (75.0 %, 80.0 tokens); not detectably less accurate on the same 40 problems: "
        "baseline-sft (72.5 %, p = 1).",
        "- For short answers at that accuracy: stage2 itself (none of the rows above is shorter)."]


def test_report_checks_the_curriculums_targets_met_or_missed(tmp_path):
    # 100 problems. Stage 1 right on 50 at 140 tokens, stage 2 on 52 at 112 (-20 %), stage 3 on 50 at 100; the SFT
    # baseline on 54 at 150 (stage 3 -4 points but 0 won / 4 lost, p = 0.125: not significant, yet more than 1 point
    # below), concise RL on 45 at 120
    for name, right, tokens in [("stage1", 50, 140), ("stage2", 52, 112), ("stage3", 50, 100),
                                ("baseline-sft", 54, 150), ("baseline-concise", 45, 120)]:
        put_generations(tmp_path, name, [i < right for i in range(100)], [tokens] * 100)
    section = section_lines(tmp_path, "The curriculum's targets")
    assert section == [
        "- **missed**: stage3 vs baseline-sft (same tokens) in accuracy: 50.0 % vs 54.0 % (-4.0 points, p = 0.12; "
        "target: at least -1.0 and not significantly below).",
        "- **met**: stage3's tokens as a share of baseline-sft's: 66.7 % (100.0 vs 150.0; target: at most 75 %).",
        "- **met**: stage3 vs baseline-concise in accuracy: 50.0 % vs 45.0 % (+5.0 points, p = 0.062; target: not "
        "below).",
        "- **met**: stage2 vs stage1 in tokens: -20.0 % (112.0 vs 140.0; target: at least 15 % fewer).",
        "- **missed**: stage3 vs stage2 in accuracy: -2.0 points (50.0 % vs 52.0 %; target: at least -1.0)."]
    # a run without the rows for a target states none of it
    for name in ("stage3", "baseline-concise"):
        for f in (tmp_path / "eval" / name).iterdir():
            f.unlink()
        (tmp_path / "eval" / name).rmdir()
    lines = section_lines(tmp_path, "The curriculum's targets")
    # the last stage is now stage 2: against SFT (accuracy, tokens) and stage 1; nothing on concise RL or stage 3
    assert len(lines) == 3 and all(line.split(": ", 1)[1].startswith("stage2") for line in lines)
    assert not any("concise" in line or "stage3" in line for line in lines)
