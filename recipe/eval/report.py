"""``report.md`` and ``report.png`` of a run, built only from the stored ``eval/<name>/results.json`` files.

Rows: ``base``, ``stage1``, ``stage2``, ``stage3`` (those present, in curriculum order), then any other evaluated
model (baselines such as ``baseline-sft`` and ``baseline-grpo``) by name; rows, labels and what each row starts from
are the registry's (:mod:`recipe.entries`). Deltas are against ``base``; without a base
row they read "-". Below the table one sentence names the best row on accuracy and on tokens, then which row
to pick for what (:func:`pick_section`: paired tests against the most accurate row); the accuracy–length
frontier with each row's 95 % intervals (``report.png``, :mod:`recipe.eval.frontier`), the paired comparisons and the
training curves (``report_curves.png``, :mod:`recipe.eval.curves`) follow.

Drawing the figures takes a few tenths of a second of CPU each, most of a small report's time; with
``eval.figures: false`` in the run's config (the smoke preset, which checks the pipeline) ``report.md`` is written in
full without them and links no image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from recipe.config import safe_yaml
from recipe.entries import BASE, eval_name_of, row_of, starts_from_row
from recipe.entries import CURRICULUM_ROWS as CURRICULUM
from recipe.errors import EvalError
from recipe.eval import costs, curves, frontier, pairstats, targets
from recipe.fsio import read_json, read_jsonl, write_bytes, write_text
from recipe.store.rundir import CONFIG_FILE, EVAL_DIR, GENERATIONS, REPORT_MD, REPORT_PNG, RESULTS

log = logging.getLogger("recipe")

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
        found.append((row_of(path.parent.name), results))
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
    base = dict(results).get(BASE, {}).get("metrics")
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


def comparison_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Which rows the report compares, paired on the same problems: each row against the row it starts from
    (baselines start from the base model), the last curriculum stage against base, and each curriculum stage
    against each baseline.

    >>> comparison_pairs(["base", "stage1", "stage2", "baseline-sft"])
    [('stage1', 'base'), ('stage2', 'stage1'), ('baseline-sft', 'base'), ('stage2', 'base'), ('stage1', 'baseline-sft'), ('stage2', 'baseline-sft')]
    """
    present = set(names)
    stages = [n for n in names if n in CURRICULUM and n != BASE]
    baselines = [n for n in names if n not in CURRICULUM]
    pairs = [(n, starts_from_row(n)) for n in stages if starts_from_row(n) in present]
    pairs += [(n, BASE) for n in baselines if BASE in present]  # a row no entry claims is compared like a baseline
    if stages and BASE in present and (stages[-1], BASE) not in pairs:
        pairs.append((stages[-1], BASE))
    pairs += [(s, b) for s in stages for b in baselines]
    return pairs


def load_generations(run_dir: str | Path, names: Sequence[str]) -> dict[str, list[dict] | None]:
    """Each row's stored ``generations.jsonl`` (the per-problem rows the paired tests and the frontier's token
    intervals need); None for a row whose file is missing, unreadable or lacks ``id`` / ``correct``, with a warning."""
    found: dict[str, list[dict] | None] = {}
    for name in names:
        path = Path(run_dir) / EVAL_DIR / eval_name_of(name) / GENERATIONS
        try:
            data = read_jsonl(path)
        except (OSError, ValueError) as exc:
            log.warning("report: no per-problem statistics for %s (%s: %s)", name, type(exc).__name__,
                        str(exc)[:80])
            data = None
        found[name] = data if data and all(isinstance(r, dict) and "id" in r and "correct" in r
                                           for r in data) else None
    return found


def paired_comparisons(generations: Mapping[str, list[dict] | None], names: Sequence[str],
                       samples: int = pairstats.BOOTSTRAP_SAMPLES) -> list[pairstats.Paired]:
    """:func:`recipe.eval.pairstats.compare` for each of :func:`comparison_pairs`, from the rows' per-problem
    ``generations`` (:func:`load_generations`); a pair missing a row's generations is left out."""
    found = []
    for a, b in comparison_pairs(names):
        ra, rb = generations.get(a), generations.get(b)
        paired = pairstats.compare(a, ra, b, rb, samples=samples) if ra and rb else None
        if paired is not None:
            found.append(paired)
    return found


def paired_section(paired: Sequence[pairstats.Paired]) -> list[str]:
    """report.md lines: the verdict (only differences significant at 95 %) and the table behind it."""
    if not paired:
        return []
    head = ("| comparison | n | won | lost | Δ accuracy (pts) | McNemar p | Δ tokens | 95% CI (tokens) |",
            "|---|---|---|---|---|---|---|---|")
    body = [f"| {p.a} vs {p.b} | {p.n} | {p.won} | {p.lost} | {p.acc_diff:+.2f} | {p.p_value:.3g} | "
            f"{_fmt(p.tok_diff, '+.1f')} | {'-' if p.tok_ci is None else f'{p.tok_ci[0]:+.1f} to {p.tok_ci[1]:+.1f}'} |"
            for p in paired]
    return ["## Paired comparisons", "",
            "Verdict (paired on the same problems, 95 %): " + "; ".join(pairstats.describe(p) for p in paired) + ".",
            "", "Won/lost: problems the first row gets right and the second wrong, and the reverse; p is the exact "
            "McNemar test on those counts; the token interval is a paired bootstrap of the mean difference "
            f"({pairstats.BOOTSTRAP_SAMPLES:,} resamples of the problems, seed {pairstats.BOOTSTRAP_SEED}).", "",
            *head, *body, ""]


