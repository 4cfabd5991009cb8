"""Reading numeric final answers out of model text, regex-only.

Nothing here evaluates text: GSM8K ``<<48/2=24>>`` annotations and model output are only
matched against pre-compiled patterns. Patterns have no nested unbounded repetition and numbers
cannot start mid-number, so matching stays linear: a 1 MB completion takes well under a second.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Sequence
from decimal import Context, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from recipe.data.unicode_numbers import MAX_EXPONENT as _MAX_EXPONENT
from recipe.data.unicode_numbers import canonical as _canonical
from recipe.data.unicode_numbers import normalise as _normalise

__all__ = [
    "ABS_TOL",
    "REL_TOL",
    "answers_match",
    "clear_answer_cache",
    "extract_answer",
    "finite_number",
    "gold_answer",
    "gold_answer_or_none",
    "gold_from_gsm8k",
    "has_final_answer_line",
    "parse_number",
]

# Two integers are compared exactly (GSM8K answers are exact integers). Only when a side is
# not an integer are answers compared as floats, to absorb binary round-off (e.g. 1/3 written
# as 0.3333333333333333); 1e-6 absolute handles values at or near zero.
REL_TOL = 1e-9
ABS_TOL = 1e-6

_MAX_TOKEN_CHARS = 400  # longer digit runs are not answers; also bounds Decimal() cost
_SEGMENT_CHARS = 500  # how far after a marker the answer may start
_CHUNK_CHARS = 8192  # backwards scan step when looking for the last number
_TAIL_MATCHES = 32  # newest matches of an oversized chunk tried before reading all of it
_DIVIDE = Context(prec=17)  # fractions become 17-significant-digit decimals

# One number: optional sign (not glued to a word, so "COVID-19" is 19 and "10-3" is 10, 3),
# optional "$", then a simple fraction "3/4", or a decimal with valid thousands groups and
# an optional exponent. Numbers never contain whitespace (so text can be cut at any space).
# The leading look-ahead lets the engine skip non-candidates fast; the look-behind stops a
# match starting mid-number.
_NUMBER = re.compile(
    r"(?=[$-]{0,2}\.?\d)(?<![\d.])"
    r"\$?(?:(?<![\w.)\]])(?P<sign>-))?\$?"
    r"(?:"
    r"(?P<num>\d+)/(?P<den>\d+)(?!\.?\d)"
    r"|(?P<mant>(?:\d{1,3}(?:,\d{3}(?!\d))+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:[eE](?P<exp>[+-]?\d+))?"
    r")"
)
# (pattern, a lower-case word it contains): a marker is only searched for when a casefolded
# copy of the text contains its word, which skips most regex scans on ordinary text.
_MARKERS = (
    (re.compile(r"final[ \t]*answer[ \t*]*:", re.IGNORECASE), "final"),
    (re.compile(r"answer[ \t*]*:", re.IGNORECASE), "answer"),
    (re.compile(r"the[ \t]+(?:final[ \t]+)?answer[ \t]+is\b[ \t]*:?", re.IGNORECASE), "answer"),
    (re.compile(r"####"), "####"),
)
_NON_NUMBER_CHAR = re.compile(r"[^\d,.$/eE+-]")
_BOXED = re.compile(r"\\boxed[ \t]*\{")
_LATEX_FRAC = re.compile(r"\\[dt]?frac[ \t]*\{([^{}]{0,60})\}[ \t]*\{([^{}]{0,60})\}")
_LATEX_CMD = re.compile(r"\\(?:left|right|text|mathrm|mathbf|boxed|[,!;:])")
_NO_BRACES = str.maketrans({"{": None, "}": None})
_NOT_FINITE = re.compile(r"\b(?:nan|inf|infinity)\b|\u221e", re.IGNORECASE)


def _read_match(m: re.Match[str]) -> str | None:
    """Canonical string for one regex match, or None when it is not a usable finite number."""
    sign, num, den, mant, exp = m.group("sign", "num", "den", "mant", "exp")
    if (exp is not None and len(exp) > 4) or m.end() - m.start() > _MAX_TOKEN_CHARS:
        return None  # over 4 exponent characters (sign included) is out of range or padded
    try:
        if num is not None:
            divisor = Decimal(den)
            if divisor == 0:
                return None
            return _canonical(_DIVIDE.divide(Decimal(num), divisor), sign)
        digits = mant.replace(",", "")
        if exp is None and digits.isdecimal() and len(digits) <= _MAX_EXPONENT:  # integer: skip Decimal
            value = int(digits)
            return str(-value if sign else value)
        if exp is not None and abs(int(exp)) > _MAX_EXPONENT:
            return None
        return _canonical(Decimal(digits + ("e" + exp if exp else "")), sign)
    except (InvalidOperation, ValueError):  # pragma: no cover - the regex admits only valid digits
        return None


class _Refused(str):
    """An answer segment whose first number is unusable (nan, inf, out of range): no fallback."""


_REFUSED = _Refused("")


def _first_number(segment: str) -> str | None:
    """First number of ``segment``; :data:`_REFUSED` when the first number-like token is unusable."""
    m = _NUMBER.search(segment)
    end = m.start() if m else len(segment)
    if _NOT_FINITE.search(segment, 0, end) is not None:
        return _REFUSED
    if m is None:
        return None
    value = _read_match(m)
    return _REFUSED if value is None else value


def _safe_cut(text: str, pos: int) -> int:
    """Largest cut <= pos whose preceding char cannot sit inside a number (0 if none near)."""
    if pos <= 0:
        return 0
    found = _NON_NUMBER_CHAR.search(text[max(0, pos - _CHUNK_CHARS) : pos][::-1])
    return pos - found.start() if found else 0


def _newest_usable(matches: Sequence[re.Match[str]]) -> str | None:
    for m in reversed(matches):
        value = _read_match(m)
        if value is not None:
            return value
    return None


def _last_number(text: str) -> str | None:
    """Last usable number, scanning backwards chunk by chunk.

    Chunks are cut after a character that no number contains, so each chunk tokenises
    exactly as the whole text would; a chunk's matches are parsed newest first.
    """
    end = len(text)
    while end > 0:
        start = _safe_cut(text, end - _CHUNK_CHARS)
        if end - start <= 2 * _CHUNK_CHARS:
            value = _newest_usable(list(_NUMBER.finditer(text, start, end)))
        else:  # no cut point near: keep only the newest matches unless none of them is usable
            tail = deque(_NUMBER.finditer(text, start, end), maxlen=_TAIL_MATCHES)
            value = _newest_usable(tail)
            if value is None and len(tail) == _TAIL_MATCHES:
                value = _newest_usable(list(_NUMBER.finditer(text, start, tail[0].start())))
        if value is not None:
            return value
        end = start
    return None


def _answer_in(segment: str) -> str | None:
    """First number of an answer segment, after light LaTeX cleanup; "a = b" reads b."""
    if "\\" in segment or "{" in segment or "}" in segment:
        segment = _LATEX_FRAC.sub(r"\1/\2", segment.replace("{,}", ","))
        segment = _LATEX_CMD.sub(" ", segment).translate(_NO_BRACES)
    if "=" in segment:
        segment = segment.rsplit("=", 1)[1]
    return _first_number(segment)


def _segment_after(text: str, start: int) -> str:
    """Rest of the marker's line, or the next non-blank line when the marker ends its line."""
    window = text[start : start + _SEGMENT_CHARS]
    head, _, tail = window.partition("\n")
    if head.strip():
        return head
    for line in tail.split("\n"):
        if line.strip():
            return line
    return ""


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    tail = deque(pattern.finditer(text), maxlen=1)
    return tail[0] if tail else None


