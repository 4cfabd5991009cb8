"""Evaluation with the paper's protocol: zero-shot prompt, greedy decoding, ``max_new_tokens`` new tokens, the answer
read from the ``Final Answer:`` line, length in the student tokenizer's generated tokens (wrong answers included).

Layout of an evaluated run directory::

    eval/<name>/results.json        metrics, protocol, model, dataset hash, versions (written last: the record)
    eval/<name>/generations.jsonl   one row per problem: prompt, completion, extracted answer, correctness, lengths

``<name>`` is ``base``, ``stage1``..``stage3`` or a baseline (``sft-baseline``). A stage whose ``results.json`` holds
the same protocol, model and dataset hash is not evaluated again. Importing this module is cheap (no torch): the
model code is imported inside the functions that generate.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recipe import config as config_mod
from recipe import prompts
from recipe.answers import answers_match, extract_answer
from recipe.config import Config, EvalConfig
from recipe.fsio import read_json, read_jsonl, write_json, write_jsonl
from recipe.rewards import step_format_ok

log = logging.getLogger("recipe")

RESULTS = "results.json"
GENERATIONS = "generations.jsonl"
EVAL_DIR = "eval"
# The paper's eval stops a row after its final-answer line, or as soon as it starts a new "Question:".
STOP_TEXTS = ("Question:",)

# Worked examples for ``eval.prompt=fewshot``, written for this project in the target format.
FEWSHOT_EXAMPLES = (
    ("A baker makes 3 trays of 12 muffins and sells 20 of them. How many muffins are left?",
     ("3 trays of 12 muffins is 3 * 12 = 36 muffins.", "After selling 20, 36 - 20 = 16 muffins are left."), "16"),
    ("Tom reads 15 pages a day for 4 days, then 10 pages on the fifth day. How many pages did he read?",
     ("In 4 days he reads 15 * 4 = 60 pages.", "With the fifth day he read 60 + 10 = 70 pages."), "70"),
    ("A box holds 48 pencils shared equally by 6 students. Each student gives 2 pencils away. "
     "How many pencils does each student have now?",
     ("Each student gets 48 / 6 = 8 pencils.", "After giving 2 away, each has 8 - 2 = 6 pencils."), "6"),
)


class EvalError(RuntimeError):
    """An evaluation problem (missing stage, no data, unusable option), phrased so the user can fix it."""


# --------------------------------------------------------------------------------------------------------------------
# Pure parts: prompts and scoring
# --------------------------------------------------------------------------------------------------------------------


def _get(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def fewshot_prefix(answer_label: str = prompts.ANSWER_LABEL) -> str:
    """The worked examples of ``eval.prompt=fewshot``: each an evaluation prompt plus its solution, blank-line
    separated.

    >>> prefix = fewshot_prefix()
    >>> prefix.count("Reasoning:\\nStep 1:"), prefix.endswith("Final Answer: 6\\n\\n")
    (3, True)
    """
    shots = [prompts.eval_prompt(q, answer_label) + "\n" + prompts.render_solution(steps, answer, answer_label)
             for q, steps, answer in FEWSHOT_EXAMPLES]
    return "\n\n".join(shots) + "\n\n"


def build_prompt(question: str, style: str, answer_label: str = prompts.ANSWER_LABEL, tokenizer=None) -> str:
    """The evaluation prompt in one of the ``eval.prompt`` styles: ``paper`` (zero-shot, plain text), ``fewshot``
    (worked examples first) or ``chat`` (the paper prompt as the user turn of the tokenizer's chat template).

    >>> build_prompt("What is 2 + 2?", "paper").splitlines()[1]
    'Question: What is 2 + 2?'
    >>> build_prompt("Q?", "fewshot").endswith("Question: Q?\\nYou must end your response with \\"Final Answer: [number]\\"\\nReasoning:")
    True
    """
    paper = prompts.eval_prompt(question, answer_label)
    if style == "paper":
        return paper
    if style == "fewshot":
        return fewshot_prefix(answer_label) + paper
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise EvalError("eval.prompt=chat needs a tokenizer with a chat template, and this model's tokenizer "
                            "has none; use eval.prompt=paper or eval.prompt=fewshot")
        return tokenizer.apply_chat_template([{"role": "user", "content": paper}], tokenize=False,
                                             add_generation_prompt=True)
    raise EvalError(f"unknown eval.prompt {style!r} (allowed: paper, fewshot, chat)")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_generations(problems: Sequence[Any], generations: Sequence[Any], tokenizer=None,
                      answer_label: str = prompts.ANSWER_LABEL) -> tuple[dict, list[dict]]:
    """Metrics and per-row records for one generation per problem.

    ``problems`` are :class:`recipe.data.Problem` objects or mappings with ``id``, ``question`` and ``answer``.
    A generation is a :class:`recipe.generation.Generation` (its ``n_tokens`` is the generated-token count) or a
    plain completion string (tokens counted with ``tokenizer`` when given, else unknown; not truncated).

    Metrics: ``accuracy`` (fraction), ``n``, ``n_correct``, ``avg_tokens``, ``avg_words``, ``truncation_rate`` and
    ``format_rate`` (:func:`recipe.rewards.step_format_ok`, strict: ``Step 1:``, ``Step 2:``, ... in order, then
    one final ``Final Answer: <number>`` line), all averaged over every problem, wrong answers included.

    >>> m, rows = score_generations([{"id": "t-0", "question": "Q?", "answer": "4"}], ["Step 1: 2+2=4\\nFinal Answer: 4"])
    >>> m["accuracy"], m["avg_words"], m["format_rate"], m["avg_tokens"], rows[0]["extracted_answer"]
    (1.0, 6.0, 1.0, None, '4')
    """
    if len(problems) != len(generations):
        raise EvalError(f"{len(problems)} problems but {len(generations)} generations")
    rows = []
    for problem, gen in zip(problems, generations):
        if isinstance(gen, str):
            text, prompt, truncated = gen, None, False
            n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else None
        else:
            text, prompt, truncated, n_tokens = gen.text, gen.prompt, bool(gen.truncated), gen.n_tokens
        gold = str(_get(problem, "answer"))
        pred = extract_answer(text)
        rows.append({
            "id": _get(problem, "id"),
            "question": _get(problem, "question"),
            "answer": gold,
            "prompt": prompt,
            "completion": text,
            "extracted_answer": pred,
            "correct": answers_match(pred, gold),
            "n_tokens": n_tokens,
            "n_words": len(text.split()),
            "truncated": truncated,
            "format_ok": step_format_ok(text, "strict", answer_label),
        })
    n = len(rows)
    tokens = [r["n_tokens"] for r in rows if r["n_tokens"] is not None]
    metrics = {
        "accuracy": sum(r["correct"] for r in rows) / n if n else 0.0,
        "n": n,
        "n_correct": sum(r["correct"] for r in rows),
        "avg_tokens": _mean(tokens) if len(tokens) == n else None,
        "avg_words": _mean([r["n_words"] for r in rows]),
        "truncation_rate": _mean([float(r["truncated"]) for r in rows]),
        "format_rate": _mean([float(r["format_ok"]) for r in rows]),
    }
    return metrics, rows


def dataset_hash(problems: Sequence[Any]) -> str:
    """sha256 over the evaluated problems (id, question, gold answer), in order.

    >>> dataset_hash([{"id": "a", "question": "Q", "answer": "1"}]) == dataset_hash([{"id": "a", "question": "Q", "answer": "2"}])
    False
    """
    digest = hashlib.sha256()
    for p in problems:
        row = {"id": _get(p, "id"), "question": _get(p, "question"), "answer": str(_get(p, "answer"))}
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def protocol(ecfg: EvalConfig, answer_label: str) -> dict:
    """What makes two evaluations comparable (stored in results.json, checked on resume)."""
    return {"prompt": ecfg.prompt, "greedy": True, "max_new_tokens": ecfg.max_new_tokens,
            "answer_label": answer_label, "stop_texts": list(STOP_TEXTS), "split": ecfg.split, "limit": ecfg.limit}


# --------------------------------------------------------------------------------------------------------------------
# With a model
# --------------------------------------------------------------------------------------------------------------------


def evaluate_model(model, tokenizer, problems: Sequence[Any], ecfg: EvalConfig, answer_label: str,
                   seed: int) -> tuple[dict, list[dict]]:
    """Greedy, batched generation for every problem with the configured prompt style, then :func:`score_generations`."""
    from tqdm.auto import tqdm

    from recipe.generation import generate

    texts = [build_prompt(_get(p, "question"), ecfg.prompt, answer_label, tokenizer) for p in problems]
    with tqdm(total=len(texts), desc="eval", unit="problem") as bar:
        generations = generate(model, tokenizer, texts, max_new_tokens=ecfg.max_new_tokens,
                               batch_size=ecfg.batch_size, temperature=0.0, seed=seed, stop_texts=STOP_TEXTS,
                               progress=bar.update)
    return score_generations(problems, [g[0] for g in generations], answer_label=answer_label)


def eval_problems(cfg: Config) -> tuple[list, str]:
    """The first ``eval.limit`` problems of ``eval.split`` of ``data.eval_source`` (or ``data.source``)."""
    from recipe.data import load_gsm8k

    source = cfg.data.eval_source or cfg.data.source
    problems, report = load_gsm8k(source, split=cfg.eval.split, strict=cfg.data.strict,
                                  annotations=cfg.data.annotations)
    if report.n_bad:
        log.warning("eval data %s", report.summary())
    if cfg.eval.limit > 0:
        problems = problems[: cfg.eval.limit]
    if not problems:
        raise EvalError(f"no evaluation problems in '{source}' split '{cfg.eval.split}'")
    return problems, source


def _matches(path: Path, expected: dict) -> bool:
    if not path.is_file():
        return False
    try:
        old = read_json(path)
    except (OSError, ValueError):
        return False
    return all(old.get(key) == value for key, value in expected.items())


def evaluate_to_dir(cfg: Config, out_dir: str | Path, model_record: dict, init_from: str | None = None,
                    reuse: bool = True) -> dict:
    """Load the model (plus ``init_from`` weights), evaluate, write results.json + generations.jsonl into
    ``out_dir``; with ``reuse``, an existing results.json with the same protocol, model and data is returned as is."""
    from recipe.curriculum import versions

    out_dir = Path(out_dir)
    problems, source = eval_problems(cfg)
    data_record = {"source": source, "split": cfg.eval.split, "n": len(problems), "sha256": dataset_hash(problems)}
    key = {"protocol": protocol(cfg.eval, cfg.data.answer_label), "model": model_record, "data": data_record}
    if reuse and _matches(out_dir / RESULTS, key):
        log.info("%s: already evaluated with this protocol, model and data; kept (delete %s to redo)", out_dir.name,
                 out_dir / RESULTS)
        return read_json(out_dir / RESULTS)
    for other in sorted(out_dir.parent.glob(f"*/{RESULTS}")) if reuse else []:
        if other.parent != out_dir and _matches(other, key):  # e.g. stage 3 found no failures: stage-2 weights
            log.info("%s: same weights, protocol and data as %s; its results are copied", out_dir.name,
                     other.parent.name)
            write_jsonl(out_dir / GENERATIONS, read_jsonl(other.parent / GENERATIONS))
            results = {**read_json(other), "name": out_dir.name, "copied_from": other.parent.name}
            write_json(out_dir / RESULTS, results)
            return results
    from recipe import model as model_mod
    from recipe.generation import to_device

    model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=False, seed=cfg.run.seed)
    model = to_device(model, cfg.run.device)
    t0 = time.monotonic()
    metrics, rows = evaluate_model(model, tokenizer, problems, cfg.eval, cfg.data.answer_label, cfg.run.seed)
    results = {"name": out_dir.name, "metrics": metrics, **key, "wall_s": round(time.monotonic() - t0, 2),
               "versions": versions()}
    write_jsonl(out_dir / GENERATIONS, rows)
    write_json(out_dir / RESULTS, results)  # last: its presence means the evaluation is complete
    del model
    gc.collect()
    log.info("%s: %s", out_dir.name, _short(metrics))
    return results


def _short(m: dict) -> str:
    tokens = "-" if m["avg_tokens"] is None else f"{m['avg_tokens']:.1f}"
    return (f"accuracy {100 * m['accuracy']:.2f}% ({m['n_correct']}/{m['n']}), avg tokens {tokens}, "
            f"truncated {100 * m['truncation_rate']:.1f}%, format {100 * m['format_rate']:.1f}%")


def _model_record(cfg: Config, init_from: str | None, finished: str | None = None) -> dict:
    return {"name_or_path": cfg.model.name_or_path, "dtype": cfg.model.dtype, "load_in_4bit": cfg.model.load_in_4bit,
            "init_from": init_from, "init_from_finished": finished}


def evaluate_stage(cfg: Config, run_dir: Path, name: str, init_from: str | None, finished: str | None) -> dict:
    """Evaluate one model of a run into ``run_dir/eval/<name>`` (reused when already done)."""
    return evaluate_to_dir(cfg, Path(run_dir) / EVAL_DIR / name, _model_record(cfg, init_from, finished), init_from)


def _finished(run_dir: Path, manifest: dict, weights: str | None) -> str | None:
    """When the stage that wrote ``weights`` finished (the first one whose output they are: a stage 3 that found no
    failures hands on the stage-2 weights), so a rerun stage is never mistaken for the old one."""
    from recipe.curriculum import STAGES, stage_output

    for stage in STAGES:
        entry = manifest.get("stages", {}).get(stage, {})
        if weights is not None and entry.get("status") == "done" and stage_output(run_dir, stage) == weights:
            return entry.get("ended")
    return None


def evaluate_run(cfg: Config, run_dir: str | Path, stages: Sequence[str] | None = None) -> list[Path]:
    """Evaluate ``stages`` (default: ``eval.stages``, skipping any that is not done) of a run, then rebuild the
    report. A stage named in ``stages`` that is not finished is an error naming it."""
    from recipe.curriculum import STAGES, load_manifest, manifest_path, stage_output
    from recipe.report import build_report

    run_dir = Path(run_dir)
    explicit = stages is not None
    manifest = load_manifest(run_dir) if manifest_path(run_dir).is_file() else {"stages": {}}
    for name in stages if explicit else cfg.eval.stages:
        if name != "base" and name not in STAGES:
            raise EvalError(f"unknown stage '{name}' (allowed: base, {', '.join(STAGES)})")
        entry = manifest.get("stages", {}).get(name, {})
        if name != "base" and entry.get("status") != "done":
            status = entry.get("status", "not started")
            if explicit:
                raise EvalError(f"{name} is not finished in run {run_dir} (status: {status}); nothing to evaluate")
            log.info("eval: %s skipped (%s)", name, status)
            continue
        if name != "base" and not getattr(cfg, name).enabled:
            log.info("eval: %s is disabled in the config but finished in the run; evaluating it", name)
        init_from = stage_output(run_dir, name)
        evaluate_stage(cfg, run_dir, name, init_from, _finished(run_dir, manifest, init_from))
    return build_report(run_dir)


# --------------------------------------------------------------------------------------------------------------------
# The `cotrecipe eval` command
# --------------------------------------------------------------------------------------------------------------------


def _eval_overrides(split: str | None, limit: int | None, batch_size: int | None) -> list[str]:
    out = []
    if split is not None:
        out.append(f"eval.split={json.dumps(split)}")
    if limit is not None:
        if limit == 0 or limit < -1:
            raise EvalError(f"--limit must be a positive count (or -1 for the whole split), got {limit}")
        out.append(f"eval.limit={limit}")
    if batch_size is not None:
        out.append(f"eval.batch_size={batch_size}")
    return out


def eval_command(preset: str | None = None, config_file: str | None = None, overrides: Sequence[str] = (),
                 model_path: str | None = None, adapter: str | None = None, run_dir: str | None = None,
                 stage: str | None = None, split: str | None = None, limit: int | None = None,
                 batch_size: int | None = None, output_dir: str | None = None) -> list[Path]:
    """``cotrecipe eval``: a run directory (``run_dir``, optionally one ``stage``) or a model/adapter on its own.
    Prints a compact table; returns the paths written (the report files, or the results folder)."""
    import click

    from recipe.report import collect_results, format_table

    extra = _eval_overrides(split, limit, batch_size)
    if run_dir is not None:
        clashes = [flag for flag, value in (("--preset", preset), ("--config", config_file), ("--model", model_path),
                                            ("--adapter", adapter), ("--output-dir", output_dir)) if value]
        if clashes:
            raise EvalError(f"--run uses the run's own config.yaml and folders; drop {', '.join(clashes)} "
                            "(use --set KEY=VALUE to change an eval setting)")
        run = Path(run_dir)
        if not (run / "config.yaml").is_file():
            raise EvalError(f"{run} is not a run directory (no config.yaml)")
        cfg = config_mod.resolve(config_file=run / "config.yaml", overrides=[*overrides, *extra])
        paths = evaluate_run(cfg, run, stages=[stage] if stage else None)
        click.echo(format_table(collect_results(run)))
        return paths
    if stage is not None:
        raise EvalError("--stage needs --run DIR")
    model_over = [f"model.name_or_path={json.dumps(model_path)}"] if model_path else []
    cfg = config_mod.resolve(preset=preset, config_file=config_file, overrides=[*overrides, *model_over, *extra])
    if adapter is not None and not Path(adapter).exists():
        raise EvalError(f"--adapter folder not found: {adapter}")
    out = Path(output_dir or "runs/eval")
    record = _model_record(cfg, str(Path(adapter).resolve()) if adapter else None)
    results = evaluate_to_dir(cfg, out, record, init_from=adapter, reuse=False)
    click.echo(format_table([(out.name, results)]))
    click.echo(f"wrote {out / RESULTS} and {out / GENERATIONS}")
    return [out / RESULTS, out / GENERATIONS]
