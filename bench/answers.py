"""Answer checking: ``extract_answer`` + ``answers_match`` against math-verify on the same items.

Run from the repository root: ``python bench/answers.py [n_golds]``. Needs the shared GSM8K copy
(``../shared/data/gsm8k/test.jsonl``) and the dev dependency math-verify (``pip install math-verify``).
Each gold answer gets varied completions (labels, ``$``, commas, ``####``, ``\\boxed{}``, a bare
last number, decimals; right and wrong answers), so the truth of every item is known.
Targets: at least 50x math-verify's items/s, and at least 99.5% agreement with it.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.data.answers import answers_match, clear_answer_cache, extract_answer, gold_from_gsm8k  # noqa: E402

TEST_FILE = Path(__file__).resolve().parents[2] / "shared/data/gsm8k/test.jsonl"
TARGET_SPEEDUP = 50.0
TARGET_AGREEMENT = 0.995
OUR_REPEATS = 5


def _commas(n: int) -> str:
    return f"{n:,}"


def completions_for(gold: int, rng: random.Random) -> list[tuple[str, bool]]:
    """(completion, is_correct) pairs for one integer gold answer."""
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    work = f"Step 1: {a} * {b} = {a * b}\nStep 2: {a * b} - {a} = {a * b - a}\n"
    wrong = gold + rng.choice([1, 2, 5, 10, -1]) if gold > 1 else gold + 3
    return [
        (f"{work}Final Answer: {_commas(gold)}", True),
        (f"{work}Final Answer: {gold}", True),
        (f"So she earns ${gold} in total.\nThe answer is ${_commas(gold)}.", True),
        (f"{a} + {b} = {a + b} and the rest follows.\n#### {gold}", True),
        (f"Putting it together, the total is \\boxed{{{gold}}}.", True),
        (f"After {a} days she has {gold} apples left.", True),
        (f"{work}Final Answer: {gold}.00", True),
        (f"{work}**Final Answer:** ${_commas(gold)}.00", True),
        (f"{work}Final Answer: {gold} apples", True),
        (f"Hence \\boxed{{{_commas(gold)}}}.", True),
        (f"{work}Final Answer: -{gold + 1}", False),
        (f"{work}Final Answer: {gold + 0.5}", False),
        (f"{work}Final Answer: {_commas(wrong)}", False),
        (f"The answer is {wrong}.", False),
        (f"so the result is \\boxed{{{wrong}}}", False),
        (f"There are {wrong} marbles in the jar.", False),
    ]


def build_items(limit: int | None) -> list[tuple[str, str, bool]]:
    if not TEST_FILE.is_file():
        sys.exit(f"GSM8K test split not found at {TEST_FILE}; put the shared data next to the repository")
    with open(TEST_FILE, encoding="utf-8") as fh:
        golds = [gold_from_gsm8k(json.loads(line)["answer"]) for line in fh if line.strip()]
    rng = random.Random(0)
    items = []
    for gold in golds[:limit]:
        items += [(text, gold, truth) for text, truth in completions_for(int(gold), rng)]
    return items


def main() -> None:
    try:
        from math_verify import parse, verify
    except ImportError:
        sys.exit("math-verify is not installed: pip install math-verify (a dev/bench dependency)")
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else None
    items = build_items(limit)

    ours_runs = []
    for _ in range(OUR_REPEATS):  # median of several passes, each from a cold parse cache
        clear_answer_cache()
        start = time.perf_counter()
        ours = [answers_match(extract_answer(text), gold) for text, gold, _ in items]
        ours_runs.append(time.perf_counter() - start)
    ours_s = statistics.median(ours_runs)

    gold_parsed = {gold: parse(gold) for _, gold, _ in items}  # parsed once, outside the timing (favours it)
    start = time.perf_counter()
    theirs = [bool(verify(gold_parsed[gold], parse(text))) for text, gold, _ in items]
    theirs_s = time.perf_counter() - start  # one pass: it runs for seconds, long enough to be stable

    n = len(items)
    agree = sum(o == t for o, t in zip(ours, theirs)) / n
    speedup = (n / ours_s) / (n / theirs_s)
    per_gold = len(completions_for(1, random.Random(0)))
    print(f"items: {n} ({n // per_gold} GSM8K test golds x {per_gold} completions)")
    print(
        f"ours         {n / ours_s:12.0f} items/s   accuracy vs truth {sum(o == t for o, (_, _, t) in zip(ours, items)) / n:.4f}"
    )
    print(
        f"math-verify  {n / theirs_s:12.0f} items/s   accuracy vs truth {sum(m == t for m, (_, _, t) in zip(theirs, items)) / n:.4f}"
    )
    print(
        f"speed ratio  {speedup:12.1f} x   target >= {TARGET_SPEEDUP:.0f}x  ({'met' if speedup >= TARGET_SPEEDUP else 'MISSED'})"
    )
    print(
        f"agreement    {agree:12.4f}     target >= {TARGET_AGREEMENT}  ({'met' if agree >= TARGET_AGREEMENT else 'MISSED'})"
    )
    disagreements = [(text, gold, o, t) for (text, gold, _), o, t in zip(items, ours, theirs) if o != t]
    for text, gold, o, t in disagreements[:5]:
        print(f"  disagree: gold={gold} ours={o} math-verify={t} text={text!r}")


if __name__ == "__main__":
    main()
