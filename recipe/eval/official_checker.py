"""The authors' answer checker, reproduced verdict for verdict (an "official" column beside ours).

BRIDGE's ``scripts/eval_gsm8k.py`` (GitHub Applied-Machine-Learning-Lab/SDM2026_BRIDGE) decides correctness as
``extract_answer(response) == extract_gold_answer(sample["answer"])``, a plain string comparison:

- gold: the first ``####\\s*(\\d+)`` match, so ``#### 5,600`` reads ``5``, ``#### -3`` reads nothing (``""``),
  ``#### 0.5`` reads ``0``;
- prediction: the *first* ``Final Answer:\\s*\\$?(\\d+(?:,\\d+)*(?:\\.\\d+)?)`` match (case-insensitive), else the first
  ``Answer:`` one, commas removed; else the last ``\\b\\d+(?:\\.\\d+)?\\b`` in the text; else ``""``. A minus sign is
  never read, ``42.00`` stays ``42.00`` (not equal to ``42``).

The same regular expressions (Python ``re``, so ``\\d`` also matches non-ASCII digits, as in theirs) are used here.
Their evaluation stops generation at the first answer line; this module scores whatever text it is given.
Nothing here evaluates text.

>>> official_verdict("Step 1: 8 * 700 = 5600\\nFinal Answer: 5,600", "... #### 5,600")
False
>>> official_verdict("Final Answer: 72", "#### 72"), official_verdict("Final Answer: 72.0", "#### 72")
(True, False)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["official_accuracy", "official_gold", "official_prediction", "official_verdict", "official_verdicts"]

_GOLD = re.compile(r"####\s*(\d+)")
_FINAL = re.compile(r"Final Answer:\s*\$?(\d+(?:,\d+)*(?:\.\d+)?)", re.IGNORECASE)
_ANSWER = re.compile(r"Answer:\s*\$?(\d+(?:,\d+)*(?:\.\d+)?)", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")


def official_gold(answer_field: Any) -> str:
    """Their gold string: the first ``####\\s*(\\d+)`` digits, or ``""`` when there are none.

    Non-text golds (ours may be numbers) are read through ``str()`` first.

    >>> official_gold("#### 5,600"), official_gold("#### -3"), official_gold("#### 72"), official_gold("72")
    ('5', '', '72', '')
    """
    match = _GOLD.search(answer_field if isinstance(answer_field, str) else str(answer_field))
    return match.group(1) if match else ""


def official_prediction(response: str) -> str:
    """Their predicted answer string for one response (``""`` when it holds no digits).

    >>> official_prediction("Answer: 3\\nFinal Answer: $1,234.50 then Final Answer: 9")
    '1234.50'
    >>> official_prediction("the result is -12 apples"), official_prediction("no digits")
    ('12', '')
    """
    for pattern in (_FINAL, _ANSWER):
        match = pattern.search(response)
        if match:
            return match.group(1).replace(",", "")
    numbers = _ANY_NUMBER.findall(response)
    return numbers[-1] if numbers else ""


def official_verdict(response: str, answer_field: Any) -> bool:
    """Their verdict: prediction string == gold string (so a response without digits "matches" a negative gold).

    >>> official_verdict("no number at all", "#### -4"), official_verdict("Final Answer: -4", "#### -4")
    (True, False)
    """
    return official_prediction(response) == official_gold(answer_field)


def official_verdicts(responses: Iterable[str], answer_fields: Iterable[Any]) -> list[bool]:
    """:func:`official_verdict` for each (response, gold) pair, for an evaluation's or a report's extra column."""
    return [official_verdict(r, g) for r, g in zip(responses, answer_fields, strict=True)]


def official_accuracy(responses: Iterable[str], answer_fields: Iterable[Any]) -> float:
    """Fraction of responses the authors' checker calls correct (0.0 for no rows).

    >>> official_accuracy(["Final Answer: 2", "Final Answer: 3"], ["#### 2", "#### 2"])
    0.5
    """
    verdicts = official_verdicts(responses, answer_fields)
    return sum(verdicts) / len(verdicts) if verdicts else 0.0
