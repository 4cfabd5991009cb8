"""GSM8K loading and parsing, row slicing, and the stage 1/2/3 dataset builders.

A GSM8K row is ``{"question": ..., "answer": "line\\nline\\n#### 72"}``; each non-empty rationale line is one
step. Calculator annotations such as ``<<48/2=24>>`` are removed by a regex and never evaluated.

Builders are pure: each call seeds its own ``random.Random(seed)`` and walks the problems in order, so the same
inputs give the same rows in any process.

>>> p = parse_rows([{"question": "Q?", "answer": "48/2 = <<48/2=24>>24 clips.\\n#### 24"}], "train")[0][0]
>>> p.id, p.steps, p.answer
('train-0', ('48/2 = 24 clips.',), '24')
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from recipe.answers import gold_from_gsm8k
from recipe.prompts import (
    ANSWER_LABEL,
    COMPLETION_PREFIX,
    MASK_TOKEN,
    render_solution,
    stage1_prompt,
    stage2_prompt,
    stage3_prompt,
)
from recipe.synthetic import STYLES, synthetic_rows

Annotations = Literal["strip", "keep"]
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
SYNTHETIC_DEFAULT_ROWS = 1000
MAX_REPORTED_BAD = 5

_ANNOTATION = re.compile(r"<<[^<>]*>>")


class DataError(ValueError):
    """A dataset could not be loaded or parsed; the message names the file, row or line."""


class BadRow(DataError):
    """One row is unusable; ``reason`` says why and ``row_id`` (when known) which row."""

    def __init__(self, reason: str, row_id: str | None = None):
        self.reason = reason
        self.row_id = row_id
        super().__init__(f"{row_id}: {reason}" if row_id else reason)

    def __reduce__(self):
        return type(self), (self.reason, self.row_id)


@dataclass(frozen=True)
class Problem:
    """One parsed problem: teacher rationale ``steps`` (annotations stripped) and the normalised ``answer``."""

    id: str
    question: str
    steps: tuple[str, ...]
    answer: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if not self.steps:
            raise ValueError(f"problem {self.id!r} has no steps")

    @property
    def rationale(self) -> str:
        """The teacher rationale, one step per line.

        >>> Problem("x-0", "Q?", ("a = 1.", "b = 2."), "2").rationale
        'a = 1.\\nb = 2.'
        """
        return "\n".join(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``steps`` as a list), the inverse of :meth:`from_dict`.

        >>> Problem("x-0", "Q?", ("a = 1.",), "1").to_dict()
        {'id': 'x-0', 'question': 'Q?', 'steps': ['a = 1.'], 'answer': '1'}
        """
        return {"id": self.id, "question": self.question, "steps": list(self.steps), "answer": self.answer}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Problem:
        """Build from a mapping with ``id``, ``question``, ``steps`` and ``answer``.

        >>> Problem.from_dict({"id": "x-0", "question": "Q?", "steps": ["a = 1."], "answer": "1"}).steps
        ('a = 1.',)
        """
        return cls(id=row["id"], question=row["question"], steps=tuple(row["steps"]), answer=row["answer"])


@dataclass(frozen=True)
class ParseReport:
    """How many rows of a split parsed; ``first_bad`` holds up to five ``(row_id, reason)`` pairs."""

    split: str
    n_total: int
    n_ok: int
    n_bad: int
    first_bad: tuple[tuple[str, str], ...] = ()

    def summary(self) -> str:
        """One line for logs.

        >>> ParseReport("train", 3, 2, 1, (("train-1", "no '####' final-answer marker"),)).summary()
        "train: 2/3 rows parsed, 1 bad (train-1: no '####' final-answer marker)"
        """
        text = f"{self.split}: {self.n_ok}/{self.n_total} rows parsed, {self.n_bad} bad"
        if self.first_bad:
            shown = "; ".join(f"{rid}: {why}" for rid, why in self.first_bad)
            more = ", ..." if self.n_bad > len(self.first_bad) else ""
            text += f" ({shown}{more})"
        return text


# ------------------------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------------------------


