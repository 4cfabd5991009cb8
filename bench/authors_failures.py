"""Facts about the authors' released stage-3 failures (``data/stage3_error_samples.json`` of GitHub
Applied-Machine-Learning-Lab/SDM2026_BRIDGE), quoted in docs/differences-from-paper.md.

Run from the repository root: ``python bench/authors_failures.py PATH/stage3_error_samples.json [GSM8K test.jsonl]``.
Prints: how many failures, their train-row range (``idx``), how many hit exactly 400 generated tokens (their mining
cap), how many are numerically right by their own recorded prediction (they compared strings), the mean number of
real ``Step N:`` steps per teacher rationale (thinking part apart), and, given the GSM8K test file, how many test
golds their gold parser reads differently from the true answer. Nothing is evaluated; text is parsed by regex.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.data.answers import answers_match, gold_answer  # noqa: E402
from recipe.data.gsm8k import read_rows  # noqa: E402
from recipe.eval.official_checker import official_gold  # noqa: E402
from recipe.teacher.rationales import parse_teacher_text  # noqa: E402


def main(path: str, test_path: str | None = None) -> None:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    steps = [len(parse_teacher_text(r["teacher_cot"]).steps) for r in rows]
    print(f"failures: {len(rows)}, train rows {min(r['idx'] for r in rows)}-{max(r['idx'] for r in rows)}")
    print(f"exactly 400 generated tokens: {sum(r['token_count'] == 400 for r in rows)}")
    print(f"numerically right by their recorded prediction: "
          f"{sum(answers_match(str(r['predicted_answer']), str(r['gold_answer'])) for r in rows)}")
    print(f"real steps per teacher rationale: {sum(steps) / len(steps):.2f}")
    if test_path:
        golds = [r["answer"] for r in read_rows(test_path, strict=True)]
        misread = sum(official_gold(g) != gold_answer(g) for g in golds)
        print(f"test golds their parser misreads: {misread} of {len(golds)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
