"""Teacher rationale text <-> (thinking, steps, answer), and the three-part target text the stages train on.

The paper's teacher (DeepSeek-R1-Distill-Qwen-14B) writes a free-form ``Thinking…`` part, then ``Step N:`` lines,
then ``Answer: N``. The authors' code keeps the three parts apart and trains on all three (their
``construct_three_part_target``): the thinking is *not* a list of steps, and only the ``Step N:`` blocks count as
steps. A ``Step N:`` block runs until the next one; its continuation lines are joined into one line here (our prompts
list one step per line). Their stage-1 loader can replace display/inline LaTeX (``\\[...\\]``, ``\\(...\\)``) in the steps
with ``[math]``; ``latex="math"`` does the same. Text without ``Step N:`` lines falls back to one step per non-empty
line (GSM8K gold, bullet lists). Pure string work: regexes only, nothing is evaluated. This module imports no other
project module except answers/prompts, so ``data.py`` may import it without a cycle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from recipe.data.answers import extract_answer
from recipe.data.prompts import ANSWER_LABEL, render_solution

Latex = Literal["keep", "math"]
THINKING_MARK = "Thinking…"

_THINK_TAGS = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)
_THINK_HEAD = re.compile(r"^\s*\**\s*thinking\s*(?:…|\.{2,3})?\s*:?\s*\**[ \t]*\n?", re.IGNORECASE)
_THINK_MARKED = re.compile(r"^\s*\**\s*thinking\s*(?:…|\.{2,3})", re.IGNORECASE)
_DONE_THINKING = re.compile(r"\.{0,3}\s*done\s+thinking\s*\.{0,3}\s*$", re.IGNORECASE)
_STEP_LINE = re.compile(r"^[ \t]*(?:[#*]+[ \t]*)?step[ \t]*\d+[ \t]*\**[ \t]*[:.)][ \t]*\**[ \t]*",
                        re.IGNORECASE | re.MULTILINE)
_ANSWER_MARK = re.compile(r"(?:\*{0,2}\s*(?:final\s*)?answer\s*\**\s*:|####)", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*(?:####|(?:the\s+)?(?:final\s+)?answer\s*(?:is|:))", re.IGNORECASE)
_LINE_PREFIX = re.compile(r"^\s*(?:[-*•]\s*)?(?:step\s*\d+\s*[:.)]\s*)?", re.IGNORECASE)
_LATEX_DISPLAY = re.compile(r"\\\[.*?\\\]", re.DOTALL)
_LATEX_INLINE = re.compile(r"\\\(.*?\\\)", re.DOTALL)


@dataclass(frozen=True)
class Rationale:
    """A parsed teacher rationale: free ``thinking`` ("" when none), the real ``steps``, and the teacher's own
    final ``answer`` (canonical number, None when unreadable)."""

    thinking: str
    steps: tuple[str, ...]
    answer: str | None

    @property
    def parsed(self) -> bool:
        """Usable as a teacher rationale: at least one step and a readable answer."""
        return bool(self.steps) and self.answer is not None


def replace_latex(text: str) -> str:
    """The authors' stage-1 LaTeX replacement: every ``\\[...\\]`` and ``\\(...\\)`` span becomes ``[math]``.

    >>> replace_latex(r"so \\[ 90 - 15 = 75 \\] and \\( E \\) is 100")
    'so [math] and [math] is 100'
    """
    return _LATEX_INLINE.sub("[math]", _LATEX_DISPLAY.sub("[math]", text))


def _one_line(block: str) -> str:
    return " ".join(line.strip() for line in block.splitlines() if line.strip())


def _split_thinking(text: str) -> tuple[str, str]:
    """(thinking, rest): a ``<think>...</think>`` span, or what precedes the first ``Step N:`` line."""
    tags = _THINK_TAGS.search(text)
    if tags:
        return tags.group(1).strip(), text[tags.end():]
    first = _STEP_LINE.search(text)
    if first is None:
        return "", text
    return text[:first.start()], text[first.start():]


def _clean_thinking(head: str) -> str:
    head = _DONE_THINKING.sub("", _THINK_HEAD.sub("", head, count=1)).strip()
    return re.sub(r"\n\s*\n+", "\n\n", head)


def _step_blocks(body: str) -> tuple[list[str], str]:
    """The text of every ``Step N:`` block, and the tail after the last answer marker of the last block."""
    starts = list(_STEP_LINE.finditer(body))
    blocks = [body[m.end():(starts[i + 1].start() if i + 1 < len(starts) else len(body))]
              for i, m in enumerate(starts)]
    tail = ""
    if blocks:
        marks = list(_ANSWER_MARK.finditer(blocks[-1]))
        if marks:
            tail = blocks[-1][marks[-1].start():]
            blocks[-1] = blocks[-1][:marks[-1].start()]
    return blocks, tail


def _line_steps(text: str) -> tuple[str, ...]:
    steps = []
    for line in text.splitlines():
        if not line.strip() or _ANSWER_LINE.match(line):
            continue
        step = _LINE_PREFIX.sub("", line, count=1).strip()
        if step:
            steps.append(step)
    return tuple(steps)


def parse_rationale_text(text: str, latex: Latex = "keep") -> Rationale:
    """Split a teacher rationale into thinking, real steps and the teacher's answer.

    >>> r = parse_rationale_text("Thinking…\\nFirst add.\\n\\nThen check.\\n\\nStep 1: 2 + 2\\n= 4.\\nStep 2: Done. Answer: 4")
    >>> r.thinking, r.steps, r.answer
    ('First add.\\n\\nThen check.', ('2 + 2 = 4.', 'Done.'), '4')
    >>> parse_rationale_text("a = 1.\\nb = 2.\\n#### 2")
    Rationale(thinking='', steps=('a = 1.', 'b = 2.'), answer='2')
    """
    if latex not in ("keep", "math"):
        raise ValueError(f"latex must be 'keep' or 'math', got {latex!r}")
    thinking, rest = _split_thinking(text)
    if _STEP_LINE.search(rest):
        blocks, tail = _step_blocks(rest[_STEP_LINE.search(rest).start():])
        steps = tuple(s for s in (_one_line(b) for b in blocks) if s)
        answer = extract_answer(tail) if tail else None
        if answer is None:
            answer = extract_answer(rest)
    elif _THINK_MARKED.match(text) and not _THINK_TAGS.search(text):
        thinking, steps, answer = text, (), extract_answer(text)  # a thinking part and no steps: not a rationale
    else:
        steps, answer = _line_steps(rest), extract_answer(rest)
    if latex == "math":
        steps = tuple(replace_latex(s) for s in steps)
    return Rationale(_clean_thinking(thinking), steps, answer)


def render_target(steps: Sequence[str], answer: str, thinking: str = "", answer_label: str = ANSWER_LABEL) -> str:
    """The target text a stage trains on: the authors' three parts (``Thinking…`` block, ``Step k:`` lines, answer
    line) when there is a thinking part, else exactly :func:`recipe.data.prompts.render_solution` (gold rationales).
    The answer line uses our ``answer_label`` (the evaluation prompt asks for "Final Answer:"), not their "Answer:".

    >>> print(render_target(["2 + 2 = 4."], "4", thinking="Add them."))
    Thinking…
    Add them.
    <BLANKLINE>
    Step 1: 2 + 2 = 4.
    Final Answer: 4
    >>> render_target(["a."], "1") == render_solution(["a."], "1")
    True
    """
    body = render_solution(steps, answer, answer_label)
    thinking = thinking.strip()
    return f"{THINKING_MARK}\n{thinking}\n\n{body}" if thinking else body
