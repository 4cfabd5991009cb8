"""The stages' row builders (rows -> model -> trainer -> result: the first step of each stage), the stage helpers
that need no model (rewards built from the config), and a stage's answer to broken inputs: a damaged failures file
is mined again, rows all too long for the trainer are one line."""

from __future__ import annotations

from collections import Counter

import pytest

from recipe.config import core as C
from recipe.data.gsm8k import Problem, load_gsm8k
from recipe.data.prompts import eval_prompt
from recipe.store import rundir
from recipe.train import stage1, stage2, stage3, trainer
from recipe.train.grpo import make_rewards
from recipe.train.rows import add_token_lengths
from recipe.train.trainer import extra_callbacks, install_callbacks
from tests import fault_injection, forked
from tests.fault_injection import KILL_AFTER_SAVE_ENV, KillAfterSave, kill_after_save_env
from tests.helpers import cli, one_error_line
from tests.test_data import REPO, bullets, digest, make_problems

build_stage1, build_stage2, build_stage3 = stage1.build_rows, stage2.build_rows, stage3.build_rows


def test_stage1_rows_are_masked_shuffles_of_the_teacher():
    problems = make_problems(400)
    rows = build_stage1(problems, seed=0, mask_prob=0.7)
    assert [r["id"] for r in rows] == [p.id for p in problems]
    for problem, row in zip(problems, rows, strict=True):
        shuffled, k = row["shuffled"], row["masked_index"]
        assert len(shuffled) == len(problem.steps)
        assert shuffled.count("[MASK]") == (0 if k == -1 else 1)
        if k == -1:
            assert Counter(shuffled) == Counter(problem.steps)
        else:
            assert shuffled[k] == "[MASK]"
            rest = shuffled[:k] + shuffled[k + 1 :]
            assert sum((Counter(problem.steps) - Counter(rest)).values()) == 1
            assert not Counter(rest) - Counter(problem.steps)
        assert bullets(row["prompt"]) == shuffled
        assert problem.question in row["prompt"] and row["prompt"].endswith("Reasoning:")
        expected = "\n".join(f"Step {i}: {s}" for i, s in enumerate(problem.steps, 1)) + f"\nFinal Answer: {problem.answer}"
        assert row["completion"] == "\n" + expected
        assert row["answer"] == problem.answer
        assert row["teacher_steps"] == len(problem.steps)
        assert row["teacher_words"] == len(expected.split())


def test_stage1_mask_rate_and_shuffle_spread():
    problems = make_problems(4000, max_steps=4)
    for p in (0.0, 0.3, 0.7, 1.0):
        rows = build_stage1(problems, seed=1, mask_prob=p)
        rate = sum(r["masked_index"] != -1 for r in rows) / len(rows)
        assert abs(rate - p) < 0.03, (p, rate)
    rows = build_stage1(problems, seed=1, mask_prob=0.0)
    three = [tuple(r["shuffled"]) for r, q in zip(rows, problems, strict=True) if len(q.steps) == 3]
    orders = Counter(tuple(s.split()[1] for s in order) for order in three)
    assert len(orders) == 6 and min(orders.values()) > len(three) / 6 * 0.7  # all 3! orders, roughly uniform
    masked = build_stage1(problems, seed=1, mask_prob=1.0)
    positions = Counter(r["masked_index"] for r, q in zip(masked, problems, strict=True) if len(q.steps) == 4)
    assert set(positions) == {0, 1, 2, 3}


def test_stage1_single_step_and_custom_tokens():
    (row,) = build_stage1([Problem("s-0", "Q?", ("only",), "5")], seed=3, mask_prob=1.0, mask_token="<M>",
                          answer_label="Answer:")
    assert row["shuffled"] == ["<M>"] and row["masked_index"] == 0
    assert row["completion"] == "\nStep 1: only\nAnswer: 5"
    assert "<M>" in row["prompt"] and "[MASK]" not in row["prompt"]


@pytest.mark.parametrize(
    ("n_steps", "min_masked", "ratio", "expected"),
    # paper rule: max(min_masked, floor(ratio * n)), capped at n - 1
    [(1, 3, 0.5, 0), (2, 3, 0.5, 1), (3, 3, 0.5, 2), (4, 3, 0.5, 3), (6, 3, 0.5, 3), (7, 3, 0.5, 3),
     (8, 3, 0.5, 4), (9, 3, 0.5, 4), (5, 1, 0.8, 4), (10, 1, 0.8, 8), (10, 0, 0.0, 0), (10, 2, 1.0, 9)],
)
def test_stage2_mask_count(n_steps, min_masked, ratio, expected):
    problem = Problem("s-0", "Q?", tuple(f"s{i}" for i in range(n_steps)), "1")
    (row,) = build_stage2([problem], seed=0, min_masked=min_masked, mask_ratio=ratio)
    assert len(row["masked_indices"]) == expected == stage2.mask_count(n_steps, min_masked, ratio)


