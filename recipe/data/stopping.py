"""When a generated row is finished: its first complete answer line, or a stop text that starts a new problem.

Pure text rules (no torch), shared by generation (:mod:`recipe.models.generation` stops decoding with them), evaluation and
the GRPO rewards (which score a completion cut the same way).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from recipe.data.prompts import ANSWER_LABEL

# The paper's eval stops a row after its answer line, or as soon as it starts a new "Question:".
STOP_TEXTS = ("Question:",)


def answer_line_pattern(answer_label: str = ANSWER_LABEL) -> re.Pattern:
    """A finished answer line: the label, something with a digit, then a newline.

    >>> bool(answer_line_pattern("Answer:").search("x\\nAnswer: 4\\n")), bool(answer_line_pattern().search("Final Answer: x\\n"))
    (True, False)
    """
    return re.compile(re.escape(answer_label) + r"[^\n]*\d[^\n]*\n")


def cut_after_answer(text: str, stop_texts: Sequence[str] = (), answer_label: str = ANSWER_LABEL) -> str:
    """Drop whatever follows the first complete answer line, and anything from the first stop text on.

    >>> cut_after_answer("Step 1: 2+2=4\\nFinal Answer: 4\\nStep 9: junk")
    'Step 1: 2+2=4\\nFinal Answer: 4'
    >>> cut_after_answer("no answer here")
    'no answer here'
    >>> cut_after_answer("Step 1: 2+2=4\\nQuestion: next one\\nFinal Answer: 9", stop_texts=["Question:"])
    'Step 1: 2+2=4'
    """
    for stop in stop_texts:
        text = text.split(stop, 1)[0].rstrip()
    match = answer_line_pattern(answer_label).search(text)
    return text[: match.end()].rstrip("\n") if match else text


# --------------------------------------------------------------------------------------------------------------------
# Evaluation stop rules (``eval.stop_rule``)
# --------------------------------------------------------------------------------------------------------------------

STOP_RULES = ("paper", "answer_line")
# The authors' evaluation (scripts/eval_gsm8k.py, AnswerStoppingCriteria): the first match of this, case-insensitive,
# then a newline or more than PAPER_TAIL_CHARS characters after it.
PAPER_ANSWER = re.compile(r"(Final Answer|Answer):\s*\$?[\d,]+(?:\.\d+)?", re.IGNORECASE)
PAPER_TAIL_CHARS = 20


def resolve_stop_rule(rule: str, prompt_style: str) -> str:
    """``auto`` is the authors' rule for the ``paper`` prompt and the answer-line rule for the others.

    >>> resolve_stop_rule("auto", "paper"), resolve_stop_rule("auto", "chat"), resolve_stop_rule("paper", "chat")
    ('paper', 'answer_line', 'paper')
    """
    if rule == "auto":
        return "paper" if prompt_style == "paper" else "answer_line"
    if rule not in STOP_RULES:
        raise ValueError(f"unknown stop rule {rule!r} (allowed: auto, {', '.join(STOP_RULES)})")
    return rule


def stop_rule_record(rule: str, answer_label: str = ANSWER_LABEL) -> dict:
    """What a stop rule is, for results.json's protocol.

    >>> stop_rule_record("paper")["pattern"]
    '(Final Answer|Answer):\\\\s*\\\\$?[\\\\d,]+(?:\\\\.\\\\d+)?'
    """
    if rule == "paper":
        return {"rule": "paper", "pattern": PAPER_ANSWER.pattern, "flags": "IGNORECASE",
                "then": f"a newline or more than {PAPER_TAIL_CHARS} characters", "stop_texts": list(STOP_TEXTS)}
    return {"rule": "answer_line", "pattern": answer_line_pattern(answer_label).pattern, "flags": "",
            "then": "the line's newline", "stop_texts": list(STOP_TEXTS)}


def paper_answer_done(text: str) -> bool:
    """The authors' answer test: their first answer match is followed by a newline or > 20 more characters.

    >>> paper_answer_done("Step 1: 2+2=4\\nfinal answer: $1,000\\n"), paper_answer_done("Answer: 4 apples")
    (True, False)
    >>> paper_answer_done("Answer: 4 and that is all I have to say"), paper_answer_done("Final Answer: four\\n")
    (True, False)
    """
    match = PAPER_ANSWER.search(text)
    if match is None:
        return False
    after = text[match.end():]
    return "\n" in after or len(after) > PAPER_TAIL_CHARS


def is_finished(text: str, rule: str = "answer_line", stop_texts: Sequence[str] = (),
                answer_label: str = ANSWER_LABEL) -> bool:
    """Whether generated ``text`` is done under ``rule`` (``paper`` or ``answer_line``), or holds a stop text.

    >>> is_finished("Answer: 12 because\\n", "paper"), is_finished("Answer: 12 because\\n", "answer_line")
    (True, False)
    """
    if any(s in text for s in stop_texts):
        return True
    if rule == "paper":
        return paper_answer_done(text)
    return bool(answer_line_pattern(answer_label).search(text))


def cut_finished(text: str, rule: str = "answer_line", stop_texts: Sequence[str] = (),
                 answer_label: str = ANSWER_LABEL) -> str:
    """The scored text under ``rule``: ``answer_line`` is :func:`cut_after_answer`; ``paper`` drops anything from the
    first stop text on and whatever follows the line of the first answer match.

    >>> cut_finished("Step 1: x\\nanswer: 12 apples\\nStep 2: junk", "paper")
    'Step 1: x\\nanswer: 12 apples'
    """
    if rule != "paper":
        return cut_after_answer(text, stop_texts, answer_label)
    for stop in stop_texts:
        text = text.split(stop, 1)[0].rstrip()
    match = PAPER_ANSWER.search(text)
    if match is None:
        return text
    newline = text.find("\n", match.end())
    return text if newline < 0 else text[:newline]
