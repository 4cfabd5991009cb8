"""The ``cotrecipe`` command line (click): one function per command.

The modules that import torch, transformers and TRL (:mod:`recipe.run.orchestrator`, :mod:`recipe.eval.evaluate`) are imported inside
the commands that need them — after :func:`recipe.models.model.prepare_backend`, which must import unsloth before
transformers — so ``cotrecipe presets`` and ``cotrecipe config`` answer instantly. Known error types become one
``error: ...`` line and exit code 2; Ctrl-C becomes one line saying what stopped and the command that goes on, and
exit code 130 (:mod:`recipe.run.interrupt`).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from functools import wraps
from pathlib import Path

import click
from click.core import ParameterSource

from recipe.cli_common import config_options, echo_official, eval_overrides, setup_logging
from recipe.config import core as config_mod
from recipe.entries import BASE, ENTRIES, STAGES
from recipe.errors import KNOWN_ERRORS, ConfigError, EvalError, ExportError
from recipe.eval.report import build_report, collect_results, format_table
from recipe.eval.scoring import format_summary, score_file
from recipe.fsio import os_error_line
from recipe.models.devices import check_device
from recipe.models.model import pick_backend, prepare_backend
from recipe.run import forkserver, interrupt, subrun
from recipe.store.fingerprint import migrate_recorded
from recipe.store.rundir import CONFIG_FILE, GENERATIONS, RESULTS
from recipe.teacher.teach import TeachOptions, incomplete_line, teach_command
from recipe.tools import doctor as doctor_mod
from recipe.tools import plan as plan_mod
from recipe.tools import plan_time
from recipe.tools.export import export
from recipe.tools.plan_inputs import check_inputs as check_plan_inputs


def friendly(fn):
    """Turn the recipe's own errors into one clear line (no traceback)."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as exc:  # Ctrl-C: what stopped where (recipe.errors.Interrupted), and the way on
            where = getattr(exc, "where", "")
        except Exception as exc:  # noqa: BLE001 - filtered right below
            if isinstance(exc, KNOWN_ERRORS):
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
            line = os_error_line(exc) if isinstance(exc, OSError) else None  # disk full, read-only, file in the way
            if line:
                click.echo(f"error: {line}", err=True)
                sys.exit(2)
            raise
        interrupt.release_work()
        click.echo(f"error: stopped by Ctrl-C{': ' + where if where else ''}; to go on, run the same command "
                   f"again: {typed_command(click.get_current_context())}", err=True)
        sys.exit(interrupt.EXIT_CODE)

    return wrapper


def _resolve(preset, config_file, overrides, output_dir=None, prepare=False, strict=False):
    overrides = list(overrides) + (["data.strict=true"] if strict else [])
    if output_dir is not None:  # "" too: the config check refuses an empty run.output_dir, naming --output-dir
        if not output_dir.strip():
            raise ConfigError("bad value for '--output-dir': '' (must not be empty)")
        overrides.append(f"run.output_dir={json.dumps(output_dir)}")
    cfg = config_mod.resolve(preset=preset, config_file=config_file, overrides=overrides)
    if prepare:  # commands that train: pick the backend (importing unsloth first when it is used)
        _prepare(cfg)
    return cfg


def _prepare(cfg) -> None:
    """Before a model loads: the device the config asks for must exist, then the backend is picked (unsloth is
    imported before transformers/TRL/peft when it is used)."""
    check_device(cfg.run.device)
    prepare_backend(cfg.model)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="cotrecipe")
def main():
    """Distil chain-of-thought into a small model: structure (SFT) -> brevity (GRPO) -> internalisation (GRPO)."""
    setup_logging()
    interrupt.catch()


@main.command()
@friendly
def presets():
    """List the shipped presets."""
    names = config_mod.preset_names()
    width = max(len(n) for n in names)
    for name in names:
        click.echo(f"{name.ljust(width)}  {config_mod.preset_summary(name)}")


@main.command("config")
@config_options
@friendly
def show_config(preset, config_file, overrides, strict):
    """Print the resolved configuration as YAML (after validation)."""
    click.echo(config_mod.dump_yaml(_resolve(preset, config_file, overrides, strict=strict)), nl=False)


