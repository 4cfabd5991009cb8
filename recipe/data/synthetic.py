"""Seeded generator of GSM8K-style multi-step arithmetic word problems with exact integer answers.

Rows look exactly like GSM8K rows: ``{"question": ..., "answer": "...<<3*4=12>>12 ...\\n#### N"}``, with one
rationale line per step (2 to 6 steps) carrying a calculator annotation. Answers are computed with Python
integer arithmetic while the text is built; nothing is ever evaluated from text.

Three teacher styles write the rationale for the same question and answer: ``terse`` (GSM8K-like, one short line per
calculation), ``verbose`` (like a reasoning-model teacher such as DeepSeek-R1-Distill: a thinking preamble that
restates what is asked, every calculation restated with its exact arithmetic, an inverse-operation check after each,
and a closing line), about three times the words, and ``mixed``: the verbose teacher checking each calculation with
chance :data:`MIXED_CHECK_SHARE` only, so its solutions vary in length as a pretrained model's samples do (a student
trained on it samples both kinds and its greedy answer keeps the checks). The style never changes the random draws:
the questions and answers of a seed are the same in every style (``mixed`` draws its checks from a generator seeded
by the question).

>>> rows = synthetic_rows(2, seed=0)
>>> rows == synthetic_rows(2, seed=0), sorted(rows[0]), rows[0]["answer"].splitlines()[-1].startswith("#### ")
(True, ['answer', 'question'], True)
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable

_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.floordiv,
}

_SHE, _HE = ("She", "her", "her"), ("He", "his", "him")  # subject, possessive, object
_WOMEN = ("Natalia", "Weng", "Betty", "Maria", "Aisha", "Lena", "Priya", "Sofia")
_MEN = ("James", "Tom", "Carlos", "Kenji", "Omar", "Lucas", "Ivan", "Mark")
NAMES = tuple((name, *_SHE) for name in _WOMEN) + tuple((name, *_HE) for name in _MEN)
ITEMS = (  # plural name, price range in dollars
    ("pens", 2, 6), ("notebooks", 3, 9), ("apples", 1, 3), ("sandwiches", 4, 9), ("books", 8, 20),
    ("shirts", 10, 25), ("toy cars", 5, 15), ("cupcakes", 2, 5), ("tickets", 6, 18), ("plants", 4, 12),
)
GOODS = ("cookies", "marbles", "stickers", "candies", "pencils", "cards")
VEHICLES = ("train", "bus", "car", "truck")
EXPENSES = ("groceries", "rent", "a new phone", "books", "bus fares")


STYLES = ("terse", "verbose", "mixed")
MIXED_CHECK_SHARE = 0.65  # above one half: the greedy answer of a student trained on it keeps the checks
_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}  # result INV b == a, exact for every step the templates make
_LEADS = ("First", "Next", "Then", "After that", "Next", "Then")
_FIRST_NAMES = frozenset(name for name, *_ in NAMES)


class _Rationale:
    """Collects rationale lines; every :meth:`calc` computes its result with Python integers.

    ``lines`` is the terse rationale; ``calcs`` keeps each step's parts so :func:`verbose_lines` can restate it.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.calcs: list[tuple[str, int, str, int, int, str, bool]] = []
        self.result = 0

    def calc(self, before: str, a: int, op: str, b: int, after: str = "", money: bool = False) -> int:
        if op == "/" and a % b:
            raise ValueError(f"inexact division {a} / {b}")
        result = _OPS[op](a, b)
        dollar = "$" if money else ""
        self.lines.append(f"{before}{a} {op} {b} = {dollar}<<{a}{op}{b}={result}>>{result}{after}.")
        self.calcs.append((before, a, op, b, result, after, money))
        self.result = result
        return result


