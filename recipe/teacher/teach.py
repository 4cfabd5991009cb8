"""``cotrecipe teach``: write a teacher-rationale file from GSM8K gold, a local model, an OpenAI-compatible server
or an existing teacher file (``file:``, e.g. the authors' released one).

Every finished request is appended to a cache file (``<output>.cache.jsonl``: one JSON line per problem, flushed
and fsynced before the next) keyed by sha256(question, teacher, prompt); a rerun reads the cache and asks only for
what is missing, so a crash or SIGKILL loses nothing finished and writes no duplicate (a torn last line is cut off
before appending). Failed requests are not cached and are retried by the next run. The output file is then rebuilt
atomically from the cache: only rationales that parse (steps + an answer) and whose answer matches the gold answer
are kept, in the three-part form of :func:`recipe.teacher.format.render_target`, so it loads as ``data.teacher``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from recipe import fsio
from recipe.data.answers import answers_match
from recipe.data.gsm8k import Problem, load_gsm8k
from recipe.errors import TeachError, TeacherServerError
from recipe.models.model import load_tokenizer, resolve_model_path
from recipe.teacher.client import OpenAIClient, RequestFailed
from recipe.teacher.format import Latex, Rationale, parse_rationale_text, render_target
from recipe.teacher.rationales import load_teacher_rationales
from recipe.teacher.stats import format_table, write_stats

log = logging.getLogger("recipe.teacher.teach")

TEACH_PROMPT = (
    "Solve this math problem. First think it through in a section that starts with \"Thinking…\". Then write the "
    "solution as numbered steps, one per line: \"Step 1: ...\", \"Step 2: ...\". End with a last line "
    "\"Final Answer: [number]\".\nQuestion: {question}\n"
)
STATUSES = ("kept", "wrong", "unparseable")


@dataclass(frozen=True)
class TeachOptions:
    """What ``cotrecipe teach`` does (every field is a CLI option; see ``cotrecipe teach -h``)."""

    source: str = "gold"  # gold | hf:<model folder, hub id or builtin:...> | openai:<base_url> | file:<path>
    output: str = "teacher.jsonl"
    model: str = ""  # the served model name for openai:
    split: str = "train"
    limit: int | None = None  # first N problems only
    concurrency: int = 4
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    batch_size: int = 8
    max_new_tokens: int = 1024
    temperature: float = 0.0
    api_key_env: str = "OPENAI_API_KEY"
    latex: Latex = "keep"

    @property
    def cache(self) -> Path:
        return Path(f"{self.output}.cache.jsonl")

    def teacher_id(self) -> str:
        """Identifies the teacher in cache keys: source, model and generation settings (never the API key)."""
        if self.source == "gold":
            return "gold"
        model = f"|{self.model}" if self.model else ""
        return f"{self.source}{model}|t={self.temperature}|max={self.max_new_tokens}"


@dataclass
class Summary:
    total: int = 0
    kept: int = 0
    wrong: int = 0
    unparseable: int = 0
    failed: int = 0
    cached: int = 0  # finished in an earlier run, not requested again
    requested: int = 0

    def line(self) -> str:
        return (f"{self.total} problems: {self.kept} kept, {self.wrong} wrong answer, {self.unparseable} unparseable, "
                f"{self.failed} failed requests ({self.cached} from the cache, {self.requested} requested now)")


def check_options(opts: TeachOptions) -> None:
    """Refuse, in one line naming the flag, a value that would hang, crash deep in a library or silently do
    something else (``--limit 0`` meant every problem, ``--batch-size 0`` a ``range()`` traceback, ``--timeout
    nan`` a socket error), and an ``--output`` that would replace a file this command did not write."""
    counts = (("--limit", opts.limit, 1), ("--concurrency", opts.concurrency, 1), ("--retries", opts.retries, 0),
              ("--batch-size", opts.batch_size, 1), ("--max-new-tokens", opts.max_new_tokens, 1))
    for flag, value, least in counts:
        if value is not None and value < least:
            raise TeachError(f"bad value for '{flag}': {value} (must be >= {least})")
    if not (math.isfinite(opts.timeout) and opts.timeout > 0):
        raise TeachError(f"bad value for '--timeout': {opts.timeout} (must be a number of seconds > 0)")
    if not (math.isfinite(opts.temperature) and opts.temperature >= 0):
        raise TeachError(f"bad value for '--temperature': {opts.temperature} (must be a number >= 0)")
    _check_output(opts)


def _check_output(opts: TeachOptions) -> None:
    """The output is rewritten whole, so it must be new, empty, or a teacher file (its first row names its
    ``teacher``), and never the ``file:`` source being read."""
    out = Path(opts.output)
    if opts.source.startswith("file:"):
        source = Path(opts.source.split(":", 1)[1])
        if source.exists() and out.exists() and source.resolve() == out.resolve():
            raise TeachError(f"--output {opts.output} is the --source file; choose another path (nothing was written)")
    if not out.is_file():
        return
    with out.open("rb") as fh:
        first = next((line for line in fh if line.strip()), b"")
    if not first:
        return
    value, _ = fsio.parse_jsonl_line(first)
    if not (isinstance(value, dict) and "teacher" in value and "rationale" in value):
        raise TeachError(f"--output {opts.output} holds a file teach did not write (its first row is not a teacher "
                         "row); move it or choose another path (nothing was written)")


def write_rows(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Atomic JSON Lines with non-ASCII escaped: a question holding U+2028 (GSM8K train row 2381 does) must not
    break a reader that splits lines with ``str.splitlines``."""
    fsio.write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def teach_prompt(question: str) -> str:
    return TEACH_PROMPT.format(question=question.strip())


