"""What a run cost, read from its folder: each task's wall time and peak memory (the manifest's training records and
each evaluation's ``results.json``), the training budgets side by side (tokens TRL processed, both phases' for an
entry with an SFT phase; GRPO completions sampled: does each baseline match the curriculum?) and the ``run-all``
invocations' wall time (:data:`recipe.store.rundir.INVOCATIONS`). The report's "Cost" section (:func:`cost_section`)."""

from __future__ import annotations

from pathlib import Path

from recipe.entries import BASELINES, ENTRIES, STAGES
from recipe.fsio import iter_jsonl, read_json
from recipe.store.rundir import ENTRIES_KEY, EVAL_DIR, INVOCATIONS, MANIFEST_FILE, RESULTS, trained_tokens


def _read(path: Path) -> object:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _tokens(run_dir: Path, name: str) -> int | None:
    try:
        return trained_tokens(run_dir, name)
    except (OSError, ValueError):  # a damaged log leaves a "-" in the report, not a failed report
        return None


def sampled_completions(record: dict) -> int | None:
    """GRPO completions sampled by a finished training record: optimizer steps x per-device batch x accumulation x
    processes / iterations per generation batch (None for an SFT entry).

    >>> sampled_completions({"metrics": {"steps": 40}, "processes": 1, "trainer_config": {"num_generations": 4,
    ...     "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "num_iterations": 1}})
    640
    """
    args, steps = record.get("trainer_config", {}), record.get("metrics", {}).get("steps")
    if "num_generations" not in args or not isinstance(steps, int):
        return None
    per_step = args.get("per_device_train_batch_size", 0) * args.get("gradient_accumulation_steps", 1)
    return steps * per_step * int(record.get("processes") or 1) // max(1, int(args.get("num_iterations") or 1))


def _minutes(seconds: object) -> str:
    return f"{seconds / 60:.1f}" if isinstance(seconds, (int, float)) else "-"


def _gb(mb: object) -> str:
    return f"{mb / 1024:.1f}" if isinstance(mb, (int, float)) else "-"


