"""Evaluation with the paper's protocol: zero-shot prompt, greedy decoding, ``max_new_tokens`` new tokens, the answer
read from the ``data.answer_label`` line, length in the student tokenizer's generated tokens (wrong answers included).

One entry point with a model, :func:`evaluate_weights`: load weights, generate, score, write ``results.json`` (the
record, written last) and ``generations.jsonl`` into a folder (a run's ``eval/<name>``, see :mod:`recipe.store.rundir`).
An existing ``results.json`` with the same protocol, model and dataset hash is kept, not recomputed.
One vLLM engine may serve many evaluations (``served``, :mod:`recipe.eval.engine`).
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

from tqdm.auto import tqdm

from recipe.config.schema import Config, EvalConfig
from recipe.data import prompts
from recipe.data.answers import answers_match, extract_answer
from recipe.data.gsm8k import load_gsm8k, load_raw_rows
from recipe.data.stopping import resolve_stop_rule, stop_rule_record
from recipe.errors import EvalError
from recipe.eval.engine import EngineModel
from recipe.eval.official_checker import official_verdict
from recipe.eval.report import results_problem
from recipe.fsio import read_json, read_jsonl, write_json, write_jsonl
from recipe.models import generation
from recipe.models import model as model_mod
from recipe.models.generation import STOP_TEXTS, to_device
from recipe.models.integrity import WEIGHT_SUFFIXES
from recipe.rewards import step_format_ok
from recipe.store.rundir import GENERATIONS, RESULTS, peak_rss_mb, versions

log = logging.getLogger("recipe")

__all__ = ["build_prompt", "dataset_hash", "evaluate_weights", "score_generations"]

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
    zero_shot = prompts.eval_prompt(question, answer_label)
    if style == "paper":
        return zero_shot
    if style == "fewshot":
        return fewshot_prefix(answer_label) + zero_shot
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise EvalError("eval.prompt=chat needs a tokenizer with a chat template, and this model's tokenizer "
                            "has none; use eval.prompt=paper or eval.prompt=fewshot")
        return tokenizer.apply_chat_template([{"role": "user", "content": zero_shot}], tokenize=False,
                                             add_generation_prompt=True)
    raise EvalError(f"unknown eval.prompt {style!r} (allowed: paper, fewshot, chat)")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_generations(problems: Sequence[Any], generations: Sequence[Any], tokenizer=None,
                      answer_label: str = prompts.ANSWER_LABEL,
                      official_golds: Sequence[Any] | None = None) -> tuple[dict, list[dict]]:
    """Metrics and per-row records for one generation per problem.

    ``problems`` are :class:`recipe.data.gsm8k.Problem` objects or mappings with ``id``, ``question`` and ``answer``.
    A generation is a :class:`recipe.models.generation.Generation` (its ``n_tokens`` is the generated-token count) or a
    plain completion string (tokens counted with ``tokenizer`` when given, else unknown; not truncated).

    Metrics: ``accuracy`` (fraction), ``n``, ``n_correct``, ``avg_tokens``, ``avg_words``, ``truncation_rate`` and
    ``format_rate`` (:func:`recipe.rewards.step_format_ok`, strict: ``Step 1:``, ``Step 2:``, ... in order, then
    one final ``Final Answer: <number>`` line), all averaged over every problem, wrong answers included.

    With ``official_golds`` (the raw GSM8K ``answer`` texts, one per problem) every row also gets the authors'
    verdict (:func:`recipe.eval.official_checker.official_verdict` on the uncut generated text, ``Generation.raw``) and
    the metrics ``official_accuracy`` / ``official_n_correct``: their numbers, beside our headline ``accuracy``.

    >>> m, rows = score_generations([{"id": "t-0", "question": "Q?", "answer": "4"}], ["Step 1: 2+2=4\\nFinal Answer: 4"])
    >>> m["accuracy"], m["avg_words"], m["format_rate"], m["avg_tokens"], rows[0]["extracted_answer"]
    (1.0, 6.0, 1.0, None, '4')
    """
    if len(problems) != len(generations):
        raise EvalError(f"{len(problems)} problems but {len(generations)} generations")
    if official_golds is not None and len(official_golds) != len(problems):
        raise EvalError(f"{len(problems)} problems but {len(official_golds)} official golds")
    rows = []
    for problem, gen in zip(problems, generations):
        if isinstance(gen, str):
            text, prompt, truncated, raw = gen, None, False, gen
            n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else None
        else:
            text, prompt, truncated, n_tokens = gen.text, gen.prompt, bool(gen.truncated), gen.n_tokens
            raw = getattr(gen, "raw", "") or text
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
        if raw != text:  # what was generated past the cut (the authors' checker reads it)
            rows[-1]["raw_completion"] = raw
        if official_golds is not None:
            rows[-1]["official_correct"] = official_verdict(raw, official_golds[len(rows) - 1])
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
    if official_golds is not None:
        metrics["official_n_correct"] = sum(r["official_correct"] for r in rows)
        metrics["official_accuracy"] = metrics["official_n_correct"] / n if n else 0.0
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
    """What makes two evaluations comparable (stored in results.json, checked on resume), the stop rule included.

    >>> from recipe.config.schema import EvalConfig
    >>> protocol(EvalConfig(), "Final Answer:")["stop_rule"]["rule"]
    'paper'
    """
    stop_rule = stop_rule_record(resolve_stop_rule(ecfg.stop_rule, ecfg.prompt), answer_label)
    return {"prompt": ecfg.prompt, "greedy": True, "max_new_tokens": ecfg.max_new_tokens,
            "answer_label": answer_label, "stop_texts": list(STOP_TEXTS), "stop_rule": stop_rule, "split": ecfg.split,
            "limit": ecfg.limit, "official_checker": True}


# --------------------------------------------------------------------------------------------------------------------
# With a model
# --------------------------------------------------------------------------------------------------------------------


def generate_and_score(model, tokenizer, problems: Sequence[Any], ecfg: EvalConfig, answer_label: str,
                       seed: int, official_golds: Sequence[Any] | None = None,
                       adapter: str | None = None) -> tuple[dict, list[dict]]:
    """Greedy, batched generation for every problem with the configured prompt style and stop rule, then
    :func:`score_generations`. Through the generation seam (:func:`recipe.models.generation.generate`: vLLM when the
    model came with an engine, ``adapter`` its LoRA folder; else the hf decoder): the same rows either way."""
    texts = [build_prompt(_get(p, "question"), ecfg.prompt, answer_label, tokenizer) for p in problems]
    with tqdm(total=len(texts), desc="eval", unit="problem") as bar:
        generations = generation.generate(model, tokenizer, texts, adapter=adapter, max_new_tokens=ecfg.max_new_tokens,
                                          batch_size=ecfg.batch_size, temperature=0.0, seed=seed, stop_texts=STOP_TEXTS,
                                          answer_label=answer_label,
                                          stop_rule=resolve_stop_rule(ecfg.stop_rule, ecfg.prompt), progress=bar.update)
    return score_generations(problems, [g[0] for g in generations], answer_label=answer_label,
                             official_golds=official_golds)


def official_golds(source: str, split: str, problems: Sequence[Any]) -> list[Any]:
    """The raw ``answer`` text of each problem's dataset row (problem ``{split}-{i}`` is raw row ``i``), as the
    authors' checker reads it; ``""`` where a row has none.

    >>> official_golds("synthetic:3", "test", [{"id": "test-2"}]) == [load_raw_rows("synthetic:3", "test")[2]["answer"]]
    True
    """
    raw = load_raw_rows(source, split)
    golds = []
    for p in problems:
        index = int(str(_get(p, "id")).rsplit("-", 1)[-1])
        row = raw[index] if 0 <= index < len(raw) else None
        golds.append(row.get("answer", "") if isinstance(row, Mapping) else "")
    return golds


def decontaminate(problems: list, train_questions: set[str]) -> list:
    """``problems`` without those whose question is also a training question. The synthetic generator draws from a
    few templates, so its splits share questions (64 of 400 test problems appear in 2,500 training rows); GSM8K's
    splits are disjoint, so nothing is dropped there and its train split is not read.

    >>> from recipe.data.gsm8k import Problem
    >>> [p.id for p in decontaminate([Problem("t-0", "A?", ("1.",), "1"), Problem("t-1", "B?", ("2.",), "2")], {"B?"})]
    ['t-0']
    """
    return [p for p in problems if p.question not in train_questions]


def load_eval_problems(cfg: Config) -> tuple[list, str]:
    """The first ``eval.limit`` problems of ``eval.split`` of ``data.eval_source`` (or ``data.source``), after
    dropping synthetic problems whose question is also in the synthetic train split (:func:`decontaminate`)."""
    source = cfg.data.eval_source or cfg.data.source
    problems, report = load_gsm8k(source, split=cfg.eval.split, strict=cfg.data.strict,
                                  annotations=cfg.data.annotations)
    if report.n_bad:
        log.warning("eval data %s", report.summary())
    if source.startswith("synthetic") and cfg.data.source.startswith("synthetic") and cfg.eval.split != "train":
        train, _ = load_gsm8k(cfg.data.source, split="train")
        kept = decontaminate(problems, {p.question for p in train})
        if len(kept) < len(problems):
            log.info("eval: %d of %d %s problems are also training questions of %s; left out", len(problems) - len(kept),
                     len(problems), source, cfg.data.source)
        problems = kept
    if cfg.eval.limit > 0:
        problems = problems[: cfg.eval.limit]
    if not problems:
        raise EvalError(f"no evaluation problems in '{source}' split '{cfg.eval.split}'")
    return problems, source


def _kept(folder: Path, expected: dict) -> bool:
    """Whether ``folder`` holds a finished evaluation for ``expected`` (protocol, model, data): a well-formed
    results.json recording them, and a generations.jsonl that reads whole with one row per evaluated problem. A
    malformed or truncated one is a broken evaluation (said, then redone); a different protocol, model or data is
    simply not this evaluation."""
    if not (folder / RESULTS).is_file():
        return False
    try:
        old = read_json(folder / RESULTS)
        problem = results_problem(old)
    except (OSError, ValueError, RecursionError) as exc:
        problem = f"unreadable ({type(exc).__name__}: {str(exc)[:80]})"
    if problem is None and not all(old.get(key) == value for key, value in expected.items()):
        return False
    if problem is None:
        try:
            rows = read_jsonl(folder / GENERATIONS)
            n = old["metrics"]["n"]
            if len(rows) != n or not all(isinstance(row, dict) for row in rows):
                problem = f"{GENERATIONS} holds {len(rows)} rows, not the {n} evaluated problems' records"
        except (OSError, ValueError, RecursionError) as exc:
            problem = f"{GENERATIONS} is unreadable ({str(exc)[:120]})"
    if problem:
        log.warning("%s: the evaluation in %s is broken (%s); evaluating it again", folder.name, folder, problem)
    return problem is None


def weights_hash(folder: str | Path | None) -> str | None:
    """sha256 over a weights folder's weight and config files (names and bytes, in name order): the eval cache key,
    so a moved run keeps its evaluations and weights replaced in place are evaluated again."""
    if folder is None:
        return None
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in WEIGHT_SUFFIXES or path.name in ("adapter_config.json", "config.json")):
            digest.update(path.name.encode() + b"\0")
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def model_record(cfg: Config, init_from: str | None, run_dir: str | Path | None = None) -> dict:
    """What identifies the evaluated weights: the base model and the content hash of the weights laid on it
    (``init_from`` is recorded relative to ``run_dir`` when inside it)."""
    shown = init_from
    if init_from is not None and run_dir is not None:
        try:
            shown = Path(init_from).resolve().relative_to(Path(run_dir).resolve()).as_posix()
        except ValueError:
            shown = init_from
    return {"name_or_path": cfg.model.name_or_path, "dtype": cfg.model.dtype, "load_in_4bit": cfg.model.load_in_4bit,
            "init_from": shown, "weights_sha256": weights_hash(init_from)}


def evaluate_weights(cfg: Config, out_dir: str | Path, record: dict, init_from: str | None = None,
                     reuse: bool = True, served: EngineModel | None = None) -> dict:
    """Load the model (plus ``init_from`` weights), evaluate, write results.json + generations.jsonl into
    ``out_dir``. With ``reuse``, an existing results.json with the same protocol, model and data is returned as
    is, and one in a sibling folder (e.g. stage 3 found no failures: stage-2 weights) is copied. ``served``: the
    loaded model whose engine serves ``init_from`` (its base; ``init_from`` an adapter on it or the base itself)
    instead of a load of its own."""
    out_dir = Path(out_dir)
    problems, source = load_eval_problems(cfg)
    data_record = {"source": source, "split": cfg.eval.split, "n": len(problems), "sha256": dataset_hash(problems)}
    key = {"protocol": protocol(cfg.eval, cfg.data.answer_label), "model": record, "data": data_record}
    if reuse and _kept(out_dir, key):
        log.info("%s: already evaluated with this protocol, model and data; kept (delete %s to redo)", out_dir.name,
                 out_dir / RESULTS)
        return read_json(out_dir / RESULTS)
    for other in sorted(out_dir.parent.glob(f"*/{RESULTS}")) if reuse else []:
        if other.parent != out_dir and _kept(other.parent, key):
            log.info("%s: same weights, protocol and data as %s; its results are copied", out_dir.name,
                     other.parent.name)
            write_jsonl(out_dir / GENERATIONS, read_jsonl(other.parent / GENERATIONS))
            results = {**read_json(other), "name": out_dir.name, "copied_from": other.parent.name}
            write_json(out_dir / RESULTS, results)
            return results
    if served is None:
        model, tokenizer = model_mod.load(cfg.model, init_from=init_from, trainable=False, seed=cfg.run.seed,
                                          vllm=True, vllm_cfg=cfg.vllm)
        model = to_device(model, cfg.run.device)
    else:
        model, tokenizer = served.get()
    t0 = time.monotonic()
    golds = official_golds(source, cfg.eval.split, problems)
    metrics, rows = generate_and_score(model, tokenizer, problems, cfg.eval, cfg.data.answer_label, cfg.run.seed,
                                       official_golds=golds, adapter=model_mod.adapter_folder(init_from))
    results = {"name": out_dir.name, "metrics": metrics, **key, "wall_s": round(time.monotonic() - t0, 2),
               "peak_rss_mb": peak_rss_mb(),
               "weights": model_mod.weights_record(model), "versions": versions()}
    write_jsonl(out_dir / GENERATIONS, rows)
    write_json(out_dir / RESULTS, results)  # last: its presence means the evaluation is complete
    del model
    gc.collect()
    log.info("%s: %s", out_dir.name, short_summary(metrics))
    return results


def short_summary(m: dict) -> str:
    tokens = "-" if m["avg_tokens"] is None else f"{m['avg_tokens']:.1f}"
    official = (f", official checker {100 * m['official_accuracy']:.2f}% ({m['official_n_correct']}/{m['n']})"
                if "official_accuracy" in m else "")
    return (f"accuracy {100 * m['accuracy']:.2f}% ({m['n_correct']}/{m['n']}){official}, avg tokens {tokens}, "
            f"truncated {100 * m['truncation_rate']:.1f}%, format {100 * m['format_rate']:.1f}%")