def cache_key(question: str, teacher: str, prompt: str) -> str:
    """sha256 of (problem, teacher, prompt): a changed prompt or teacher never reuses an old answer."""
    return hashlib.sha256(json.dumps([question.strip(), teacher, prompt]).encode("utf-8")).hexdigest()


def judge(raw: str, gold: str, latex: Latex = "keep") -> tuple[str, Rationale]:
    """('kept' | 'wrong' | 'unparseable', parsed rationale) of one teacher reply against the gold answer."""
    rationale = parse_rationale_text(raw, latex)
    if not rationale.parsed:
        return "unparseable", rationale
    return ("kept" if answers_match(rationale.answer, gold) else "wrong"), rationale


class TeachCache:
    """Append-only JSON Lines cache with an in-memory index; safe against SIGKILL at any point."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line from a kill mid-write: cut it so appends start on a fresh line
            log.warning("%s: dropping an unfinished last line (%d bytes)", self.path, len(data) - end)
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())
        for lineno, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = row["key"]
            except (ValueError, KeyError, TypeError):
                raise TeachError(f"{self.path}: line {lineno} is not a cache record; delete the file to start over") from None
            self.rows.setdefault(key, row)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, row: dict) -> None:
        """Append ``row`` (with its ``key``) durably; a key already present is ignored."""
        with self._lock:
            if row["key"] in self.rows:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:
                fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            self.rows[row["key"]] = row


def load_problems(cfg: Any, split: str = "train", limit: int | None = None) -> list[Problem]:
    problems, report = load_gsm8k(cfg.data.source, split=split, strict=cfg.data.strict,
                                  annotations=cfg.data.annotations)
    if report.n_bad:
        log.warning("%s", report.summary())
    return problems[:limit] if limit else problems


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm  # lazy: only commands that generate need a bar

    return tqdm(total=total, desc=desc, unit="problem", disable=total == 0)


Generate = Callable[[Sequence[tuple[str, Problem, str]], Callable[[str, Problem, str, str], None]], int]


def _openai_generator(opts: TeachOptions) -> Generate:
    if not opts.model:
        raise TeachError("--source openai:<base_url> needs --model (the name the server serves)")
    url = opts.source.split(":", 1)[1]
    if not url.startswith(("http://", "https://")):
        raise TeachError(f"--source {opts.source!r}: expected openai:http(s)://host[:port]/v1")
    client = OpenAIClient.from_env(url, opts.model, opts.api_key_env, timeout=opts.timeout, retries=opts.retries,
                                   backoff=opts.backoff, temperature=opts.temperature,
                                   max_tokens=opts.max_new_tokens)

    def run(todo, record) -> int:
        failed = 0
        pool = ThreadPoolExecutor(max_workers=max(1, opts.concurrency))
        try:
            with _progress(len(todo), "teacher requests") as bar:
                futures = {pool.submit(client.complete, prompt): (key, problem, prompt)
                           for key, problem, prompt in todo}
                for future in as_completed(futures):
                    key, problem, prompt = futures[future]
                    try:
                        record(key, problem, prompt, future.result())
                    except RequestFailed as exc:
                        failed += 1
                        log.warning("%s: request failed: %s", problem.id, exc)
                    bar.update(1)
        finally:  # on an error or Ctrl-C, queued requests are dropped instead of sent
            pool.shutdown(wait=True, cancel_futures=True)
        return failed

    return run


def _hf_generator(cfg: Any, opts: TeachOptions) -> Generate:
    def run(todo, record) -> int:
        from transformers import AutoModelForCausalLM  # lazy: torch/transformers only for hf:

        from recipe.models import generation  # lazy: torch/transformers, only for hf: sources

        path = resolve_model_path(replace(cfg.model, name_or_path=opts.source.split(":", 1)[1]))
        tokenizer = load_tokenizer(path)
        model = generation.to_device(AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False))
        chat = getattr(tokenizer, "chat_template", None)
        with _progress(len(todo), "teacher generation") as bar:
            for start in range(0, len(todo), opts.batch_size):
                chunk = todo[start:start + opts.batch_size]
                texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                       add_generation_prompt=True) if chat else prompt
                         for _, _, prompt in chunk]
                outs = generation.generate(model, tokenizer, texts, max_new_tokens=opts.max_new_tokens,
                                           batch_size=opts.batch_size, temperature=opts.temperature,
                                           seed=cfg.run.seed)
                for (key, problem, prompt), gens in zip(chunk, outs, strict=True):
                    record(key, problem, prompt, gens[0].text)
                bar.update(len(chunk))
        return 0

    return run


def output_rows(problems: Iterable[Problem], cache: TeachCache, opts: TeachOptions,
                summary: Summary) -> list[dict]:
    rows = []
    teacher = opts.teacher_id()
    for problem in problems:
        cached = cache.rows.get(cache_key(problem.question, teacher, teach_prompt(problem.question)))
        if cached is None:
            continue
        status, rationale = judge(cached["raw"], problem.answer, opts.latex)
        setattr(summary, status, getattr(summary, status) + 1)
        if status == "kept":
            rows.append(_row(problem, rationale, teacher))
    return rows


def _row(problem: Problem, rationale: Rationale, teacher: str) -> dict:
    """One teacher-file row: the three-part ``rationale`` text (what ``data.teacher`` reads) and its parts."""
    return {"id": problem.id, "question": problem.question,
            "rationale": render_target(rationale.steps, problem.answer, rationale.thinking),
            "thinking": rationale.thinking, "steps": list(rationale.steps), "answer": problem.answer,
            "teacher_answer": rationale.answer, "teacher": teacher}


def gold_rows(problems: Iterable[Problem]) -> list[dict]:
    return [_row(p, Rationale("", p.steps, p.answer), "gold") for p in problems]


def file_rows(problems: Iterable[Problem], path: str, latex: Latex, summary: Summary) -> list[dict]:
    """An existing teacher file (e.g. the authors' released ``stage3_error_samples.json``) filtered to the
    gold-matching rationales and rewritten in this form; problems it does not cover are left out."""
    table = load_teacher_rationales(path, latex)
    rows = []
    for problem in problems:
        rationale = table.get(problem.question.strip()) or table.get(problem.id)
        if rationale is None:
            continue
        status = "unparseable" if not rationale.parsed else (
            "kept" if answers_match(rationale.answer, problem.answer) else "wrong")
        setattr(summary, status, getattr(summary, status) + 1)
        if status == "kept":
            rows.append(_row(problem, rationale, f"file:{path}"))
    return rows


def run_teach(cfg: Any, opts: TeachOptions, problems: Sequence[Problem] | None = None) -> Summary:
    """Generate (or reuse) a rationale for every problem, then write ``opts.output``; returns the counts."""
    check_options(opts)
    problems = list(problems) if problems is not None else load_problems(cfg, opts.split, opts.limit)
    summary = Summary(total=len(problems))
    if opts.source == "gold":
        rows = gold_rows(problems)
        summary.kept = len(rows)
        write_rows(opts.output, rows)
        return summary
    kind = opts.source.split(":", 1)[0]
    if kind not in ("hf", "openai", "file") or ":" not in opts.source:
        raise TeachError(f"--source {opts.source!r}: expected gold, hf:<model>, openai:<base_url> or file:<path>")
    if kind == "file":
        write_rows(opts.output, file_rows(problems, opts.source.split(":", 1)[1], opts.latex, summary))
        return summary
    cache = TeachCache(opts.cache)
    teacher = opts.teacher_id()
    todo, seen = [], set()
    for problem in problems:
        prompt = teach_prompt(problem.question)
        key = cache_key(problem.question, teacher, prompt)
        if key in cache:
            summary.cached += 1
        elif key not in seen:  # the same question twice is asked once
            seen.add(key)
            todo.append((key, problem, prompt))
    summary.requested = len(todo)

    def record(key: str, problem: Problem, prompt: str, raw: str) -> None:
        status, rationale = judge(raw, problem.answer, opts.latex)
        cache.add({"key": key, "id": problem.id, "question": problem.question, "teacher": teacher,
                   "status": status, "teacher_answer": rationale.answer, "raw": raw})

    generator = _openai_generator(opts) if kind == "openai" else _hf_generator(cfg, opts)
    log.info("teach: %d problems, %d cached, %d to request from %s", len(problems), summary.cached, len(todo),
             teacher)
    try:
        summary.failed = generator(todo, record)
    except TeacherServerError as exc:
        raise TeachError(str(exc)) from None
    finally:  # even on an error or Ctrl-C, the output reflects everything finished so far
        write_rows(opts.output, output_rows(problems, cache, opts, summary))
    return summary


def incomplete_line(summary: Summary, retries: int, rerun: str) -> str:
    """The error line for requests that still failed after their retries: the count and the command that asks for
    exactly those again (finished replies are in the cache and are not asked for)."""
    return (f"{summary.failed} of {summary.requested} teacher requests still failed after retrying (--retries "
            f"{retries}); "
            f"{summary.kept} kept rows are written and every finished reply is cached. "
            f"Rerun to ask only for the {summary.failed} missing: {rerun}")


def teach_command(cfg: Any, opts: TeachOptions, stats_png: str | None = None) -> tuple[list[str], Summary]:
    """The CLI's work: teach, then (with ``stats_png``) measure the written file; returns the lines to print and
    the counts (``summary.failed`` > 0: the run is incomplete and the CLI exits non-zero)."""
    check_options(opts)
    problems = load_problems(cfg, opts.split, opts.limit)
    summary = run_teach(cfg, opts, problems)
    lines = [f"wrote {opts.output}: {summary.line()}"]
    if stats_png:

        tokenizer = load_tokenizer(resolve_model_path(cfg.model))
        table = write_stats(opts.output, problems, tokenizer, stats_png, opts.latex)
        lines += [format_table(table), f"wrote {stats_png} and {Path(stats_png).with_suffix('.json')}"]
    return lines, summary