def strip_annotations(text: str, annotations: Annotations = "strip") -> str:
    """Remove GSM8K calculator annotations ``<<expr=result>>``, keeping the visible result after them.

    Only well-formed ``<<...>>`` spans without inner angle brackets are removed; anything else is left as is.

    >>> strip_annotations("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.")
    'Weng earns 12/60 = $0.2 per minute.'
    >>> strip_annotations("a << b and c >")
    'a << b and c >'
    >>> strip_annotations("48/2 = <<48/2=24>>24", annotations="keep")
    '48/2 = <<48/2=24>>24'
    """
    if annotations == "keep":
        return text
    if annotations != "strip":
        raise ValueError(f"annotations must be 'strip' or 'keep', got {annotations!r}")
    return _ANNOTATION.sub("", text)


def parse_rationale(answer_field: str, annotations: Annotations = "strip") -> tuple[tuple[str, ...], str]:
    """Split a GSM8K ``answer`` field into (steps, final answer).

    Steps are the non-empty lines before the last ``####``; the final answer is what follows it, normalised by
    :func:`recipe.answers.gold_from_gsm8k` ("1,080" -> "1080", "72.0" -> "72").

    >>> parse_rationale("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\n\\n48+24 = <<48+24=72>>72\\n#### 72")
    (('Natalia sold 48/2 = 24 clips in May.', '48+24 = 72'), '72')
    >>> parse_rationale("no marker here")
    Traceback (most recent call last):
    ...
    recipe.data.BadRow: no '####' final-answer marker
    """
    if "####" not in answer_field:
        raise BadRow("no '####' final-answer marker")
    head, _, tail = answer_field.rpartition("####")
    try:
        answer = gold_from_gsm8k(tail)
    except ValueError:
        raise BadRow(f"final answer {tail.strip()[:40]!r} is not a number") from None
    lines = (strip_annotations(line, annotations).strip() for line in head.splitlines())
    steps = tuple(line for line in lines if line and not line.startswith("####"))
    if not steps:
        raise BadRow("empty rationale (no steps before '####')")
    return steps, answer


def _parse_row(row: Any, row_id: str, annotations: Annotations) -> Problem:
    if isinstance(row, BadRow):
        raise row
    if not isinstance(row, Mapping):
        raise BadRow(f"row is a {type(row).__name__}, expected a mapping with 'question' and 'answer'")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadRow("empty or missing 'question'")
    answer_field = row.get("answer")
    if not isinstance(answer_field, str):
        raise BadRow("missing 'answer' text")
    steps, answer = parse_rationale(answer_field, annotations)
    return Problem(id=row_id, question=question.strip(), steps=steps, answer=answer)


def parse_rows(
    rows: Iterable[Any], split: str, strict: bool = False, annotations: Annotations = "strip"
) -> tuple[list[Problem], ParseReport]:
    """Parse GSM8K-style rows; row ``i`` gets id ``f"{split}-{i}"``. Bad rows are skipped and counted
    (``strict=True``: the first one raises :class:`BadRow` naming its id).

    >>> probs, rep = parse_rows([{"question": "Q?", "answer": "1+1=2\\n#### 2"}, {"question": "", "answer": ""}], "t")
    >>> [p.id for p in probs], rep.summary()
    (['t-0'], "t: 1/2 rows parsed, 1 bad (t-1: empty or missing 'question')")
    """
    problems: list[Problem] = []
    bad: list[tuple[str, str]] = []
    n_total = 0
    for index, row in enumerate(rows):
        n_total += 1
        row_id = f"{split}-{index}"
        try:
            problems.append(_parse_row(row, row_id, annotations))
        except BadRow as exc:
            if strict:
                raise BadRow(exc.reason, row_id) from None
            bad.append((row_id, exc.reason))
    report = ParseReport(split, n_total, len(problems), len(bad), tuple(bad[:MAX_REPORTED_BAD]))
    return problems, report


# ------------------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------------------


def _read_json_lines(path: Path, text: str, strict: bool) -> list[Any]:
    rows: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            message = f"{path}: line {lineno} is not valid JSON ({exc.msg})"
            if strict:
                raise DataError(message) from None
            rows.append(BadRow(message))
    return rows


