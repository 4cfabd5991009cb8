"""Length-shaping rewards from other work: cosine scaling, the group-relative penalty, the all-correct-group length
bonus, a bare length signal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recipe.rewards.core import _correct_flags, _lengths, _log, _Reward


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


def trl_groups(prompts: Sequence[Any] | None, n: int, size: int, who: str) -> list[range]:
    """The index ranges of the GRPO groups in a batch of ``n`` scored completions, as TRL 1.14.2 lays them out: its
    ``RepeatSampler`` repeats each prompt ``num_generations`` times in a row, each process scores a contiguous slice
    of the generation batch, and the advantages are taken over ``rewards.view(-1, num_generations)``.

    ``size`` = ``num_generations``: consecutive blocks of that many, each checked to hold one prompt (a ValueError
    otherwise: a group split across processes cannot be gated on its own completions). ``size`` = 0: each run of
    consecutive completions of one prompt (the same layout without knowing the size; two groups of one question
    drawn back to back would read as one).

    >>> trl_groups(["a", "a", "b", "b"], 4, 2, "r"), trl_groups(["a", "a", "b", "a"], 4, 0, "r")
    ([range(0, 2), range(2, 4)], [range(0, 2), range(2, 3), range(3, 4)])
    """
    if prompts is None or len(prompts) != n:
        raise ValueError(f"{who} needs one prompt per completion to form groups")
    keys = [_prompt_key(p) for p in prompts]
    if size == 0:
        starts = [i for i in range(n) if i == 0 or keys[i] != keys[i - 1]]
        return [range(a, b) for a, b in zip(starts, [*starts[1:], n])]
    if n % size:
        raise ValueError(f"{who}: {n} completions are not whole groups of num_generations={size}; each process's "
                         "generation batch (per_device_train_batch_size x steps_per_generation) must be a multiple "
                         "of num_generations")
    groups = [range(start, start + size) for start in range(0, n, size)]
    for group in groups:
        if len({keys[i] for i in group}) != 1:
            raise ValueError(f"{who}: completions {group.start}-{group.stop - 1} are not one prompt's group of "
                             f"num_generations={size}")
    return groups


@dataclass(frozen=True, kw_only=True)
class AllCorrectLengthReward(_Reward):
    """Correctness always; a length bonus only in a group whose completions are all correct. The idea of ConciseR's
    L-GRPO (Song & Zheng 2025, arXiv 2505.21178: length is optimised "only once all rollouts of a sample are
    correct"); the formula is this recipe's: ``correct`` / ``wrong``, plus, in an all-correct group,
    ``length_weight * (1 - min(L, max_length) / max_length)``. A group with a wrong completion is scored on
    correctness alone, so brevity is never bought with accuracy; an all-correct group, where correctness alone
    gives every completion the same reward (no GRPO signal), prefers its shorter answers. Groups are TRL's
    (:func:`trl_groups`: blocks of ``num_generations``, checked; 0 = runs of one prompt). Logs the share of
    all-correct groups.

    >>> r = AllCorrectLengthReward(num_generations=2, max_length=4, unit="words")
    >>> r(prompts=["p", "p", "q", "q"], completions=["Answer: 4", "so Answer: 4", "Answer: 4", "Answer: 5"],
    ...   answer=["4", "4", "4", "4"])
    [1.5, 1.25, 1.0, 0.0]
    """

    num_generations: int = 0  # TRL's group size (the GRPO section's num_generations); 0: runs of one prompt
    max_length: int = 512
    length_weight: float = 1.0
    correct: float = 1.0
    wrong: float = 0.0
    unit: str = "tokens"
    name = "all_correct_length"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_generations == 1 or self.num_generations < 0:
            raise ValueError(f"{self.name}: num_generations must be the GRPO group size (>= 2) or 0, got "
                             f"{self.num_generations}")
        if self.max_length <= 0:
            raise ValueError(f"{self.name}: max_length must be > 0, got {self.max_length}")

    def _score(self, prompts, texts, kwargs):
        groups = trl_groups(prompts, len(texts), self.num_generations, self.name)
        correct = _correct_flags(texts, kwargs, self.name)
        lengths = _lengths(texts, kwargs, self.unit, self.name)
        out = [self.correct if ok else self.wrong for ok in correct]
        gated = [all(correct[i] for i in group) for group in groups]
        for group, all_right in zip(groups, gated):
            for i in group if all_right else ():
                out[i] += self.length_weight * (1.0 - min(lengths[i], self.max_length) / self.max_length)
        _log(kwargs, f"{self.name}/all_correct_groups", [float(g) for g in gated])
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