@main.command()
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False), help="A generations .jsonl.")
@click.option("--completion-field", default="completion", show_default=True)
@click.option("--answer-field", default="answer", show_default=True,
              help="Gold: a GSM8K answer ('... #### 72') or a bare number.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), help="Write per-row scores here (.jsonl).")
@click.option("--checker", type=click.Choice(["ours", "official"]), default="ours", show_default=True,
              help="'official': the authors' verdicts (their gold parser, first answer, string compare).")
@friendly
def score(input_path, completion_field, answer_field, output_path, checker):
    """Score any generations file ('-' reads stdin): extracted answer, correctness, rewards; prints a summary."""
    summary = score_file(input_path, completion_field=completion_field, answer_field=answer_field,
                         output_path=output_path, checker=checker)
    click.echo(format_summary(summary))


@main.command("run-all")
@config_options
@click.option("--output-dir", default=None, help="Run directory (default: the preset's run.output_dir).")
@click.option("--force", is_flag=True, help="Rerun stages whose config changed instead of refusing.")
@friendly
def run_all(preset, config_file, overrides, strict, output_dir, force):
    """Run stage 1 -> 2 -> 3 (and run.baselines) -> eval + report in one run directory; rerun to resume."""
    cfg = _resolve(preset, config_file, overrides, output_dir, strict=strict)
    if cfg.run.parallel_entries > 1 and cfg.model.backend != "unsloth" and forkserver.usable("hf"):
        forkserver.start_server()  # now: its imports run beside this process's (entries side by side are its forks)
    _prepare_orchestrator(cfg)
    from recipe.run.orchestrator import run_all as run  # lazy: torch/transformers/trl, after prepare_backend

    run(cfg, force=force)  # it collects the server at its end


def _prepare_orchestrator(cfg):
    """For commands that may run entries in child processes (run.process_per_entry): those load the backend
    themselves, so here only its errors surface; otherwise the backend is prepared here."""
    if subrun.use_children(cfg):
        pick_backend(cfg.model)
    else:
        prepare_backend(cfg.model)
    return cfg


def _stage_command(stage: str, help_text: str):
    @config_options
    @click.option("--output-dir", default=None, help="Run directory (default: the preset's run.output_dir).")
    @click.option("--from", "init_from", default=None, type=click.Path(),
                  help="Starting weights: a stage output folder (adapter or full model).")
    @click.option("--force", is_flag=True,
                  help="Rerun the stage even if it is done or its config changed; later stages become stale.")
    @friendly
    def command(preset, config_file, overrides, strict, output_dir, init_from, force):
        cfg = _resolve(preset, config_file, overrides, output_dir, prepare=True, strict=strict)
        from recipe.run.orchestrator import run_one  # lazy: torch/transformers/trl, after prepare_backend

        run_one(cfg, stage, init_from=init_from, force=force)

    command.__doc__ = help_text
    return main.command(stage)(command)


for _name in STAGES:  # one command per curriculum stage of the registry (each baseline's is under `baseline`)
    _stage_command(_name, ENTRIES[_name].cli_help)


@main.command("eval")
@config_options
@click.option("--model", "model_path", default=None, help="Hub id or local folder (default: the config's model).")
@click.option("--adapter", default=None, type=click.Path(), help="A LoRA adapter folder to apply.")
@click.option("--run", "run_dir", default=None, type=click.Path(), help="A run directory to evaluate.")
@click.option("--stage", default=None,
              help=f"With --run: {', '.join((BASE, *STAGES))} or a baseline entry (default: all done).")
@click.option("--split", default=None, help="Dataset split (default: eval.split).")
@click.option("--limit", default=None, type=int, help="Evaluate the first N problems only.")
@click.option("--batch-size", default=None, type=int)
@click.option("--output-dir", default=None, type=click.Path(), help="Where results.json/generations.jsonl go.")
@click.option("--checker", type=click.Choice(["ours", "official"]), default="ours", show_default=True,
              help="'official': also print the authors' verdicts (their gold parser, first answer, string compare); "
                   "results.json and report.md always record both.")
@friendly
def eval_command(preset, config_file, overrides, strict, model_path, adapter, run_dir, stage, split, limit, batch_size,
                 output_dir, checker):
    """Evaluate with the paper's protocol (zero-shot, greedy, 512 new tokens, the authors' stop rule)."""
    extra = list(overrides) + (["data.strict=true"] if strict else []) + eval_overrides(split, limit, batch_size)
    if run_dir is not None:
        clashes = [flag for flag, value in (("--preset", preset), ("--config", config_file), ("--model", model_path),
                                            ("--adapter", adapter), ("--output-dir", output_dir)) if value is not None]
        if clashes:
            raise EvalError(f"--run uses the run's own config.yaml and folders; drop {', '.join(clashes)} "
                            "(use --set KEY=VALUE to change an eval setting)")
        cfg = config_mod.resolve(config_file=_run_config(run_dir), overrides=extra,
                                 recorded=migrate_recorded)  # a run recorded by older code: its keys' new places
        _prepare(cfg)  # backend first: unsloth before transformers/TRL/peft load
        from recipe.run.orchestrator import evaluate_run  # lazy: torch/transformers

        evaluate_run(cfg, run_dir, names=[stage] if stage else None)
        results = collect_results(run_dir)
        click.echo(format_table(results))
        echo_official(results, checker)
        return
    if stage is not None:
        raise EvalError("--stage needs --run DIR")
    if output_dir is not None and not output_dir.strip():
        raise EvalError("bad value for '--output-dir': '' (must not be empty)")
    if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise EvalError(f"--output-dir {output_dir} is a file, not a folder: move it or choose another path "
                        "(nothing was evaluated)")
    model_over = [f"model.name_or_path={json.dumps(model_path)}"] if model_path else []
    cfg = config_mod.resolve(preset=preset, config_file=config_file, overrides=[*extra, *model_over])
    _prepare(cfg)  # backend first: unsloth before transformers/TRL/peft load
    if adapter is not None and not Path(adapter).exists():
        raise EvalError(f"--adapter folder not found: {adapter}")
    from recipe.eval import evaluate  # lazy: torch/transformers

    out = Path(output_dir or "runs/eval")
    record = evaluate.model_record(cfg, str(Path(adapter).resolve()) if adapter else None)
    results = evaluate.evaluate_weights(cfg, out, record, init_from=adapter, reuse=False)
    click.echo(format_table([(out.name, results)]))
    echo_official([(out.name, results)], checker)
    click.echo(f"wrote {out / RESULTS} and {out / GENERATIONS}")


def _run_config(run_dir: str) -> Path:
    """A run directory's ``config.yaml``, refused when it is not there or is damaged: the run writes it whole
    (every section, ending in a newline), so an empty file, one cut off mid-line or one without its ``model`` and
    ``run`` sections would silently evaluate with the defaults instead of the run's settings."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise EvalError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise EvalError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise EvalError(f"{path} is empty; the run writes its whole config there (run-all rewrites it)")
    if not text.endswith(b"\n"):
        raise EvalError(f"{path} is cut off (its last line has no end); restore it or rerun run-all to rewrite it")
    sections = {line.split(b":", 1)[0] for line in text.splitlines() if line[:1].isalpha()}
    missing = [name for name in ("model", "run") if name.encode() not in sections]
    if missing:
        raise EvalError(f"{path} has no {' or '.join(missing)} section: not a config the run wrote; restore it or "
                        "rerun run-all to rewrite it")
    return path


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A run directory.")
@click.option("--figures/--no-figures", default=None,
              help="Draw report.png and report_curves.png (default: the run's eval.figures).")
@friendly
def report(run_dir, figures):
    """Rebuild report.md and report.png from a run's stored results."""
    paths = build_report(run_dir, figures)
    for path in paths:
        click.echo(str(path))


def _run_baseline(key: str, preset, config_file, overrides, strict, output_dir, force) -> None:
    """What every `cotrecipe baseline KEY` command does with its options: train, evaluate and report that baseline."""
    cfg = _prepare_orchestrator(_resolve(preset, config_file, overrides, output_dir, strict=strict))
    from recipe.run.orchestrator import run_baseline  # lazy: torch/transformers/trl, after prepare_backend

    run_baseline(cfg, key, force=force)


@main.group()
def baseline():
    """Baselines evaluated the same way as the curriculum."""


@baseline.command("sft")
@config_options
@click.option("--output-dir", default=None, help="Run directory to add the baseline to.")
@click.option("--force", is_flag=True, help="Retrain the baseline even if it is done or its config changed.")
@friendly
def baseline_sft(preset, config_file, overrides, strict, output_dir, force):
    """Plain SFT distillation on full teacher rationales, same data and budget; added as a report row."""
    _run_baseline("sft", preset, config_file, overrides, strict, output_dir, force)


@baseline.command("grpo")
@config_options
@click.option("--output-dir", default=None, help="Run directory to add the baseline to.")
@click.option("--reward", type=click.Choice(["correctness", "correctness+brevity"]), default=None,
              help="correctness: 1 right / 0 wrong; correctness+brevity: stage 2's reward with its brevity term "
                   "(default: baseline_grpo.reward, correctness).")
@click.option("--force", is_flag=True, help="Retrain the baseline even if it is done or its config changed.")
@friendly
def baseline_grpo(preset, config_file, overrides, strict, output_dir, reward, force):
    """Plain GRPO from the base model (no teacher, no SFT), as many sampled completions as stages 2+3."""
    overrides = list(overrides) + ([f"baseline_grpo.reward={reward}"] if reward else [])
    _run_baseline("grpo", preset, config_file, overrides, strict, output_dir, force)


@baseline.command("concise")
@config_options
@click.option("--output-dir", default=None, help="Run directory to add the baseline to.")
@click.option("--force", is_flag=True, help="Retrain the baseline even if it is done or its config changed.")
@friendly
def baseline_concise(preset, config_file, overrides, strict, output_dir, force):
    """SFT on full teacher rationales at stage 1's budget, then GRPO at stages 2+3's sampled completions with a length
    bonus only for groups whose answers are all right (baseline_concise.length_weight)."""
    _run_baseline("concise", preset, config_file, overrides, strict, output_dir, force)


# --- cotrecipe teach: a self-contained block ----------------------------------------------------------------------
@main.command()
@config_options
@click.option("--source", default="gold", show_default=True,
              help="gold | hf:<model folder, hub id or builtin:...> | openai:<base_url, e.g. http://localhost:11434/v1> | "
                   "file:<an existing teacher file to filter and rewrite>.")
@click.option("--model", "served_model", default="", help="With openai:, the model name the server serves.")
@click.option("--output", "output", required=True, type=click.Path(dir_okay=False), help="Teacher file (.jsonl).")
@click.option("--split", default="train", show_default=True)
@click.option("--limit", default=None, type=int, help="The first N problems only.")
@click.option("--concurrency", default=4, show_default=True, help="Parallel requests (openai:).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds per request (openai:).")
@click.option("--retries", default=4, show_default=True, help="Retries on 429/5xx/timeouts/broken connections.")
@click.option("--batch-size", default=8, show_default=True, help="Generation batch (hf:).")
@click.option("--max-new-tokens", default=1024, show_default=True)
@click.option("--temperature", default=0.0, show_default=True)
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the API key (the key itself is never an option).")
@click.option("--latex", type=click.Choice(["keep", "math"]), default="keep", show_default=True,
              help="math: replace \\[...\\] and \\(...\\) in steps with [math] (the authors' stage-1 option).")
@click.option("--stats", "stats_png", default=None, type=click.Path(dir_okay=False),
              help="Also write steps/words/student-token histograms (PNG) and numbers (.json) vs gold.")
@friendly
def teach(preset, config_file, overrides, strict, source, served_model, output, split, limit, concurrency, timeout,
          retries, batch_size, max_new_tokens, temperature, api_key_env, latex, stats_png):
    """Write teacher rationales (kept only when the answer matches gold); cached, resumable, rerun to finish."""
    opts = TeachOptions(source=source, output=output, model=served_model, split=split, limit=limit,
                        concurrency=concurrency, timeout=timeout, retries=retries, batch_size=batch_size,
                        max_new_tokens=max_new_tokens, temperature=temperature, api_key_env=api_key_env, latex=latex)
    lines, summary = teach_command(_resolve(preset, config_file, overrides, strict=strict), opts, stats_png)
    for line in lines:
        click.echo(line)
    if summary.failed:  # a script must not go on to train on a partial (or empty) teacher file
        click.echo(f"error: {incomplete_line(summary, retries, typed_command(click.get_current_context()))}", err=True)
        sys.exit(1)


def typed_command(ctx: click.Context) -> str:
    """A command's line as the user gave it (options from the command line only), for a rerun hint; the program is
    always `cotrecipe` (also under ``python -m recipe.cli``)."""
    names, outer = [], ctx
    while outer.parent is not None:  # a command inside a group: `baseline sft`
        names.insert(0, outer.info_name)
        outer = outer.parent
    words = ["cotrecipe", *names]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        flag = max(param.opts, key=len)
        value = ctx.params[param.name]
        values = [] if param.is_flag else value if param.multiple else [value]
        words += ([flag] if param.is_flag and value else []) + [w for v in values for w in (flag, str(v))]
    return shlex.join(words)
# --- end of teach --------------------------------------------------------------------------------------------------

@main.command("plan")
@config_options
@click.option("--gpu-mem", "gpu_mem", type=float, default=None,
              help="GPU memory in GiB (default: the preset's target card, else this machine's GPU, else the smallest "
                   "card that fits).")
@click.option("--model-config", default=None, type=click.Path(exists=True),
              help="A config.json (or model folder) for the model's dimensions, if the model is not shipped.")
@friendly
def plan_command(preset, config_file, overrides, strict, gpu_mem, model_config):
    """Estimate peak GPU memory per stage and say whether it fits (no GPU or download needed)."""
    cfg = _resolve(preset, config_file, overrides, strict=strict)
    dims = plan_mod.model_dims(model_config or cfg.model.name_or_path, cfg.model.cache_dir)
    check_plan_inputs(cfg, dims.max_positions, gpu_mem)
    card = plan_mod.smallest_card(cfg, dims)
    given = gpu_mem or plan_mod.default_gpu_gib(cfg, preset)
    gib = given or (card[1] if card else plan_mod.CARDS[-1][1])
    note = "" if given else " (the smallest listed card that fits)"
    ok = plan_mod.render(plan_mod.plan_config(cfg, gib, dims), card=card, gpu_note=note)
    click.echo(plan_time.render_hours(plan_time.stage_hours(cfg, dims)))
    if card is None:
        click.echo("no listed card fits every stage: lower the batch sizes or completion lengths")
    sys.exit(0 if ok else 1)


@main.command()
@config_options
@click.option("--import-timeout", default=120.0, show_default=True,
              help="Seconds allowed for `import unsloth` / `import vllm` (each in its own subprocess).")
@friendly
def doctor(preset, config_file, overrides, strict, import_timeout):
    """Print this machine's setup for a bug report; exit 1 when it cannot run the chosen preset."""
    if not (math.isfinite(import_timeout) and import_timeout > 0):  # -1 read as "did not finish", nan/inf crashed
        raise ConfigError(f"bad value for '--import-timeout': {import_timeout} (seconds: a number > 0)")
    overrides = list(overrides) + (["data.strict=true"] if strict else [])
    lines, ok = doctor_mod.doctor(preset, config_file, overrides, import_timeout=import_timeout)
    click.echo("\n".join(lines))
    sys.exit(0 if ok else 1)


@main.command("export")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True), help="A run directory.")
@click.option("--stage", default=None, help="1, 2 or 3 (default: the last finished stage).")
@click.option("--format", "fmt", required=True, type=click.Choice(["lora", "merged16", "gguf"]))
@click.option("--output", required=True, type=click.Path(), help="Output folder.")
@click.option("--dtype", default="bfloat16", show_default=True, type=click.Choice(["bfloat16", "float16", "float32"]),
              help="merged16: the merged weights' dtype (float32 keeps the merge exact).")
@click.option("--quantization", default="q8_0", show_default=True, help="gguf: Unsloth's quantization_method or "
              "llama.cpp's --outtype.")
@click.option("--converter", default=None, type=click.Path(), help="gguf without Unsloth: llama.cpp's "
              "convert_hf_to_gguf.py.")
@click.option("--force", is_flag=True, help="Write into an --output folder holding files export did not write "
              "(they stay; files of the same names are replaced).")
@friendly
def export_command(run_dir, stage, fmt, output, dtype, quantization, converter, force):
    """Export a finished stage: LoRA adapter, merged 16-bit weights, or GGUF with an Ollama Modelfile."""
    try:
        paths = export(run_dir, fmt, output, stage=stage, dtype=dtype, quantization=quantization, converter=converter,
                       force=force)
    except ExportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    for path in paths:
        click.echo(str(path))


if __name__ == "__main__":  # pragma: no cover
    main()