def recorded_config(run_dir: str | Path) -> dict:
    """The run's ``config.yaml`` as plain data ({} when absent or unreadable)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return safe_yaml.load_mapping(path.read_bytes(), str(path))
    except (OSError, ValueError):
        return {}


def _setting(config: dict, section: str, key: str, default):
    """``section.key`` of a recorded config when it has ``default``'s type, else ``default``."""
    value = config.get(section, {}).get(key, default) if isinstance(config.get(section), dict) else default
    return value if isinstance(value, type(default)) else default


def render_markdown(results: Sequence[tuple[str, dict]], png_name: str | None = REPORT_PNG,
                    histories: dict[str, list[dict]] | None = None,
                    paired: Sequence[pairstats.Paired] = (), note: str = "", cost: Sequence[str] = (),
                    points: Sequence[frontier.Point] = (), curves_png: str | None = curves.REPORT_CURVES_PNG,
                    picks: Sequence[str] = (), checked: Sequence[str] = ()) -> str:
    """The whole report.md; ``png_name`` / ``curves_png`` None: those figures were not drawn, so nothing links them.
    ``points`` default to the rows' own metrics (no token intervals without their generations); ``picks``: the lines
    of :func:`pick_section`; ``checked``: those of :func:`recipe.eval.targets.section`."""
    _, ref = results[0]
    proto, data = ref.get("protocol", {}), ref.get("data", {})
    notes = _mismatches(results)
    notes += [""] if notes else []
    lines = [
        "# cotrecipe report",
        "",
        *([f"> {' '.join(note.split())}", ""] if note else []),
        format_table(results),
        "",
        *([f"Point estimates (not tests; see the paired comparisons): {verdict(results)}", ""]
          if verdict(results) else []),
        *picks,
        *checked,
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
        *frontier.section(points or frontier.points(results, {}), png_name),
        *paired_section(paired),
        *curves_section(histories or {}, curves_png),
        *cost,
    ]
    return "\n".join(lines)


def verdict(results: Sequence[tuple[str, dict]]) -> str:
    """One sentence from the numbers: the best row on accuracy and the shortest on tokens, each against the next.

    >>> r = lambda acc, tok: {"metrics": {"accuracy": acc, "avg_tokens": tok, "n": 4}}
    >>> verdict([("base", r(0.5, 200.0)), ("stage3", r(0.75, 120.0)), ("baseline-grpo", r(0.7, 150.0))])
    'Best on accuracy: stage3 (75.0%), +5.0 points over baseline-grpo (70.0%). Fewest tokens: stage3 (120.0), 30.0 tokens (20.0%) fewer than baseline-grpo (150.0).'
    """
    rows = [(name, 100 * res["metrics"]["accuracy"], res["metrics"].get("avg_tokens")) for name, res in results]
    if len(rows) < 2:
        return ""
    by_acc = sorted(rows, key=lambda r: -r[1])
    (a, acc_a, _), (b, acc_b, _) = by_acc[0], by_acc[1]
    tie = " (tied)" if acc_a == acc_b else ""
    text = f"Best on accuracy: {a} ({acc_a:.1f}%){tie}, {acc_a - acc_b:+.1f} points over {b} ({acc_b:.1f}%)."
    by_tok = sorted((r for r in rows if r[2] is not None), key=lambda r: r[2])
    if len(by_tok) >= 2:
        (c, _, tok_c), (d, _, tok_d) = by_tok[0], by_tok[1]
        pct = f" ({100 * (tok_d - tok_c) / tok_d:.1f}%)" if tok_d else ""
        tie = " (tied)" if tok_c == tok_d else ""
        text += f" Fewest tokens: {c} ({tok_c:.1f}){tie}, {tok_d - tok_c:.1f} tokens{pct} fewer than {d} ({tok_d:.1f})."
    return text


