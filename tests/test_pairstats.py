"""Paired statistics of the report: exact McNemar p-values from known tables, the paired bootstrap interval, and the
report's "Paired comparisons" section and verdict built from stored generations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from recipe.eval import pairstats
from recipe.eval.report import build_report, comparison_pairs
from recipe.fsio import write_json, write_jsonl


@pytest.mark.parametrize(("b", "c", "p"), [
    (0, 0, 1.0),
    (3, 3, 1.0),
    (0, 1, 1.0),
    (0, 5, 0.0625),  # 2 / 2**5
    (1, 9, 0.021484375),  # 2 * (1 + 10) / 2**10
    (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 2**10
    (9, 1, 0.021484375),  # symmetric
    (5, 15, 0.04138946533203125),  # 2 * sum_{i<=5} C(20, i) / 2**20
])
def test_mcnemar_exact_known_tables(b, c, p):
    assert pairstats.mcnemar_exact(b, c) == pytest.approx(p, abs=1e-15)


def test_mcnemar_matches_a_binomial_tail_computed_another_way():
    # 30 discordant pairs split 8/22: the two-sided binomial p by summing the pmf over outcomes no likelier than 8
    n, k = 30, 8
    pmf = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
    two_sided = sum(q for q in pmf if q <= pmf[k] * (1 + 1e-12))
    assert pairstats.mcnemar_exact(k, n - k) == pytest.approx(two_sided, rel=1e-12)
    assert pairstats.mcnemar_exact(8, 22) < 0.05 < pairstats.mcnemar_exact(10, 20)


def test_mcnemar_refuses_negative_counts():
    with pytest.raises(ValueError, match="non-negative"):
        pairstats.mcnemar_exact(-1, 3)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    small = [(-1) ** i * 10.0 + 5.0 for i in range(20)]  # mean 5, spread 10
    large = small * 25
    lo_s, hi_s = pairstats.bootstrap_mean_ci(small)
    lo_l, hi_l = pairstats.bootstrap_mean_ci(large)
    assert lo_s < 5.0 < hi_s and lo_l < 5.0 < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3  # ~1/5 for 25x the problems
    # a normal-theory interval for the same mean: 1.96 * sd / sqrt(n); the bootstrap agrees within 15 %
    sd = 10.0
    assert (hi_l - lo_l) == pytest.approx(2 * 1.96 * sd / math.sqrt(len(large)), rel=0.15)
    assert pairstats.bootstrap_mean_ci(small) == (lo_s, hi_s)  # fixed seed: the same report twice


def rows(correct: list[bool], tokens: list[int], offset: int = 0) -> list[dict]:
    return [{"id": f"t-{i + offset}", "correct": c, "n_tokens": t} for i, (c, t) in enumerate(zip(correct, tokens))]


def test_compare_pairs_by_id_and_counts_won_and_lost():
    a = rows([True, True, False, False, True], [10, 20, 30, 40, 50])
    b = list(reversed(rows([True, False, True, False, False], [12, 22, 32, 42, 52])))  # order does not matter
    p = pairstats.compare("a", a, "b", b)
    assert (p.n, p.won, p.lost) == (5, 2, 1)
    assert p.acc_diff == pytest.approx(20.0)
    assert p.p_value == pytest.approx(1.0)
    assert p.tok_diff == pytest.approx(-2.0) and p.tok_ci == pytest.approx((-2.0, -2.0))
    assert p.tok_significant and not p.acc_significant
    # only shared problems are compared; none shared -> None
    assert pairstats.compare("a", a, "c", rows([True], [1], offset=4)).n == 1
    assert pairstats.compare("a", a, "c", rows([True], [1], offset=99)) is None


def test_describe_names_only_significant_differences():
    sig = pairstats.compare("stage2", rows([True] * 12 + [False] * 8, [80] * 20),
                            "stage1", rows([False] * 12 + [False] * 8, [100] * 20))
    assert sig.won == 12 and sig.p_value < 0.001
    assert pairstats.describe(sig).startswith("stage2 vs stage1: 60.0 points more accurate (p=")
    assert "20.0 fewer tokens" in pairstats.describe(sig)
    none = pairstats.compare("x", rows([True, False] * 5, [50, 60] * 5), "y", rows([False, True] * 5, [60, 50] * 5))
    assert pairstats.describe(none) == "x vs y: no detectable difference"


def test_comparison_pairs_cover_starts_and_baselines():
    pairs = comparison_pairs(["base", "stage1", "stage2", "stage3", "baseline-grpo", "baseline-sft"])
    assert pairs[:3] == [("stage1", "base"), ("stage2", "stage1"), ("stage3", "stage2")]
    assert ("baseline-sft", "base") in pairs and ("baseline-grpo", "base") in pairs
    assert ("stage3", "base") in pairs
    assert {(s, b) for s in ("stage1", "stage2", "stage3") for b in ("baseline-grpo", "baseline-sft")} <= set(pairs)
    assert len(pairs) == len(set(pairs))


def put_eval(run: Path, name: str, correct: list[bool], tokens: list[int]) -> None:
    n = len(correct)
    write_json(run / "eval" / name / "results.json", {
        "name": name, "protocol": {"prompt": "paper"}, "data": {"n": n},
        "metrics": {"accuracy": sum(correct) / n, "n": n, "n_correct": sum(correct),
                    "avg_tokens": sum(tokens) / n, "truncation_rate": 0.0, "format_rate": 1.0}})
    write_jsonl(run / "eval" / name / "generations.jsonl", rows(correct, tokens))


def test_report_has_paired_table_and_a_verdict_of_significant_differences(tmp_path):
    n = 60
    put_eval(tmp_path, "base", [i < 10 for i in range(n)], [150] * n)
    put_eval(tmp_path, "stage1", [i < 40 for i in range(n)], [150 + (i % 3) for i in range(n)])
    put_eval(tmp_path, "stage2", [i < 41 for i in range(n)], [100] * n)
    md = build_report(tmp_path, figures=False)[0].read_text(encoding="utf-8")
    assert "## Paired comparisons" in md
    line = next(x for x in md.splitlines() if x.startswith("Verdict (paired"))
    assert "stage1 vs base: 50.0 points more accurate" in line  # 30 won, 0 lost
    assert "stage2 vs stage1: 51.0 fewer tokens" in line and "stage2 vs stage1: 1." not in line  # 1 won: not significant
    assert "| stage1 vs base | 60 | 30 | 0 | +50.00 |" in md
    assert "| stage2 vs stage1 | 60 | 1 | 0 | +1.67 | 1 |" in md
    assert "Point estimates (not tests" in md


def test_report_without_generations_has_no_paired_section(tmp_path):
    put_eval(tmp_path, "base", [True, False], [5, 5])
    put_eval(tmp_path, "stage1", [True, True], [5, 5])
    (tmp_path / "eval" / "stage1" / "generations.jsonl").unlink()
    md = build_report(tmp_path, figures=False)[0].read_text(encoding="utf-8")
    assert "## Paired comparisons" not in md and "| stage1 " in md


def test_report_note_comes_first(tmp_path):
    put_eval(tmp_path, "base", [True, False], [5, 5])
    (tmp_path / "config.yaml").write_text("run:\n  report_note: |\n    A demo: it shows the pipeline,\n    not a result.\n",
                                          encoding="utf-8")
    lines = build_report(tmp_path, figures=False)[0].read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["# cotrecipe report", "", "> A demo: it shows the pipeline, not a result."]
