"""GRPO reward callables in TRL's signature ``f(prompts, completions, **kwargs) -> list[float]``.

Every reward is a frozen dataclass: picklable, keyword-only parameters whose defaults follow
the source named in its docstring, a ``__name__`` for TRL's logging, and a ``repr``. Rewards
read dataset columns from TRL's keyword arguments: ``answer`` (gold), ``teacher_steps``,
``teacher_words``, ``teacher_tokens``, ``teacher_solution``, and ``completion_ids`` (token
lengths). Completions may be plain strings or ``[{"role": "assistant", "content": ...}]``.
Whatever the text, each reward returns finite floats; a missing or mis-sized column raises
ValueError naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from recipe.answers import answers_match, extract_answer, finite_number, gold_answer_or_none, has_final_answer_line

__all__ = [
    "REWARDS",
    "CompressionRatioReward",
    "CorrectnessReward",
    "CosineLengthReward",
    "FormatReward",
    "GatedBrevityReward",
    "GroupRelativeLengthReward",
    "LengthReward",
    "build_reward",
    "completion_text",
    "count_steps",
    "step_format_ok",
]

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


def step_format_ok(text: str, mode: str = "strict", answer_label: str = "Final Answer:") -> bool:
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
    answer_label: str = "Final Answer:"
    format_mode: str = "strict"
    name = "format"

    def _score(self, prompts, texts, kwargs):
        ok = [step_format_ok(t, self.format_mode, self.answer_label) for t in texts]
        return [self.valid if v else self.invalid for v in ok]


@dataclass(frozen=True, kw_only=True)
class GatedBrevityReward(_Reward):
    """BRIDGE stage-2 reward, constants from the official code (``train_grpo.py``).

    Wrong answer -> ``wrong_reward``; correct but bad format -> ``bad_format_reward``; else
    ``base + step_bonus + length_term`` with T = ``teacher_steps``, S = :func:`count_steps`,
    L = length in ``unit``, B = ``per_step_budget * T`` and B80 = ``soft_fraction * B``::

        step_bonus  = step_weight * min(T - S, max_bonus_steps)   if T - S >= 1 else 0
        length_term = max(-over_rate * (L - B), over_floor)       if L > B
                    = -near_rate * (L - B80)                      if B80 < L <= B
                    = min(under_rate * (B80 - L), under_cap)      otherwise

    Kept verbatim from the paper's code: the length term is discontinuous at B (just below B
    it is ``-near_rate * (1 - soft_fraction) * B``, just above it is about 0). A missing or
    invalid (negative, non-finite, non-numeric) ``teacher_steps`` uses ``fallback_teacher_steps``
    (5, the paper data's mean of 4.65 teacher steps rounded). ``per_step_budget`` is in
    ``unit``: 35 words per step as in the paper; scale it when ``unit="tokens"``.

    >>> r = GatedBrevityReward()
    >>> done = "Step 1: 3*24=72\\nAnswer: 72"  # 5 words, 1 step vs a 3-step teacher
    >>> [round(x, 3) for x in r(completions=[done, "72", "Answer: 7"], answer=["72"] * 3, teacher_steps=[3] * 3)]
    [1.679, -1.0, -2.0]
    """

    wrong_reward: float = -2.0
    bad_format_reward: float = -1.0
    base: float = 1.0
    step_weight: float = 0.3
    max_bonus_steps: int = 3
    per_step_budget: float = 35.0
    soft_fraction: float = 0.8
    over_rate: float = 0.01
    over_floor: float = -1.0
    near_rate: float = 0.002
    under_rate: float = 0.001
    under_cap: float = 0.2
    fallback_teacher_steps: float = 5.0
    unit: str = "words"
    format_mode: str = "paper"
    answer_label: str = "Answer:"
    name = "gated_brevity"

    def length_term(self, length: float, teacher_steps: float) -> float:
        """Length part of the reward for a response of ``length`` against ``teacher_steps``.

        >>> r = GatedBrevityReward()
        >>> [round(r.length_term(n, 2), 3) for n in (0, 56, 70, 71, 200)]
        [0.056, 0.0, -0.028, -0.01, -1.0]
        """
        budget = self.per_step_budget * teacher_steps
        soft = self.soft_fraction * budget
        if length > budget:
            return max(-self.over_rate * (length - budget), self.over_floor)
        if length > soft:
            return -self.near_rate * (length - soft)
        return min(self.under_rate * (soft - length), self.under_cap)

    def step_bonus(self, steps: int, teacher_steps: float) -> float:
        """Bonus for using fewer steps than the teacher.

        >>> r = GatedBrevityReward()
        >>> [round(r.step_bonus(s, 5), 2) for s in (1, 3, 4, 5, 7)]
        [0.9, 0.6, 0.3, 0.0, 0.0]
        """
        reduction = teacher_steps - steps
        return self.step_weight * min(reduction, self.max_bonus_steps) if reduction >= 1 else 0.0

    def _score(self, prompts, texts, kwargs):
        correct, formatted = _gate(self, texts, kwargs)
        teacher = _column(kwargs, "teacher_steps", len(texts), self.name) or [None] * len(texts)
        lengths = _lengths(texts, kwargs, self.unit, self.name)
        out = []
        for text, ok, fmt, t, n in zip(texts, correct, formatted, teacher, lengths):
            if not ok:
                out.append(self.wrong_reward)
            elif not fmt:
                out.append(self.bad_format_reward)
            else:
                steps = _stat(t)
                steps = self.fallback_teacher_steps if steps is None else steps
                out.append(self.base + self.step_bonus(count_steps(text), steps) + self.length_term(n, steps))
        return out


@dataclass(frozen=True, kw_only=True)
class CompressionRatioReward(_Reward):
    """BRIDGE stage-3 reward, constants from the official code (``train_grpo_rewrite.py``).

    Gates as :class:`GatedBrevityReward` (wrong -> -2, bad format -> -1); else ``base + c(ratio)``
    with ratio = response length / teacher length, continuous and piecewise linear::

        ratio > neutral_hi             : c = -over_penalty * min((ratio - neutral_hi) / (worst_ratio - neutral_hi), 1)
        neutral_lo < ratio <= neutral_hi: c = 0
        good_ratio < ratio <= neutral_lo: c = good_bonus * (neutral_lo - ratio) / (neutral_lo - good_ratio)
        ratio <= good_ratio            : c = good_bonus + (best_bonus - good_bonus)
                                             * min((good_ratio - ratio) / (good_ratio - best_ratio), 1)

    Teacher length: ``teacher_tokens`` with ``completion_ids`` when ``unit="tokens"``, else
    words from ``teacher_words`` or the ``teacher_solution`` text. No usable teacher length
    (or zero) gives ratio 1.0, the paper code's default for an empty teacher text.

    >>> r = CompressionRatioReward()
    >>> short = "Step 1: 3*24=72\\nFinal Answer: 72"  # 6 words vs 20: ratio 0.3
    >>> [round(x, 3) for x in r(completions=[short, "Final Answer: 72"], answer=["72", "72"], teacher_words=[20, 20])]
    [1.7, -1.0]
    """

    wrong_reward: float = -2.0
    bad_format_reward: float = -1.0
    base: float = 1.0
    worst_ratio: float = 2.0
    neutral_hi: float = 1.0
    neutral_lo: float = 0.8
    good_ratio: float = 0.5
    best_ratio: float = 0.2
    over_penalty: float = 0.5
    good_bonus: float = 0.5
    best_bonus: float = 0.8
    unit: str = "words"
    format_mode: str = "paper"
    answer_label: str = "Answer:"
    name = "compression_ratio"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.best_ratio < self.good_ratio < self.neutral_lo <= self.neutral_hi < self.worst_ratio:
            raise ValueError(f"{self.name}: need 0 <= best_ratio < good_ratio < neutral_lo <= neutral_hi < worst_ratio")

    def shaping(self, ratio: float) -> float:
        """The piecewise term ``c(ratio)``.

        >>> r = CompressionRatioReward()
        >>> [round(r.shaping(x), 3) for x in (0.1, 0.2, 0.5, 0.65, 0.9, 1.5, 3.0)]
        [0.8, 0.8, 0.5, 0.25, 0.0, -0.25, -0.5]
        """
        if ratio > self.neutral_hi:
            return -self.over_penalty * min((ratio - self.neutral_hi) / (self.worst_ratio - self.neutral_hi), 1.0)
        if ratio > self.neutral_lo:
            return 0.0
        if ratio > self.good_ratio:
            return self.good_bonus * (self.neutral_lo - ratio) / (self.neutral_lo - self.good_ratio)
        extra = min((self.good_ratio - ratio) / (self.good_ratio - self.best_ratio), 1.0)
        return self.good_bonus + (self.best_bonus - self.good_bonus) * extra

    def _ratios(self, texts: list[str], kwargs: dict[str, Any]) -> list[float]:
        n = len(texts)
        ids = _column(kwargs, "completion_ids", n, self.name)
        tokens = _column(kwargs, "teacher_tokens", n, self.name)
        words = _column(kwargs, "teacher_words", n, self.name) or [None] * n
        solutions = _column(kwargs, "teacher_solution", n, self.name) or [None] * n
        ratios = []
        for i, text in enumerate(texts):
            teacher = _stat(tokens[i]) if self.unit == "tokens" and ids is not None and tokens is not None else None
            if teacher is not None:
                length = len(ids[i])
            else:
                length = len(text.split())
                teacher = _stat(words[i])
                if teacher is None and isinstance(solutions[i], str):
                    teacher = float(len(solutions[i].split()))
            ratios.append(length / teacher if teacher else 1.0)
        return ratios

    def _score(self, prompts, texts, kwargs):
        correct, formatted = _gate(self, texts, kwargs)
        ratios = self._ratios(texts, kwargs)
        _log(kwargs, f"{self.name}/ratio", ratios)
        out = []
        for ok, fmt, ratio in zip(correct, formatted, ratios):
            if not ok:
                out.append(self.wrong_reward)
            elif not fmt:
                out.append(self.bad_format_reward)
            else:
                out.append(self.base + self.shaping(ratio))
        return out


@dataclass(frozen=True, kw_only=True)
class CosineLengthReward(_Reward):
    """Cosine length scaling of Yeo et al. 2025, "Demystifying Long CoT Reasoning in LLMs".

    With w = (1 + cos(pi * L / max_length)) / 2 (1 at L = 0, 0 at L = max_length): correct ->
    ``r_c_min + (r_c_max - r_c_min) * w``; wrong -> ``r_w_max + (r_w_min - r_w_max) * w``;
    L >= max_length -> ``exceed_reward``. Defaults are the paper's run scripts (correct 2 -> 1,
    wrong -10 -> 0, exceed -10); ``max_length`` defaults to this recipe's 512-token budget.

    >>> r = CosineLengthReward(max_length=4, unit="words")  # 2 words: halfway down the cosine
    >>> [round(x, 6) for x in r(completions=["Answer: 72", "Answer: 7", "a b c Answer: 72"], answer=["72"] * 3)]
    [1.5, -5.0, -10.0]
    """

    r_c_max: float = 2.0
    r_c_min: float = 1.0
    r_w_min: float = -10.0
    r_w_max: float = 0.0
    exceed_reward: float = -10.0
    max_length: int = 512
    unit: str = "tokens"
    name = "cosine_length"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length <= 0:
            raise ValueError(f"{self.name}: max_length must be > 0, got {self.max_length}")

    def _score(self, prompts, texts, kwargs):
        correct = _correct_flags(texts, kwargs, self.name)
        out = []
        for ok, n in zip(correct, _lengths(texts, kwargs, self.unit, self.name)):
            if n >= self.max_length:
                out.append(self.exceed_reward)
                continue
            w = 0.5 * (1.0 + math.cos(math.pi * n / self.max_length))
            lo, hi = (self.r_c_min, self.r_c_max) if ok else (self.r_w_max, self.r_w_min)
            out.append(lo + (hi - lo) * w)
        return out


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else repr(prompt)


@dataclass(frozen=True, kw_only=True)
class GroupRelativeLengthReward(_Reward):
    """Kimi k1.5 length penalty, relative within each group of completions of one prompt.

    lambda = 0.5 - (L - min_L) / (max_L - min_L) over the group; correct -> lambda, wrong ->
    min(0, lambda). A group whose lengths are all equal scores 0. Groups are completions
    with an identical prompt.

    >>> r = GroupRelativeLengthReward(unit="words")
    >>> r(prompts=["q"] * 3, completions=["Answer: 4", "so it Answer: 4", "a b c d Answer: 4"], answer=["4"] * 3)
    [0.5, 0.0, -0.5]
    """

    unit: str = "tokens"
    name = "group_length"

    def _score(self, prompts, texts, kwargs):
        if prompts is None or len(prompts) != len(texts):
            raise ValueError(f"{self.name} needs one prompt per completion to form groups")
        correct = _correct_flags(texts, kwargs, self.name)
        lengths = _lengths(texts, kwargs, self.unit, self.name)
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(_prompt_key(p), []).append(i)
        out = [0.0] * len(texts)
        for members in groups.values():
            lo, hi = min(lengths[i] for i in members), max(lengths[i] for i in members)
            if hi == lo:
                continue
            for i in members:
                lam = 0.5 - (lengths[i] - lo) / (hi - lo)
                out[i] = lam if correct[i] else min(0.0, lam)
        return out


@dataclass(frozen=True, kw_only=True)
class LengthReward(_Reward):
    """``sign * length / scale``: a pure length signal for checking optimisation direction.

    >>> LengthReward(unit="words")(completions=["a b c", ""])
    [-3.0, -0.0]
    >>> LengthReward(sign=1.0, scale=10.0)(completions=["x"], completion_ids=[[5, 6, 7, 8]])
    [0.4]
    """

    sign: float = -1.0
    scale: float = 1.0
    unit: str = "tokens"
    name = "length_only"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale <= 0:
            raise ValueError(f"{self.name}: scale must be > 0, got {self.scale}")

    def _score(self, prompts, texts, kwargs):
        return [self.sign * n / self.scale for n in _lengths(texts, kwargs, self.unit, self.name)]


REWARDS: dict[str, type[_Reward]] = {
    "correctness": CorrectnessReward,
    "format": FormatReward,
    "gated_brevity": GatedBrevityReward,
    "compression_ratio": CompressionRatioReward,
    "cosine_length": CosineLengthReward,
    "group_length": GroupRelativeLengthReward,
    "length_only": LengthReward,
}


def build_reward(name: str, **params: Any) -> _Reward:
    """Reward named ``name`` in :data:`REWARDS`, built with keyword ``params``.

    >>> build_reward("cosine_length", max_length=256)
    CosineLengthReward(r_c_max=2.0, r_c_min=1.0, r_w_min=-10.0, r_w_max=0.0, exceed_reward=-10.0, max_length=256, unit='tokens')
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose from {sorted(REWARDS)}")
    cls = REWARDS[name]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"reward {name!r} has no parameter(s) {unknown}; allowed: {sorted(allowed)}")
    return cls(**params)