def _boxed_content(text: str) -> str | None:
    found = _last_match(_BOXED, text)
    if found is None:
        return None
    depth, start = 1, found.end()
    window = text[start : start + _SEGMENT_CHARS]
    for i, ch in enumerate(window):
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return window[:i]
    return window


def extract_answer(text: str) -> str | None:
    """Final numeric answer of ``text`` as a canonical string, or None when unreadable.

    Markers in priority order (last occurrence of each): "Final Answer:", "Answer:",
    "The answer is", "####", ``\\boxed{}``; without a readable marker, the last number.

    >>> extract_answer("Step 1: 3 * 24 = 72\\nFinal Answer: 72")
    '72'
    >>> extract_answer("The answer is $1,234.50.")
    '1234.5'
    >>> extract_answer("so she has 3/4 of a pie left")
    '0.75'
    >>> extract_answer("#### -3.50") , extract_answer("\\\\boxed{\\\\frac{1}{2}}")
    ('-3.5', '0.5')
    >>> extract_answer("Final Answer: nan") is None and extract_answer("1e999") is None
    True
    >>> extract_answer("Step 1: 3 + 4 = 7\\nFinal Answer: inf"), extract_answer("Final Answer: 3½")
    (None, '3.5')
    """
    if not isinstance(text, str) or not text:
        return None
    text = _normalise(text)
    folded = text.casefold()
    for marker, word in _MARKERS:
        found = _last_match(marker, text) if word in folded else None
        if found is not None:
            value = _answer_in(_segment_after(text, found.end()))
            if value is not None:
                return value or None  # a refused answer ("Final Answer: nan") falls back to nothing
    boxed = _boxed_content(text) if "\\boxed" in text else None
    if boxed is not None:
        value = _answer_in(boxed)
        if value is not None:
            return value or None
    return _last_number(text)


def _whole_number(text: str) -> str | None:
    """Canonical string when ``text`` is exactly one number (ignoring $, %, a trailing period)."""
    return _whole_number_short(text) if len(text) <= 64 else _whole_number_uncached(text)