def pick_section(found: Sequence[frontier.Point], generations: Mapping[str, list[dict] | None]) -> list[str]:
    """report.md lines telling a user which row to pick for what, from paired tests on the same problems: the most
    accurate row, the rows not detectably less accurate than it (exact McNemar p >= 0.05), the shortest of those, and
    what the shortest row of all costs in accuracy. Rows without per-problem generations or tokens are left out.

    >>> gen = lambda right, tok: [{"id": i, "correct": i < right, "n_tokens": tok} for i in range(40)]
    >>> found = [frontier.Point(n, 40, 2.5 * r, (0, 0), t, None) for n, r, t in
    ...          [("stage2", 20, 90.0), ("baseline-sft", 30, 140.0), ("stage3", 28, 100.0)]]
    >>> print("\\n".join(pick_section(found, {"stage2": gen(20, 90), "baseline-sft": gen(30, 140),
    ...                                        "stage3": gen(28, 100)})[2:5]))
    - For accuracy: **baseline-sft** (75.0 %, 140.0 tokens); not detectably less accurate on the same 40 problems: stage3 (70.0 %, p = 0.5); detectably less: stage2 (50.0 %, p = 0.002).
    - For short answers at that accuracy: **stage3** (100.0 tokens, 28.6 % fewer than baseline-sft).
    - Shortest of all: stage2 (90.0 tokens), 25.0 points less accurate than baseline-sft (p = 0.002).
    """
    rows = [p for p in found if p.tokens is not None and generations.get(p.name)]
    if len(rows) < 2:
        return []
    best = max(rows, key=lambda p: (p.accuracy, -p.tokens))
    tests = {p.name: pairstats.compare(p.name, generations[p.name], best.name, generations[best.name])
             for p in rows if p is not best}
    rows = [p for p in rows if p is best or tests[p.name] is not None]  # a row on other problems cannot be paired
    if len(rows) < 2:
        return []
    level = [best] + [p for p in rows if p is not best and not tests[p.name].acc_significant]
    below = [p for p in rows if p not in level]
    short, shortest = min(level, key=lambda p: p.tokens), min(rows, key=lambda p: p.tokens)

    def row(p: frontier.Point) -> str:
        return f"{p.name} ({p.accuracy:.1f} %, p = {tests[p.name].p_value:.2g})"

    n = min(tests[p.name].n for p in rows if p is not best)
    same = f"not detectably less accurate on the same {n} problems: {', '.join(row(p) for p in level[1:]) or 'none'}"
    less = f"; detectably less: {', '.join(row(p) for p in below)}" if below else ""
    text = [f"- For accuracy: **{best.name}** ({best.accuracy:.1f} %, {best.tokens:.1f} tokens); {same}{less}."]
    if short is best:
        text.append(f"- For short answers at that accuracy: {best.name} itself (none of the rows above is shorter).")
    else:
        text.append(f"- For short answers at that accuracy: **{short.name}** ({short.tokens:.1f} tokens, "
                    f"{100 * (1 - short.tokens / best.tokens):.1f} % fewer than {best.name}).")
    if shortest is not short:
        test = tests[shortest.name]
        text.append(f"- Shortest of all: {shortest.name} ({shortest.tokens:.1f} tokens), {-test.acc_diff:.1f} points "
                    f"less accurate than {best.name} (p = {test.p_value:.2g}).")
    return ["## Which row to pick", "", *text, ""]


def curves_section(histories: dict[str, list[dict]], png_name: str | None) -> list[str]:
    """report.md lines for the training curves: a warning per GRPO entry without signal and the image link (none when
    ``png_name`` is None: the figure was not drawn)."""
    if not histories:
        return []
    lines = ["## Training curves", "",
             f"By step, from TRL's log history: reward mean, completion length and the fraction of GRPO groups with a "
             f"learning signal (1 - `{curves.SIGNAL_KEY}`) for {', '.join(histories)}; SFT entries show their loss.",
             ""]
    for name, history in histories.items():
        frac = curves.signal_fraction(history)
        if frac is not None:
            lines.append(f"- {name}: {100 * frac:.0f}% of GRPO groups had a learning signal (mean over steps).")
    notes = [n for n in (curves.signal_note(name, h) for name, h in histories.items()) if n]
    lines += [""] + [f"> **Warning**: {n}." for n in notes] + ([""] if notes else [])
    return lines + ([f"![training curves]({png_name})", ""] if png_name else [])


def build_report(run_dir: str | Path, figures: bool | None = None) -> list[Path]:
    """Write ``report.md``, ``report.png`` and (when entries logged training) ``report_curves.png`` into
    ``run_dir`` from its stored results and trainer logs; returns the paths written. ``figures`` False writes report.md
    alone, linking no image; None: the run's recorded ``eval.figures`` (true when the run has no config)."""
    run_dir = Path(run_dir)
    results = collect_results(run_dir)
    if not results:
        raise EvalError(f"no evaluation results in {run_dir / EVAL_DIR} (expected <name>/{RESULTS}); "
                        f"run `cotrecipe eval --run {run_dir}` first")
    config = recorded_config(run_dir)
    figures = _setting(config, "eval", "figures", True) if figures is None else figures
    md, png, curves_png = run_dir / REPORT_MD, run_dir / REPORT_PNG, run_dir / curves.REPORT_CURVES_PNG
    names = [name for name, _ in results]
    histories = curves.collect_histories(run_dir)
    generations = load_generations(run_dir, names)
    points, paired = frontier.points(results, generations), paired_comparisons(generations, names)
    write_text(md, render_markdown(results, png.name if figures else None, histories, paired,
                                   _setting(config, "run", "report_note", "").strip(),
                                   costs.cost_section(run_dir), points,
                                   curves_png.name if figures and histories else None,
                                   pick_section(points, generations), targets.section(points, paired)))
    if not figures:
        return [md]
    write_bytes(png, frontier.render_png(points))
    if not histories:
        return [md, png]
    write_bytes(curves_png, curves.render_png(histories))
    return [md, png, curves_png]