def _shopping(rng: random.Random, r: _Rationale) -> str:
    name, she, her, him = rng.choice(NAMES)
    items = rng.sample(ITEMS, rng.choice((2, 2, 3)))
    bought = [(item, rng.randint(2, 9), rng.randint(lo, hi)) for item, lo, hi in items]
    parts = [f"{n} {item} at ${price} each" for item, n, price in bought]
    costs = [r.calc(f"The {item} cost ", n, "*", price, "", money=True) for item, n, price in bought]
    total = r.calc("Together they cost ", costs[0], "+", costs[1], "", money=True)
    if len(costs) == 3:
        total = r.calc("Adding the third item, the total is ", total, "+", costs[2], "", money=True)
    text = f"{name} buys {', '.join(parts[:-1])} and {parts[-1]}."
    if rng.random() < 0.6:
        bill = (total // 50 + 1) * 50
        r.calc(f"{she} gets back ", bill, "-", total, " in change", money=True)
        return f"{text} {she} pays with ${bill}. How much change does {she.lower()} get?"
    return f"{text} How much does {name} spend in total?"


def _wages(rng: random.Random, r: _Rationale) -> str:
    name, she, her, him = rng.choice(NAMES)
    rate, hours, days = rng.randint(8, 30), rng.randint(2, 8), rng.randint(3, 7)
    daily = r.calc(f"{name} earns ", rate, "*", hours, " per day", money=True)
    total = r.calc(f"In {days} days {she.lower()} earns ", daily, "*", days, "", money=True)
    text = f"{name} earns ${rate} an hour. {she} works {hours} hours a day for {days} days."
    if rng.random() < 0.5:
        bonus = rng.randint(1, 10) * 5
        total = r.calc("With the bonus, the total is ", total, "+", bonus, "", money=True)
        text += f" {she} also gets a ${bonus} bonus."
    spent, expense = rng.randint(1, total - 1), rng.choice(EXPENSES)
    r.calc(f"After paying for {expense}, {she.lower()} has ", total, "-", spent, " left", money=True)
    return f"{text} {she} spends ${spent} on {expense}. How much money does {name} have left?"


def _sharing(rng: random.Random, r: _Rationale) -> str:
    name, she, her, him = rng.choice(NAMES)
    goods = rng.choice(GOODS)
    kids, each = rng.randint(2, 8), rng.randint(2, 12)
    rest = kids * each
    if rng.random() < 0.5:
        given = rng.randint(1, 20)
        total = rest + given
        left = r.calc(f"After giving some away, {name} has ", total, "-", given, f" {goods}")
        r.calc("Each child gets ", left, "/", kids, f" {goods}")
        return (f"{name} has {total} {goods}. {she} gives {given} to a friend and shares the rest equally "
                f"among {kids} children. How many {goods} does each child get?")
    boxes = rng.randint(2, 9)
    per_box = max(3, rest // boxes + rng.randint(1, 5))
    given = boxes * per_box - rest
    total = r.calc(f"{name} has ", boxes, "*", per_box, f" {goods}")
    left = r.calc(f"After giving some to {her} friend, {she.lower()} has ", total, "-", given, f" {goods}")
    r.calc("Each child gets ", left, "/", kids, f" {goods}")
    return (f"{name} has {boxes} boxes with {per_box} {goods} in each box. {she} gives {given} {goods} to "
            f"{her} friend and shares the rest equally among {kids} children. How many {goods} does each "
            f"child get?")


def _ages(rng: random.Random, r: _Rationale) -> str:
    (a_name, *_), (b_name, *_), (c_name, *_) = rng.sample(NAMES, 3)
    a_age, times = rng.randint(3, 15), rng.randint(2, 4)
    b_age = r.calc(f"{b_name} is ", a_age, "*", times, " years old")
    text = f"{a_name} is {a_age} years old. {b_name} is {times} times as old as {a_name}."
    if rng.random() < 0.35:
        years = rng.randint(2, 20)
        r.calc(f"In {years} years {b_name} will be ", b_age, "+", years, " years old")
        return f"{text} How old will {b_name} be in {years} years?"
    younger = rng.randint(1, b_age - 1)
    c_age = r.calc(f"{c_name} is ", b_age, "-", younger, " years old")
    pair = r.calc(f"{a_name} and {b_name} together are ", a_age, "+", b_age, " years old")
    r.calc("The sum of their ages is ", pair, "+", c_age, " years")
    return f"{text} {c_name} is {younger} years younger than {b_name}. What is the sum of their ages?"


def _savings(rng: random.Random, r: _Rationale) -> str:
    name, she, her, him = rng.choice(NAMES)
    weekly, weeks, gift = rng.randint(3, 25), rng.randint(4, 12), rng.randint(2, 20) * 5
    saved = r.calc(f"{name} saves ", weekly, "*", weeks, "", money=True)
    have = r.calc(f"With {her} grandmother's gift {she.lower()} has ", saved, "+", gift, "", money=True)
    text = (f"{name} saves ${weekly} every week for {weeks} weeks. {her.capitalize()} grandmother gives "
            f"{him} ${gift}.")
    if rng.random() < 0.5:
        uncle = r.calc(f"{her.capitalize()} uncle gives {him} ", gift, "*", 2, "", money=True)
        have = r.calc("Now the savings are ", have, "+", uncle, "", money=True)
        text += f" {her.capitalize()} uncle gives {him} twice as much as {her} grandmother."
    price = have + rng.randint(1, 60)
    r.calc(f"{she} still needs ", price, "-", have, "", money=True)
    return f"{text} {she} wants a bike that costs ${price}. How much more money does {she.lower()} need?"


def _travel(rng: random.Random, r: _Rationale) -> str:
    vehicle = rng.choice(VEHICLES)
    v1, t1 = rng.randint(3, 12) * 5, rng.randint(1, 5)
    d1 = r.calc("In the first part it travels ", v1, "*", t1, " miles")
    text = f"A {vehicle} travels at {v1} miles per hour for {t1} hours"
    if rng.random() < 0.6:
        v2, t2 = rng.randint(3, 12) * 5, rng.randint(1, 5)
        d2 = r.calc("In the second part it travels ", v2, "*", t2, " miles")
        d1 = r.calc("In total it travels ", d1, "+", d2, " miles")
        text += f" and then at {v2} miles per hour for {t2} hours"
    if rng.random() < 0.5:
        trip = d1 + rng.randint(1, 30) * 10
        r.calc("The distance left is ", trip, "-", d1, " miles")
        return f"{text}. The whole trip is {trip} miles long. How many miles are left?"
    if len(r.lines) == 1:  # keep at least two steps: ask for the round trip
        r.calc("There and back is ", d1, "*", 2, " miles")
        return f"{text}, then makes the same trip back. How many miles does it travel in all?"
    return f"{text}. How many miles does it travel in total?"


def _bakery(rng: random.Random, r: _Rationale) -> str:
    batches, per_batch, bag = rng.randint(2, 9), rng.randint(6, 24), rng.randint(2, 6)
    made = r.calc("The bakery makes ", batches, "*", per_batch, " cookies a day")
    text = f"A bakery makes {batches} batches of {per_batch} cookies every day."
    if rng.random() < 0.5:
        days = rng.randint(2, 7)
        made = r.calc(f"In {days} days it makes ", made, "*", days, " cookies")
        text += f" It bakes for {days} days."
    sold = made - bag * rng.randint(1, made // bag - 1)
    rest = r.calc("The cookies not sold are ", made, "-", sold, "")
    r.calc("They fill ", rest, "/", bag, " bags")
    return f"{text} It sells {sold} cookies and packs the rest into bags of {bag}. How many bags does it fill?"


TEMPLATES: tuple[Callable[[random.Random, _Rationale], str], ...] = (
    _shopping, _wages, _sharing, _ages, _savings, _travel, _bakery,
)


def _lower_first(text: str) -> str:
    word = text.split(" ", 1)[0]
    return text if word in _FIRST_NAMES else text[:1].lower() + text[1:]


def verbose_lines(question: str, rationale: _Rationale, check_share: float = 1.0) -> list[str]:
    """The verbose teacher's rationale lines: a thinking preamble restating what is asked, then per calculation a
    line restating it with its exact arithmetic and a line checking it by the inverse operation, then a closing line.
    ``check_share`` < 1 keeps each check with that chance, drawn from a generator seeded by the question alone.

    >>> r = _Rationale()
    >>> _ = r.calc("The pens cost ", 3, "*", 4, "", money=True)
    >>> print("\\n".join(verbose_lines("Tom buys 3 pens at $4 each. How much does Tom spend?", r)))
    Let me think about this carefully. The question asks: How much does Tom spend?
    First, the pens cost 3 * 4 = $<<3*4=12>>12.
    Let me double-check that: 12 / 4 = 3, which matches.
    So the final answer is 12.
    """
    asked = question.rsplit(". ", 1)[-1]
    lines = [f"Let me think about this carefully. The question asks: {asked}"]
    keep = random.Random(f"checks:{question}")
    for k, (before, a, op, b, result, after, money) in enumerate(rationale.calcs):
        dollar = "$" if money else ""
        lines.append(f"{_LEADS[k]}, {_lower_first(before)}{a} {op} {b} = {dollar}<<{a}{op}{b}={result}>>{result}{after}.")
        if check_share >= 1.0 or keep.random() < check_share:
            lines.append(f"Let me double-check that: {result} {_INVERSE[op]} {b} = {a}, which matches.")
    lines.append(f"So the final answer is {rationale.result}.")
    return lines


def synthetic_row(rng: random.Random, style: str = "terse") -> dict[str, str]:
    """One GSM8K-style row drawn from ``rng``, its rationale written in ``style`` (see :data:`STYLES`)."""
    if style not in STYLES:
        raise ValueError(f"unknown synthetic teacher style {style!r}; expected one of {', '.join(STYLES)}")
    rationale = _Rationale()
    question = rng.choice(TEMPLATES)(rng, rationale)
    if style == "terse":
        lines = rationale.lines
    else:
        lines = verbose_lines(question, rationale, MIXED_CHECK_SHARE if style == "mixed" else 1.0)
    answer = "\n".join(lines) + f"\n#### {rationale.result}"
    return {"question": question, "answer": answer}


def synthetic_rows(n: int, seed: int, max_steps: int | None = None, style: str = "terse") -> list[dict[str, str]]:
    """``n`` GSM8K-style rows, identical for the same ``seed`` in any process; ``max_steps`` keeps only rows whose
    problem takes at most that many calculations (easier problems, for small models); ``style`` picks the teacher
    (the questions and answers do not depend on it).

    >>> rows = synthetic_rows(50, seed=1)
    >>> len(rows), all(int(r["answer"].rsplit("#### ", 1)[1]) >= 0 for r in rows)
    (50, True)
    >>> easy = synthetic_rows(20, seed=1, max_steps=2)
    >>> len(easy), max(r["answer"].count("\\n") for r in easy)
    (20, 2)
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_steps is not None and max_steps < 2:
        raise ValueError(f"max_steps must be >= 2 (every template has at least two steps), got {max_steps}")
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    while len(rows) < n:
        row = synthetic_row(rng, style)
        if max_steps is None or row["answer"].count("<<") <= max_steps:
            rows.append(row)
    return rows


MAX_ROWS = 1_000_000  # ~11 s and ~1 GB to draw; a count beyond would fill the memory before anything trains
SOURCE_FORMS = ("'synthetic', 'synthetic:N' or 'synthetic:N:S', optionally ':verbose' or ':mixed' (N rows > 0 and at "
                f"most {MAX_ROWS:,}, at most S >= 2 steps)")


def parse_source(source: str, default_rows: int) -> tuple[int, int | None, str]:
    """``synthetic[:N[:S]][:STYLE]`` -> (N rows, at most S steps or None, teacher style); ValueError when malformed.

    >>> parse_source("synthetic:40:3:verbose", 1000), parse_source("synthetic", 1000)
    ((40, 3, 'verbose'), (1000, None, 'terse'))
    >>> parse_source("synthetic:0", 1000)
    Traceback (most recent call last):
    ...
    ValueError: bad synthetic source 'synthetic:0': expected 'synthetic', 'synthetic:N' or 'synthetic:N:S', optionally ':verbose' or ':mixed' (N rows > 0 and at most 1,000,000, at most S >= 2 steps)
    """
    parts = source.split(":")
    style = parts.pop() if len(parts) > 1 and parts[-1] in STYLES else "terse"
    counts = parts[1:]
    ok = parts[0] == "synthetic" and len(counts) <= 2 and all(p.isascii() and p.isdigit() and int(p) > 0 for p in counts)
    ok = ok and (not counts or int(counts[0]) <= MAX_ROWS)
    if not ok or (len(counts) == 2 and int(counts[1]) < 2):
        raise ValueError(f"bad synthetic source {source!r}: expected {SOURCE_FORMS}")
    return (int(counts[0]) if counts else default_rows), (int(counts[1]) if len(counts) == 2 else None), style