def _count(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def task_rows(run_dir: Path) -> list[dict]:
    """One row per finished training entry (run order) and per evaluation: task, wall_s, peak_rss_mb, tokens,
    completions."""
    manifest = _read(run_dir / MANIFEST_FILE)
    records = manifest.get(ENTRIES_KEY, {}) if isinstance(manifest, dict) else {}
    rows = []
    for name in ENTRIES:
        record = records.get(name)
        if not isinstance(record, dict) or record.get("status") != "done":
            continue
        task = f"{name} (copied from the cache)" if record.get("cached_from") else name  # recipe.train.warm_cache
        rows.append({"task": task, "wall_s": record.get("wall_s"), "peak_rss_mb": record.get("peak_rss_mb"),
                     "tokens": _tokens(run_dir, name),
                     "completions": sampled_completions(record)})
        if "sft_phase" in record:  # an SFT phase first, in <entry>/sft (baseline-concise): both phases' tokens
            phase, own = _tokens(run_dir / name, "sft"), rows[-1]["tokens"]
            rows[-1].update(sft_tokens=phase, tokens=phase + own if isinstance(phase, int) and isinstance(own, int)
                            else None)
    for path in sorted((run_dir / EVAL_DIR).glob(f"*/{RESULTS}")):
        results = _read(path)
        if isinstance(results, dict):
            rows.append({"task": f"eval:{path.parent.name}", "wall_s": results.get("wall_s"),
                         "peak_rss_mb": results.get("peak_rss_mb"), "tokens": None, "completions": None})
    return rows


def budget_lines(rows: list[dict]) -> list[str]:
    """The baselines' budgets beside the curriculum's: tokens for the SFT baseline, completions for plain GRPO, and
    for the concise-RL baseline its SFT phase's tokens beside stage 1's and its completions beside stages 2+3's."""
    by = {r["task"]: r for r in rows}
    stages = [s for s in STAGES if s in by]
    lines = []
    tokens = [by[s]["tokens"] for s in stages]
    sft = by.get(BASELINES["sft"], {}).get("tokens")
    if stages and all(isinstance(t, int) for t in tokens) and isinstance(sft, int):
        total = sum(tokens)
        lines.append(f"- Tokens trained: curriculum ({' + '.join(stages)}) {total:,}; {BASELINES['sft']} {sft:,} "
                     f"({sft / total:.3f}x the curriculum's).")
    grpo_stages = [s for s in stages if isinstance(by[s]["completions"], int)]
    sampled = sum(by[s]["completions"] for s in grpo_stages)
    grpo = by.get(BASELINES["grpo"], {}).get("completions")
    if grpo_stages and isinstance(grpo, int):
        lines.append(f"- Completions sampled: curriculum ({' + '.join(grpo_stages)}) {sampled:,}; {BASELINES['grpo']} "
                     f"{grpo:,} ({grpo / sampled:.3f}x).")
    concise = by.get(BASELINES["concise"], {})
    parts = []
    phase, stage1 = concise.get("sft_tokens"), by.get("stage1", {}).get("tokens")
    if isinstance(phase, int) and isinstance(stage1, int) and stage1:
        parts.append(f"SFT phase {phase:,} tokens against stage1's {stage1:,} ({phase / stage1:.3f}x)")
    if grpo_stages and sampled and isinstance(concise.get("completions"), int):
        parts.append(f"GRPO phase {concise['completions']:,} completions against {' + '.join(grpo_stages)}'s "
                     f"{sampled:,} ({concise['completions'] / sampled:.3f}x)")
    if parts:
        lines.append(f"- {BASELINES['concise']}: {'; '.join(parts)}.")
    return lines


def invocation_lines(run_dir: Path) -> list[str]:
    """The ``run-all`` invocations of this folder: wall time, entries at once, resumed or from scratch."""
    path = run_dir / INVOCATIONS
    try:  # a damaged line (a run killed while appending, a hand edit) drops that line's record, not the report
        rows = [value for _, value, reason in iter_jsonl(path.read_bytes()) if reason is None] if path.is_file() else []
    except OSError:
        rows = []
    calls = [c for c in rows if isinstance(c, dict)]
    lines = []
    for call in calls:
        how = ("from an empty run directory" if not call.get("done_before")
               else f"resuming ({', '.join(call['done_before'])} done before)")
        lines.append(f"- `run-all` {how}: {_minutes(call.get('wall_s'))} min wall ({call.get('started')} to "
                     f"{call.get('ended')}), {call.get('parallel_entries', 1)} task(s) at once; largest child "
                     f"process {_gb(call.get('peak_rss_mb_child'))} GB peak RSS, the parent "
                     f"{_gb(call.get('peak_rss_mb_self'))} GB.")
    return lines


def cost_section(run_dir: str | Path) -> list[str]:
    """report.md lines: the invocations, the budgets, and a table of each task's wall time and peak memory."""
    run_dir = Path(run_dir)
    rows = task_rows(run_dir)
    if not rows:
        return []
    table = ["| task | wall (min) | peak RSS (GB) | tokens trained | completions sampled |", "|---|---|---|---|---|"]
    table += [f"| {r['task']} | {_minutes(r['wall_s'])} | {_gb(r['peak_rss_mb'])} | {_count(r['tokens'])} | "
              f"{_count(r['completions'])} |" for r in rows]
    return ["## Cost", "", *invocation_lines(run_dir), *budget_lines(rows), "",
            "Wall: a training entry from its start to its saved weights; an evaluation's generation (model loading "
            "left out). Peak RSS: the process's resident peak when the task ended (in one process, it includes the "
            "tasks before). Tokens: TRL's `num_tokens` (prompt and completion tokens processed).", "",
            *table, ""]
