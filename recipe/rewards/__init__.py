"""GRPO reward callables in TRL's signature ``f(prompts, completions, **kwargs) -> list[float]``.

Every reward is a frozen dataclass: picklable, keyword-only parameters whose defaults follow
the source named in its docstring, a ``__name__`` for TRL's logging, and a ``repr``. Rewards
read dataset columns from TRL's keyword arguments: ``answer`` (gold), ``teacher_steps``,
``teacher_words``, ``teacher_tokens``, ``teacher_solution``, and ``completion_ids`` (token
lengths). Completions may be plain strings or ``[{"role": "assistant", "content": ...}]``.
Whatever the text, each reward returns finite floats; a missing or mis-sized column raises
ValueError naming it.

May import: ``recipe.data`` (answers, prompt format, stop rules) and nothing else of the project.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from recipe.rewards.bridge import CompressionRatioReward, GatedBrevityReward
from recipe.rewards.core import CorrectnessReward, FormatReward, _Reward, completion_text, count_steps, step_format_ok
from recipe.rewards.cut import CutAfterAnswer, cut_completion
from recipe.rewards.length import AllCorrectLengthReward, CosineLengthReward, GroupRelativeLengthReward, LengthReward

__all__ = [
    "REWARDS",
    "AllCorrectLengthReward",
    "CompressionRatioReward",
    "CorrectnessReward",
    "CosineLengthReward",
    "CutAfterAnswer",
    "FormatReward",
    "GatedBrevityReward",
    "GroupRelativeLengthReward",
    "LengthReward",
    "build_reward",
    "reward_params",
    "completion_text",
    "cut_completion",
    "count_steps",
    "step_format_ok",
]


REWARDS: dict[str, type[_Reward]] = {
    "correctness": CorrectnessReward,
    "format": FormatReward,
    "gated_brevity": GatedBrevityReward,
    "compression_ratio": CompressionRatioReward,
    "cosine_length": CosineLengthReward,
    "group_length": GroupRelativeLengthReward,
    "all_correct_length": AllCorrectLengthReward,
    "length_only": LengthReward,
}


def build_reward(name: str, **params: Any) -> _Reward:
    """Reward named ``name`` in :data:`REWARDS`, built with keyword ``params``.

    >>> build_reward("cosine_length", max_length=256)
    CosineLengthReward(r_c_max=2.0, r_c_min=1.0, r_w_min=-10.0, r_w_max=0.0, exceed_reward=-10.0, max_length=256, unit='tokens')
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose from {sorted(REWARDS)}")
    allowed = reward_params(name)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"reward {name!r} has no parameter(s) {unknown}; allowed: {sorted(allowed)}")
    return REWARDS[name](**params)


def reward_params(name: str) -> set[str]:
    """The keyword parameters reward ``name`` accepts.

    >>> sorted(reward_params("correctness"))
    ['correct', 'wrong']
    """
    return {f.name for f in fields(REWARDS[name])}
