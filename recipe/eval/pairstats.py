"""Paired comparisons of two evaluated rows on the same problems: won/lost counts, an exact McNemar test for
accuracy and a paired bootstrap 95 % interval for the difference in generated tokens.

Pure functions over the per-problem rows of ``eval/<name>/generations.jsonl`` (``id``, ``correct``, ``n_tokens``);
:mod:`recipe.eval.report` turns them into the report's "Paired comparisons" table and its verdict sentence. Rows are
matched by problem ``id``, so two evaluations of different problem sets compare only what they share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # 95 %
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same run directory gives the same report


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` pairs won by one side and ``c`` won by the other (the discordant
    pairs; ties carry no information): the binomial test of ``min(b, c)`` successes in ``b + c`` trials at 1/2.

    >>> mcnemar_exact(1, 9)
    0.021484375
    >>> mcnemar_exact(0, 5)
    0.0625
    >>> mcnemar_exact(4, 4), mcnemar_exact(0, 0)
    (1.0, 1.0)
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be non-negative, got {b} and {c}")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_mean_ci(diffs: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                      alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile bootstrap interval (``1 - alpha``) for the mean of per-problem values (paired differences here, a
    row's token counts on the report's frontier), resampling problems.

    >>> bootstrap_mean_ci([2.0, 2.0, 2.0])
    (2.0, 2.0)
    """
    n = len(diffs)
    if n == 0:
        raise ValueError("no paired differences to resample")
    values = np.asarray(diffs, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    means = values[picks].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Paired:
    """``a`` against ``b`` on ``n`` shared problems."""

    a: str
    b: str
    n: int
    won: int  # a right, b wrong
    lost: int  # a wrong, b right
    acc_diff: float  # points, a - b
    p_value: float  # exact McNemar
    tok_diff: float | None  # mean generated tokens, a - b (None when a row has no token counts)
    tok_ci: tuple[float, float] | None  # paired bootstrap 95 % interval of tok_diff

    @property
    def acc_significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def tok_significant(self) -> bool:
        return self.tok_ci is not None and (self.tok_ci[0] > 0 or self.tok_ci[1] < 0)


def compare(a: str, rows_a: Sequence[dict], b: str, rows_b: Sequence[dict],
            samples: int = BOOTSTRAP_SAMPLES) -> Paired | None:
    """Pair ``rows_a`` and ``rows_b`` by problem ``id`` and compare them; None when they share no problem.

    >>> ra = [{"id": i, "correct": i < 8, "n_tokens": 100} for i in range(10)]
    >>> rb = [{"id": i, "correct": i < 2, "n_tokens": 120} for i in range(10)]
    >>> p = compare("stage2", ra, "stage1", rb)
    >>> (p.n, p.won, p.lost, p.acc_diff, round(p.p_value, 4), p.tok_diff, p.tok_ci)
    (10, 6, 0, 60.0, 0.0312, -20.0, (-20.0, -20.0))
    """
    by_id = {r["id"]: r for r in rows_b}
    pairs = [(r, by_id[r["id"]]) for r in rows_a if r["id"] in by_id]
    if not pairs:
        return None
    won = sum(1 for x, y in pairs if x["correct"] and not y["correct"])
    lost = sum(1 for x, y in pairs if y["correct"] and not x["correct"])
    n = len(pairs)
    acc_diff = 100 * (sum(bool(x["correct"]) for x, _ in pairs) - sum(bool(y["correct"]) for _, y in pairs)) / n
    diffs = [x.get("n_tokens") - y.get("n_tokens") for x, y in pairs
             if isinstance(x.get("n_tokens"), (int, float)) and isinstance(y.get("n_tokens"), (int, float))]
    tok_diff = tok_ci = None
    if len(diffs) == n:
        tok_diff = sum(diffs) / n
        tok_ci = bootstrap_mean_ci(diffs, samples=samples)
    return Paired(a, b, n, won, lost, acc_diff, mcnemar_exact(won, lost), tok_diff, tok_ci)


def describe(p: Paired) -> str:
    """One clause for the verdict: only what is significant at 95 %, else "no detectable difference".

    >>> describe(Paired("stage2", "stage1", 200, 3, 12, -4.5, 0.035, -30.0, (-36.0, -24.0)))
    'stage2 vs stage1: 4.5 points less accurate (p=0.035), 30.0 fewer tokens (95% CI 24.0 to 36.0)'
    >>> describe(Paired("stage3", "stage2", 200, 5, 4, 0.5, 1.0, -1.0, (-3.0, 1.0)))
    'stage3 vs stage2: no detectable difference'
    """
    parts = []
    if p.acc_significant:
        parts.append(f"{abs(p.acc_diff):.1f} points {'more' if p.acc_diff > 0 else 'less'} accurate "
                     f"(p={p.p_value:.2g})")
    if p.tok_significant:
        lo, hi = sorted(abs(v) for v in p.tok_ci)
        parts.append(f"{abs(p.tok_diff):.1f} {'more' if p.tok_diff > 0 else 'fewer'} tokens "
                     f"(95% CI {lo:.1f} to {hi:.1f})")
    return f"{p.a} vs {p.b}: " + (", ".join(parts) if parts else "no detectable difference")
