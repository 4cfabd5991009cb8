"""Answer extraction, numeric matching and GSM8K gold parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe.data.answers import answers_match, extract_answer, gold_from_gsm8k, has_final_answer_line, parse_number

GSM8K = Path(__file__).resolve().parents[1].parent / "shared/data/gsm8k"

EXTRACT_CASES = [
    # markers and their priority
    ("Step 1: 3*24=72\nFinal Answer: 72", "72", "final-answer-label"),
    ("Final answer: 72", "72", "label-case-insensitive"),
    ("**Final Answer:** 72", "72", "markdown-bold-label"),
    ("Answer: 18", "18", "answer-label"),
    ("The answer is 9.", "9", "the-answer-is"),
    ("The final answer is 9", "9", "the-final-answer-is"),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72", "gsm8k-hash-marker"),
    ("so the total is \\boxed{72}", "72", "boxed"),
    ("so 72 apples", "72", "last-number-fallback"),
    ("Answer: 5\nwait, Final Answer: 7", "7", "final-answer-beats-answer"),
    ("The answer is 3.\n#### 4", "3", "answer-is-beats-hash"),
    ("#### 4 and \\boxed{5}", "4", "hash-beats-boxed"),
    ("\\boxed{5} then 6 more", "5", "boxed-beats-last-number"),
    ("Final Answer: 3\nFinal Answer: 4", "4", "last-occurrence-of-marker"),
    ("Final Answer:\n\n 42", "42", "answer-on-next-line"),
    ("Final Answer: seventy\nso 12", "12", "unreadable-marker-falls-through"),
    ("Answer: 3 + 4 = 7", "7", "equation-reads-right-hand-side"),
    ("Final Answer: 7 dollars. Answer: 5", "7", "first-number-after-marker"),
    # number forms
    ("Final Answer: 1,234", "1234", "thousands-commas"),
    ("The answer is $1,234,567.", "1234567", "millions-commas-dollar-period"),
    ("The answer is $72.", "72", "dollar-and-trailing-period"),
    ("Final Answer: 50%", "50", "percent"),
    ("Final Answer: 12 km/h", "12", "unit-after-number"),
    ("Final Answer: 3.50", "3.5", "decimal-trailing-zero"),
    ("Final Answer: 72.0", "72", "integer-without-point-zero"),
    ("Final Answer: -3.5", "-3.5", "negative-decimal"),
    ("x = -5", "-5", "negative-after-equals"),
    ("Final Answer: -$5", "-5", "minus-before-dollar"),
    ("it fell to \u22124", "-4", "unicode-minus-sign"),
    ("Final Answer: 3/4", "0.75", "simple-fraction"),
    ("Final Answer: -3/4", "-0.75", "negative-fraction"),
    ("Final Answer: 1/3", "0.33333333333333333", "repeating-fraction-17-digits"),
    ("\\boxed{\\frac{3}{4}}", "0.75", "latex-frac-in-box"),
    ("\\boxed{1{,}000}", "1000", "latex-braced-comma"),
    ("Final Answer: .5", "0.5", "leading-point-decimal"),
    ("Final Answer: 2.5e3", "2500", "scientific-notation"),
    ("Final Answer: 007", "7", "leading-zeros"),
    ("Final Answer: -0", "0", "negative-zero"),
    ("Final Answer: \u0663\u0664", "34", "arabic-indic-digits"),
    ("Final Answer: \uff17\uff12", "72", "fullwidth-digits"),
    ("\u00bd cup", "0.5", "vulgar-fraction-char"),
    # things that are not separate numbers or not numbers at all
    ("10-3=7", "7", "hyphen-between-digits-is-minus-not-sign"),
    ("COVID-19 cases", "19", "hyphen-after-word-is-not-sign"),
    ("1,2345", "2345", "bad-comma-grouping-splits"),
    ("3/45.6", "45.6", "decimal-denominator-not-a-fraction"),
    ("5/0", None, "zero-denominator-unreadable"),
    ("1.2.3", "1.2", "version-string"),
    ("Final Answer: nan", None, "nan-is-unreadable"),
    ("Final Answer: inf", None, "inf-is-unreadable"),
    ("1e999", None, "overflowing-exponent-unreadable"),
    ("7 then 1e999", "7", "overflow-skipped-for-earlier-number"),
    ("1" * 5000, None, "over-long-digit-run"),
    ("", None, "empty"),
    ("no digits here", None, "no-number"),
]


@pytest.mark.parametrize(("text", "expected"), [c[:2] for c in EXTRACT_CASES], ids=[c[2] for c in EXTRACT_CASES])
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_table_is_large_and_ids_unique() -> None:
    ids = [c[2] for c in EXTRACT_CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a " * 500_000 + "so 41", id="words-then-number"),
        pytest.param("1," * 500_000, id="comma-chain"),
        pytest.param("Final Answer: " * 70_000, id="repeated-marker"),
        pytest.param("\\boxed{" * 100_000, id="unclosed-boxes"),
        pytest.param("-" * 1_000_000, id="only-minus"),
        pytest.param("1e999 " * 160_000, id="overflow-everywhere"),
    ],
)
def test_megabyte_inputs_give_a_finite_answer_or_none(text: str) -> None:
    value = extract_answer(text)
    assert value is None or parse_number(value) is not None


def test_last_number_found_far_back_behind_unusable_tail() -> None:
    text = "so 41 " + "1e999 " * 5_000 + "x " * 20_000
    assert extract_answer(text) == "41"


@given(st.text())
@settings(deadline=None)
def test_extract_answer_is_none_or_finite_canonical(text: str) -> None:
    value = extract_answer(text)
    if value is not None:
        assert parse_number(value) is not None
        assert extract_answer(value) == value  # canonical strings read back unchanged


@given(st.text(alphabet=st.characters(categories=["Nd", "No", "Pd", "Po", "Sc"]), max_size=80))
@settings(deadline=None)
def test_unicode_digits_and_punctuation_read_as_finite_or_none(text: str) -> None:
    for candidate in (text, f"Final Answer: {text}", f"\\boxed{{{text}}}"):
        value = extract_answer(candidate)
        assert value is None or (value.isascii() and parse_number(value) is not None)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12))
@settings(deadline=None)
def test_extract_round_trips_decimals(value) -> None:
    text = f"Step 1: some work\nFinal Answer: {value:f}"
    assert answers_match(extract_answer(text), f"{value:f}")


MATCH_CASES = [
    ("72", "72.0", True, "trailing-zero"),
    ("1,000", "1000", True, "commas"),
    ("0.75", "3/4", True, "fraction-vs-decimal"),
    ("0.3333333333333333", "1/3", True, "float-roundoff"),
    ("109200000", "109,200,000", True, "largest-gsm8k-scale"),
    ("109200001", "109200000", False, "off-by-one-at-1e8"),
    ("71", "72", False, "different-integers"),
    ("0.33", "1/3", False, "rounded-too-coarsely"),
    ("-5", "5", False, "sign-matters"),
    ("0", "-0", True, "signed-zero"),
    (None, "72", False, "no-prediction"),
    ("72", None, False, "no-gold"),
    ("abc", "72", False, "unreadable-prediction"),
    ("nan", "nan", False, "nan-never-matches"),
]


@pytest.mark.parametrize(("pred", "gold", "expected"), [c[:3] for c in MATCH_CASES], ids=[c[3] for c in MATCH_CASES])
def test_answers_match(pred, gold, expected) -> None:
    assert answers_match(pred, gold) is expected


def test_answers_match_tolerance_is_configurable() -> None:
    assert not answers_match("0.33", "1/3")
    assert answers_match("0.33", "1/3", abs_tol=0.01)


GOLD_CASES = [
    ("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "18", "gsm8k-rationale"),
    ("#### 1,080", "1080", "gsm8k-comma-gold"),
    ("#### -3", "-3", "negative-gold"),
    ("72", "72", "bare-number"),
    ("1,000", "1000", "bare-with-commas"),
    (" 3.50 ", "3.5", "bare-decimal-with-spaces"),
    ("x #### 5 #### 6", "6", "last-hash-wins"),
]


@pytest.mark.parametrize(("field", "expected"), [c[:2] for c in GOLD_CASES], ids=[c[2] for c in GOLD_CASES])
def test_gold_from_gsm8k(field: str, expected: str) -> None:
    assert gold_from_gsm8k(field) == expected


@pytest.mark.parametrize("field", ["#### seventy", "", "#### 1e999", "no number here", "#### 5 apples"])
def test_gold_from_gsm8k_rejects_non_numbers(field: str) -> None:
    with pytest.raises(ValueError, match="no numeric gold"):
        gold_from_gsm8k(field)


def test_gold_from_gsm8k_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        gold_from_gsm8k(72)  # type: ignore[arg-type]


@pytest.mark.skipif(not (GSM8K / "test.jsonl").exists(), reason="GSM8K not present")
def test_every_gsm8k_test_gold_parses_and_reads_back() -> None:
    with open(GSM8K / "test.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    golds = [gold_from_gsm8k(r["answer"]) for r in rows]
    assert len(golds) == 1319
    assert all(extract_answer(f"Final Answer: {g}") == g for g in golds)
    assert all("," not in g for g in golds)


@pytest.mark.parametrize(
    ("text", "label", "expected"),
    [
        ("Step 1: 2+2=4\nFinal Answer: 4", "Final Answer:", True),
        ("  Final Answer: $1,000.", "Final Answer:", True),
        ("Final Answer: four", "Final Answer:", False),
        ("so the Final Answer: 4", "Final Answer:", False),
        ("Answer: 4", "Final Answer:", False),
        ("Answer: 4", "Answer:", True),
    ],
    ids=["plain", "indented-money", "word-answer", "label-mid-line", "other-label", "custom-label"],
)
def test_has_final_answer_line(text: str, label: str, expected: bool) -> None:
    assert has_final_answer_line(text, label) is expected


# ---------------------------------------------------------------- answers read wrong without a word

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Final Answer: 3½", "3.5"),
        ("Final Answer: 3 ½", "3.5"),
        ("Final Answer: -2¾", "-2.75"),
        ("Final Answer: ¼", "0.25"),
        ("Final Answer: 7²", "49"),
        ("Final Answer: 10³", "1000"),
        ("Final Answer: 1.5²", "2.25"),
        ("The area is 25 cm²", "25"),
        ("CO₂ weighs 44", "44"),
        ("Final Answer: 1.5½", None),  # no clear reading: refused, not 1.51
        ("Final Answer: 2⁴⁰⁰", None),  # out of range: refused
    ],
)
def test_unicode_fractions_and_superscripts_read_correctly_or_refuse(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "Infinity", "∞", "1e308", "1e999", "9" * 500, "5/0"])
def test_unusable_final_answer_refuses_instead_of_reading_an_earlier_number(bad: str) -> None:
    text = f"Step 1: 36 + 36 = 72\nFinal Answer: {bad}"
    assert extract_answer(text) is None
    assert not answers_match(extract_answer(text), "72")


def test_integers_compare_exactly_and_non_integers_with_tolerance() -> None:
    assert not answers_match("1000000001", "1000000000")
    assert not answers_match(str(10**20 + 1), str(10**20))
    assert answers_match("123456789012345678901234567890", "123,456,789,012,345,678,901,234,567,890")
    assert answers_match("0.3333333333333333", "1/3")
    assert not answers_match("0.3334", "1/3")


def test_one_gold_parser_for_ints_floats_and_text() -> None:
    from recipe.data.answers import gold_answer, gold_answer_or_none

    assert gold_answer(72) == gold_answer(72.0) == gold_answer("#### 72") == "72"
    for bad in (10**400, float("nan"), True, None, ["72"], "#### x"):
        assert gold_answer_or_none(bad) is None
        with pytest.raises(ValueError):
            gold_answer(bad)