def _read_json(path: Path, text: str, split: str, strict: bool) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _read_json_lines(path, text, strict)  # JSON Lines saved with a .json suffix
    if isinstance(data, Mapping) and isinstance(data.get(split), list):
        data = data[split]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (or JSON Lines), got {type(data).__name__}")
    return data


def read_rows(path: str | Path, split: str = "train", strict: bool = False) -> list[Any]:
    """Raw rows of a local ``.jsonl`` / ``.json`` / ``.parquet`` file (malformed lines become BadRow entries
    unless ``strict``)."""
    path = Path(path)
    if path.suffix not in LOCAL_SUFFIXES:
        raise DataError(f"{path}: unsupported file type (expected one of {', '.join(LOCAL_SUFFIXES)})")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise DataError(f"cannot read parquet file {path}: {exc}") from None
    if path.suffix == ".jsonl":
        return _read_json_lines(path, text, strict)
    return _read_json(path, text, split, strict)


def _split_file(folder: Path, split: str) -> Path:
    candidates = [folder / f"{split}{suffix}" for suffix in LOCAL_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = ", ".join(c.name for c in candidates)
    raise DataError(f"no file for split '{split}' in {folder} (looked for {names})")


def _looks_local(source: str) -> bool:
    return (
        Path(source).expanduser().exists()
        or source.startswith((".", "/", "~"))
        or source.endswith(LOCAL_SUFFIXES)
    )


def _synthetic_spec(source: str, split: str) -> tuple[int, int, int | None]:
    """``synthetic[:N[:S]][:verbose]``: N rows (default 1000) of at most S steps (default: any, 2 to 6)."""
    parts = source.split(":")[1:]
    parts = parts[:-1] if parts and parts[-1] in STYLES else parts  # a trailing teacher style: read by load_gsm8k
    if len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts) or (len(parts) == 2 and int(parts[1]) < 2):
        raise DataError(f"bad data source {source!r}: expected 'synthetic', 'synthetic:N' or 'synthetic:N:S' "
                        "(N rows > 0, at most S >= 2 steps each)")
    n = int(parts[0]) if parts else SYNTHETIC_DEFAULT_ROWS
    max_steps = int(parts[1]) if len(parts) == 2 else None
    return n, zlib.crc32(f"synthetic-{split}".encode()), max_steps


def _hub_rows(source: str, split: str) -> list[Any]:
    try:
        import datasets

        return datasets.load_dataset(source, "main", split=split).to_list()
    except Exception as exc:  # offline, unknown id, missing config: all reported the same way
        raise DataError(
            f"could not load '{source}' (config 'main', split '{split}') from the Hugging Face hub: "
            f"{type(exc).__name__}: {exc}\n"
            "Offline or no hub access? Point at local files instead, e.g. "
            "--set data.source=../shared/data/gsm8k (a folder with train.jsonl and test.jsonl) "
            "or --set data.source=path/to/train.jsonl (.json and .parquet work too)."
        ) from exc


def load_gsm8k(
    source: str = "openai/gsm8k", split: str = "train", strict: bool = False, annotations: Annotations = "strip"
) -> tuple[list[Problem], ParseReport]:
    """Load and parse a GSM8K split.

    ``source`` is a hub dataset id, a local ``.jsonl``/``.json``/``.parquet`` file (``split`` ignored), a folder
    holding ``{split}.jsonl|.json|.parquet``, or ``synthetic`` / ``synthetic:N`` (generated; seeds differ by split).

    >>> problems, report = load_gsm8k("synthetic:3", split="test")
    >>> len(problems), report.n_bad, problems[0].id
    (3, 0, 'test-0')
    """
    if source == "synthetic" or source.startswith("synthetic:"):
        n, seed, max_steps = _synthetic_spec(source, split)
        style = source.rsplit(":", 1)[-1]
        rows: list[Any] = synthetic_rows(n, seed, max_steps=max_steps, style=style if style in STYLES else "terse")
    elif _looks_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data source not found: {path}")
        rows = read_rows(_split_file(path, split) if path.is_dir() else path, split, strict)
    else:
        rows = _hub_rows(source, split)
    return parse_rows(rows, split, strict=strict, annotations=annotations)


