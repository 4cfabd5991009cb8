"""The frontier's intervals: Wilson's at its closed forms (0/n, n/n), at a hand-computed 37/50 and at its defining
property; the token bootstrap covering the mean and narrowing with n; a row's point from its metrics and generations.
The figure and the report's frontier table are tested through the report (tests/test_report.py)."""

from __future__ import annotations

import math

import pytest

from recipe.eval import frontier

Z = 1.959963984540054  # the standard normal's 97.5 % quantile


@pytest.mark.parametrize("n", [1, 10, 50, 250])
def test_wilson_at_none_and_all_right_has_its_closed_form(n):
    assert frontier.wilson_interval(0, n) == pytest.approx((0.0, Z * Z / (n + Z * Z)), abs=1e-12)
    assert frontier.wilson_interval(n, n) == pytest.approx((n / (n + Z * Z), 1.0), abs=1e-12)


def test_wilson_37_of_50_by_hand_and_by_its_definition():
    # by hand: p = .74, z² = 3.841459; centre (.74 + .0384146) / 1.0768292 = .722877,
    # half-width 1.959964 / 1.0768292 * sqrt(.74 * .26 / 50 + 3.841459 / 10000) = .118408
    lo, hi = frontier.wilson_interval(37, 50)
    assert (lo, hi) == pytest.approx((0.604468, 0.841285), abs=1e-6)
    # each end is a proportion π whose score statistic |p - π| / sqrt(π(1 - π) / n) is exactly z
    for pi in (lo, hi):
        assert abs(0.74 - pi) / math.sqrt(pi * (1 - pi) / 50) == pytest.approx(Z, rel=1e-9)
    assert lo < 0.74 < hi


def test_wilson_edges():
    assert frontier.wilson_interval(0, 0) == (0.0, 1.0)  # no problems: no information
    a, b = frontier.wilson_interval(20, 40), frontier.wilson_interval(200, 400)
    assert b[1] - b[0] < a[1] - a[0]
    with pytest.raises(ValueError, match="k=5, n=4"):
        frontier.wilson_interval(5, 4)


def test_tokens_interval_covers_the_mean_narrows_with_n_and_repeats():
    small = [60.0 + 20 * (i % 2) for i in range(40)]  # mean 70, sd 10
    large = small * 16
    lo_s, hi_s = frontier.tokens_interval(small)
    lo_l, hi_l = frontier.tokens_interval(large)
    assert lo_s < 70.0 < hi_s and lo_l < 70.0 < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 2.5  # 1/4 for 16x the problems
    assert (hi_l - lo_l) == pytest.approx(2 * Z * 10 / math.sqrt(len(large)), rel=0.15)  # the normal-theory width
    assert frontier.tokens_interval(small) == (lo_s, hi_s)  # fixed seed: the same report twice
    assert frontier.tokens_interval([42.0] * 9) == (42.0, 42.0)


def metrics(accuracy: float, n: int, avg_tokens: float | None) -> dict:
    return {"metrics": {"accuracy": accuracy, "n": n, "avg_tokens": avg_tokens}}


def test_points_from_metrics_and_generations():
    gens = [{"id": i, "correct": True, "n_tokens": 10 + i % 3} for i in range(30)]
    found = frontier.points(
        [("base", metrics(0.5, 30, 11.0)), ("stage1", metrics(1.0, 30, 11.0)), ("baseline-sft", metrics(0.0, 2, None))],
        {"base": gens, "stage1": [*gens[:-1], {"id": 29, "correct": True, "n_tokens": None}]})
    base, stage1, sft = found
    assert (base.name, base.n, base.accuracy, base.tokens) == ("base", 30, 50.0, 11.0)
    assert base.acc_ci == pytest.approx(tuple(100 * v for v in frontier.wilson_interval(15, 30)))
    assert base.tok_ci is not None and base.tok_ci[0] < 11.0 < base.tok_ci[1]
    assert stage1.tok_ci is None  # one problem without a token count: no interval rather than a biased one
    assert sft.tokens is None and sft.tok_ci is None and sft.acc_ci == pytest.approx((0.0, 100 * Z * Z / (2 + Z * Z)))
