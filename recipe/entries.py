"""The registry of run entries: one declarative table of what a run can train, read by the orchestrator, the run
directory and its manifest, the report, the CLI and the config check (README, "Run directory").

An *entry* is a trainable unit of a run: the optional warm-up, a curriculum stage or a baseline. Each owns the folder
``<run>/<name>/``, the manifest record ``entries.<name>``, the evaluation folder ``eval/<eval_name>/`` and the report
row ``label``. Adding one = a ``recipe/train/<module>.py`` with ``run(cfg, entry_dir, init_from) -> record``, a line
in :data:`ENTRIES` and, for a baseline, its config section.

May import: nothing of the project. It is plain data, low enough for ``recipe.config`` (the allowed
``run.baselines`` keys and ``eval.stages`` names) and ``recipe.eval`` (row order, starts-from pairs) to read it; the
orchestrator imports each entry's train module by the name given here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BASE = "base"  # the report row and eval folder of the run's base model (not an entry: nothing trains it)


@dataclass(frozen=True)
class Entry:
    """One trainable entry of a run."""

    name: str  # manifest key under "entries", folder <run>/<name>/, the name `cotrecipe eval --stage` takes
    kind: Literal["warmup", "stage", "baseline"]
    title: str  # what it does, logged when it starts
    trainer: Literal["sft", "grpo"]  # the TRL trainer it runs (its last one, for an entry with an SFT phase first)
    module: str  # its recipe.train module: builds its dataset from its slices and trains (``run(cfg, dir, from)``)
    sections: tuple[str, ...]  # config sections (besides model, data and run.seed) its weights depend on
    data_slices: tuple[str, ...]  # the train slices it reads: data.<slice>_rows
    starts_from: str | None = None  # the entry whose weights it starts from; None: the run's base model
    eval_name: str | None = None  # its folder under eval/ (None: not evaluated, as the warm-up)
    label: str = ""  # its report row ("" = eval_name)
    baseline_key: str | None = None  # its key in run.baselines and `cotrecipe baseline KEY`
    cli_help: str = ""  # the help of its own CLI command (stages: `cotrecipe <name>`)

    @property
    def row(self) -> str | None:
        """The report row label (None when it is not evaluated)."""
        return self.label or self.eval_name


def _table(*entries: Entry) -> dict[str, Entry]:
    return {e.name: e for e in entries}


ENTRIES: dict[str, Entry] = _table(
    # not in the paper, off by default: its merged weights become the run's base model (the orchestrator's with_base)
    Entry("warmup", "warmup", "warm-up (SFT on full teacher rationales, merged into the base weights)", "sft",
          "recipe.train.warmup", ("warmup",), ("warmup",)),
    Entry("stage1", "stage", "structure (SFT, masked shuffled reconstruction)", "sft", "recipe.train.stage1",
          ("stage1",), ("stage1",), eval_name="stage1",
          cli_help="Stage 1: SFT on masked shuffled reconstruction."),
    Entry("stage2", "stage", "brevity (GRPO, masked completion)", "grpo", "recipe.train.stage2",
          ("stage1", "stage2"), ("stage2",), starts_from="stage1", eval_name="stage2",
          cli_help="Stage 2: GRPO on masked completion with the gated brevity reward."),
    Entry("stage3", "stage", "internalisation (persistent failures, GRPO rewriting)", "grpo", "recipe.train.stage3",
          ("stage1", "stage2", "stage3"), ("stage3",), starts_from="stage2", eval_name="stage3",
          cli_help="Stage 3: mine persistent failures, GRPO on shorter rewrites of the teacher solution."),
    # its weights depend on the stage-1 budget it borrows
    Entry("baseline-sft", "baseline", "SFT baseline (full teacher rationales, stage-1 budget)", "sft",
          "recipe.train.baseline_sft", ("stage1", "baseline_sft"), ("stage1", "stage2"), eval_name="baseline-sft",
          baseline_key="sft"),
    # plain GRPO from the base model; its step count is matched to stages 2+3 and it borrows stage 2's trainer
    Entry("baseline-grpo", "baseline", "plain GRPO baseline (no teacher, no SFT; stages 2+3's sampled completions)",
          "grpo", "recipe.train.baseline_grpo", ("stage2", "stage3", "baseline_grpo"), ("stage1", "stage2"),
          eval_name="baseline-grpo", baseline_key="grpo"),
    # the SFT baseline's trainer at stage 1's budget, then baseline-grpo's budget with a length bonus for groups that
    # are all right; both phases in its own folder (the SFT phase in <run>/baseline-concise/sft/)
    Entry("baseline-concise", "baseline", "concise-RL baseline (SFT on full teacher rationales at stage 1's budget, "
          "then GRPO with a length bonus for all-correct groups at stages 2+3's sampled completions)", "grpo",
          "recipe.train.baseline_concise", ("stage1", "stage2", "stage3", "baseline_concise"), ("stage1", "stage2"),
          eval_name="baseline-concise", baseline_key="concise"),
)


def of_kind(kind: str) -> tuple[str, ...]:
    """Names of the entries of one kind, in table order.

    >>> of_kind("stage")
    ('stage1', 'stage2', 'stage3')
    """
    return tuple(e.name for e in ENTRIES.values() if e.kind == kind)


STAGES = of_kind("stage")  # the curriculum, in training order
BASELINES = {e.baseline_key: e.name for e in ENTRIES.values() if e.baseline_key}  # run.baselines key -> entry
EVAL_STAGES = (BASE, *(ENTRIES[s].eval_name for s in STAGES))  # what eval.stages may list
# report rows of the base model and the curriculum, in training order (other rows follow by name)
CURRICULUM_ROWS = (BASE, *(ENTRIES[s].row for s in STAGES))


def row_of(eval_name: str) -> str:
    """The report label of an eval folder (one no entry claims keeps its folder name).

    >>> row_of("stage2"), row_of("base"), row_of("my-own-model")
    ('stage2', 'base', 'my-own-model')
    """
    return next((e.row for e in ENTRIES.values() if e.eval_name == eval_name and e.row), eval_name)


def eval_name_of(row: str) -> str:
    """The eval folder of a report row (the inverse of :func:`row_of`).

    >>> eval_name_of("stage3"), eval_name_of("base")
    ('stage3', 'base')
    """
    return next((e.eval_name for e in ENTRIES.values() if e.row == row and e.eval_name), row)


def starts_from_row(row: str) -> str | None:
    """The report row an entry's training starts from (``base`` for the run's base model); None for ``base`` and
    rows no entry claims.

    >>> starts_from_row("stage2"), starts_from_row("stage1"), starts_from_row("baseline-sft"), starts_from_row("base")
    ('stage1', 'base', 'base', None)
    """
    entry = next((e for e in ENTRIES.values() if e.row == row), None)
    if entry is None:
        return None
    return ENTRIES[entry.starts_from].row if entry.starts_from else BASE
