"""Prompt templates and pure render functions for the three BRIDGE stages and evaluation.

The evaluation prompt is the paper's zero-shot protocol verbatim (it ends with ``"Reasoning:"`` and no newline, as
in the official eval script). The three training prompts share that frame — the same first line, "Question: ...",
the same closing instruction and the same ``"Reasoning:"`` cue — with the stage's material (shuffled steps, a
partial solution, the teacher's solution) in between, so what the student learns to write after the cue is what it
is asked for at test time. Completions start with :data:`COMPLETION_PREFIX` (a newline) then ``"Step 1: ..."``.
Nothing here calls a model; all functions are pure string builders.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

MASK_TOKEN = "[MASK]"
ANSWER_LABEL = "Final Answer:"

COMPLETION_PREFIX = "\n"  # prompts end with "Reasoning:"; a solution starts on the next line

_OPENING = "Solve this math problem step by step, showing your complete reasoning.\nQuestion: {question}\n"
_CLOSING = 'You must end your response with "{answer_label} [number]"\nReasoning:'

STAGE1_TEMPLATE = (
    _OPENING
    + "These steps solve it, but they are shuffled and one of them may be hidden as {mask_token}:\n{steps}\n"
    "Write the complete solution with every step in the correct order, filling in any hidden step, "
    'as "Step 1:", "Step 2:", ...\n'
    + _CLOSING
)

STAGE2_TEMPLATE = (
    _OPENING
    + "A partial solution, steps in order, some hidden as {mask_token}:\n{steps}\n"
    'Write the complete solution as "Step 1:", "Step 2:", ...\n'
    + _CLOSING
)

STAGE3_TEMPLATE = (
    _OPENING
    + "A correct but long solution:\n{teacher_solution}\n"
    "Rewrite it much shorter while keeping the same answer: keep only the essential steps and merge steps "
    'where you can, as "Step 1:", "Step 2:", ...\n'
    + _CLOSING
)

STEPS_TEMPLATES = {"stage1": STAGE1_TEMPLATE, "stage2": STAGE2_TEMPLATE}  # the prompts that list a problem's steps

EVAL_TEMPLATE = _OPENING + _CLOSING  # the paper's zero-shot prompt (eval_prompt's doctest shows it whole)


def render_solution(steps: Sequence[str], answer: str, answer_label: str = ANSWER_LABEL) -> str:
    """Render steps and answer in the canonical ``Step k:`` format.

    >>> print(render_solution(["Half of 48 is 24.", "48 + 24 = 72."], "72"))
    Step 1: Half of 48 is 24.
    Step 2: 48 + 24 = 72.
    Final Answer: 72
    >>> render_solution([], "5", answer_label="####")
    '#### 5'
    """
    lines = [f"Step {k}: {step}" for k, step in enumerate(steps, start=1)]
    lines.append(f"{answer_label} {answer}")
    return "\n".join(lines)


def steps_prompt(
    stage: str,
    question: str,
    steps: Sequence[str],
    mask_token: str = MASK_TOKEN,
    answer_label: str = ANSWER_LABEL,
) -> str:
    """Stage 1 (structure) or stage 2 (brevity) prompt: the question, then ``steps`` as an unnumbered bullet list
    (stage 1: shuffled, one may be the mask; stage 2: in order, hidden ones already the mask), then the shared
    closing. Unnumbered, as in the paper, so the teacher's step count is not handed over as numbering.

    >>> p = steps_prompt("stage1", "What is 2 + 3 * 4?", ["2 + 12 = 14.", "[MASK]"])
    >>> "- 2 + 12 = 14.\\n- [MASK]" in p, "shuffled" in p, p.endswith("Reasoning:"), "Step 1: 2" in p
    (True, True, True, False)
    >>> p = steps_prompt("stage2", "Q?", ["[MASK]", "3 + 4 = 7."])
    >>> "- [MASK]\\n- 3 + 4 = 7." in p, "partial solution" in p, p.endswith("Reasoning:"), "Step 1: [MASK]" in p
    (True, True, True, False)
    """
    return STEPS_TEMPLATES[stage].format(
        question=question.strip(),
        steps="\n".join(f"- {step}" for step in steps),
        mask_token=mask_token,
        answer_label=answer_label,
    )


# the names the stages call it by (recipe.train.stage1 / stage2)
stage1_prompt = partial(steps_prompt, "stage1")
stage2_prompt = partial(steps_prompt, "stage2")


def stage3_prompt(question: str, teacher_solution: str, answer_label: str = ANSWER_LABEL) -> str:
    """Stage 3 (internalisation) prompt: show the teacher solution, ask for a much shorter rewrite.

    >>> p = stage3_prompt("Q?", "Step 1: 3 + 4 = 7.\\nFinal Answer: 7")
    >>> "much shorter" in p, "Final Answer: 7" in p, p.endswith("Reasoning:")
    (True, True, True)
    """
    return STAGE3_TEMPLATE.format(
        question=question.strip(),
        teacher_solution=teacher_solution.strip(),
        answer_label=answer_label,
    )


def eval_prompt(question: str, answer_label: str = ANSWER_LABEL) -> str:
    """The paper's zero-shot evaluation prompt (plain text, no chat template); answers are read from the
    ``Final Answer:`` line.

    >>> print(eval_prompt("What is 2 + 2?"))
    Solve this math problem step by step, showing your complete reasoning.
    Question: What is 2 + 2?
    You must end your response with "Final Answer: [number]"
    Reasoning:
    """
    return EVAL_TEMPLATE.format(question=question.strip(), answer_label=answer_label)
