"""The curriculum's claims, checked on one run: each target met or missed, with its numbers.

The paper's claim is that the curriculum beats what a user would run instead, and shortens answers stage by stage. A
run that has the rows for it is held to these targets (the project's frontier targets; thresholds below):

- the last curriculum stage against the SFT baseline at the same training tokens: at most 1 point less accurate and
  not significantly less accurate on the same problems (exact McNemar), at most 75 % of its average tokens;
- the last stage not less accurate than the concise-RL baseline (point estimates; the p-value is shown);
- stage 2 at least 15 % fewer average tokens than stage 1 (the brevity stage does its job);
- the last stage at most 1 point below stage 2 (stage 3 does not undo stage 2).

A target whose rows the run lacks is left out; a row without per-problem generations cannot be paired, so the targets
that pair it are left out too. Pure functions over :class:`recipe.eval.frontier.Point` and the report's paired
comparisons (each curriculum stage against each baseline is among them: :func:`recipe.eval.report.comparison_pairs`).
"""

from __future__ import annotations

from collections.abc import Sequence

from recipe.entries import ENTRIES, STAGES
from recipe.eval import frontier, pairstats

SFT, CONCISE = ENTRIES["baseline-sft"].eval_name, ENTRIES["baseline-concise"].eval_name  # report row names
SFT_SLACK = 1.0  # points the last stage may sit below the SFT baseline
SFT_TOKEN_SHARE = 0.75  # the last stage's average tokens as a share of the SFT baseline's, at most
STAGE2_CUT = 0.15  # stage 2's tokens at least this share below stage 1's
STAGE3_SLACK = 1.0  # points stage 3 may sit below stage 2


def section(found: Sequence[frontier.Point], paired: Sequence[pairstats.Paired]) -> list[str]:
    """report.md lines: "## The curriculum's targets" and one line per target the run's rows allow; ``paired``: the
    report's comparisons on the same problems.

    >>> gen = lambda right, tok: [{"id": i, "correct": i < right, "n_tokens": tok} for i in range(40)]
    >>> rows = {"stage1": (24, 140.0), "stage2": (26, 100.0), "stage3": (26, 100.0), "baseline-sft": (27, 125.0)}
    >>> found = [frontier.Point(n, 40, 2.5 * r, (0, 0), t, None) for n, (r, t) in rows.items()]
    >>> paired = [pairstats.compare("stage3", gen(26, 100), "baseline-sft", gen(27, 125))]
    >>> print("\\n".join(section(found, paired)[2:]))
    - **missed**: stage3 vs baseline-sft (same tokens) in accuracy: 65.0 % vs 67.5 % (-2.5 points, p = 1; target: at least -1.0 and not significantly below).
    - **missed**: stage3's tokens as a share of baseline-sft's: 80.0 % (100.0 vs 125.0; target: at most 75 %).
    - **met**: stage2 vs stage1 in tokens: -28.6 % (100.0 vs 140.0; target: at least 15 % fewer).
    - **met**: stage3 vs stage2 in accuracy: +0.0 points (65.0 % vs 65.0 %; target: at least -1.0).
    <BLANKLINE>
    """
    by = {p.name: p for p in found}
    tests = {(p.a, p.b): p for p in paired}
    last = next((s for s in reversed(STAGES) if s in by), None)
    lines = []
    if last and SFT in by:
        test = tests.get((last, SFT))
        if test is not None:
            below = test.acc_diff < 0 and test.acc_significant
            lines.append(_line(test.acc_diff >= -SFT_SLACK and not below,
                               f"{last} vs {SFT} (same tokens) in accuracy: {by[last].accuracy:.1f} % vs "
                               f"{by[SFT].accuracy:.1f} % ({test.acc_diff:+.1f} points, p = {test.p_value:.2g}; "
                               f"target: at least {-SFT_SLACK:+.1f} and not significantly below)"))
        if by[last].tokens is not None and by[SFT].tokens:
            share = by[last].tokens / by[SFT].tokens
            lines.append(_line(share <= SFT_TOKEN_SHARE,
                               f"{last}'s tokens as a share of {SFT}'s: {100 * share:.1f} % ({by[last].tokens:.1f} vs "
                               f"{by[SFT].tokens:.1f}; target: at most {100 * SFT_TOKEN_SHARE:.0f} %)"))
    if last and CONCISE in by:
        test = tests.get((last, CONCISE))
        if test is not None:
            lines.append(_line(test.acc_diff >= 0,
                               f"{last} vs {CONCISE} in accuracy: {by[last].accuracy:.1f} % vs "
                               f"{by[CONCISE].accuracy:.1f} % ({test.acc_diff:+.1f} points, p = {test.p_value:.2g}; "
                               "target: not below)"))
    if "stage1" in by and "stage2" in by and by["stage1"].tokens and by["stage2"].tokens is not None:
        cut = 1 - by["stage2"].tokens / by["stage1"].tokens
        lines.append(_line(cut >= STAGE2_CUT,
                           f"stage2 vs stage1 in tokens: {-100 * cut:+.1f} % ({by['stage2'].tokens:.1f} vs "
                           f"{by['stage1'].tokens:.1f}; target: at least {100 * STAGE2_CUT:.0f} % fewer)"))
    if last not in (None, "stage1", "stage2") and "stage2" in by:
        diff = by[last].accuracy - by["stage2"].accuracy
        lines.append(_line(diff >= -STAGE3_SLACK,
                           f"{last} vs stage2 in accuracy: {diff:+.1f} points ({by[last].accuracy:.1f} % vs "
                           f"{by['stage2'].accuracy:.1f} %; target: at least {-STAGE3_SLACK:+.1f})"))
    if not lines:
        return []
    return ["## The curriculum's targets", "", *lines, ""]


def _line(met: bool, text: str) -> str:
    return f"- **{'met' if met else 'missed'}**: {text}."
