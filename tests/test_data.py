"""recipe.data.gsm8k: parsing, loading, slicing (the stage row builders: tests/test_stages.py)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recipe.data import gsm8k as data
from recipe.data.gsm8k import (
    Problem,
    check_disjoint_slices,
    load_gsm8k,
    parse_rationale,
    parse_rows,
    slice_rows,
    strip_annotations,
    to_dataset,
)
from recipe.errors import BadRow, DataError
from tests.fuzz_strategies import FUZZ, JSON_VALUE, JSONL_FILE, temp_file

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared/data/gsm8k"
GOOD = {"question": "Natalia sold 48 clips. How many?", "answer": "48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 72"}


def make_problems(n: int, max_steps: int = 8) -> list[Problem]:
    """Problems with 1..max_steps distinct steps (cycled), so permutations are checkable."""
    return [
        Problem(f"p-{i}", f"Question {i}?", tuple(f"step {j} of {i}" for j in range(1 + i % max_steps)), str(i))
        for i in range(n)
    ]


def bullets(prompt: str) -> list[str]:
    return [line[2:] for line in prompt.splitlines() if line.startswith("- ")]


def digest(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------------------------
# annotations and rationale parsing
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.", "Weng earns 12/60 = $0.2 per minute."),
        ("48/2 = <<48/2=24>>24 and 48+24 = <<48+24=72>>72", "48/2 = 24 and 48+24 = 72"),
        ("x << y and z >", "x << y and z >"),  # malformed: left alone
        ("a <<2*3=6 without a close", "a <<2*3=6 without a close"),
        ("<<a<<2*3=6>>6>>", "<<a6>>"),  # nested-looking: only the inner well-formed span goes
        ("<<__import__('os').system('x')=1>>1", "1"),  # removed as text, never run
        ("no annotations", "no annotations"),
    ],
)
def test_strip_annotations(text, expected):
    assert strip_annotations(text) == expected
    assert strip_annotations(text, annotations="keep") == text


def test_strip_annotations_rejects_unknown_mode():
    with pytest.raises(ValueError, match="'strip' or 'keep'"):
        strip_annotations("a", annotations="drop")


def test_strip_annotations_handles_pathological_input():
    text = "<<" * 50_000 + "x" * 50_000
    assert strip_annotations(text) == text


def test_parse_rationale_steps_and_answer():
    steps, answer = parse_rationale("First 2+2 = <<2+2=4>>4.\n\n  Then 4*3 = <<4*3=12>>12.  \n#### 1,012")
    assert steps == ("First 2+2 = 4.", "Then 4*3 = 12.")
    assert answer == "1012"
    kept, _ = parse_rationale("2+2 = <<2+2=4>>4\n#### 4", annotations="keep")
    assert kept == ("2+2 = <<2+2=4>>4",)


def test_parse_rationale_uses_last_marker():
    steps, answer = parse_rationale("a = 1\n#### 1\nb = 2\n#### 2")
    assert answer == "2"
    assert steps == ("a = 1", "b = 2")


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("2 + 2 = 4", "no '####'"),
        ("2 + 2 = 4\n#### four", "not a number"),
        ("2 + 2 = 4\n####", "not a number"),
        ("\n  \n#### 4", "empty rationale"),
    ],
)
def test_parse_rationale_bad_rows(field, reason):
    with pytest.raises(BadRow, match=reason):
        parse_rationale(field)


# ------------------------------------------------------------------------------------------------------------------
# rows -> problems
# ------------------------------------------------------------------------------------------------------------------


def test_parse_rows_skips_and_counts_bad_rows():
    rows = [
        GOOD,
        {"question": "", "answer": GOOD["answer"]},
        {"answer": GOOD["answer"]},
        {"question": "Q?", "answer": "no marker"},
        "not a mapping",
        GOOD,
        {"question": "Q?"},
        {"question": "Q?", "answer": "1\n#### x"},
        {"question": "Q?", "answer": "#### 3"},
    ]
    problems, report = parse_rows(rows, "train")
    assert [p.id for p in problems] == ["train-0", "train-5"]
    assert problems[0] == Problem("train-0", GOOD["question"], ("48/2 = 24", "48+24 = 72"), "72")
    assert (report.n_total, report.n_ok, report.n_bad) == (9, 2, 7)
    assert [rid for rid, _ in report.first_bad] == ["train-1", "train-2", "train-3", "train-4", "train-6"]
    summary = report.summary()
    assert "2/9" in summary and "7 bad" in summary
    assert "train-1: empty or missing 'question'" in summary and "train-3: no '####'" in summary
    assert "train-7" not in summary and summary.endswith(", ...)")


def test_parse_rows_strict_names_the_row():
    with pytest.raises(BadRow, match=r"^train-1: no '####'") as info:
        parse_rows([GOOD, {"question": "Q", "answer": "x"}, GOOD], "train", strict=True)
    assert info.value.row_id == "train-1"
    assert isinstance(info.value, DataError)


def test_problem_round_trip_and_validation():
    p = Problem("t-1", "Q?", ["a", "b"], "3")
    assert p.steps == ("a", "b") and p.rationale == "a\nb"
    assert Problem.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="t-2"):
        Problem("t-2", "Q?", (), "1")


# ------------------------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_load_jsonl_json_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [GOOD, {"question": "Q2?", "answer": "1 + 1 = <<1+1=2>>2\n#### 2"}]
    files = [
        write_jsonl(tmp_path / "rows.jsonl", rows),
        tmp_path / "list.json",
        write_jsonl(tmp_path / "lines.json", rows),  # JSON Lines saved as .json (datasets' to_json default)
        tmp_path / "split.json",
        tmp_path / "rows.parquet",
    ]
    files[1].write_text(json.dumps(rows), encoding="utf-8")
    files[3].write_text(json.dumps({"train": rows}), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), files[4])
    for path in files:
        problems, report = load_gsm8k(str(path), split="train")
        assert report.n_ok == 2 and report.n_bad == 0, path
        assert [p.answer for p in problems] == ["72", "2"]
        assert problems[1].steps == ("1 + 1 = 2",)


def test_load_file_ignores_split_but_uses_it_for_ids(tmp_path):
    path = write_jsonl(tmp_path / "whatever.jsonl", [GOOD])
    problems, _ = load_gsm8k(str(path), split="test")
    assert problems[0].id == "test-0"


def test_load_folder_picks_the_split_file(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, GOOD])
    (tmp_path / "test.json").write_text(json.dumps([GOOD]), encoding="utf-8")
    assert len(load_gsm8k(str(tmp_path), split="train")[0]) == 3
    assert len(load_gsm8k(str(tmp_path), split="test")[0]) == 1
    with pytest.raises(DataError, match=r"split 'validation'.*validation\.jsonl"):
        load_gsm8k(str(tmp_path), split="validation")


def test_missing_and_unreadable_paths_are_named(tmp_path):
    missing = tmp_path / "nope" / "train.jsonl"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        load_gsm8k(str(missing))
    with pytest.raises(DataError, match="not found"):
        load_gsm8k("./does-not-exist")
    binary = tmp_path / "bad.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="bad.jsonl"):
        load_gsm8k(str(binary))
    corrupt = tmp_path / "bad.parquet"
    corrupt.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="bad.parquet"):
        load_gsm8k(str(corrupt))
    scalar = tmp_path / "scalar.json"
    scalar.write_text("42", encoding="utf-8")
    with pytest.raises(DataError, match="scalar.json.*JSON list"):
        load_gsm8k(str(scalar))


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n{not json\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    problems, report = load_gsm8k(str(path))
    assert [p.id for p in problems] == ["train-0", "train-2"]
    assert report.n_bad == 1
    rid, reason = report.first_bad[0]
    assert rid == "train-1" and "line 3" in reason and "train.jsonl" in reason
    with pytest.raises(DataError, match=r"train\.jsonl: line 3 is not valid JSON"):
        load_gsm8k(str(path), strict=True)


def test_hub_errors_say_how_to_use_local_files(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_gsm8k("openai/gsm8k", split="train")
    message = str(info.value)
    assert "openai/gsm8k" in message and "ConnectionError" in message
    assert "data.source=../shared/data/gsm8k" in message and "train.jsonl" in message


def test_hub_rows_are_parsed(monkeypatch):
    import datasets

    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list([GOOD, {"question": "Q", "answer": "x"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    problems, report = load_gsm8k("someone/gsm8k-copy", split="test")
    assert calls == [(("someone/gsm8k-copy", "main"), {"split": "test"})]
    assert [p.id for p in problems] == ["test-0"] and report.n_bad == 1


def test_synthetic_source():
    train, report = load_gsm8k("synthetic:40", split="train")
    test, _ = load_gsm8k("synthetic:40", split="test")
    assert len(train) == len(test) == 40 and report.n_bad == 0
    assert [p.question for p in train] != [p.question for p in test]
    assert load_gsm8k("synthetic:40", split="train")[0] == train
    assert len(load_gsm8k("synthetic", split="train")[0]) == data.SYNTHETIC_DEFAULT_ROWS
    for bad in ("synthetic:", "synthetic:x", "synthetic:0"):
        with pytest.raises(DataError, match="synthetic:N"):
            load_gsm8k(bad)


@pytest.mark.skipif(not GSM8K.is_dir(), reason="shared GSM8K copy not present")
def test_real_gsm8k_parses_completely():
    train, report = load_gsm8k(str(GSM8K), split="train", strict=True)
    assert (report.n_total, report.n_ok, report.n_bad) == (7473, 7473, 0)
    test, report = load_gsm8k(str(GSM8K), split="test", strict=True)
    assert (report.n_total, report.n_ok, report.n_bad) == (1319, 1319, 0)
    assert train[0].answer == "72" and train[0].steps[0] == "Natalia sold 48/2 = 24 clips in May."
    for p in train + test:
        assert all("<<" not in s and ">>" not in s and s == s.strip() and s for s in p.steps), p.id
        assert p.answer.lstrip("-").isdigit(), p.id


# ------------------------------------------------------------------------------------------------------------------
# slicing
# ------------------------------------------------------------------------------------------------------------------


def test_slice_rows():
    items = list(range(10))
    assert slice_rows(items, 2, 5) == [2, 3, 4]
    assert slice_rows(items, 7, -1) == slice_rows(items, 7, None) == [7, 8, 9]
    assert slice_rows(items, 4, 4) == []
    for start, end in ((0, 11), (5, 3), (-1, 3), (11, -1)):
        with pytest.raises(ValueError, match="10 loaded rows"):
            slice_rows(items, start, end)


def test_check_disjoint_slices():
    check_disjoint_slices({"stage1": [0, 2000], "stage2": [2000, 4000], "stage3": [4000, -1]})
    check_disjoint_slices({"a": (5, 5), "b": (0, 10)})  # an empty range overlaps nothing
    with pytest.raises(ValueError, match=r"stage1 \[0, 100\) and stage3 \[50, -1\)"):
        # not neighbours once sorted by start: still found
        check_disjoint_slices({"stage1": (0, 100), "stage2": (10, 10), "stage3": (50, -1)})
    with pytest.raises(ValueError, match="stage2"):
        check_disjoint_slices({"stage1": (0, -1), "stage2": (9000, 9100)})
    check_disjoint_slices({"stage1": (0, -1), "stage2": (9000, 9100)}, n=9000)


def test_to_dataset_keeps_columns():
    rows = [{"id": f"t-{i}", "prompt": "p", "masked_indices": list(range(i % 3))} for i in range(10)]
    ds = to_dataset(rows)
    assert len(ds) == 10 and set(ds.column_names) == set(rows[0])
    assert ds.to_list() == rows
    assert ds[4]["masked_indices"] == rows[4]["masked_indices"]


@FUZZ
@given(JSONL_FILE, st.booleans(), st.sampled_from(["train.jsonl", "train.json"]))
def test_fuzz_data_readers_only_raise_data_error(payload: bytes, strict: bool, name: str) -> None:
    with temp_file(name, payload) as path:
        try:
            problems, report = load_gsm8k(str(path), strict=strict)
        except DataError:
            return
    assert report.n_ok == len(problems) and report.n_ok + report.n_bad == report.n_total


@FUZZ
@given(st.lists(JSON_VALUE, max_size=6))
def test_fuzz_parse_rows_never_raises_without_strict(rows) -> None:
    problems, report = parse_rows(rows, "train")
    assert report.n_ok == len(problems)