# ------------------------------------------------------------------------------------------------------------------
# Slicing
# ------------------------------------------------------------------------------------------------------------------


def _resolve_end(end: int | None, n: int | None) -> int | None:
    return n if end is None or end == -1 else end


def slice_rows(problems: Sequence[Problem], start: int, end: int | None) -> list[Problem]:
    """Rows ``[start, end)``; ``end`` None or -1 means "to the end". Out-of-range bounds raise.

    >>> slice_rows(list("abcde"), 1, 3), slice_rows(list("abcde"), 3, -1)
    (['b', 'c'], ['d', 'e'])
    """
    n = len(problems)
    stop = _resolve_end(end, n)
    if not 0 <= start <= stop <= n:
        raise ValueError(f"row range [{start}, {end}) does not fit the {n} loaded rows")
    return list(problems[start:stop])


def check_disjoint_slices(slices: Mapping[str, Sequence[int | None]], n: int | None = None) -> None:
    """Raise ValueError naming the first two overlapping ``name -> (start, end)`` ranges (end None/-1 = to ``n``,
    unbounded when ``n`` is None).

    >>> check_disjoint_slices({"stage1": (0, 10), "stage2": (10, -1)})
    >>> check_disjoint_slices({"stage1": (0, 10), "stage2": (5, 20)})
    Traceback (most recent call last):
    ...
    ValueError: row ranges overlap: stage1 [0, 10) and stage2 [5, 20)
    """
    spans = []
    for name, (start, end) in slices.items():
        stop = _resolve_end(end, n)
        spans.append((name, start, end, float("inf") if stop is None else stop))
    for i, (name1, s1, raw1, e1) in enumerate(spans):
        for name2, s2, raw2, e2 in spans[i + 1 :]:
            if max(s1, s2) < min(e1, e2):
                raise ValueError(f"row ranges overlap: {name1} [{s1}, {raw1}) and {name2} [{s2}, {raw2})")


# ------------------------------------------------------------------------------------------------------------------
# Stage builders
# ------------------------------------------------------------------------------------------------------------------


def _teacher_fields(problem: Problem, answer_label: str) -> tuple[str, dict[str, Any]]:
    solution = render_solution(problem.steps, problem.answer, answer_label)
    fields = {
        "id": problem.id,
        "answer": problem.answer,
        "teacher_steps": len(problem.steps),
        "teacher_words": len(solution.split()),
    }
    return solution, fields


def build_stage1(
    problems: Sequence[Problem],
    seed: int,
    mask_prob: float = 0.7,
    mask_token: str = MASK_TOKEN,
    answer_label: str = ANSWER_LABEL,
) -> list[dict[str, Any]]:
    """Masked shuffled reconstruction (SFT): steps always shuffled (a uniform permutation, which may be the
    identity), and with probability ``mask_prob`` one random position of the shuffled list replaced by the mask
    (``masked_index``, -1 when none). Masking a uniform position after shuffling hides a uniformly chosen step,
    the same distribution as the paper's mask-then-shuffle. The completion is the full ordered teacher solution.

    >>> row = build_stage1([Problem("t-0", "Q?", ("a = 1.", "b = 2."), "2")], seed=0, mask_prob=1.0)[0]
    >>> row["shuffled"][row["masked_index"]], row["completion"]
    ('[MASK]', '\\nStep 1: a = 1.\\nStep 2: b = 2.\\nFinal Answer: 2')
    """
    rng = random.Random(seed)
    rows = []
    for problem in problems:
        shuffled = list(problem.steps)
        rng.shuffle(shuffled)
        masked_index = -1
        if rng.random() < mask_prob:
            masked_index = rng.randrange(len(shuffled))
            shuffled[masked_index] = mask_token
        solution, fields = _teacher_fields(problem, answer_label)
        rows.append({
            **fields,
            "prompt": stage1_prompt(problem.question, shuffled, mask_token, answer_label),
            "completion": COMPLETION_PREFIX + solution,
            "shuffled": shuffled,
            "masked_index": masked_index,
        })
    return rows


