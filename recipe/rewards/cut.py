"""Score a GRPO completion only up to its first complete answer line, as the authors' code does.

The official stages 2–3 cut every sampled response after its first answer (``truncate_after_answer``) before the
reward reads it, so whatever a model writes after its answer cannot change the reward. TRL hands the rewards the whole
completion; :class:`CutAfterAnswer` wraps any reward of :mod:`recipe.rewards` and cuts first, with
:func:`recipe.data.stopping.cut_after_answer` (the same rule that ends generation at evaluation). A completion that ends
right after its answer (EOS, no newline) counts as a finished answer line. Token lengths (``completion_ids``) of a
cut completion are recounted with the tokenizer when one is given; without one the column is dropped, so a
``unit="tokens"`` reward falls back to words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recipe.data.prompts import ANSWER_LABEL
from recipe.data.stopping import cut_after_answer
from recipe.rewards.core import completion_text


def cut_completion(text: str, answer_label: str = ANSWER_LABEL) -> str:
    """``text`` up to the end of its first complete answer line (the line's own end counts at the end of the text).

    >>> cut_completion("Step 1: 2+2=4\\nFinal Answer: 4\\nStep 2: junk\\nFinal Answer: 5")
    'Step 1: 2+2=4\\nFinal Answer: 4'
    >>> cut_completion("Step 1: 2+2=4\\nFinal Answer: 4"), cut_completion("no answer")
    ('Step 1: 2+2=4\\nFinal Answer: 4', 'no answer')
    """
    cut = cut_after_answer(text + "\n", answer_label=answer_label)
    return cut if len(cut) <= len(text) else text


class CutAfterAnswer:
    """A reward that scores each completion cut by :func:`cut_completion` (same ``__name__`` as the wrapped one,
    so TRL logs it under the same column; its parameters read through). Picklable.

    >>> from recipe.rewards.core import CorrectnessReward
    >>> whole, cut = CorrectnessReward(), CutAfterAnswer(CorrectnessReward())
    >>> text = "Final Answer: 72\\nFinal Answer: 7"
    >>> whole(completions=[text], answer=["72"]), cut(completions=[text], answer=["72"])
    ([0.0], [1.0])
    """

    def __init__(self, reward: Any, cut_label: str = ANSWER_LABEL, tokenizer: Any = None):
        self.reward = reward
        self.cut_label = cut_label
        self.tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:  # the wrapped reward's parameters read through (gated.unit, ...)
        if name in ("reward", "cut_label", "tokenizer") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.reward, name)

    @property
    def __name__(self) -> str:  # TRL names reward columns after this
        return getattr(self.reward, "__name__", type(self.reward).__name__)

    def __repr__(self) -> str:
        return f"CutAfterAnswer({self.reward!r}, cut_label={self.cut_label!r})"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 **kwargs: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        cut = [cut_completion(t, self.cut_label) for t in texts]
        changed = [i for i, (a, b) in enumerate(zip(texts, cut)) if a != b]
        if changed and kwargs.get("completion_ids") is not None:
            ids = list(kwargs["completion_ids"])
            if self.tokenizer is None:
                kwargs.pop("completion_ids")
            else:
                recount = self.tokenizer([cut[i] for i in changed], add_special_tokens=False)["input_ids"]
                for i, new in zip(changed, recount):
                    ids[i] = new
                kwargs["completion_ids"] = ids
        return self.reward(prompts, cut, **kwargs)
