"""Shared parts of the rewards: text and column helpers, the call protocol, correctness and format rewards."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from recipe.data.answers import answers_match, extract_answer, finite_number, gold_answer_or_none, has_final_answer_line
from recipe.data.prompts import ANSWER_LABEL

_UNITS = ("words", "tokens")
_FORMAT_MODES = ("paper", "strict")
_STEP = re.compile(r"Step \d+:")
_STEP_LINE = re.compile(r"[ \t]*Step[ \t]+(\d{1,6})[ \t]*:")


# ---------------------------------------------------------------- text helpers


def completion_text(completion: Any) -> str:
    """Text of one completion, plain or conversational (assistant contents joined).

    >>> completion_text([{"role": "assistant", "content": "Final Answer: 4"}])
    'Final Answer: 4'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, (list, tuple)):
        return ""
    parts = []
    for message in completion:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if isinstance(content, str):
            parts.append(content)
    return "\n".join(parts)


def count_steps(text: str) -> int:
    """Number of "Step k:" markers, counted as the paper's code does.

    >>> count_steps("Step 1: a\\nStep 2: b\\nAnswer: 3")
    2
    """
    return len(_STEP.findall(text))


def step_format_ok(text: str, mode: str = "strict", answer_label: str = ANSWER_LABEL) -> bool:
    """Whether ``text`` has the step format.

    ``strict``: "Step k:" lines numbered 1, 2, ... in order (at least one; other lines are
    allowed as preamble or continuation), and the last non-blank line is the only line that
    starts with ``answer_label`` and it holds a readable number. ``paper`` (the official
    BRIDGE check): some "Step k:" and either ``answer_label`` or ``\\boxed{`` anywhere.

    >>> step_format_ok("Step 1: 2+2=4\\nStep 2: 4*2=8\\nFinal Answer: 8")
    True
    >>> step_format_ok("Step 2: 8\\nFinal Answer: 8"), step_format_ok("Step 1: 8\\nFinal Answer: 8\\nmore")
    (False, False)
    >>> step_format_ok("Step 7: x. Answer: 8", mode="paper", answer_label="Answer:")
    True
    """
    if mode == "paper":
        return _STEP.search(text) is not None and (answer_label in text or "\\boxed{" in text)
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines or not lines[-1].lstrip().startswith(answer_label):
        return False
    if sum(line.lstrip().startswith(answer_label) for line in lines) != 1:
        return False
    if not has_final_answer_line(lines[-1], answer_label):
        return False
    numbers = [int(m.group(1)) for m in map(_STEP_LINE.match, lines[:-1]) if m]
    return bool(numbers) and numbers == list(range(1, len(numbers) + 1))


# ---------------------------------------------------------------- column helpers


def _column(kwargs: dict[str, Any], key: str, n: int, who: str) -> list[Any] | None:
    values = kwargs.get(key)
    if values is None:
        return None
    if len(values) != n:
        raise ValueError(f"{who}: column {key!r} has {len(values)} values for {n} completions")
    return list(values)


def _required(kwargs: dict[str, Any], key: str, n: int, who: str) -> list[Any]:
    values = _column(kwargs, key, n, who)
    if values is None:
        raise ValueError(f"{who} needs the dataset column {key!r} (got {sorted(kwargs)})")
    return values


def _correct_flags(texts: list[str], kwargs: dict[str, Any], who: str) -> list[bool]:
    golds = _required(kwargs, "answer", len(texts), who)
    return [answers_match(extract_answer(t), gold_answer_or_none(g)) for t, g in zip(texts, golds)]


def _stat(value: Any) -> float | None:
    """A usable teacher statistic: a finite number >= 0, else None."""
    number = finite_number(value)  # None for non-numbers and ints beyond float range
    return number if number is not None and number >= 0 else None


def _lengths(texts: list[str], kwargs: dict[str, Any], unit: str, who: str) -> list[int]:
    ids = _column(kwargs, "completion_ids", len(texts), who) if unit == "tokens" else None
    if ids is not None:
        return [len(x) for x in ids]
    return [len(t.split()) for t in texts]


def _log(kwargs: dict[str, Any], name: str, values: Sequence[float]) -> None:
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and values:
        log_metric(name, sum(values) / len(values))


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


class _Reward:
    """Shared call protocol; subclasses are frozen dataclasses implementing ``_score``."""

    name = "reward"

    @property
    def __name__(self) -> str:  # TRL names reward columns after this
        return self.name

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{self.name}: parameter {f.name} must be finite, got {value}")
        unit = getattr(self, "unit", "words")
        if unit not in _UNITS:
            raise ValueError(f"{self.name}: unit must be one of {_UNITS}, got {unit!r}")
        if getattr(self, "format_mode", "paper") not in _FORMAT_MODES:
            raise ValueError(f"{self.name}: format_mode must be one of {_FORMAT_MODES}")

    def __call__(
        self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any
    ) -> list[float]:
        texts = [completion_text(c) for c in completions]
        # a safety net: only extreme parameters (e.g. a budget overflowing to inf) could give nan
        return [_finite(r) for r in self._score(prompts, texts, kwargs)]

    def _score(self, prompts: Sequence[Any] | None, texts: list[str], kwargs: dict[str, Any]) -> list[float]:
        raise NotImplementedError


def _gate(reward: Any, texts: list[str], kwargs: dict[str, Any]) -> tuple[list[bool], list[bool]]:
    correct = _correct_flags(texts, kwargs, reward.name)
    formatted = [step_format_ok(t, reward.format_mode, reward.answer_label) for t in texts]
    _log(kwargs, f"{reward.name}/correct", [float(c) for c in correct])
    _log(kwargs, f"{reward.name}/format_ok", [float(f) for f in formatted])
    return correct, formatted


# ---------------------------------------------------------------- rewards


@dataclass(frozen=True, kw_only=True)
class CorrectnessReward(_Reward):
    """``correct`` when the extracted answer matches the gold ``answer`` column, else ``wrong``.

    >>> CorrectnessReward()(completions=["Final Answer: 72", "Final Answer: 7"], answer=["72", "72"])
    [1.0, 0.0]
    """

    correct: float = 1.0
    wrong: float = 0.0
    name = "correctness"

    def _score(self, prompts, texts, kwargs):
        return [self.correct if ok else self.wrong for ok in _correct_flags(texts, kwargs, self.name)]


@dataclass(frozen=True, kw_only=True)
class FormatReward(_Reward):
    """``valid`` when :func:`step_format_ok` accepts the completion, else ``invalid``.

    >>> FormatReward()(completions=["Step 1: 3*4=12\\nFinal Answer: 12", "12"])
    [1.0, 0.0]
    """

    valid: float = 1.0
    invalid: float = 0.0
    answer_label: str = ANSWER_LABEL
    format_mode: str = "strict"
    name = "format"

    def _score(self, prompts, texts, kwargs):
        ok = [step_format_ok(t, self.format_mode, self.answer_label) for t in texts]
        return [self.valid if v else self.invalid for v in ok]
