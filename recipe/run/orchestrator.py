"""The run orchestrator: ``run-all``, one stage, a baseline, and evaluating a run — all through the registry of
trainable entries (:mod:`recipe.entries`) and one run directory (:mod:`recipe.store.rundir`).

``run-all`` trains stage 1 -> 2 -> 3, then the baselines listed in ``run.baselines``, then evaluates and writes the
report. Resume: the same command again skips entries whose status is ``done`` and continues an unfinished one from
its last complete TRL checkpoint. With ``run.process_per_entry`` (auto: on with CUDA) each entry and the evaluation
run in their own child process (:mod:`recipe.run.subrun`; evaluation: one child per vLLM engine base,
:func:`eval_groups`); this process then only orchestrates and never creates a CUDA context (its fit check reads the
card through ``nvidia-smi``, :func:`recipe.tools.gpu_memory.gpu_total_gib`). With
``run.parallel_entries`` >= 2 (CPU runs) up to that many of those children run at once (:mod:`recipe.run.parallel`). A baseline is one more
entry: same manifest record, resume, config check, evaluation and report row. Adding one = a ``train/<name>.py``
with ``run(cfg, entry_dir, init_from)`` and a line in :data:`recipe.entries.ENTRIES` (its train function is
looked up here, :data:`TRAINERS`).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from recipe import dist
from recipe.config.core import Config
from recipe.data.gsm8k import check_disjoint_slices, check_source
from recipe.entries import BASE, BASELINES, ENTRIES, STAGES
from recipe.errors import EvalError, RunError
from recipe.eval import curves, engine, evaluate
from recipe.eval.report import build_report
from recipe.models import model as model_mod
from recipe.models.integrity import weights_dir_problem
from recipe.run import forkserver, parallel, subrun
from recipe.store import rundir
from recipe.store.runlock import locked
from recipe.tools import plan
from recipe.train import baseline_concise, baseline_grpo, baseline_sft, grpo, sft, stage1, stage2, stage3, warmup

log = logging.getLogger("recipe")

# Each entry's train function, ``run(cfg, entry_dir, init_from, **entry_inputs(...)) -> record`` of the recipe.train
# module the registry names (imported here, at the top layer and in plain sight of the import-graph test, so that the registry stays
# plain data); a test swaps one here.
_TRAIN_MODULES = {m.__name__: m for m in (warmup, stage1, stage2, stage3, baseline_sft, baseline_grpo,
                                           baseline_concise)}
TRAINERS: dict[str, Callable[..., dict]] = {
    name: _TRAIN_MODULES[entry.module].run for name, entry in ENTRIES.items()}


def overall_bar(done: int, total: int, width: int = 12) -> str:
    """The run-all progress line's bar (each stage also has TRL's own progress bar).

    >>> overall_bar(1, 3)
    'curriculum [####--------] 1/3'
    """
    filled = round(width * done / total)
    return f"curriculum [{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


def _short_metrics(metrics: dict) -> str:
    keys = ("loss_last", "reward_first", "reward_last", "completions/mean_length_first",
            "completions/mean_length_last", "failures")
    return ", ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                     for k in keys if k in metrics) or "-"


def _warn_overlapping_slices(cfg: Config) -> None:
    """Disjoint stage slices are the default; an overlap (the paper preset mines stage 3 over stage 2's rows too) is
    allowed but said out loud."""
    try:
        check_disjoint_slices({s: getattr(cfg.data, f"{s}_rows") for s in ("warmup", *STAGES)
                               if getattr(cfg, s).enabled})
    except ValueError as exc:
        log.warning("%s: those problems are seen by more than one stage", exc)


def check_data(cfg: Config, names: Sequence[str], eval_split: bool) -> None:
    """Before any model loads: the train slices ``names`` read must fit the parsed rows, and (``eval_split``) the
    eval split must parse to at least one problem. A :class:`~recipe.data.gsm8k.DataError` names source, split and slice."""
    slices = {s: getattr(cfg.data, f"{s}_rows") for name in names if name in ENTRIES
              for s in ENTRIES[name].data_slices}
    if slices:
        check_source(cfg.data.source, "train", slices, strict=cfg.data.strict, annotations=cfg.data.annotations)
    if eval_split:
        check_source(cfg.data.eval_source or cfg.data.source, cfg.eval.split, strict=cfg.data.strict,
                     annotations=cfg.data.annotations)


def open_run(cfg: Config, force: bool = False) -> tuple[Path, dict]:
    """Reopen or create the run directory (the caller holds its lock; under a launcher only rank 0 takes it)."""
    dist.init(cpu=cfg.run.device == "cpu")  # under accelerate launch: join the process group (no-op otherwise)
    # Rank 0 checks and writes first; the others then read the manifest it wrote (nothing is left for them to change)
    with dist.main_process_first():
        run_dir, manifest = rundir.open_run(cfg, ENTRIES, force)
        model_mod.resolve_model_path(cfg.model)  # builtin models are built once, by rank 0, before anyone loads them
    dist.barrier()  # and every rank starts training together
    if dist.is_main():
        _warn_overlapping_slices(cfg)
    return run_dir, manifest


def with_base(cfg: Config, run_dir: Path, manifest: dict) -> Config:
    """The config entries train and evaluate with: with ``warmup.enabled`` the model is the warm-up's merged weights
    (it must be done), else ``cfg`` itself. Manifest records keep the config as given (``cfg``), so a resume compares
    like with like."""
    if not cfg.warmup.enabled:
        return cfg
    if not rundir.is_done(manifest, "warmup"):
        raise RunError(f"warmup.enabled but the warm-up of {run_dir} is not finished; run `cotrecipe run-all` "
                       "(it trains the warm-up first)")
    base = rundir.absolute(run_dir, manifest[rundir.ENTRIES_KEY]["warmup"]["output"])
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=base))


def train_entry(cfg: Config, run_dir: Path, manifest: dict, name: str, init_from: str | None) -> dict:
    """Train one entry into ``run_dir/<name>`` with its manifest record (running -> done | failed); every entry but
    the warm-up starts from the run's base model (:func:`with_base`)."""
    entry = ENTRIES[name]
    train_cfg = cfg if entry.kind == "warmup" else with_base(cfg, run_dir, manifest)
    rundir.mark_running(run_dir, manifest, cfg, entry, init_from)
    t0 = time.monotonic()
    try:
        result = TRAINERS[name](train_cfg, rundir.entry_dir(run_dir, name), init_from,
                                **entry_inputs(cfg, run_dir, name))
    except BaseException as exc:
        rundir.mark_failed(run_dir, manifest, name, exc)
        raise
    result = {**result, "peak_rss_mb": rundir.peak_rss_mb()}  # the process's peak so far (a child: this entry's)
    record = rundir.mark_done(run_dir, manifest, name, result, time.monotonic() - t0)
    log.info("%s done in %.1f s: %s", name, record["wall_s"], _short_metrics(result.get("metrics", {})))
    note = curves.signal_note(name, curves.load_history(rundir.entry_dir(run_dir, name)))
    if note:
        log.warning(note)
    return record


def curriculum_tokens(run_dir: Path, stages: Sequence[str] = STAGES) -> dict[str, int]:
    """Tokens each finished curriculum stage processed: the last ``num_tokens`` of its ``trainer_log.json``."""
    counts = {stage: rundir.trained_tokens(run_dir, stage) for stage in stages}
    return {stage: n for stage, n in counts.items() if n is not None}


def entry_inputs(cfg: Config, run_dir: Path, name: str) -> dict:
    """What an entry's ``run`` is given besides its config, folder and starting weights, read from the other
    entries of the run: for the SFT baseline with ``baseline_sft.budget=tokens``, the curriculum's tokens
    (:func:`curriculum_tokens` of its enabled stages), which it matches."""
    if name != BASELINES["sft"] or cfg.baseline_sft.budget != "tokens":
        return {}
    spent = curriculum_tokens(run_dir, [s for s in STAGES if getattr(cfg, s).enabled])
    if not spent:
        raise RunError("baseline_sft.budget=tokens matches the curriculum's tokens, but no stage of "
                       f"{run_dir} has a trainer log yet; train the stages first (run-all does)")
    return {"curriculum_tokens": spent}


def _upstream_output(run_dir: Path, manifest: dict, name: str) -> str | None:
    up = ENTRIES[name].starts_from
    if up is None:
        return None
    if rundir.is_done(manifest, up):
        return rundir.absolute(run_dir, manifest[rundir.ENTRIES_KEY][up].get("output"))
    log.warning("%s is not done in %s and no --from was given: %s starts from the base model", up, run_dir, name)
    return None


def _check_trainer_sections(cfg: Config) -> None:
    """Every enabled trainer section through TRL's own checks (its config built for a folder never written), so a
    value TRL refuses stops a command before its run directory is made. Built for the CPU: TRL's config sets up its
    device when built, and the run-all parent must not set up a GPU. Not under a multi-process launch (building TRL's
    config sets up the ranks' process group) nor where Unsloth will train in this process (it must be imported
    before TRL): there each entry's own config build checks them."""
    if dist.is_distributed() or (cfg.model.backend == "unsloth" and not subrun.use_children(cfg)):
        return
    with tempfile.TemporaryDirectory(prefix="cotrecipe-check-") as folder:
        for name in ("warmup", "stage1"):
            if getattr(cfg, name).enabled:
                sft.sft_args(cfg, folder, name, for_check=True)
        for name in ("stage2", "stage3"):
            if getattr(cfg, name).enabled:
                grpo.grpo_args(cfg, name, folder, for_check=True)


def run_all(cfg: Config, force: bool = False) -> Path:
    """Stage 1 -> 2 -> 3 and the configured baselines (skipping finished ones), then evaluation and the report."""
    _check_trainer_sections(cfg)
    rundir.run_path(cfg).mkdir(parents=True, exist_ok=True)
    with locked(rundir.run_path(cfg)):
        started, t0 = rundir.now(), time.monotonic()
        # entries finished before this invocation: done now with the record they had then (timestamps are to the
        # second, too coarse to tell an entry started in this invocation's first second from an earlier one)
        before = rundir.load_manifest(rundir.run_path(cfg))[rundir.ENTRIES_KEY]
        try:
            run_dir = _run_all(cfg, force)
        finally:  # its forks are done or stopped: collected, their CPU time and peak memory count as this process's
            forkserver.stop_server()  # children's (the cost record below reads the peak)
        if dist.is_main():  # the report's cost section reads this (recipe/eval/costs.py): rebuilt with it
            records = rundir.load_manifest(run_dir)[rundir.ENTRIES_KEY]
            done_before = [n for n, r in records.items() if r.get("status") == "done"
                           and before.get(n, {}).get("status") == "done" and before[n].get("started") == r.get("started")]
            rundir.record_invocation(run_dir, {
                "started": started, "ended": rundir.now(), "wall_s": round(time.monotonic() - t0, 1),
                "parallel_entries": cfg.run.parallel_entries, "done_before": done_before,
                "peak_rss_mb_child": rundir.peak_rss_mb(children=True),
                "peak_rss_mb_self": rundir.peak_rss_mb()})
            if cfg.eval.enabled and any((run_dir / rundir.EVAL_DIR).glob(f"*/{rundir.RESULTS}")):
                build_report(run_dir)
        return run_dir


def _train(cfg: Config, run_dir: Path, manifest: dict, name: str, init_from: str | None, child: bool) -> dict:
    """Train ``name`` here or (``child``) in its own process; returns the manifest as it now stands."""
    if not child:
        train_entry(cfg, run_dir, manifest, name, init_from)
        return manifest
    subrun.train_entry(run_dir, name, init_from)
    return subrun.check_done(run_dir, name)


def _run_all(cfg: Config, force: bool) -> Path:
    lanes = parallel.lanes(cfg)  # run.parallel_entries (refused with CUDA before anything is written)
    run_dir, manifest = open_run(cfg, force)
    child = lanes == 1 and subrun.use_children(cfg)
    todo = [s for s in STAGES if getattr(cfg, s).enabled and not rundir.is_done(manifest, s)]
    todo += [BASELINES[k] for k in cfg.run.baselines if not rundir.is_done(manifest, BASELINES[k])]
    if cfg.warmup.enabled and not rundir.is_done(manifest, "warmup"):
        todo.insert(0, "warmup")
    check_data(cfg, todo, eval_split=cfg.eval.enabled)
    if todo and dist.is_main():
        for line in plan.check_fits(cfg):  # on CUDA only: `cotrecipe plan`'s estimate against this card
            log.warning(line)
    if lanes > 1:  # entries side by side, each in a child process (recipe.run.parallel)
        parallel.run_all(cfg, run_dir, manifest, lanes)
        return run_dir
    if todo and todo[0] == "warmup":
        log.info("warmup: %s", ENTRIES["warmup"].title)
        manifest = _train(cfg, run_dir, manifest, "warmup", None, child)
    init_from: str | None = None
    enabled = [s for s in STAGES if getattr(cfg, s).enabled]
    for n, stage in enumerate(STAGES, start=1):
        bar = overall_bar(n - 1, len(STAGES))
        if not getattr(cfg, stage).enabled:
            log.info("%s %s disabled in the config; skipped", bar, stage)
            continue
        if rundir.is_done(manifest, stage):
            log.info("%s %s already done; skipped", bar, stage)
        else:
            log.info("%s %s: %s", bar, stage, ENTRIES[stage].title)
            manifest = _train(cfg, run_dir, manifest, stage, init_from, child)
        init_from = rundir.absolute(run_dir, manifest[rundir.ENTRIES_KEY][stage].get("output")) or init_from
    log.info("%s stages finished: %s", overall_bar(len(STAGES), len(STAGES)), ", ".join(enabled) or "none")
    for key in cfg.run.baselines:
        name = BASELINES[key]
        if rundir.is_done(manifest, name):
            log.info("%s already done; skipped", name)
        else:
            log.info("%s: %s", name, ENTRIES[name].title)
            manifest = _train(cfg, run_dir, manifest, name, None, child)
    if cfg.eval.enabled:
        if child:
            evaluate_in_children(cfg, run_dir)
        else:
            evaluate_run(cfg, run_dir)
    return run_dir


def run_one(cfg: Config, name: str, init_from: str | None = None, force: bool = False, check: bool = True) -> Path:
    """Train one entry (a stage or a baseline) in the run directory. Its starting weights: ``init_from``
    (``--from``), else its upstream entry's output. ``force`` retrains a finished entry and marks what starts from it
    stale (as run-all's config check does). ``check`` False: the command that started this one checked the trainer
    sections already (a run's child process)."""
    if check:
        _check_trainer_sections(cfg)
    rundir.run_path(cfg).mkdir(parents=True, exist_ok=True)
    with locked(rundir.run_path(cfg)):
        return _run_one(cfg, name, init_from, force)


def _run_one(cfg: Config, name: str, init_from: str | None, force: bool) -> Path:
    run_dir, manifest = open_run(cfg, force=force)
    if rundir.is_done(manifest, name) and not force:
        log.info("%s already done in %s; pass --force to rerun it", name, run_dir)
        return run_dir
    if rundir.is_done(manifest, name):
        rundir.invalidate(run_dir, manifest, ENTRIES, name, f"--force on {name}")
        dist.barrier()  # rank 0 removed the folders
    if init_from is None:
        init_from = _upstream_output(run_dir, manifest, name)
    elif not Path(init_from).exists():
        raise RunError(f"--from path not found: {init_from}")
    check_data(cfg, [name], eval_split=False)
    train_entry(cfg, run_dir, manifest, name, init_from)
    return run_dir


def run_baseline(cfg: Config, key: str, force: bool = False) -> list[Path]:
    """``cotrecipe baseline KEY``: train the baseline entry (resumable), evaluate it, rebuild the report. With
    ``run.process_per_entry`` training and evaluation each run in a child process, as in ``run-all``."""
    name = BASELINES[key]
    _check_trainer_sections(cfg)
    rundir.run_path(cfg).mkdir(parents=True, exist_ok=True)
    with locked(rundir.run_path(cfg)):
        if not subrun.use_children(cfg):
            run_dir = run_one(cfg, name, force=force, check=False)
            return evaluate_run(cfg, run_dir, names=[name])
        run_dir, manifest = open_run(cfg, force=force)
        if rundir.is_done(manifest, name) and force:
            rundir.invalidate(run_dir, manifest, ENTRIES, name, f"--force on {name}")
        if not rundir.is_done(manifest, name):
            _train(cfg, run_dir, manifest, name, None, child=True)
        evaluate_in_children(cfg, run_dir, [name])
        return [p for p in (run_dir / rundir.REPORT_MD, run_dir / rundir.REPORT_PNG) if p.is_file()]


def evaluate_run(cfg: Config, run_dir: str | Path, names: Sequence[str] | None = None,
                 report: bool = True) -> list[Path]:
    """Evaluate ``names`` (default: ``eval.stages`` plus every finished baseline, skipping what is not done) into
    ``eval/<name>``, then rebuild the report (unless ``report`` is false: returns ``[]``). A name given explicitly that
    is not finished is an error naming it. Several processes: rank 0 evaluates and reports; the other ranks return at
    once (``[]``)."""
    if not dist.is_main():
        return []
    with locked(run_dir):
        return _evaluate_run(cfg, Path(run_dir), names, report)


def _evaluate_run(cfg: Config, run_dir: Path, names: Sequence[str] | None, report: bool = True) -> list[Path]:
    cfg, groups, sharing = eval_groups(cfg, run_dir, names)
    if len(groups) > 1:  # several bases, one engine each: one process per base
        _groups_in_children(run_dir, groups)
    elif groups:
        check_data(cfg, [], eval_split=True)
        served = engine.EngineModel(cfg, engine.engine_base(groups[0][0][1])) if sharing else None
        try:
            for name, weights in groups[0]:
                folder = rundir.eval_dir(run_dir, ENTRIES[name].eval_name if name in ENTRIES else BASE)
                evaluate.evaluate_weights(cfg, folder, evaluate.model_record(cfg, weights, run_dir), weights,
                                          served=served)
        finally:
            if served is not None:
                served.close()
    return build_report(run_dir) if report else []


def evaluate_in_children(cfg: Config, run_dir: Path, names: Sequence[str] | None = None) -> None:
    """:func:`evaluate_run` from a process that only orchestrates: each of :func:`eval_groups` in a child process of
    its own, which rebuilds the report. Nothing here loads a model or touches the GPU."""
    _groups_in_children(run_dir, eval_groups(cfg, run_dir, names)[1])


def _groups_in_children(run_dir: Path, groups: list[list[tuple[str, str | None]]]) -> None:
    for group in groups:
        subrun.evaluate(run_dir, names=[name for name, _ in group])


def eval_groups(cfg: Config, run_dir: Path, names: Sequence[str] | None
                ) -> tuple[Config, list[list[tuple[str, str | None]]], bool]:
    """The config evaluation runs with (:func:`with_base`), what it evaluates (:func:`eval_targets`) in groups that
    one process evaluates, and whether they share a vLLM engine (:func:`recipe.eval.engine.shares_engine`). With
    an engine, a group is the models one engine serves (:func:`recipe.eval.engine.engine_groups`: the base model
    and every adapter on it; each full-model folder alone), since a GPU has room for one engine per process;
    without one, everything is one group."""
    manifest = rundir.load_manifest(run_dir)
    cfg = with_base(cfg, run_dir, manifest)  # the base row and every adapter sit on the warm-up's weights
    targets = eval_targets(cfg, run_dir, manifest, names)
    sharing = engine.shares_engine(cfg)
    return cfg, [g for g in (engine.engine_groups(targets) if sharing else [targets]) if g], sharing


def eval_targets(cfg: Config, run_dir: Path, manifest: dict,
                 names: Sequence[str] | None) -> list[tuple[str, str | None]]:
    """What to evaluate, as ``(name, weights folder)`` (None: the base model): ``names``, or by default
    ``eval.stages`` plus every finished baseline, skipping what is not done. A name given explicitly that is not
    finished, an unknown name, or damaged weights is an :class:`EvalError` naming it."""
    explicit = names is not None
    if not explicit:
        baselines = [n for n, e in ENTRIES.items() if e.kind == "baseline" and rundir.is_done(manifest, n)]
        names = [*cfg.eval.stages, *baselines]
    targets = []
    for name in names:
        if name != BASE and (name not in ENTRIES or ENTRIES[name].eval_name is None):
            allowed = ", ".join(n for n, e in ENTRIES.items() if e.eval_name)
            raise EvalError(f"unknown stage '{name}' (allowed: {BASE}, {allowed})")
        record = manifest[rundir.ENTRIES_KEY].get(name, {})
        if name != BASE and record.get("status") != "done":
            status = record.get("status", "not started")
            if explicit:
                raise EvalError(f"{name} is not finished in run {run_dir} (status: {status}); nothing to evaluate")
            log.info("eval: %s skipped (%s)", name, status)
            continue
        if name in STAGES and not getattr(cfg, name).enabled:
            log.info("eval: %s is disabled in the config but finished in the run; evaluating it", name)
        weights = rundir.output_of(run_dir, name, manifest)
        problem = weights_dir_problem(Path(weights)) if weights else None
        if problem:
            raise EvalError(f"{name}'s weights {weights} are {problem}; retrain it with --force "
                            f"(a missing folder is retrained by run-all)")
        targets.append((name, weights))
    return targets