def test_stage2_rows_keep_order_and_mask_in_place():
    problems = make_problems(300, max_steps=9)
    rows = build_stage2(problems, seed=4)
    for problem, row in zip(problems, rows, strict=True):
        masked = row["masked_indices"]
        assert masked == sorted(set(masked)) and all(0 <= i < len(problem.steps) for i in masked)
        expected = [("[MASK]" if i in masked else s) for i, s in enumerate(problem.steps)]
        assert bullets(row["prompt"]) == expected
        solution = "\n".join(f"Step {i}: {s}" for i, s in enumerate(problem.steps, 1)) + f"\nFinal Answer: {problem.answer}"
        assert row["teacher_solution"] == solution
        assert row["teacher_words"] == len(solution.split()) and row["teacher_steps"] == len(problem.steps)
        assert "completion" not in row
    positions = Counter(i for r, p in zip(rows, problems, strict=True) if len(p.steps) == 9 for i in r["masked_indices"])
    assert set(positions) == set(range(9))


def test_stage3_rows_show_the_teacher_solution():
    problems = make_problems(20)
    rows = build_stage3(problems, answer_label="Answer:")
    for problem, row in zip(problems, rows, strict=True):
        assert row["teacher_solution"].endswith(f"\nAnswer: {problem.answer}")
        assert row["teacher_solution"] in row["prompt"] and problem.question in row["prompt"]
        assert "shorter" in row["prompt"] and row["prompt"].endswith("Reasoning:")
        assert set(row) == {"id", "prompt", "answer", "teacher_steps", "teacher_words", "teacher_solution"}


def test_stage3_question_prompt_rows_are_the_eval_prompt_with_the_same_reward():
    problems = make_problems(20)
    cfg = C.resolve(preset="smoke", overrides=["stage3.prompt=question", "data.answer_label='Answer:'"])
    assert cfg.stage3.prompt == "question"
    rewrite = build_stage3(problems, answer_label="Answer:")
    question = build_stage3(problems, answer_label="Answer:", prompt=cfg.stage3.prompt)
    for problem, paper, alone in zip(problems, rewrite, question, strict=True):
        assert alone["prompt"] == eval_prompt(problem.question, "Answer:")
        assert alone["teacher_solution"] not in alone["prompt"]
        assert {k: v for k, v in alone.items() if k != "prompt"} == {k: v for k, v in paper.items() if k != "prompt"}
    [reward] = make_rewards(cfg.stage3, cfg.data.answer_label)
    completions = [f"Step 1: {p.steps[-1]}\nAnswer: {p.answer}" for p in problems[:4]] + ["Step 1: no.\nAnswer: -1"]
    scores = [reward(completions=completions, **{k: [r[k] for r in rows[:5]] for k in rows[0] if k != "prompt"})
              for rows in (add_token_lengths(rewrite, FakeTokenizer()), add_token_lengths(question, FakeTokenizer()))]
    assert scores[0] == scores[1] and scores[0][-1] < 0 < min(scores[0][:4])  # the teacher's length still divides
    line = one_error_line(cli("config", "--preset", "smoke", "--set", "stage3.prompt=solve"))
    assert "stage3.prompt" in line, line


def test_builders_are_seeded_and_deterministic_across_processes(tmp_path):
    problems = make_problems(200)
    s1, s2 = build_stage1(problems, seed=5), build_stage2(problems, seed=5)
    assert s1 == build_stage1(problems, seed=5) and s2 == build_stage2(problems, seed=5)
    assert s1 != build_stage1(problems, seed=6) and s2 != build_stage2(problems, seed=6)
    code = (
        "import hashlib, json\n"
        "from recipe.data.gsm8k import load_gsm8k\n"
        "from recipe.train.stage1 import build_rows as build_stage1\n"
        "from recipe.train.stage2 import build_rows as build_stage2\n"
        "from tests.test_data import make_problems, digest\n"
        "p = make_problems(200)\n"
        "print(digest(build_stage1(p, seed=5)), digest(build_stage2(p, seed=5)),"
        " digest([q.to_dict() for q in load_gsm8k('synthetic:50')[0]]), hash('cotrecipe'))\n"
    )
    done = forked.run(["-c", code], tmp_path / "out.txt", cwd=REPO)  # another process, another hash seed
    assert done.returncode == 0, done.output
    *out, child_hash = done.output.split()
    assert child_hash != str(hash("cotrecipe")), "the child should hash strings under another seed"
    synth = [q.to_dict() for q in load_gsm8k("synthetic:50")[0]]
    assert out == [digest(s1), digest(s2), digest(synth)]


