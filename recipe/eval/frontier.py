"""The accuracy–length frontier of a run: every report row's accuracy against its average generated tokens, each with
its 95 % intervals, as the report's ``report.png`` and the small table beside it in ``report.md``.

Intervals are per row, not paired: accuracy's is the Wilson score interval over the row's ``n`` problems (it stays
inside [0, 1] and is not empty at 0/n or n/n, where the normal approximation collapses); tokens' is the percentile
bootstrap of the mean over problems (:func:`recipe.eval.pairstats.bootstrap_mean_ci`, fixed seed) from the row's
``generations.jsonl``. Two rows whose intervals overlap can still differ on the same problems; the paired tests
(:mod:`recipe.eval.pairstats`) are the ones that say.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from recipe.entries import CURRICULUM_ROWS as CURRICULUM
from recipe.eval import pairstats

Z = NormalDist().inv_cdf(1 - pairstats.ALPHA / 2)  # 1.95996...: two-sided 95 %
BOOTSTRAP_SAMPLES = 2_000  # resamples of the problems per row (enough for a drawn interval; the paired table uses more)


def wilson_interval(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials, as fractions; ``(0.0, 1.0)`` for ``n == 0``.

    >>> wilson_interval(0, 10)[0], round(wilson_interval(0, 10)[1], 4)
    (0.0, 0.2775)
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def tokens_interval(tokens: Sequence[float], samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean generated tokens, resampling the problems (fixed seed)."""
    return pairstats.bootstrap_mean_ci(tokens, samples=samples)


@dataclass(frozen=True)
class Point:
    """One report row on the frontier; accuracy in %, tokens averaged over problems."""

    name: str
    n: int
    accuracy: float
    acc_ci: tuple[float, float]
    tokens: float | None  # None: the row recorded no token counts
    tok_ci: tuple[float, float] | None  # None: no per-problem token counts to resample


def _token_counts(generations: Sequence[dict] | None) -> list[float] | None:
    """Every problem's ``n_tokens``, or None unless all of them are numbers."""
    counts = [r.get("n_tokens") for r in generations or ()]
    ok = counts and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in counts)
    return counts if ok else None


def points(results: Sequence[tuple[str, dict]], generations: Mapping[str, Sequence[dict] | None],
           samples: int = BOOTSTRAP_SAMPLES) -> list[Point]:
    """A :class:`Point` per report row, in report order, from its ``results.json`` metrics (accuracy, n, average
    tokens) and its stored per-problem generations (the token interval; None when they are missing)."""
    found = []
    for name, res in results:
        m = res["metrics"]
        n = int(m["n"])
        lo, hi = wilson_interval(round(m["accuracy"] * n), n)
        counts = _token_counts(generations.get(name))
        tok_ci = tokens_interval(counts, samples) if counts and m.get("avg_tokens") is not None else None
        found.append(Point(name, n, 100 * m["accuracy"], (100 * lo, 100 * hi), m.get("avg_tokens"), tok_ci))
    return found


def _ci(value: float | None, ci: tuple[float, float] | None, spec: str) -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}" + ("" if ci is None else f" [{ci[0]:{spec}}, {ci[1]:{spec}}]")


def section(found: Sequence[Point], png_name: str | None) -> list[str]:
    """report.md lines: the figure's link (``png_name``; None when the figures were not drawn), one sentence of what
    it shows, and the numbers behind it."""
    table = ["| row | n | accuracy % [95% CI] | avg tokens [95% CI] |", "|---|---|---|---|"]
    table += [f"| {p.name} | {p.n} | {_ci(p.accuracy, p.acc_ci, '.1f')} | {_ci(p.tokens, p.tok_ci, '.1f')} |"
              for p in found]
    return ["## Accuracy–length frontier", "",
            *([f"![accuracy vs length, 95% intervals]({png_name})", ""] if png_name else []),
            "Each row's accuracy against its average generated tokens, with 95 % intervals both ways (accuracy: Wilson "
            "score over its n problems; tokens: percentile bootstrap of the mean over problems, "
            f"{BOOTSTRAP_SAMPLES:,} resamples, seed {pairstats.BOOTSTRAP_SEED}); base → stage 1 → 2 → 3 are joined in "
            "order and each baseline is a separate mark, so a row above and left of another is more accurate and "
            "shorter. The intervals are per row: overlapping ones can still differ on the same problems (the paired "
            "comparisons test that).", "",
            *table, ""]


def render_png(found: Sequence[Point]) -> bytes:
    """Accuracy (%) against average generated tokens with each row's 95 % intervals as error bars both ways;
    curriculum rows (circles) joined by arrows in order, baselines as squares. Each row has its own colour and a
    legend entry with its numbers instead of a label by the point, so rows that land close together stay readable."""
    from matplotlib.figure import Figure  # lazy: matplotlib only when a report is drawn; no pyplot global state

    fig = Figure(figsize=(7.6, 4.6), dpi=120)
    ax = fig.add_subplot()
    drawn = {p.name: p for p in found if p.tokens is not None}
    for i, p in enumerate(drawn.values()):
        colour = f"C{i % 10}"
        xerr = None if p.tok_ci is None else [[max(0.0, p.tokens - p.tok_ci[0])], [max(0.0, p.tok_ci[1] - p.tokens)]]
        yerr = [[max(0.0, p.accuracy - p.acc_ci[0])], [max(0.0, p.acc_ci[1] - p.accuracy)]]
        ax.errorbar([p.tokens], [p.accuracy], xerr=xerr, yerr=yerr, fmt="o" if p.name in CURRICULUM else "s",
                    ms=8, color=colour, ecolor=colour, elinewidth=1.0, capsize=3, mec="black", mew=0.6, zorder=3,
                    label=f"{p.name}: {p.accuracy:.1f}% / {p.tokens:.0f} tok")
    chain = [drawn[name] for name in CURRICULUM if name in drawn]
    if len(chain) > 1:  # a line through the curriculum in order, an arrowhead halfway along each step (a short step
        # between two close rows stays visible as a line; an arrow ending at the marker would hide under it)
        ax.plot([p.tokens for p in chain], [p.accuracy for p in chain], color="0.45", lw=1.0, zorder=2)
    for a, b in zip(chain, chain[1:]):
        ax.annotate("", xy=((a.tokens + b.tokens) / 2, (a.accuracy + b.accuracy) / 2), xytext=(a.tokens, a.accuracy),
                    arrowprops={"arrowstyle": "-|>", "color": "0.45", "lw": 1.0, "shrinkA": 0, "shrinkB": 0,
                                "mutation_scale": 12}, zorder=2)
    ax.set_xlabel("average generated tokens (95% bootstrap interval)")
    ax.set_ylabel("accuracy, % (95% Wilson interval)")
    ax.set_title("Accuracy vs length (curriculum: circles in order, baselines: squares)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
