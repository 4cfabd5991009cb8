"""``cotrecipe teach --stats FILE.png``: how much there is to compress — steps, words and student tokens per rationale
of a teacher file, beside the gold rationales of the same problems (mean, median, histograms in one PNG, the numbers
in ``FILE.json``). Words and tokens are measured on the target text a stage trains on (:func:`problem_target`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recipe import fsio
from recipe.data.gsm8k import Problem
from recipe.teacher.format import Latex, render_target
from recipe.teacher.rationales import load_teacher_rationales

MEASURES = ("steps", "words", "tokens")


def _describe(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "mean": 0.0, "median": 0.0}
    return {"n": len(values), "mean": round(statistics.fmean(values), 2), "median": float(statistics.median(values))}


def measure(texts: Sequence[str], steps: Sequence[int], tokenizer: Any) -> dict[str, list[int]]:
    """Per-rationale steps, whitespace words and tokenizer tokens (no special tokens) of ``texts``."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return {"steps": list(steps), "words": [len(t.split()) for t in texts], "tokens": [len(i) for i in ids]}


def teacher_stats(teacher_path: str, problems: Sequence[Problem], tokenizer: Any,
                  latex: Latex = "keep") -> dict[str, Any]:
    """Raw per-rationale values for the teacher file and for the gold rationales of the problems it covers."""
    table = load_teacher_rationales(teacher_path, latex)
    teacher_texts, teacher_steps, gold_texts, gold_steps = [], [], [], []
    for problem in problems:
        rationale = table.get(problem.question.strip()) or table.get(problem.id)
        if rationale is None:
            continue
        teacher_texts.append(render_target(rationale.steps, problem.answer, rationale.thinking))
        teacher_steps.append(len(rationale.steps))
        gold_texts.append(render_target(problem.steps, problem.answer))
        gold_steps.append(len(problem.steps))
    return {"teacher": measure(teacher_texts, teacher_steps, tokenizer),
            "gold": measure(gold_texts, gold_steps, tokenizer)}


def summarise(values: dict[str, dict[str, list[int]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{"teacher"|"gold": {measure: {n, mean, median}}}``."""
    return {side: {m: _describe(v[m]) for m in MEASURES} for side, v in values.items()}


def format_table(summary: dict) -> str:
    lines = [f"{'per rationale':<16}{'teacher mean':>14}{'median':>9}{'gold mean':>12}{'median':>9}"]
    for m in MEASURES:
        t, g = summary["teacher"][m], summary["gold"][m]
        lines.append(f"{m:<16}{t['mean']:>14.2f}{t['median']:>9.1f}{g['mean']:>12.2f}{g['median']:>9.1f}")
    lines.append(f"({summary['teacher']['steps']['n']} problems covered by the teacher file)")
    return "\n".join(lines)


def plot(values: dict[str, dict[str, list[int]]], path: str | Path) -> Path:
    """One PNG: a histogram per measure, teacher and gold overlaid; written atomically."""
    import io

    import matplotlib  # lazy: only --stats draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 3.2))
    for ax, m in zip(axes, MEASURES, strict=True):
        both = values["teacher"][m] + values["gold"][m]
        bins = min(30, max(1, len(set(both)))) if both else 1
        for side, colour in (("gold", "tab:gray"), ("teacher", "tab:blue")):
            if values[side][m]:
                ax.hist(values[side][m], bins=bins, range=(min(both), max(both) + 1), alpha=0.6, color=colour,
                        label=f"{side} (median {statistics.median(values[side][m]):g})")
        ax.set_title(f"{m} per rationale")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    fsio.write_bytes(path, buf.getvalue())
    return Path(path)


def write_stats(teacher_path: str, problems: Sequence[Problem], tokenizer: Any, png: str | Path,
                latex: Latex = "keep") -> dict:
    """Compute, draw ``png`` and write ``png`` with a ``.json`` suffix; returns the summary."""
    values = teacher_stats(teacher_path, problems, tokenizer, latex)
    summary = summarise(values)
    plot(values, png)
    fsio.write_json(Path(png).with_suffix(".json"), summary)
    return summary