class FakeTokenizer:
    """Counts whitespace words as tokens and records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts, add_special_tokens=True):
        self.calls.append((list(texts), add_special_tokens))
        return {"input_ids": [list(range(len(t.split()))) for t in texts]}


def test_add_token_lengths_batches_and_does_not_mutate():
    problems = make_problems(12)
    for rows in (build_stage1(problems, seed=0), build_stage2(problems, seed=0), build_stage3(problems)):
        tok = FakeTokenizer()
        out = add_token_lengths(rows, tok)
        assert len(tok.calls) == 1 and tok.calls[0][1] is False
        assert [r["teacher_tokens"] for r in out] == [r["teacher_words"] for r in rows]
        assert all("teacher_tokens" not in r for r in rows)
    tok = FakeTokenizer()
    assert add_token_lengths([], tok) == [] and tok.calls == []
    with pytest.raises(KeyError, match="'x-1'"):
        add_token_lengths([{"id": "x-1", "prompt": "p"}], FakeTokenizer())




def test_make_rewards_fills_unit_and_answer_label_from_the_config():
    cfg = C.resolve(preset="smoke", overrides=["data.answer_label='Result:'", "stage2.length_unit=tokens",
                                               "stage2.rewards=[{name: gated_brevity}, {name: correctness},"
                                               " {name: format, params: {answer_label: 'Final Answer:'}}]"])
    gated, correct, fmt = make_rewards(cfg.stage2, cfg.data.answer_label)
    assert (gated.unit, gated.answer_label) == ("tokens", "Result:")
    assert fmt.answer_label == "Final Answer:"  # a spec's own value wins
    texts = ["Step 1: 3 * 24 = 72\nResult: 72", "Step 1: 3 * 24 = 72\nFinal Answer: 72"]
    scores = gated(completions=texts, answer=["72", "72"], teacher_steps=[3, 3], completion_ids=[[1] * 8] * 2)
    assert scores[0] > 0 > scores[1] == gated.bad_format_reward  # only the configured label counts as formatted
    assert correct(completions=texts, answer=["72", "72"]) == [1.0, 1.0]


def test_installed_callbacks_are_what_the_factory_returns_for_the_entry(monkeypatch):
    """A factory installed with install_callbacks gets the entry's name; the test kill hook goes through it."""
    monkeypatch.setattr(trainer, "FACTORIES", [])
    assert extra_callbacks("stage2") == []
    install_callbacks(fault_injection.callbacks)
    assert extra_callbacks("stage2") == []  # installed, not armed
    for name, value in kill_after_save_env("stage2:3").items():
        monkeypatch.setenv(name, value)
    [kill] = extra_callbacks("stage2")
    assert isinstance(kill, KillAfterSave) and kill.step == 3
    assert extra_callbacks("stage1") == []  # armed for another entry
    monkeypatch.setenv(KILL_AFTER_SAVE_ENV, "stage2:x")
    assert extra_callbacks("stage2") == []



def test_a_damaged_failures_file_is_mined_again(tmp_path, monkeypatch, caplog):
    mined: list[int] = []

    def fake_mining(cfg, problems, init_from, model, tokenizer):
        mined.append(len(problems))
        return []  # no persistent failures: the stage hands its starting weights on, nothing to train

    monkeypatch.setattr(stage3, "mine_failures", fake_mining)
    args = ["stage3", "--preset", "smoke", "--set", "eval.enabled=false"]
    for content, remined in ((b"", False), (b'{"id": "train-1", "question": "Q?"}\n', True),
                             (b"\x00garbage\n", True), (b"[1, 2]\n", True)):
        run_dir = tmp_path / f"run{len(mined)}-{len(content)}"
        (run_dir / "stage3").mkdir(parents=True)
        (run_dir / "stage3" / stage3.FAILURES).write_bytes(content)  # left by a stage 3 interrupted after mining
        caplog.clear()
        before = len(mined)
        result = cli(*args, "--output-dir", str(run_dir))
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        assert (len(mined) > before) == remined, content
        if remined:
            assert "line 1" in caplog.text and "mining the failures again" in caplog.text, caplog.text
        assert rundir.is_done(rundir.load_manifest(run_dir), "stage3")


def test_rows_all_dropped_for_length_are_one_line_with_count_shortest_and_keys(tmp_path, cache_dir):
    line = one_error_line(cli("stage1", "--preset", "smoke", "--output-dir", str(tmp_path / "run"), "--set",
                              f"model.cache_dir={cache_dir}", "--set", "stage1.max_length=1", "--set",
                              "model.max_seq_length=16"))
    assert "64 of 64 training rows were dropped for length" in line, line
    assert "the shortest prompt is" in line and "stage1.max_length (now 1)" in line, line
    assert "model.max_seq_length (now 16)" in line, line
