"""Training curves of a run from TRL's log history: ``report_curves.png`` and the learning-signal check.

Each trained entry's history is ``<run>/<entry>/trainer_log.json`` (written when it finishes), else the newest
checkpoint's ``trainer_state.json`` (an unfinished entry). Plotted by step: the reward mean and the mean completion
length (GRPO entries), the fraction of GRPO groups with a learning signal — ``1 - frac_reward_zero_std``, the groups
whose rewards differ, the only ones with a non-zero advantage — and the training loss (SFT entries, which log no
reward). A GRPO entry whose signal fraction stays near 0 learnt nothing: :func:`signal_note` says so.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path

from recipe.fsio import read_json
from recipe.store.rundir import TRAINER_DIR, TRAINER_LOG

log = logging.getLogger("recipe")

REPORT_CURVES_PNG = "report_curves.png"
SIGNAL_KEY = "frac_reward_zero_std"  # TRL GRPOTrainer: fraction of groups whose rewards all agree
NO_SIGNAL = 0.05  # mean fraction of groups with a learning signal at or below this: "stays near 0"
PANELS = (("reward", "reward mean (GRPO)"), ("completions/mean_length", "completion length, tokens (GRPO)"),
          ("signal", "groups with a learning signal (GRPO)"), ("loss", "training loss (SFT)"))


def load_history(entry_dir: str | Path) -> list[dict]:
    """An entry's TRL log history (finished: ``trainer_log.json``; unfinished: the newest checkpoint's), or [].
    A damaged log (truncated, empty, not JSON) is [] with a warning naming it: the curves are a view of the run, and
    one unreadable log must not stop the report or the end of a run."""
    entry_dir = Path(entry_dir)
    path = entry_dir / TRAINER_LOG
    if not path.is_file():
        states = sorted((entry_dir / TRAINER_DIR).glob("checkpoint-*/trainer_state.json"),
                        key=lambda p: int(p.parent.name.split("-")[-1]))
        path = states[-1] if states else None
    if path is None:
        return []
    try:
        data = read_json(path)
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("no training curves for %s: unreadable %s (%s: %s)", entry_dir.name, path,
                    type(exc).__name__, str(exc)[:80])
        return []
    history = data.get("log_history", []) if isinstance(data, dict) else data
    return [row for row in history if isinstance(row, dict)]


def is_grpo(history: list[dict]) -> bool:
    return any(SIGNAL_KEY in row for row in history)


def series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of one logged metric; ``key="signal"`` is ``1 - frac_reward_zero_std``.

    >>> series([{"step": 1, "frac_reward_zero_std": 0.75}, {"step": 2, "loss": 1.0}], "signal")
    ([1], [0.25])
    """
    source = SIGNAL_KEY if key == "signal" else key
    steps, values = [], []
    for row in history:
        value = row.get(source)
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in row:
            steps.append(row["step"])
            values.append(1.0 - value if key == "signal" else value)
    return steps, values


def signal_fraction(history: list[dict]) -> float | None:
    """Mean fraction of GRPO groups with a learning signal over the logged steps; None for a non-GRPO history."""
    _, values = series(history, "signal")
    return sum(values) / len(values) if values else None


def signal_note(name: str, history: list[dict]) -> str | None:
    """A warning when a GRPO entry's groups (almost) never had differing rewards, else None.

    >>> signal_note("stage2", [{"step": s, "frac_reward_zero_std": 1.0} for s in (1, 2)]).split(" (")[0]
    'stage2: only 0% of GRPO groups had a learning signal'
    >>> signal_note("stage2", [{"step": 1, "frac_reward_zero_std": 0.5}]) is None
    True
    """
    frac = signal_fraction(history)
    if frac is None or frac > NO_SIGNAL:
        return None
    return (f"{name}: only {100 * frac:.0f}% of GRPO groups had a learning signal (rewards that differ within the "
            f"group) over {len(series(history, 'signal')[0])} logged steps, so the advantages were ~0 and it learnt "
            "~nothing: every sample scored the same (e.g. all wrong); an easier task, more generations or a "
            "shaped reward would give it a signal")


def collect_histories(run_dir: str | Path) -> dict[str, list[dict]]:
    """``{entry name: history}`` for every entry folder of the run that logged training."""
    run_dir = Path(run_dir)
    out = {}
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir()) if run_dir.is_dir() else []:
        history = load_history(folder)
        if any("step" in row and ("loss" in row or "reward" in row) for row in history):
            out[folder.name] = history
    return out


def render_png(histories: Mapping[str, list[dict]]) -> bytes:
    """One panel per metric of :data:`PANELS` that some entry logged; one line per entry."""
    from matplotlib.figure import Figure  # lazy: matplotlib only when a report is drawn; no pyplot global state

    def shown(key: str, history: list[dict]) -> list[dict]:  # the loss panel is for SFT entries only
        return [] if key == "loss" and is_grpo(history) else history

    colours = {name: f"C{i % 10}" for i, name in enumerate(histories)}  # one colour per entry in every panel
    panels = [(key, title) for key, title in PANELS
              if any(series(shown(key, h), key)[0] for h in histories.values())]
    fig = Figure(figsize=(5.2 * max(1, len(panels)), 3.8), dpi=110)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels):
        for name, history in histories.items():
            steps, values = series(shown(key, history), key)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=name,
                        color=colours[name])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if key == "signal":
            ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