def _whole_number_uncached(text: str) -> str | None:
    text = _normalise(text).strip().rstrip(".%").strip()
    m = _NUMBER.fullmatch(text)
    return _read_match(m) if m else None


# Gold answers and predictions repeat across a GRPO group; caching only short strings keeps
# the cache's memory small whatever the input.
_whole_number_short = lru_cache(maxsize=1 << 16)(_whole_number_uncached)


def clear_answer_cache() -> None:
    """Forget cached parses of short answer strings (for benchmarks; results never change)."""
    _whole_number_short.cache_clear()


def parse_number(text: str) -> float | None:
    """Finite float for a string holding one number (commas, $, %, fractions), else None.

    >>> parse_number("1,000"), parse_number(" -$3.5 "), parse_number("3/4"), parse_number("inf")
    (1000.0, -3.5, 0.75, None)
    """
    if not isinstance(text, str):
        return None
    value = _whole_number(text)
    return float(value) if value is not None else None


def answers_match(pred: str | None, gold: str | None, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> bool:
    """Equality of two answer strings: integers exactly, otherwise within float round-off.

    None never matches.

    >>> answers_match("72", "72.0"), answers_match("1,000", "1000"), answers_match("0.75", "3/4")
    (True, True, True)
    >>> answers_match("71", "72"), answers_match(None, "72"), answers_match("1000000001", "1000000000")
    (False, False, False)
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    p, g = _whole_number(pred), _whole_number(gold)
    if p is None or g is None:
        return False
    if "." not in p and "." not in g:  # canonical integers: exact
        return p == g
    return math.isclose(float(p), float(g), rel_tol=rel_tol, abs_tol=abs_tol)


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float when it is an int or float (not a bool) inside float range, else None.

    >>> finite_number(3), finite_number(2.5), finite_number(10**400), finite_number(float("nan")), finite_number("3")
    (3.0, 2.5, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


def gold_answer(value: Any) -> str:
    """Canonical gold answer from a dataset cell: a GSM8K ``answer`` field, a numeric string, an int or a float.

    Raises ValueError (one line) when the cell holds no usable finite number. This is the one gold parser
    shared by the rewards and ``cotrecipe score``.

    >>> gold_answer("... #### 1,000"), gold_answer(72), gold_answer(2.50)
    ('1000', '72', '2.5')
    >>> gold_answer(10**400)
    Traceback (most recent call last):
    ...
    ValueError: gold answer is an integer of over 300 digits, out of range
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"gold answer must be text or a number, got {type(value).__name__}")
    if isinstance(value, int):
        text = str(value) if abs(value).bit_length() <= 1000 else ""  # str() of a huge int is slow or refused
        if not text or len(text.lstrip("-")) > _MAX_EXPONENT:
            raise ValueError(f"gold answer is an integer of over {_MAX_EXPONENT} digits, out of range")
        return text
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"gold answer {value!r} is not a finite number")
        value = repr(value)
    return gold_from_gsm8k(value)


def gold_answer_or_none(value: Any) -> str | None:
    """:func:`gold_answer`, or None when the cell is unusable (rewards then score the row as wrong).

    >>> gold_answer_or_none("#### 5"), gold_answer_or_none(float("inf")), gold_answer_or_none(None)
    ('5', None, None)
    """
    try:
        return gold_answer(value)
    except ValueError:
        return None


def gold_from_gsm8k(answer_field: str) -> str:
    """Canonical gold answer from a GSM8K ``answer`` field ("... #### 72") or a bare number.

    >>> gold_from_gsm8k("Natalia sold 48/2 = <<48/2=24>>24 clips.\\n#### 72")
    '72'
    >>> gold_from_gsm8k("1,000")
    '1000'
    """
    if not isinstance(answer_field, str):
        raise ValueError(f"GSM8K answer must be a string, got {type(answer_field).__name__}")
    value = _whole_number(answer_field.rsplit("####", 1)[-1])
    if value is None:
        tail = answer_field.rsplit("####", 1)[-1]
        raise ValueError(f"no numeric gold answer after '####' in {_short(tail)}")
    return value


def _short(text: str, limit: int = 80) -> str:
    """``repr`` of at most ``limit`` characters of ``text`` (long values are cut, marked with ...)."""
    return repr(text[-limit:]) + (" (cut)" if len(text) > limit else "")


def has_final_answer_line(text: str, label: str = "Final Answer:") -> bool:
    """True when some line starts with ``label`` and a readable number follows it on that line.

    >>> has_final_answer_line("Step 1: 2+2=4\\nFinal Answer: 4")
    True
    >>> has_final_answer_line("Final Answer: four"), has_final_answer_line("the Final Answer: 4")
    (False, False)
    """
    if not isinstance(text, str) or not label:
        return False
    text = _normalise(text)
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(label) and _answer_in(stripped[len(label) :]):
            return True
    return False
