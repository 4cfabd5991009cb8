"""Reading numeric final answers out of model text, regex-only.

Nothing here evaluates text: GSM8K ``<<48/2=24>>`` annotations and model output are only
matched against pre-compiled patterns. Every pattern is linear-time (possessive quantifiers,
no nested repetition), so a 1 MB completion is read in milliseconds.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import deque
from decimal import Context, Decimal, InvalidOperation

__all__ = [
    "ABS_TOL",
    "REL_TOL",
    "answers_match",
    "extract_answer",
    "gold_from_gsm8k",
    "has_final_answer_line",
    "parse_number",
]

# Answers are compared as floats only to absorb binary round-off (e.g. 1/3 written as
# 0.3333333333333333): a 1e-9 relative tolerance still separates distinct integers up to
# 1e9 (GSM8K's largest gold is ~1e8), and 1e-6 absolute handles values at or near zero.
REL_TOL = 1e-9
ABS_TOL = 1e-6

_MAX_TOKEN_CHARS = 400  # longer digit runs are not answers; also bounds Decimal() cost
_MAX_EXPONENT = 300  # keeps every accepted value well inside the finite float range
_SEGMENT_CHARS = 500  # how far after a marker the answer may start
_CHUNK_CHARS = 8192  # backwards scan step when looking for the last number
_TAIL_MATCHES = 32  # matches per chunk parsed before stepping further back
_DIVIDE = Context(prec=17)  # fractions become 17-significant-digit decimals

# One number: optional sign (not glued to a word, so "COVID-19" is 19 and "10-3" is 10, 3),
# optional "$", then a simple fraction "3/4", or a decimal with valid thousands groups and
# an optional exponent. Numbers never contain whitespace (so text can be cut at any space).
# The leading look-ahead lets the engine skip non-candidates fast; the look-behind stops a
# match starting mid-number.
_NUMBER = re.compile(
    r"(?=[$-]{0,2}+\.?\d)(?<![\d.])"
    r"\$?(?:(?<![\w.)\]])(?P<sign>-))?\$?"
    r"(?:"
    r"(?P<num>\d++)/(?P<den>\d++)(?!\.\d)"
    r"|(?P<mant>(?:\d{1,3}+(?:,\d{3}+(?!\d))++|\d++)(?:\.\d++)?+|\.\d++)"
    r"(?:[eE](?P<exp>[+-]?\d++))?+"
    r")"
)
_MARKERS = (
    re.compile(r"final[ \t]*+answer[ \t*]*+:", re.IGNORECASE),
    re.compile(r"answer[ \t*]*+:", re.IGNORECASE),
    re.compile(r"the[ \t]++(?:final[ \t]++)?answer[ \t]++is\b[ \t]*+:?", re.IGNORECASE),
    re.compile(r"####"),
)
_NON_NUMBER_CHAR = re.compile(r"[^\d,.$/eE+-]")
_BOXED = re.compile(r"\\boxed[ \t]*+\{")
_LATEX_FRAC = re.compile(r"\\[dt]?frac[ \t]*+\{([^{}]{0,60})\}[ \t]*+\{([^{}]{0,60})\}")
_LATEX_CMD = re.compile(r"\\(?:left|right|text|mathrm|mathbf|boxed|[,!;:])")
_CHAR_FIXES = str.maketrans({"\u2212": "-", "\u2044": "/", "\u2215": "/", "{": None, "}": None})


def _normalise(text: str) -> str:
    """Fold unicode digits/fractions/minus signs to ASCII-compatible forms (NFKC)."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).translate({0x2212: "-", 0x2044: "/", 0x2215: "/"})


def _canonical(value: Decimal) -> str | None:
    if not value.is_finite() or abs(value.adjusted()) > _MAX_EXPONENT:
        return None if value != 0 else "0"
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _read_match(m: re.Match[str]) -> str | None:
    """Canonical string for one regex match, or None when it is not a usable finite number."""
    if m.end() - m.start() > _MAX_TOKEN_CHARS:
        return None
    sign = "-" if m.group("sign") else ""
    try:
        if m.group("num") is not None:
            den = Decimal(m.group("den"))
            if den == 0:
                return None
            return _canonical(_DIVIDE.divide(Decimal(sign + m.group("num")), den))
        exp = m.group("exp")
        if exp is not None and abs(int(exp)) > _MAX_EXPONENT:
            return None
        text = sign + m.group("mant").replace(",", "") + ("e" + exp if exp else "")
        return _canonical(Decimal(text))
    except (InvalidOperation, ValueError):
        return None


def _first_number(segment: str) -> str | None:
    for m in _NUMBER.finditer(segment):
        value = _read_match(m)
        if value is not None:
            return value
    return None


def _safe_cut(text: str, pos: int) -> int:
    """Largest cut <= pos whose preceding char cannot sit inside a number (0 if none near)."""
    if pos <= 0:
        return 0
    found = _NON_NUMBER_CHAR.search(text[max(0, pos - _CHUNK_CHARS) : pos][::-1])
    return pos - found.start() if found else 0


def _last_number(text: str) -> str | None:
    """Last usable number, scanning backwards chunk by chunk.

    Chunks are cut after a character that no number contains, so each chunk tokenises
    exactly as the whole text would; only the last few matches of a chunk are parsed.
    """
    end = len(text)
    while end > 0:
        start = _safe_cut(text, end - _CHUNK_CHARS)
        tail = deque(_NUMBER.finditer(text, start, end), maxlen=_TAIL_MATCHES)
        for m in reversed(tail):
            value = _read_match(m)
            if value is not None:
                return value
        end = tail[0].start() if len(tail) == _TAIL_MATCHES else start
    return None


def _answer_in(segment: str) -> str | None:
    """First number of an answer segment, after light LaTeX cleanup; "a = b" reads b."""
    segment = _LATEX_FRAC.sub(r"\1/\2", segment.replace("{,}", ","))
    segment = _LATEX_CMD.sub(" ", segment).translate(_CHAR_FIXES)
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


def _boxed_content(text: str) -> str | None:
    found = None
    for found in _BOXED.finditer(text):
        pass
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
    """
    if not isinstance(text, str) or not text:
        return None
    text = _normalise(text)
    for marker in _MARKERS:
        found = None
        for found in marker.finditer(text):
            pass
        if found is not None:
            value = _answer_in(_segment_after(text, found.end()))
            if value is not None:
                return value
    boxed = _boxed_content(text)
    if boxed is not None:
        value = _answer_in(boxed)
        if value is not None:
            return value
    return _last_number(text)


def _whole_number(text: str) -> str | None:
    """Canonical string when ``text`` is exactly one number (ignoring $, %, a trailing period)."""
    text = _normalise(text).strip().rstrip(".%").strip()
    m = _NUMBER.fullmatch(text)
    return _read_match(m) if m else None


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
    """Numeric equality of two answer strings within float round-off; None never matches.

    >>> answers_match("72", "72.0"), answers_match("1,000", "1000"), answers_match("0.75", "3/4")
    (True, True, True)
    >>> answers_match("71", "72"), answers_match(None, "72")
    (False, False)
    """
    if pred is None or gold is None:
        return False
    p, g = parse_number(pred), parse_number(gold)
    if p is None or g is None:
        return False
    return math.isclose(p, g, rel_tol=rel_tol, abs_tol=abs_tol)


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
        raise ValueError(f"no numeric gold answer after '####' in {answer_field[-80:]!r}")
    return value


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
        if stripped.startswith(label) and _answer_in(stripped[len(label) :]) is not None:
            return True
    return False
