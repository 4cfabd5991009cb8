"""What each row of ``cotrecipe plan`` holds, in words: run-all trains every entry and runs the evaluation in a
process of its own (``run.process_per_entry``), each building at most one vLLM engine, so a row is one process at
its peak (:attr:`recipe.tools.plan.StagePlan.process`)."""

from __future__ import annotations

from typing import Any


def alive_in(stage: str, s: Any) -> str:
    """What the process of ``stage``'s row holds at its peak, in words (``cotrecipe plan`` prints it); ``s``: the
    row's :class:`recipe.tools.plan.Setup` (its ``unsloth`` and ``fast_inference``).

    >>> from types import SimpleNamespace as NS
    >>> alive_in("mining", NS(unsloth=True, fast_inference=True))
    "stage3's process before its trainer starts: one vLLM engine's share (the weights inside it), mining through it"
    """
    engine = "one vLLM engine's share (the weights inside it)" if s.unsloth else "the model"
    if stage == "stage1":
        return "stage1's process: the model and its SFT trainer, no engine"
    if stage in ("stage2", "stage3"):
        if not s.fast_inference:
            return f"{stage}'s process: the model and its GRPO trainer (HF generate), no engine"
        what = engine + " + the GRPO trainer" if s.unsloth else "the model + the GRPO trainer + TRL's vLLM engine"
        return f"{stage}'s process: {what}" + (" (it mined through the same engine first)" if stage == "stage3"
                                                and s.unsloth else "")
    vllm = s.fast_inference and s.unsloth
    if stage == "mining":
        return ("stage3's process before its trainer starts: " + (f"{engine}, mining through it" if vllm else
                "the model it then trains, HF generate"))
    return ("the evaluation process: " + ("one vLLM engine serving the base model and every adapter as a LoRA "
            "request (a full fine-tune: a process each)" if vllm else "one model at a time, HF generate"))
