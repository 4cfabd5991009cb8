"""Reward callables: formulas, ordering, TRL calling convention, robustness."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipe.rewards import (
    REWARDS,
    AllCorrectLengthReward,
    CompressionRatioReward,
    CorrectnessReward,
    CosineLengthReward,
    FormatReward,
    GatedBrevityReward,
    GroupRelativeLengthReward,
    LengthReward,
    build_reward,
    completion_text,
    step_format_ok,
)
from tests.fuzz_strategies import COMPLETION, FUZZ, JSON_VALUE, SCALAR


def solution(steps: int, answer: str = "72", filler: int = 0, label: str = "Final Answer:") -> str:
    """A well-formed completion with ``steps`` steps, each padded by ``filler`` extra words."""
    body = [f"Step {k}: we compute part {k}" + " word" * filler for k in range(1, steps + 1)]
    return "\n".join([*body, f"{label} {answer}"])


def words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------- format


FORMAT_CASES = [
    ("Step 1: 6*12=72\nFinal Answer: 72", True, "one-step"),
    ("Step 1: a\nStep 2: b\nStep 3: c\nFinal Answer: 3", True, "three-steps"),
    ("Thinking… let me see\nStep 1: a\nFinal Answer: 1", True, "preamble-allowed"),
    ("Step 1: a\n  continued here\nStep 2: b\nFinal Answer: 2\n\n  \n", True, "continuation-and-trailing-blanks"),
    ("Final Answer: 72", False, "no-steps"),
    ("Step 1: a\nStep 3: b\nFinal Answer: 1", False, "numbering-gap"),
    ("Step 2: a\nFinal Answer: 1", False, "not-starting-at-one"),
    ("Step 2: a\nStep 1: b\nFinal Answer: 1", False, "out-of-order"),
    ("Step 1: a\nStep 1: b\nFinal Answer: 1", False, "repeated-number"),
    ("Step 1: a\nFinal Answer: 1\nStep 2: b", False, "text-after-answer"),
    ("Step 1: a\nFinal Answer: 1\nFinal Answer: 2", False, "two-answer-lines"),
    ("Step 1: a\nFinal Answer: many", False, "answer-not-a-number"),
    ("Step 1: a\nFinal Answer:", False, "empty-answer"),
    ("Step 1: a\nAnswer: 1", False, "wrong-label"),
    ("Step 1: a Final Answer: 1", False, "answer-not-on-own-line"),
    ("", False, "empty"),
]


@pytest.mark.parametrize(("text", "ok"), [c[:2] for c in FORMAT_CASES], ids=[c[2] for c in FORMAT_CASES])
def test_strict_format(text: str, ok: bool) -> None:
    assert step_format_ok(text) is ok
    assert FormatReward()(completions=[text]) == [1.0 if ok else 0.0]


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("Step 3: x\nAnswer: 1", True),
        ("Step 2: x Final Answer: 1 trailing words", True),
        ("Step 1: x \\boxed{1}", True),
        ("step 1: x\nAnswer: 1", False),
        ("Step 1: x\nthe result is 1", False),
    ],
    ids=["any-step-number", "answer-substring", "boxed-counts", "lowercase-step", "no-answer-label"],
)
def test_paper_format_is_the_official_lenient_check(text: str, ok: bool) -> None:
    assert step_format_ok(text, mode="paper", answer_label="Answer:") is ok


def test_format_reward_values_and_label_are_configurable() -> None:
    reward = FormatReward(valid=2.0, invalid=-1.0, answer_label="Answer:")
    assert reward(completions=["Step 1: a\nAnswer: 1", "Step 1: a\nFinal Answer: 1"]) == [2.0, -1.0]


# ---------------------------------------------------------------- correctness


def test_correctness_reads_gold_in_either_form() -> None:
    reward = CorrectnessReward(correct=2.0, wrong=-1.0)
    completions = ["Final Answer: 1,080", "The answer is $18.", "Final Answer: 17", "nothing"]
    golds = ["#### 1,080", "She makes $<<9*2=18>>18.\n#### 18", "18", "18"]
    assert reward(completions=completions, answer=golds) == [2.0, 2.0, -1.0, -1.0]


def test_unreadable_gold_scores_as_wrong_not_error() -> None:
    assert CorrectnessReward()(completions=["Final Answer: 3"], answer=["#### three"]) == [0.0]


def test_missing_or_mis_sized_answer_column_names_the_column() -> None:
    with pytest.raises(ValueError, match="'answer'"):
        CorrectnessReward()(completions=["Final Answer: 3"])
    with pytest.raises(ValueError, match="'answer' has 1 values for 2"):
        GatedBrevityReward()(completions=["a", "b"], answer=["3"])


# ---------------------------------------------------------------- gated brevity (stage 2)


def test_gated_brevity_ordering() -> None:
    reward = GatedBrevityReward()
    completions = {
        "correct-short": solution(2, label="Answer:"),
        "correct-long": solution(4, filler=60, label="Answer:"),
        "correct-bad-format": "72",
        "wrong-short": solution(1, answer="71", label="Answer:"),
        "wrong-long-bad-format": "blah " * 500 + "71",
    }
    r = dict(zip(completions, reward(completions=list(completions.values()), answer=["72"] * 5, teacher_steps=[4] * 5)))
    assert r["correct-short"] > r["correct-long"] > r["correct-bad-format"] > r["wrong-short"]
    assert r["correct-bad-format"] == -1.0 and r["wrong-short"] == r["wrong-long-bad-format"] == -2.0
    assert r["correct-long"] >= 0.0  # the length term is floored at -1


def test_gated_brevity_matches_the_paper_formula_by_hand() -> None:
    # teacher 4 steps: budget B = 140 words, soft threshold B80 = 112 words.
    reward = GatedBrevityReward()
    one = solution(1, label="Answer:")  # 1 step, 8 words: bonus 0.3*min(3,3)=0.9, length +min(0.001*104, 0.2)
    three = solution(3, filler=30, label="Answer:")  # 3 steps: bonus 0.3
    assert words(one) == 8 and words(three) == 8 + 2 * 6 + 90
    got = reward(completions=[one, three], answer=["72", "72"], teacher_steps=[4, 4])
    n3 = words(three)  # 110 <= 112: length +min(0.001*(112-110), 0.2)
    assert got == pytest.approx([1 + 0.9 + 0.104, 1 + 0.3 + 0.001 * (112 - n3)])


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, 0.112),  # 0.001 * (112 - 0)
        (100, 0.012),  # 0.001 * (112 - 100)
        (112, 0.0),  # exactly at the soft threshold
        (130, -0.036),  # -0.002 * (130 - 112)
        (140, -0.056),  # at B: -0.002 * 28 (the paper's discontinuity is just above)
        (141, -0.01),  # -0.01 * (141 - 140)
        (300, -1.0),  # floored
    ],
    ids=["zero", "under-soft", "at-soft", "between", "at-budget", "just-over-budget", "far-over"],
)
def test_gated_length_term_pieces(length: int, expected: float) -> None:
    assert GatedBrevityReward().length_term(length, 4) == pytest.approx(expected)


def test_gated_length_bonus_is_capped() -> None:
    assert GatedBrevityReward().length_term(0, 10) == pytest.approx(0.2)  # 0.001 * 280 capped at 0.2


def test_gated_step_bonus_only_for_fewer_steps_and_capped() -> None:
    reward = GatedBrevityReward()
    assert [reward.step_bonus(s, 6) for s in (1, 2, 3, 5, 6, 9)] == pytest.approx([0.9, 0.9, 0.9, 0.3, 0.0, 0.0])


def test_gated_uses_token_lengths_when_asked() -> None:
    text = solution(1, label="Answer:")
    by_words = GatedBrevityReward()(completions=[text], answer=["72"], teacher_steps=[1], completion_ids=[[0] * 200])
    by_tokens = GatedBrevityReward(unit="tokens", per_step_budget=50.0)(
        completions=[text], answer=["72"], teacher_steps=[1], completion_ids=[[0] * 200]
    )
    assert by_words == pytest.approx([1 + 0.001 * (28 - 8)])  # B80 = 28 words, 8 words written
    assert by_tokens == pytest.approx([1 - 1.0])  # 200 tokens > B = 50: floored at -1


@pytest.mark.parametrize("stat", [None, -3, float("nan"), float("inf"), "four", True])
def test_gated_missing_or_invalid_teacher_steps_uses_fallback(stat) -> None:
    text = solution(2, label="Answer:")
    fallback = GatedBrevityReward()(completions=[text], answer=["72"], teacher_steps=[5])
    assert GatedBrevityReward()(completions=[text], answer=["72"], teacher_steps=[stat]) == fallback
    assert GatedBrevityReward()(completions=[text], answer=["72"]) == fallback


def test_gated_zero_teacher_steps_is_finite_and_pays_no_bonus() -> None:
    got = GatedBrevityReward()(completions=[solution(1, label="Answer:")], answer=["72"], teacher_steps=[0])
    assert got == pytest.approx([1 - 0.08])  # budget 0: -0.01 * 8 words


# ---------------------------------------------------------------- compression ratio (stage 3)


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [(0.1, 0.8), (0.2, 0.8), (0.35, 0.65), (0.5, 0.5), (0.65, 0.25), (0.8, 0.0), (1.0, 0.0), (1.5, -0.25), (4.0, -0.5)],
    ids=["saturated", "best", "between-best-good", "good", "mid", "neutral-low", "neutral-high", "over", "far-over"],
)
def test_compression_shaping_table(ratio: float, expected: float) -> None:
    assert CompressionRatioReward().shaping(ratio) == pytest.approx(expected)


def test_compression_shaping_is_continuous_and_non_increasing() -> None:
    reward = CompressionRatioReward()
    grid = [i / 1000 for i in range(0, 3001)]
    values = [reward.shaping(x) for x in grid]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))
    assert max(abs(b - a) for a, b in zip(values, values[1:])) < 0.01


def test_compression_ordering_and_teacher_sources() -> None:
    reward = CompressionRatioReward()
    short, long_ = solution(1), solution(6, filler=10)
    teacher = " ".join(["w"] * 40)
    by_words = reward(completions=[short, long_, "72", "Final Answer: 7"], answer=["72"] * 4, teacher_words=[40] * 4)
    by_text = reward(
        completions=[short, long_, "72", "Final Answer: 7"], answer=["72"] * 4, teacher_solution=[teacher] * 4
    )
    assert by_words == by_text
    assert by_words[0] > by_words[1] > by_words[2] == -1.0 > by_words[3] == -2.0
    assert words(short) == 9
    assert by_words[0] == pytest.approx(1 + 0.5 + 0.3 * (0.5 - 9 / 40) / 0.3)


def test_compression_token_unit_needs_both_token_columns() -> None:
    reward = CompressionRatioReward(unit="tokens")
    text = solution(1)  # 9 words
    assert reward(completions=[text], answer=["72"], completion_ids=[[1] * 30], teacher_tokens=[20]) == pytest.approx(
        [1 - 0.5 * 0.5]
    )  # ratio 1.5
    # no teacher_tokens: falls back to the word ratio 9 / 60 = 0.15, past best_ratio
    assert reward(completions=[text], answer=["72"], completion_ids=[[1] * 30], teacher_words=[60]) == pytest.approx(
        [1.8]
    )


@pytest.mark.parametrize("teacher", [None, 0, "", float("nan")])
def test_compression_without_teacher_length_uses_ratio_one(teacher) -> None:
    got = CompressionRatioReward()(completions=[solution(1)], answer=["72"], teacher_words=[teacher])
    assert got == [1.0]


def test_compression_rejects_misordered_breakpoints() -> None:
    with pytest.raises(ValueError, match="best_ratio < good_ratio"):
        CompressionRatioReward(good_ratio=0.9)


# ---------------------------------------------------------------- cosine (Yeo et al.) and Kimi group length


def test_cosine_endpoints_and_monotonicity() -> None:
    reward = CosineLengthReward(max_length=100)
    ids = [[0] * n for n in (0, 25, 50, 99, 100, 150)]
    right = reward(completions=["Answer: 72"] * 6, answer=["72"] * 6, completion_ids=ids)
    wrong = reward(completions=["Answer: 7"] * 6, answer=["72"] * 6, completion_ids=ids)
    assert right[0] == pytest.approx(2.0) and right[2] == pytest.approx(1.5)
    assert wrong[0] == pytest.approx(-10.0) and wrong[2] == pytest.approx(-5.0)
    assert right[:4] == sorted(right[:4], reverse=True)  # shorter correct is better
    assert wrong[:4] == sorted(wrong[:4])  # longer wrong is less bad
    assert right[4:] == wrong[4:] == [-10.0, -10.0]  # exceeded the length budget
    assert min(right[:4]) > max(wrong[:4])


KIMI_CASES = [
    # (completions, lengths in tokens, expected), all in one prompt group, gold 4
    (["Answer: 4", "Answer: 4", "Answer: 4"], [10, 20, 30], [0.5, 0.0, -0.5], "all-correct"),
    (["Answer: 5", "Answer: 4", "Answer: 5"], [10, 20, 30], [0.0, 0.0, -0.5], "wrong-never-positive"),
    (["Answer: 4", "Answer: 5"], [7, 7], [0.0, 0.0], "equal-lengths-score-zero"),
    (["Answer: 4"], [12], [0.0], "single-completion"),
]


@pytest.mark.parametrize(
    ("completions", "lengths", "expected"), [c[:3] for c in KIMI_CASES], ids=[c[3] for c in KIMI_CASES]
)
def test_group_length_kimi_table(completions, lengths, expected) -> None:
    n = len(completions)
    got = GroupRelativeLengthReward()(
        prompts=["q"] * n, completions=completions, answer=["4"] * n, completion_ids=[[0] * k for k in lengths]
    )
    assert got == pytest.approx(expected)


def test_group_length_groups_by_identical_prompt() -> None:
    prompts = ["a", "b", "a", "b"]
    got = GroupRelativeLengthReward()(
        prompts=prompts,
        completions=["Answer: 4"] * 4,
        answer=["4"] * 4,
        completion_ids=[[0] * k for k in (1, 100, 3, 200)],
    )
    assert got == pytest.approx([0.5, 0.5, -0.5, -0.5])


def test_group_length_needs_prompts() -> None:
    with pytest.raises(ValueError, match="one prompt per completion"):
        GroupRelativeLengthReward()(completions=["Answer: 4"], answer=["4"])


# ---------------------------------------------------------------- all-correct length bonus (ConciseR's gating)


def test_all_correct_length_pays_brevity_only_in_groups_that_are_all_correct() -> None:
    """Three groups of 3 (gold 4), token lengths given: an all-correct group gets 1 + (1 - L/100) each, so its
    shorter answers score higher; a group with one wrong answer gets plain correctness (its short right answer earns
    no bonus over its long right answer); an all-wrong group gets 0 whatever the lengths."""
    reward = AllCorrectLengthReward(num_generations=3, max_length=100)
    completions = ["Answer: 4", "Answer: 4", "Answer: 4",
                   "Answer: 4", "Answer: 4", "Answer: 5",
                   "Answer: 5", "Answer: 5", "Answer: 5"]
    lengths = [10, 50, 150, 10, 90, 10, 10, 60, 100]
    logged: dict[str, float] = {}
    got = reward(prompts=["a"] * 3 + ["b"] * 3 + ["c"] * 3, completions=completions, answer=["4"] * 9,
                 completion_ids=[[0] * k for k in lengths], log_metric=lambda k, v: logged.__setitem__(k, v))
    assert got == pytest.approx([1.9, 1.5, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # 150 tokens: capped at max_length
    assert logged == {"all_correct_length/all_correct_groups": pytest.approx(1 / 3)}
    weighted = AllCorrectLengthReward(num_generations=3, max_length=100, length_weight=0.5)
    assert weighted(prompts=["a"] * 3, completions=completions[:3], answer=["4"] * 3,
                    completion_ids=[[0] * k for k in lengths[:3]]) == pytest.approx([1.45, 1.25, 1.0])


def test_all_correct_length_groups_are_trls_consecutive_blocks() -> None:
    """TRL scores prompts repeated num_generations times in a row; the same question in two blocks is two groups
    (one all-correct, one not), and a batch that is not whole one-prompt blocks is refused, naming the key."""
    reward = AllCorrectLengthReward(num_generations=2, max_length=10)
    ids = [[0] * 5] * 4
    got = reward(prompts=["q"] * 4, completions=["Answer: 4", "Answer: 4", "Answer: 4", "Answer: 5"],
                 answer=["4"] * 4, completion_ids=ids)
    assert got == pytest.approx([1.5, 1.5, 1.0, 0.0])
    with pytest.raises(ValueError, match="not whole groups of num_generations=2"):
        reward(prompts=["q"] * 3, completions=["Answer: 4"] * 3, answer=["4"] * 3)
    with pytest.raises(ValueError, match="completions 0-1 are not one prompt's group"):
        reward(prompts=["q", "r", "r", "r"], completions=["Answer: 4"] * 4, answer=["4"] * 4)
    with pytest.raises(ValueError, match="one prompt per completion"):
        reward(completions=["Answer: 4"] * 2, answer=["4"] * 2)
    with pytest.raises(ValueError, match="group size"):
        AllCorrectLengthReward(num_generations=1)
    # without a size, a group is a run of one prompt: "q q" all right (bonus), then "r" wrong, then "q" alone right
    runs = AllCorrectLengthReward(max_length=10)(prompts=["q", "q", "r", "q"], answer=["4"] * 4, completion_ids=ids,
                                                 completions=["Answer: 4", "Answer: 4", "Answer: 5", "Answer: 4"])
    assert runs == pytest.approx([1.5, 1.5, 0.0, 1.5])


# ---------------------------------------------------------------- length only


def test_length_reward_sign_scale_and_units() -> None:
    assert LengthReward()(completions=["a b c"], completion_ids=[[1, 2]]) == [-2.0]  # tokens when given
    assert LengthReward()(completions=["a b c"]) == [-3.0]  # whitespace words otherwise
    assert LengthReward(sign=1.0, scale=4.0, unit="words")(completions=["a b c d e f"], completion_ids=[[1]]) == [1.5]
    with pytest.raises(ValueError, match="scale"):
        LengthReward(scale=0.0)


# ---------------------------------------------------------------- registry, pickling, TRL convention


def test_registry_builds_every_reward_by_name() -> None:
    assert set(REWARDS) == {
        "correctness",
        "format",
        "gated_brevity",
        "compression_ratio",
        "cosine_length",
        "group_length",
        "all_correct_length",
        "length_only",
    }
    for name in REWARDS:
        reward = build_reward(name)
        assert reward.__name__ == name  # TRL logs rewards under getattr(f, "__name__")
        assert repr(reward).startswith(type(reward).__name__ + "(")
    assert build_reward("gated_brevity", per_step_budget=20.0).per_step_budget == 20.0


def test_registry_errors_list_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from .*'gated_brevity'"):
        build_reward("brevity")
    with pytest.raises(ValueError, match="no parameter.*'budget'.*allowed"):
        build_reward("gated_brevity", budget=3)
    with pytest.raises(ValueError, match="unit must be one of"):
        build_reward("length_only", unit="chars")
    with pytest.raises(ValueError, match="must be finite"):
        build_reward("correctness", correct=float("inf"))


BATCH = {
    "prompts": ["q1", "q1", "q2"],
    "completions": [solution(1), "Step 1: no\nFinal Answer: 5", "junk"],
    "answer": ["72", "72", "#### 3"],
    "teacher_steps": [3, 3, 2],
    "teacher_words": [60, 60, 30],
    "completion_ids": [[1] * 9, [1] * 6, [1]],
}


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_pickle_round_trip_keeps_behaviour(name: str) -> None:
    reward = build_reward(name)
    clone = pickle.loads(pickle.dumps(reward))
    assert clone == reward and clone.__name__ == reward.__name__
    assert clone(**BATCH) == reward(**BATCH)


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_trl_style_call_with_conversational_completions(name: str) -> None:
    reward = build_reward(name)
    chat = dict(BATCH)
    chat["prompts"] = [[{"role": "user", "content": p}] for p in BATCH["prompts"]]
    chat["completions"] = [[{"role": "assistant", "content": c}] for c in BATCH["completions"]]
    plain = reward(**BATCH)
    got = reward(**chat, trainer_state=None, log_extra=None, log_metric=None, id=["a", "b", "c"])
    assert got == plain and all(isinstance(x, float) for x in got)


def test_gated_rewards_log_gate_rates_through_trl_hook() -> None:
    logged: dict[str, float] = {}
    GatedBrevityReward()(**BATCH, log_metric=lambda k, v: logged.__setitem__(k, v))
    assert logged == {"gated_brevity/correct": pytest.approx(1 / 3), "gated_brevity/format_ok": pytest.approx(2 / 3)}


def test_completion_text_forms() -> None:
    assert completion_text("x") == "x"
    assert completion_text({"role": "assistant", "content": "y"}) == "y"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "z"}]}]) == "z"
    assert completion_text([{"role": "tool", "content": "t"}, {"role": "assistant", "content": "a"}]) == "a"
    assert completion_text(None) == "" and completion_text(42) == ""


# ---------------------------------------------------------------- never raise, always finite

TEXTS = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", "nan", "inf", "-inf", "1e999", "Final Answer: 1e999", "Final Answer: \u0663\u0664", "NaN"]),
    st.lists(st.integers(min_value=-(10**30), max_value=10**30), max_size=200).map(lambda xs: " ".join(map(str, xs))),
    st.builds(lambda n, k: solution(k, answer=str(n)), st.integers(), st.integers(min_value=0, max_value=30)),
    st.text(alphabet=st.characters(categories=["Nd", "No", "Pd", "Zs"]), max_size=60).map(
        lambda t: f"Final Answer: {t}"
    ),
)
STATS = st.one_of(
    st.none(),
    st.integers(min_value=-(10**9), max_value=10**18),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)


@given(texts=st.lists(TEXTS, min_size=1, max_size=4), stats=st.data())
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_reward_is_finite_on_arbitrary_input(texts: list[str], stats) -> None:
    n = len(texts)
    kwargs = {
        "prompts": stats.draw(st.lists(st.sampled_from(["p", "q"]), min_size=n, max_size=n)),
        "completions": texts,
        "answer": stats.draw(
            st.lists(st.one_of(st.text(max_size=12), st.sampled_from(["72", "#### 1,000"])), min_size=n, max_size=n)
        ),
        "teacher_steps": stats.draw(st.lists(STATS, min_size=n, max_size=n)),
        "teacher_words": stats.draw(st.lists(STATS, min_size=n, max_size=n)),
        "teacher_tokens": stats.draw(st.lists(STATS, min_size=n, max_size=n)),
        "completion_ids": [[0] * len(t.split()) for t in texts],
    }
    for name in REWARDS:
        got = build_reward(name)(**kwargs)
        assert len(got) == n and all(isinstance(x, float) and math.isfinite(x) for x in got), name


def test_every_reward_is_finite_on_a_megabyte_completion() -> None:
    text = "Step 1: " + "12 apples and 1e999 " * 50_000 + "\nFinal Answer: 72"
    for name in REWARDS:
        got = build_reward(name)(prompts=["p"], completions=[text], answer=["72"], teacher_steps=[0], teacher_words=[0])
        assert math.isfinite(got[0]), name


@st.composite
def reward_batch(draw):
    n = draw(st.integers(1, 4))
    column = st.lists(SCALAR, min_size=n, max_size=n)
    kwargs = {
        "prompts": draw(st.lists(st.one_of(st.text(max_size=10), JSON_VALUE), min_size=n, max_size=n)),
        "completions": draw(st.lists(COMPLETION, min_size=n, max_size=n)),
        "answer": draw(column),
    }
    for key in ("teacher_steps", "teacher_words", "teacher_tokens", "teacher_solution"):
        if draw(st.booleans()):
            kwargs[key] = draw(column)
    if draw(st.booleans()):
        kwargs["completion_ids"] = draw(st.lists(st.lists(st.integers(0, 9), max_size=5), min_size=n, max_size=n))
    return kwargs


@FUZZ
@given(st.sampled_from(sorted(REWARDS)), reward_batch())
def test_fuzz_every_reward_returns_finite_floats(name: str, kwargs) -> None:
    reward = build_reward(name)
    values = reward(**kwargs)
    assert len(values) == len(kwargs["completions"])
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
