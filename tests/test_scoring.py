"""Scoring generation files: bad lines are reported and skipped, the rest is scored and written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recipe.errors import ScoreError
from recipe.eval.scoring import ScoreSummary, format_summary, score_file
from tests.fuzz_strategies import FUZZ, JSONL_FILE, temp_file

GOOD = "Step 1: 6 * 12 = 72\nFinal Answer: 72"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(completion, answer, **extra) -> str:
    return json.dumps({"completion": completion, "answer": answer, **extra})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_malformed_line_in_the_middle_is_reported_and_the_rest_scored(tmp_path: Path) -> None:
    src = write_lines(
        tmp_path / "gen.jsonl",
        [
            row(GOOD, "#### 72", id="a"),
            row("The answer is 5.", "4", id="b"),
            '{"completion": "Final Answer: 3", "answer": ',  # truncated JSON on line 3
            row("no number", "#### 1,000", id="d"),
            row("Step 1: 10 * 100 = 1000\nFinal Answer: 1,000", 1000, id="e"),
        ],
    )
    out = tmp_path / "scored" / "out.jsonl"
    summary = score_file(src, output_path=out)
    assert (summary.n_rows, summary.n_scored, summary.n_correct) == (5, 4, 2)
    assert summary.accuracy == 0.5 and summary["accuracy"] == 0.5
    assert summary.n_unreadable == 1
    assert [no for no, _ in summary.bad_lines] == [3]
    assert "not valid JSON" in summary.bad_lines[0][1]

    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a", "b", "d", "e"]
    assert [r["extracted_answer"] for r in rows] == ["72", "5", None, "1000"]
    assert [r["correct"] for r in rows] == [True, False, False, True]
    assert [r["reward_correctness"] for r in rows] == [1.0, 0.0, 0.0, 1.0]
    assert [r["reward_format"] for r in rows] == [1.0, 0.0, 0.0, 1.0]
    assert rows[0]["answer"] == "#### 72"  # original fields kept as they were
    assert summary.reward_means == {"correctness": 0.5, "format": 0.5}
    assert summary.mean_words == pytest.approx(sum(len(r["completion"].split()) for r in rows) / 4)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('["a list"]', "expected a JSON object"),
        (json.dumps({"answer": "3"}), "missing field(s) ['completion']"),
        (json.dumps({"completion": "x"}), "missing field(s) ['answer']"),
        (json.dumps({"completion": 3, "answer": "3"}), "'completion' is not text"),
        (json.dumps({"completion": "x", "answer": "#### three"}), "no numeric gold"),
        (json.dumps({"completion": "x", "answer": None}), "must be text or a number"),
    ],
    ids=["not-an-object", "no-completion", "no-answer", "completion-not-text", "gold-not-a-number", "gold-null"],
)
def test_bad_rows_are_named_by_line_number(tmp_path: Path, line: str, message: str) -> None:
    src = write_lines(tmp_path / "gen.jsonl", [row(GOOD, "72"), "", line])
    summary = score_file(src)
    assert summary.n_scored == 1 and summary.n_correct == 1
    assert len(summary.bad_lines) == 1
    line_no, got = summary.bad_lines[0]
    assert line_no == 3 and message in got  # the blank line 2 still counts for numbering


def test_custom_fields_conversational_completions_and_extra_rewards(tmp_path: Path) -> None:
    chat = [{"role": "assistant", "content": GOOD}]
    lines = [
        json.dumps({"response": chat, "gold": "72", "prompt": "q", "teacher_steps": 3, "teacher_words": 40}),
        json.dumps({"response": "Final Answer: 70", "gold": "72", "prompt": "q", "teacher_steps": 3}),
    ]
    src = write_lines(tmp_path / "gen.jsonl", lines)
    out = tmp_path / "out.jsonl"
    summary = score_file(
        src, completion_field="response", answer_field="gold", output_path=out, rewards=("gated_brevity",)
    )
    rows = read_jsonl(out)
    assert summary.n_correct == 1
    assert rows[1]["reward_gated_brevity"] == -2.0
    assert rows[0]["reward_gated_brevity"] > 1.0  # correct, formatted, 1 step under a 3-step teacher


def test_output_replaces_old_file_atomically(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "gen.jsonl", [row(GOOD, "72")])
    out = tmp_path / "out.jsonl"
    out.write_text("stale\n", encoding="utf-8")
    score_file(src, output_path=out)
    assert len(read_jsonl(out)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.jsonl", "out.jsonl"]  # no temp file left


def test_unknown_reward_fails_before_writing(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "gen.jsonl", [row(GOOD, "72")])
    with pytest.raises(ValueError, match="unknown reward 'brevity'"):
        score_file(src, output_path=tmp_path / "out.jsonl", rewards=("brevity",))
    assert not (tmp_path / "out.jsonl").exists()


def test_missing_input_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScoreError, match="nope.jsonl"):
        score_file(tmp_path / "nope.jsonl")


def test_empty_file_is_an_error_not_a_zero_score(tmp_path: Path) -> None:
    with pytest.raises(ScoreError, match="no rows scored .* 0 non-blank rows"):
        score_file(write_lines(tmp_path / "gen.jsonl", [""]))


def test_format_summary_lists_bad_lines_and_truncates() -> None:
    summary = ScoreSummary(n_rows=30, n_scored=5, n_correct=5, accuracy=1.0, bad_lines=[(i, "oops") for i in range(25)])
    text = format_summary(summary)
    assert "accuracy: 100.00% (5/5)" in text and "skipped 25" in text
    assert "line 19: oops" in text and "line 20: oops" not in text and "... and 5 more" in text


# ---------------------------------------------------------------- hostile inputs to `score`


def test_cli_missing_input_and_empty_stdin_are_one_line_errors(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from recipe.cli import main

    for args, stdin in ((["--input", str(tmp_path / "nope.jsonl")], None), (["--input", "-"], "")):
        result = CliRunner().invoke(main, ["score", *args], input=stdin)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_stdin_is_read(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from recipe.cli import main

    result = CliRunner().invoke(main, ["score", "--input", "-"], input=row(GOOD, "72") + "\n")
    assert result.exit_code == 0 and "accuracy: 100.00% (1/1)" in result.output


def test_non_utf8_surrogate_and_non_text_rows_are_skipped_and_output_is_written(tmp_path: Path) -> None:
    src = tmp_path / "gen.jsonl"
    lines = [
        row(GOOD, "72").encode(),
        b'{"completion": "Final Answer: 7\xff", "answer": "7"}',  # not UTF-8
        b'{"completion": "Final Answer: 7 \\ud800", "answer": "7"}',  # lone surrogate
        json.dumps({"completion": [{"role": "assistant", "content": [{"text": 5}]}], "answer": "7"}).encode(),
        json.dumps({"completion": [{"role": "assistant", "content": 7}], "answer": "7"}).encode(),
        b'{"completion": "x", "answer": ' + b"9" * 5000 + b"}",  # over Python's 4,300-digit limit
        b"[" * 100_000 + b"]" * 100_000,  # too deep
        json.dumps({"completion": [{"role": "assistant", "content": "Final Answer: 8"}], "answer": 8}).encode(),
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    summary = score_file(src, output_path=out)
    assert summary.n_scored == 2 and summary.n_correct == 2
    assert [no for no, _ in summary.bad_lines] == [2, 3, 4, 5, 6, 7]
    assert "not UTF-8" in summary.bad_lines[0][1] and "surrogate" in summary.bad_lines[1][1]
    assert "not text" in summary.bad_lines[2][1] and "not text" in summary.bad_lines[3][1]
    assert len(read_jsonl(out)) == 2


def test_output_equal_to_input_is_refused_and_the_input_kept(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "gen.jsonl", [row(GOOD, "72")])
    before = src.read_bytes()
    for target in (src, tmp_path / "." / "gen.jsonl"):
        with pytest.raises(ScoreError, match="is the input file"):
            score_file(src, output_path=target)
    assert src.read_bytes() == before


def test_nan_and_infinity_in_rows_are_written_as_valid_json(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "gen.jsonl", ['{"completion": "Final Answer: 72", "answer": "72", "x": NaN, "y": 1e999}'])
    out = tmp_path / "out.jsonl"
    score_file(src, output_path=out)
    text = out.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in output"))
    assert record["x"] is None and record["y"] is None and record["correct"] is True


def test_lines_are_split_on_newline_only(tmp_path: Path) -> None:
    text = "Step 1: 6 * 12 = 72\u2028and\x85more\nFinal Answer: 72"
    line = json.dumps({"completion": text, "answer": "72"}, ensure_ascii=False).replace(", ", ",\r")
    assert "\r" in line and "\u2028" in line  # a bare CR is JSON whitespace; U+2028/U+0085 are raw in the string
    src = tmp_path / "gen.jsonl"
    src.write_bytes((line + "\n").encode("utf-8"))
    summary = score_file(src)
    assert (summary.n_rows, summary.n_scored, summary.n_correct, summary.bad_lines) == (1, 1, 1, [])


def test_all_rows_bad_is_an_error_naming_the_first_reason(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "gen.jsonl", ["{broken", row(GOOD, "not a number")])
    with pytest.raises(ScoreError, match=r"no rows scored .* 2 skipped \(line 1: not valid JSON"):
        score_file(src)


def test_official_checker_mode_reproduces_their_verdicts(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "gen.jsonl", [
        row("Final Answer: 5,600", "... #### 5,600"),  # ours right, theirs wrong (gold read as 5)
        row("Final Answer: 72.0", "#### 72"),  # ours right, theirs wrong (string compare)
        row("Final Answer: 72", 72),  # a bare-number gold is read as '#### 72' by theirs
    ])
    ours, theirs = score_file(src), score_file(src, checker="official")
    assert (ours.n_correct, theirs.n_correct) == (3, 1)
    assert "official checker" in format_summary(theirs)
    with pytest.raises(ScoreError, match="unknown checker"):
        score_file(src, checker="paper")


@FUZZ
@given(JSONL_FILE, st.sampled_from(["ours", "official"]))
def test_fuzz_score_only_raises_score_error_and_writes_valid_json(payload: bytes, checker: str) -> None:
    with temp_file("gen.jsonl", payload) as path:
        out = path.with_name("out.jsonl")
        try:
            summary = score_file(path, output_path=out, checker=checker)
        except ScoreError:
            return
        lines = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == summary.n_scored
    for line in lines:
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"bare {c}")))
