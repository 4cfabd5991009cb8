"""Data I/O: GSM8K loading and parsing (hub, local files, the synthetic source), row slicing, ``datasets``
conversion. The stage-specific row builders live with their stages (:mod:`recipe.train`).

A GSM8K row is ``{"question": ..., "answer": "line\\nline\\n#### 72"}``; each non-empty rationale line is one
step. Calculator annotations such as ``<<48/2=24>>`` are removed by a regex and never evaluated.

>>> p = parse_rows([{"question": "Q?", "answer": "48/2 = <<48/2=24>>24 clips.\\n#### 24"}], "train")[0][0]
>>> p.id, p.steps, p.answer
('train-0', ('48/2 = 24 clips.',), '24')
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from recipe.data.answers import gold_from_gsm8k
from recipe.data.readers import LOCAL_SUFFIXES, read_rows
from recipe.data.synthetic import parse_source, synthetic_rows
from recipe.errors import BadRow, DataError

Annotations = Literal["strip", "keep"]
SYNTHETIC_DEFAULT_ROWS = 1000
MAX_REPORTED_BAD = 5

_ANNOTATION = re.compile(r"<<[^<>]*>>")


@dataclass(frozen=True)
class Problem:
    """One parsed problem: teacher rationale ``steps`` (annotations stripped), the normalised ``answer``, and the
    teacher's free ``thinking`` part ("" for gold rationales; a teacher file in the authors' format has one)."""

    id: str
    question: str
    steps: tuple[str, ...]
    answer: str
    thinking: str = ""

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
        """Plain data (``steps`` as a list), the inverse of :meth:`from_dict`; ``thinking`` only when there is one.

        >>> Problem("x-0", "Q?", ("a = 1.",), "1").to_dict()
        {'id': 'x-0', 'question': 'Q?', 'steps': ['a = 1.'], 'answer': '1'}
        >>> Problem("x-0", "Q?", ("a = 1.",), "1", thinking="Hm.").to_dict()["thinking"]
        'Hm.'
        """
        row = {"id": self.id, "question": self.question, "steps": list(self.steps), "answer": self.answer}
        return {**row, "thinking": self.thinking} if self.thinking else row

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Problem:
        """Build from a mapping with ``id``, ``question``, ``steps`` and ``answer`` (and optionally ``thinking``).

        >>> Problem.from_dict({"id": "x-0", "question": "Q?", "steps": ["a = 1."], "answer": "1"}).steps
        ('a = 1.',)
        """
        return cls(id=row["id"], question=row["question"], steps=tuple(row["steps"]), answer=row["answer"],
                   thinking=row.get("thinking") or "")


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
    :func:`recipe.data.answers.gold_from_gsm8k` ("1,080" -> "1080", "72.0" -> "72").

    >>> parse_rationale("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\n\\n48+24 = <<48+24=72>>72\\n#### 72")
    (('Natalia sold 48/2 = 24 clips in May.', '48+24 = 72'), '72')
    >>> parse_rationale("no marker here")
    Traceback (most recent call last):
    ...
    recipe.errors.BadRow: no '####' final-answer marker
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


def check_source(
    source: str,
    split: str = "train",
    slices: Mapping[str, Sequence[int | None]] | None = None,
    strict: bool = False,
    annotations: Annotations = "strip",
) -> ParseReport:
    """Fail fast, before any model loads: the split must parse to at least one problem and each ``name -> (start,
    end)`` slice (end None or -1: to the end) must fit the parsed rows and be non-empty. Raises :class:`DataError`
    naming the source, split and slice; returns the parse report.

    Call it from the orchestrator (``curriculum.prepare`` / the stage and eval commands) right after config
    validation, e.g. ``check_source(cfg.data.source, "train", {s: cfg.data.<s>_rows for enabled stages})`` and
    ``check_source(cfg.eval.source or cfg.data.source, cfg.eval.split)``.

    >>> check_source("synthetic:10", "train", {"stage1": (0, 5)}).n_ok
    10
    >>> check_source("synthetic:10", "train", {"stage2": (5, 20)})
    Traceback (most recent call last):
    ...
    recipe.errors.DataError: data.stage2_rows [5, 20) does not fit the 10 usable rows of synthetic:10 (train)
    """
    problems, report = load_gsm8k(source, split=split, strict=strict, annotations=annotations)
    if not problems:
        raise DataError(f"{source} ({split}) has no usable rows: {report.summary()}")
    n = len(problems)
    for name, (start, end) in (slices or {}).items():
        stop = _resolve_end(end, n)
        if not (isinstance(start, int) and 0 <= start < stop <= n):
            raise DataError(f"data.{name}_rows [{start}, {end}) does not fit the {n} usable rows of {source} ({split})")
    return report


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


def _synthetic_spec(source: str, split: str) -> tuple[int, int, int | None, str]:
    """``synthetic[:N[:S]][:verbose|:mixed]``: N rows (default 1000) of at most S steps (default: any, 2 to 6)."""
    try:
        n, max_steps, style = parse_source(source, SYNTHETIC_DEFAULT_ROWS)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return n, zlib.crc32(f"synthetic-{split}".encode()), max_steps, style


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
    return parse_rows(load_raw_rows(source, split, strict), split, strict=strict, annotations=annotations)


def load_raw_rows(source: str = "openai/gsm8k", split: str = "train", strict: bool = False) -> list[Any]:
    """The unparsed rows of a split (see :func:`load_gsm8k` for ``source``); row ``i`` is problem ``{split}-{i}``.
    The authors' checker reads the raw ``answer`` text of these rows.

    >>> load_raw_rows("synthetic:2", split="test")[1]["answer"].split("####")[-1].strip().isdigit()
    True
    """
    if source == "synthetic" or source.startswith("synthetic:"):
        n, seed, max_steps, style = _synthetic_spec(source, split)
        return synthetic_rows(n, seed, max_steps=max_steps, style=style)
    if _looks_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data source not found: {path}")
        return read_rows(_split_file(path, split) if path.is_dir() else path, split, strict)
    return _hub_rows(source, split)


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


def to_dataset(rows: Sequence[Mapping[str, Any]]):
    """A ``datasets.Dataset`` with one column per row key.

    >>> ds = to_dataset([{"id": "t-0", "prompt": "Q?", "answer": "1"}])
    >>> len(ds), sorted(ds.column_names)
    (1, ['answer', 'id', 'prompt'])
    """
    import datasets

    return datasets.Dataset.from_list([dict(row) for row in rows])
