"""report.md / report.png from stored results.json files: rows, deltas computed by hand, a decodable image, and
clear errors when there is nothing (or something broken) to report."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
from click.testing import CliRunner

from recipe.cli import main
from recipe.evaluate import EvalError
from recipe.fsio import write_json, write_text
from recipe.report import build_report, collect_results

PROTOCOL = {"prompt": "paper", "greedy": True, "max_new_tokens": 512, "answer_label": "Final Answer:",
            "split": "test", "limit": -1}
DATA = {"source": "synthetic:40", "split": "test", "n": 40, "sha256": "ab" * 32}


def put(run_dir: Path, name: str, accuracy: float, avg_tokens: float, truncation: float = 0.0,
        fmt: float = 1.0, protocol: dict = PROTOCOL, data: dict = DATA) -> None:
    write_json(run_dir / "eval" / name / "results.json", {
        "name": name, "protocol": protocol, "data": data, "model": {"name_or_path": "m"},
        "metrics": {"accuracy": accuracy, "n": 40, "n_correct": round(40 * accuracy), "avg_tokens": avg_tokens,
                    "avg_words": avg_tokens / 2, "truncation_rate": truncation, "format_rate": fmt}})


def table(md: str) -> dict[str, list[str]]:
    """Markdown table body -> {row name: cells}."""
    rows = [line for line in md.splitlines() if line.startswith("| ") and "accuracy (%)" not in line]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
    return {c[0]: c[1:] for c in cells}


def test_report_rows_deltas_and_png(tmp_path):
    run = tmp_path / "run"
    put(run, "stage2", 0.70, 150.0, truncation=0.025)
    put(run, "base", 0.60, 200.0, truncation=0.1, fmt=0.5)
    put(run, "baseline-sft", 0.65, 220.0)
    put(run, "stage1", 0.625, 210.0)
    md_path, png_path = build_report(run)

    md = md_path.read_text(encoding="utf-8")
    rows = table(md)
    assert list(rows) == ["base", "stage1", "stage2", "baseline-sft"]  # curriculum order, then baselines
    # accuracy %, Δ points, avg tokens, Δ% length, truncation %, format %, n (then the official column)
    assert rows["base"][:7] == ["60.00", "+0.00", "200.0", "+0.0%", "10.0", "50.0", "40"]
    assert rows["stage1"][:7] == ["62.50", "+2.50", "210.0", "+5.0%", "0.0", "100.0", "40"]
    assert rows["stage2"][:7] == ["70.00", "+10.00", "150.0", "-25.0%", "2.5", "100.0", "40"]
    assert rows["baseline-sft"][:7] == ["65.00", "+5.00", "220.0", "+10.0%", "0.0", "100.0", "40"]
    assert "different protocol" not in md and "report.png" in md

    image = matplotlib.image.imread(png_path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0  # not a blank canvas


def test_report_without_base_shows_dashes_and_flags_protocol_mismatch(tmp_path):
    run = tmp_path / "run"
    put(run, "stage1", 0.5, 100.0)
    put(run, "stage3", 0.75, 80.0, protocol={**PROTOCOL, "max_new_tokens": 256})
    md = build_report(run)[0].read_text(encoding="utf-8")
    rows = table(md)
    assert list(rows) == ["stage1", "stage3"]
    assert rows["stage3"][:4] == ["75.00", "-", "80.0", "-"]
    assert "**stage3** was evaluated with a different protocol" in md


def test_report_errors_name_the_problem(tmp_path):
    with pytest.raises(EvalError, match=r"no evaluation results in .*eval"):
        build_report(tmp_path)
    write_text(tmp_path / "eval" / "stage1" / "results.json", "{not json")
    assert collect_results(tmp_path) == []  # skipped with a warning (tests/test_reliability_run.py)


def test_report_command_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["report", "--run", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: no evaluation results")
    assert "Traceback" not in result.output


def test_report_command_prints_paths(tmp_path):
    put(tmp_path, "base", 0.5, 100.0)
    result = CliRunner().invoke(main, ["report", "--run", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(tmp_path / "report.md"), str(tmp_path / "report.png")]
