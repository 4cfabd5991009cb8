"""Unicode numerals folded to ASCII before answers are read: digits, minus signs, fractions and powers.

NFKC alone misreads two common forms by gluing them to the digits before them: "3½" becomes "31⁄2" (15.5) and
"7²" becomes "72". Here a vulgar fraction after a whole number is read as a mixed number ("3½" -> "7/2") and a
superscript after a number as a power ("7²" -> "49"); forms with no clear reading ("1.5½", a power out of range)
become :data:`REFUSED_NUMBER`, which reads as an out-of-range number so the answer is refused, never misread.
Superscripts after no number (units: "cm²") and subscripts ("CO₂") are dropped.

>>> normalise("3½ or ¾ or 7² cm²"), normalise("H₂O"), normalise("−３")
('7/2 or 3/4 or 49 cm', 'HO', '-3')
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Context, Decimal, InvalidOperation

__all__ = ["MAX_EXPONENT", "REFUSED_NUMBER", "canonical", "normalise"]

MAX_EXPONENT = 300  # keeps every accepted value well inside the finite float range
REFUSED_NUMBER = "1e99999"  # a token that reads as a number out of range, so the answer is refused
_EXACT = Context(prec=2 * MAX_EXPONENT)  # superscript powers within range are computed exactly
_UNICODE_FIXES = str.maketrans({"\u2212": "-", "\u2044": "/", "\u2215": "/"})  # minus, fraction slashes
_SUBSCRIPTS = str.maketrans(dict.fromkeys(range(0x2080, 0x208A)))  # "CO₂" is not a number: drop them
_SUPERSCRIPT_DIGITS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
_SUPERSCRIPT_VALUE = str.maketrans(_SUPERSCRIPT_DIGITS, "0123456789")
# a number with a superscript exponent ("7²" is 49, not NFKC's "72"); a superscript after no number is a unit
_POWER = re.compile(rf"(\d[\d,]*(?:\.\d+)?)?([{_SUPERSCRIPT_DIGITS}]+)")
# vulgar fractions (NFKC turns "3½" into "31⁄2", i.e. 15.5): char -> (numerator, denominator)
_VULGAR = {
    ch: (int(m.group(1)), int(m.group(2)))
    for ch in map(chr, [*range(0xBC, 0xBF), *range(0x2150, 0x2160), 0x2189])
    if (m := re.fullmatch(r"(\d+)\u2044(\d+)", unicodedata.normalize("NFKC", ch)))
}
_MIXED = re.compile(rf"(\d+(?:[.,]\d+)*)?[ \t]?([{''.join(_VULGAR)}])")


def _mixed(m: re.Match[str]) -> str:
    whole, (num, den) = m.group(1), _VULGAR[m.group(2)]
    if whole is None:
        return f" {num}/{den}"
    if not whole.isdecimal() or len(whole) > MAX_EXPONENT:  # "1.5½", "1,000½": no clear reading
        return REFUSED_NUMBER
    return f"{int(whole) * den + num}/{den}"


def _power(m: re.Match[str]) -> str:
    base, exponent = m.group(1), int(m.group(2).translate(_SUPERSCRIPT_VALUE))
    if base is None:
        return ""  # "cm²": a unit
    try:
        value = Decimal(base.replace(",", ""))
        if exponent > MAX_EXPONENT or (value.adjusted() + 1) * exponent > MAX_EXPONENT:
            return REFUSED_NUMBER
        text = canonical(_EXACT.power(value, exponent))
    except (InvalidOperation, ArithmeticError):  # pragma: no cover - the regex admits only valid digits
        return REFUSED_NUMBER
    return text if text is not None else REFUSED_NUMBER


def normalise(text: str) -> str:
    """Fold unicode digits/fractions/minus signs to ASCII-compatible forms (NFKC).

    Vulgar fractions and superscript powers are read first (NFKC would glue them to the
    digits before them: "3½" -> "31/2", "7²" -> "72").

    >>> normalise("3½ or ¾ or 7² cm²"), normalise("H₂O")
    ('7/2 or 3/4 or 49 cm', 'HO')
    """
    if text.isascii():
        return text
    if any(ch in _VULGAR for ch in text):
        text = _MIXED.sub(_mixed, text)
    if any(ch in _SUPERSCRIPT_DIGITS for ch in text):
        text = _POWER.sub(_power, text)
    return unicodedata.normalize("NFKC", text.translate(_SUBSCRIPTS)).translate(_UNICODE_FIXES)


def canonical(value: Decimal, sign: str | None = None) -> str | None:
    """Canonical text such as "72", "0.75" or "-3.5" (no exponent, no trailing zeros), or None."""
    if value != 0 and (not value.is_finite() or abs(value.adjusted()) > MAX_EXPONENT):
        return None
    if sign:
        value = -value
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")
