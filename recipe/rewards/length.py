"""Length-shaping rewards from other work: cosine scaling, the group-relative penalty, a bare length signal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from recipe.rewards.core import _correct_flags, _lengths, _Reward


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
