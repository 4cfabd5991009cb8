"""The authors' checker: their gold parser, first answer, dropped minus signs, string compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipe.data.answers import gold_from_gsm8k
from recipe.eval.official_checker import official_accuracy, official_gold, official_prediction, official_verdict

GSM8K_TEST = Path(__file__).resolve().parents[1].parent / "shared/data/gsm8k/test.jsonl"


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        ("Final Answer: 72", "#### 72", True),
        ("Final Answer: $72", "#### 72", True),
        ("final answer: 1,234", "#### 1234", True),
        ("Final Answer: 72.0", "#### 72", False),  # strings, not numbers
        ("Final Answer: 5,600", "#### 5,600", False),  # their gold reads "5"
        ("Final Answer: 5", "#### 5,600", True),  # ... so a wrong 5 scores correct
        ("Final Answer: -3", "#### -3", False),  # gold "" and the prediction drops the minus: "3"
        ("I cannot solve this.", "#### -3", True),  # no digits: "" == ""
        ("Final Answer: 4\nFinal Answer: 5", "#### 5", False),  # first answer wins
        ("Answer: 9\nFinal Answer: 5", "#### 5", True),  # Final Answer is tried before Answer
        ("so 3 then 12 apples", "#### 12", True),  # last number
        ("Final Answer: twelve, 12", "#### 12", True),  # no number after the label: last number
    ],
)
def test_official_verdicts(response: str, gold: str, expected: bool) -> None:
    assert official_verdict(response, gold) is expected


def test_prediction_and_gold_parsers_match_their_regexes() -> None:
    assert official_prediction("Answer: 2\nfinal answer: $3,000.50") == "3000.50"
    assert official_prediction("-7") == "7"
    assert official_gold("text #### 12 #### 13") == "12"
    assert official_accuracy([], []) == 0.0


@pytest.mark.skipif(not GSM8K_TEST.is_file(), reason="shared GSM8K test split not present")
def test_sixteen_test_golds_can_never_be_matched_by_their_gold_parser() -> None:
    rows = [json.loads(line) for line in GSM8K_TEST.read_text(encoding="utf-8").split("\n") if line.strip()]
    assert len(rows) == 1319
    never = []
    for row in rows:
        truth = gold_from_gsm8k(row["answer"])
        written = {f"Final Answer: {truth}", f"Final Answer: {int(truth):,}", f"The result is {truth}."}
        verdicts = {official_verdict(text, row["answer"]) for text in written}
        if verdicts == {False}:
            never.append(row["answer"].rsplit("####", 1)[1].strip())
        else:
            assert verdicts == {True}, truth
    assert len(never) == 16
    assert sum(t.startswith("-") for t in never) == 2 and sum("," in t for t in never) == 14
