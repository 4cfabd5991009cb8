"""The BRIDGE paper's stage-2 and stage-3 rewards (constants from the authors' code)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recipe.rewards.core import _column, _gate, _lengths, _log, _Reward, _stat, count_steps


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