def stage2_mask_count(n_steps: int, min_masked: int = 3, mask_ratio: float = 0.5) -> int:
    """Steps hidden in stage 2: ``max(min_masked, floor(mask_ratio * n_steps))``, capped at ``n_steps - 1`` so
    at least one step stays visible.

    >>> [stage2_mask_count(n) for n in (1, 2, 3, 4, 6, 7, 9)]
    [0, 1, 2, 3, 3, 3, 4]
    """
    return max(0, min(max(min_masked, int(mask_ratio * n_steps)), n_steps - 1))


def build_stage2(
    problems: Sequence[Problem],
    seed: int,
    min_masked: int = 3,
    mask_ratio: float = 0.5,
    mask_token: str = MASK_TOKEN,
    answer_label: str = ANSWER_LABEL,
) -> list[dict[str, Any]]:
    """Masked completion (GRPO): steps in order, :func:`stage2_mask_count` random ones hidden
    (``masked_indices``, sorted).

    >>> row = build_stage2([Problem("t-0", "Q?", ("a = 1.", "b = 2.", "c = 3."), "3")], seed=0)[0]
    >>> len(row["masked_indices"]), row["prompt"].count("- [MASK]"), row["teacher_words"]
    (2, 2, 18)
    """
    rng = random.Random(seed)
    rows = []
    for problem in problems:
        n = len(problem.steps)
        masked = sorted(rng.sample(range(n), stage2_mask_count(n, min_masked, mask_ratio)))
        hidden = set(masked)
        partial = [mask_token if i in hidden else step for i, step in enumerate(problem.steps)]
        solution, fields = _teacher_fields(problem, answer_label)
        rows.append({
            **fields,
            "prompt": stage2_prompt(problem.question, partial, mask_token, answer_label),
            "teacher_solution": solution,
            "masked_indices": masked,
        })
    return rows


def build_stage3(problems: Sequence[Problem], answer_label: str = ANSWER_LABEL) -> list[dict[str, Any]]:
    """Internalisation (GRPO): the teacher solution is shown and a much shorter rewrite is asked for.

    >>> row = build_stage3([Problem("t-0", "Q?", ("a = 1.",), "1")])[0]
    >>> row["teacher_solution"], row["teacher_steps"]
    ('Step 1: a = 1.\\nFinal Answer: 1', 1)
    """
    rows = []
    for problem in problems:
        solution, fields = _teacher_fields(problem, answer_label)
        rows.append({
            **fields,
            "prompt": stage3_prompt(problem.question, solution, answer_label),
            "teacher_solution": solution,
        })
    return rows


def add_token_lengths(rows: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """New rows with ``teacher_tokens``: the teacher solution's length in ``tokenizer`` (``teacher_solution``,
    or ``completion`` for stage-1 rows), tokenised in one batched call without special tokens.

    >>> words = lambda texts, add_special_tokens: {"input_ids": [t.split() for t in texts]}
    >>> add_token_lengths([{"id": "t-0", "teacher_solution": "Step 1: a = 1.\\nFinal Answer: 1"}], words)
    [{'id': 't-0', 'teacher_solution': 'Step 1: a = 1.\\nFinal Answer: 1', 'teacher_tokens': 8}]
    """
    texts = []
    for row in rows:
        text = row["teacher_solution"] if "teacher_solution" in row else row.get("completion")
        if not isinstance(text, str):
            raise KeyError(f"row {row.get('id')!r} has neither 'teacher_solution' nor 'completion'")
        texts.append(text)
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [{**row, "teacher_tokens": len(tok)} for row, tok in zip(rows, ids, strict=True)]


def to_dataset(rows: Sequence[Mapping[str, Any]]):
    """A ``datasets.Dataset`` with one column per row key.

    >>> ds = to_dataset(build_stage3([Problem("t-0", "Q?", ("a = 1.",), "1")]))
    >>> len(ds), sorted(ds.column_names)
    (1, ['answer', 'id', 'prompt', 'teacher_solution', 'teacher_steps', 'teacher_words'])
    """
    import datasets

    return datasets.Dataset.from_list([dict(row) for row in rows])
