"""Data readers: one hostile row is one bad row, never a lost file or an aborted stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipe.data.gsm8k import check_source, load_gsm8k, read_rows
from recipe.errors import DataError
from recipe.fsio import read_jsonl
from recipe.store import rundir
from tests.helpers import cli

GOOD = {"question": "Natalia sold 48 clips. How many?", "answer": "48/2 = <<48/2=24>>24\n24+48 = 72\n#### 72"}


def good_line(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}, ensure_ascii=False).encode("utf-8")


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_rows_with_unicode_line_separators_are_not_split(tmp_path: Path, separator: str) -> None:
    line = good_line(question=f"Natalia sold{separator}48 clips. How many?")
    path = write(tmp_path / "train.jsonl", [line, good_line()])
    problems, report = load_gsm8k(str(path), strict=True)
    assert report.n_bad == 0 and len(problems) == 2
    assert separator in problems[0].question


def test_bare_carriage_return_between_json_tokens_is_whitespace(tmp_path: Path) -> None:
    line = good_line().replace(b", ", b",\r")
    path = write(tmp_path / "train.jsonl", [line, good_line()])
    problems, report = load_gsm8k(str(path), strict=True)
    assert report.n_bad == 0 and len(problems) == 2


HOSTILE = {
    "huge-int": b'{"question": "q", "answer": ' + b"9" * 5000 + b"}",
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "surrogate": b'{"question": "q \\ud800", "answer": "1+1=2\\n#### 2"}',
    "not-utf8": b'{"question": "caf\xe9?", "answer": "1+1=2\\n#### 2"}',
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_one_hostile_row_is_one_bad_row(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path / "train.jsonl", [good_line(), HOSTILE[kind], good_line()])
    problems, report = load_gsm8k(str(path))
    assert (len(problems), report.n_bad) == (2, 1)
    assert "train.jsonl: line 2" in report.summary()
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 is not"):
        load_gsm8k(str(path), strict=True)


def test_surrogate_row_in_a_json_list_is_one_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "question": "q \ud800"}]), encoding="utf-8")
    problems, report = load_gsm8k(str(path))
    assert (len(problems), report.n_bad) == (1, 1)


def test_deep_json_document_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(DataError, match="train.json: not usable JSON"):
        read_rows(path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="train.jsonl: the file is empty"):
        load_gsm8k(str(path))


def test_check_source_refuses_empty_splits_and_slices_that_do_not_fit(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", [good_line()] * 5)
    assert check_source(str(path), "train", {"stage1": (0, 3), "stage2": (3, -1)}).n_ok == 5
    for bad in ((0, 6), (5, -1), (4, 4), (-1, 2)):
        with pytest.raises(DataError, match=r"data\.stage1_rows .* does not fit the 5 usable rows"):
            check_source(str(path), "train", {"stage1": bad})
    only_bad = write(tmp_path / "bad.jsonl", [good_line(answer="no marker")])
    with pytest.raises(DataError, match="has no usable rows"):
        check_source(str(only_bad), "train")


def test_fsio_read_jsonl_splits_on_newline_only_and_names_a_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path / "g.jsonl", [good_line(question="a\u2028b\u0085c"), good_line()])
    assert [row["question"] for row in read_jsonl(path)] == ["a\u2028b\u0085c", GOOD["question"]]
    write(path, [good_line(), b"{oops"])
    with pytest.raises(ValueError, match=r"g\.jsonl: line 2 is not valid JSON"):
        read_jsonl(path)


BOM = b"\xef\xbb\xbf"


def test_a_byte_order_mark_does_not_cost_the_first_row(tmp_path, cache_dir):
    rows = [{"completion": "Step 1: 2 + 2 = 4\nFinal Answer: 4", "answer": "#### 4"},
            {"completion": "Final Answer: 7", "answer": "#### 8"}]
    gens = tmp_path / "gens.jsonl"
    gens.write_bytes(BOM + b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    result = cli("score", "--input", str(gens))
    assert result.exit_code == 0, result.output
    assert "rows: 2 (scored 2, skipped 0)" in result.output and "50.00% (1/2)" in result.output, result.output
    data = tmp_path / "test.jsonl"
    problems = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(3)]
    data.write_bytes(BOM + b"".join(json.dumps(p).encode() + b"\n" for p in problems))
    out = tmp_path / "eval"
    result = cli("eval", "--preset", "smoke", "--set", f"model.cache_dir={cache_dir}", "--set",
                 f"data.eval_source={data}", "--set", "eval.max_new_tokens=4", "--limit", "-1", "--output-dir",
                 str(out))
    assert result.exit_code == 0, result.output
    assert [row["question"] for row in read_jsonl(out / rundir.GENERATIONS)] == [p["question"] for p in problems]
