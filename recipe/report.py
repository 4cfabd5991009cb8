"""``report.md`` and ``report.png`` of a run, built only from the stored ``eval/<name>/results.json`` files.

Rows: ``base``, ``stage1``, ``stage2``, ``stage3`` (those present, in curriculum order), then any other evaluated
model (baselines such as ``baseline-sft``) by name. Deltas are against ``base``; without a base row they read "-".
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from recipe.errors import EvalError
from recipe.fsio import read_json, write_bytes, write_text
from recipe.rundir import EVAL_DIR, REPORT_MD, REPORT_PNG, RESULTS

log = logging.getLogger("recipe")

CURRICULUM = ("base", "stage1", "stage2", "stage3")
PAPER_RESULT = "Paper (Qwen2.5-3B-Base, GSM8K test, 1,319 problems): base 64.90% / 230 tokens -> BRIDGE 76.19% / 167 tokens."
COLUMNS = ("model", "accuracy (%)", "Δ vs base (pts)", "avg tokens", "Δ% length", "truncation %", "format %", "n", "official (%)")


def _order(name: str) -> tuple[int, str]:
    return (CURRICULUM.index(name), "") if name in CURRICULUM else (len(CURRICULUM), name)


def _is_number(value: object, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def results_problem(results: object) -> str | None:
    """Why a results.json cannot be a report row (hand-edited, truncated), or None."""
    if not isinstance(results, dict):
        return "not a JSON object"
    m = results.get("metrics")
    if not isinstance(m, dict):
        return "no 'metrics' object"
    if not (_is_number(m.get("accuracy")) and 0 <= m["accuracy"] <= 1):
        return f"metrics.accuracy is {str(m.get('accuracy'))[:40]!r}, not a number in [0, 1]"
    if not (_is_number(m.get("n")) and m["n"] >= 0):
        return "metrics.n is not a count"
    for key in ("avg_tokens", "truncation_rate", "format_rate"):
        if not _is_number(m.get(key), optional=True):
            return f"metrics.{key} is not a number"
    for key in ("protocol", "data"):
        if not isinstance(results.get(key, {}), dict):
            return f"'{key}' is not an object"
    return None


def collect_results(run_dir: str | Path) -> list[tuple[str, dict]]:
    """``(name, results)`` for every readable ``eval/<name>/results.json`` of a run, in report order; an unreadable
    one (corrupt or hand-edited into another shape) is skipped with a warning naming it."""
    folder = Path(run_dir) / EVAL_DIR
    found = []
    for path in sorted(folder.glob(f"*/{RESULTS}")) if folder.is_dir() else []:
        try:
            results = read_json(path)
            problem = results_problem(results)
        except (OSError, ValueError, RecursionError) as exc:
            problem = f"{type(exc).__name__}: {str(exc)[:80]}"
        if problem:
            log.warning("report: skipping unreadable results file %s (%s); re-evaluate that row to restore it",
                        path, problem)
            continue
        found.append((path.parent.name, results))
    return sorted(found, key=lambda item: _order(item[0]))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_rows(results: Sequence[tuple[str, dict]]) -> list[list[str]]:
    """One list of cell strings per result, in :data:`COLUMNS` order.

    ``official (%)`` is the authors' checker (``official_accuracy``; "-" for results recorded before it existed).

    >>> r = lambda acc, tok: {"metrics": {"accuracy": acc, "avg_tokens": tok, "truncation_rate": 0.0,
    ...                                   "format_rate": 1.0, "n": 4, "official_accuracy": acc / 2}}
    >>> table_rows([("base", r(0.5, 200.0)), ("stage1", r(0.75, 150.0))])[1]
    ['stage1', '75.00', '+25.00', '150.0', '-25.0%', '0.0', '100.0', '4', '37.50']
    >>> table_rows([("stage1", r(0.75, 150.0))])[0][2:5]
    ['-', '150.0', '-']
    """
    base = dict(results).get("base", {}).get("metrics")
    rows = []
    for name, res in results:
        m = res["metrics"]
        acc = 100 * m["accuracy"]
        d_acc = d_len = None
        if base is not None:
            d_acc = acc - 100 * base["accuracy"]
            if m.get("avg_tokens") is not None and base.get("avg_tokens"):
                d_len = 100 * (m["avg_tokens"] - base["avg_tokens"]) / base["avg_tokens"]
        trunc, fmt = m.get("truncation_rate"), m.get("format_rate")
        official = m.get("official_accuracy")
        rows.append([name, f"{acc:.2f}", _fmt(d_acc, "+.2f"), _fmt(m.get("avg_tokens"), ".1f"),
                     "-" if d_len is None else f"{d_len:+.1f}%", _fmt(None if trunc is None else 100 * trunc, ".1f"),
                     _fmt(None if fmt is None else 100 * fmt, ".1f"), str(m["n"]),
                     _fmt(None if official is None else 100 * official, ".2f")])
    return rows


def format_table(results: Sequence[tuple[str, dict]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    rows = [list(COLUMNS), *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _mismatches(results: Sequence[tuple[str, dict]]) -> list[str]:
    """Rows evaluated under a different protocol or on different problems than the first row."""
    (first, ref), *rest = results
    notes = []
    for name, res in rest:
        for key, what in (("protocol", "protocol"), ("data", "evaluation problems")):
            if res.get(key) != ref.get(key):
                notes.append(f"- **{name}** was evaluated with a different {what} than **{first}**: "
                             f"{res.get(key)} vs {ref.get(key)}; compare these rows with care.")
    return notes


def _stop_words(proto: dict) -> str:
    rule = proto.get("stop_rule") or {}
    if rule.get("rule") == "paper":
        return f"by the authors' rule (`{rule.get('pattern')}`, then {rule.get('then')})"
    return "at its answer line"


def render_markdown(results: Sequence[tuple[str, dict]], png_name: str = "report.png") -> str:
    _, ref = results[0]
    proto, data = ref.get("protocol", {}), ref.get("data", {})
    notes = _mismatches(results)
    notes += [""] if notes else []
    lines = [
        "# cotrecipe report",
        "",
        format_table(results),
        "",
        f"Protocol: prompt `{proto.get('prompt')}`, greedy, max {proto.get('max_new_tokens')} new tokens, answer "
        f"read from `{proto.get('answer_label')}`, a row stops {_stop_words(proto)} or at "
        f"{', '.join(f'`{t}`' for t in proto.get('stop_texts', [])) or '-'}; data `{data.get('source')}` split `{data.get('split')}`, "
        f"{data.get('n')} problems (sha256 `{str(data.get('sha256'))[:12]}`). Tokens are the student tokenizer's "
        "generated tokens, averaged over all problems; Δ are against `base` (accuracy in points, length in %). "
        "`official` is the authors' checker (their gold parser, first answer, string compare) on the same generations.",
        "",
        *notes,
        PAPER_RESULT,
        "",
        f"![accuracy vs length]({png_name})",
        "",
    ]
    return "\n".join(lines)


def render_png(results: Sequence[tuple[str, dict]]) -> bytes:
    """Accuracy (%) against average generated tokens; curriculum rows joined by arrows, baselines as squares."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless

    fig = Figure(figsize=(6.4, 4.6), dpi=120)
    ax = fig.add_subplot()
    points = {name: (res["metrics"]["avg_tokens"], 100 * res["metrics"]["accuracy"])
              for name, res in results if res["metrics"].get("avg_tokens") is not None}
    chain = [name for name in CURRICULUM if name in points]
    for name, (x, y) in points.items():
        curriculum = name in CURRICULUM
        ax.scatter([x], [y], marker="o" if curriculum else "s", s=60, zorder=3,
                   color="tab:blue" if curriculum else "tab:orange", label=None if curriculum else name)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    for a, b in zip(chain, chain[1:]):
        ax.annotate("", xy=points[b], xytext=points[a],
                    arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 1.2, "shrinkA": 6, "shrinkB": 6})
    ax.set_xlabel("average generated tokens")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs length (curriculum: circles, baselines: squares)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def build_report(run_dir: str | Path) -> list[Path]:
    """Write ``report.md`` and ``report.png`` into ``run_dir`` from its stored results; returns both paths."""
    run_dir = Path(run_dir)
    results = collect_results(run_dir)
    if not results:
        raise EvalError(f"no evaluation results in {run_dir / EVAL_DIR} (expected <name>/{RESULTS}); "
                        f"run `cotrecipe eval --run {run_dir}` first")
    md, png = run_dir / REPORT_MD, run_dir / REPORT_PNG
    write_text(md, render_markdown(results, png.name))
    write_bytes(png, render_png(results))
    return [md, png]
