"""When a generated row is finished: its first complete answer line, or a stop text that starts a new problem.

Pure text rules (no torch), shared by generation (:mod:`recipe.generation` stops decoding with them), evaluation and
the GRPO rewards (which score a completion cut the same way).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from recipe.prompts import ANSWER_LABEL

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
