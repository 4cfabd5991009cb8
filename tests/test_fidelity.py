"""Fidelity to the authors' released code: GRPO completions cut after the first answer before scoring,
per-epoch redraws of stage 1/2 rows, teacher thinking as its own part of the target, the authors' evaluation stop
rule, and the `paper` preset's mining cap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recipe.config import core as C
from recipe.data import prompts, stopping
from recipe.data.gsm8k import Problem
from recipe.eval import evaluate
from recipe.models import model as model_mod
from recipe.models.generation import Generation, StopAfterAnswerLine
from recipe.teacher.format import THINKING_MARK
from recipe.train import grpo, sft, stage1, stage2, stage3
from recipe.train import rows as rows_mod
from recipe.train.grpo import make_rewards
from recipe.train.rows import train_problems
from recipe.train.sft import train_sft
from tests.test_data import make_problems

SAMPLES = Path(__file__).parent / "data" / "teach_stage3_samples.json"


# ---------------------------------------------------------------- 1. rewards read up to the first answer line


def test_grpo_rewards_score_the_completion_cut_after_its_first_answer():
    cfg = C.resolve(preset="smoke")
    assert cfg.stage2.cut_after_answer and cfg.stage3.cut_after_answer  # on by default
    (gated,) = make_rewards(cfg.stage2, cfg.data.answer_label)
    answer = "Step 1: 3 * 24 = 72\nFinal Answer: 72"
    babble = answer + "\nStep 2: and then some more words about nothing\nFinal Answer: 7"
    columns = {"answer": ["72", "72"], "teacher_steps": [3, 3]}
    cut_scores = gated(completions=[answer, babble], **columns)
    assert cut_scores[0] == cut_scores[1] > 0  # what follows the answer cannot change the reward

    whole = C.resolve(preset="smoke", overrides=["stage2.cut_after_answer=false"])
    (gated_whole,) = make_rewards(whole.stage2, whole.data.answer_label)
    assert gated_whole(completions=[answer, babble], **columns)[1] < 0  # scored whole: the last answer (7) is wrong


def test_cut_completions_recount_their_tokens_with_the_tokenizer():
    cfg = C.resolve(preset="smoke", overrides=["stage2.rewards=[{name: length_only, params: {unit: tokens}}]"])
    words = lambda texts, add_special_tokens: {"input_ids": [t.split() for t in texts]}  # noqa: E731
    (length,) = make_rewards(cfg.stage2, cfg.data.answer_label, tokenizer=words)
    text = "Step 1: 2 + 2 = 4\nFinal Answer: 4\n" + "junk " * 50
    (full,) = make_rewards(C.resolve(preset="smoke", overrides=[
        "stage2.rewards=[{name: length_only, params: {unit: tokens}}]", "stage2.cut_after_answer=false"]).stage2,
        cfg.data.answer_label)
    ids = [[0] * 70]
    cut = "Step 1: 2 + 2 = 4\nFinal Answer: 4"  # 10 "tokens" for the word tokenizer
    assert length(completions=[text], completion_ids=ids) == length(completions=[cut], completion_ids=[[0] * 10])
    assert length(completions=[text], completion_ids=ids) != full(completions=[text], completion_ids=ids)


# ---------------------------------------------------------------- 2. shuffles and masks redrawn every epoch


def test_stage1_and_stage2_rows_are_redrawn_per_epoch_and_reproducible():
    cfg = C.resolve(preset="smoke")
    problems = [p for p in make_problems(60) if len(p.steps) >= 4]
    words = lambda texts, add_special_tokens: {"input_ids": [t.split() for t in texts]}  # noqa: E731
    for rows_for in (stage1.rows_for_epoch(cfg, problems), stage2.rows_for_epoch(cfg, problems, words)):
        epoch0, epoch1 = rows_for(0), rows_for(1)
        assert [r["id"] for r in epoch0] == [r["id"] for r in epoch1]
        assert sum(a["prompt"] != b["prompt"] for a, b in zip(epoch0, epoch1)) > len(problems) // 2
        assert rows_for(1) == epoch1  # seeded: the same sequence again
    first = stage1.rows_for_epoch(cfg, problems)(0)
    assert first == stage1.build_rows(problems, seed=cfg.run.seed, mask_prob=cfg.stage1.mask_prob)


def test_question_only_share_reaches_the_rows_and_leaves_the_other_draws_alone():
    """``stageN.question_only_share`` (not in the paper) swaps that share of prompts for the evaluation prompt; the
    other rows keep exactly the shuffles and masks they get at share 0, and the targets never change."""
    problems = [p for p in make_problems(80) if len(p.steps) >= 4]
    words = lambda texts, add_special_tokens: {"input_ids": [t.split() for t in texts]}  # noqa: E731
    for name in ("stage1", "stage2"):
        plain = C.resolve(preset="smoke")
        mixed = C.resolve(preset="smoke", overrides=[f"{name}.question_only_share=0.5"])
        build = stage1.rows_for_epoch if name == "stage1" else \
            (lambda cfg, ps: stage2.rows_for_epoch(cfg, ps, words))
        before, after = build(plain, problems)(0), build(mixed, problems)(0)
        questions = {p.id: p.question for p in problems}
        swapped = [b for b in after if b["prompt"] == prompts.eval_prompt(questions[b["id"]], mixed.data.answer_label)]
        assert 0.3 * len(problems) < len(swapped) < 0.7 * len(problems)
        kept = [(a, b) for a, b in zip(before, after) if b not in swapped]
        assert kept and all(a == b for a, b in kept)
        target = "completion" if name == "stage1" else "teacher_solution"
        assert [a[target] for a in before] == [b[target] for b in after]


@pytest.mark.slow  # ~30 s: two real SFT epochs on the tiny model
def test_sft_trainer_reads_a_new_draw_in_each_epoch(tmp_path, monkeypatch):
    """TRL's SFTTrainer, 2 epochs on the tiny model: the rows it computes its loss on are every row of epoch 0's draw,
    then every row of epoch 1's (built with seed run.seed + 1), not epoch 0's again."""
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={tmp_path / 'cache'}", "stage1.max_steps=-1",
                                               "stage1.num_train_epochs=2", "stage1.save_steps=100",
                                               "stage1.mask_prob=1.0"])
    problems = [p for p in train_problems(cfg, "stage1") if len(p.steps) >= 3][:8]
    rows_for = stage1.rows_for_epoch(cfg, problems)
    seen: list[str] = []

    class Recording(sft.SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist(), strict=True):
                seen.append(self.processing_class.decode(ids[:sum(mask)]))
            return super().compute_loss(model, inputs, *args, **kwargs)

    monkeypatch.setattr(sft, "SFTTrainer", Recording)
    model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=cfg.run.seed)
    train_sft(cfg, model, tokenizer, rows_for(0), tmp_path / "stage1", rows_for_epoch=rows_for)
    assert len(seen) == 2 * len(problems)
    for epoch, texts in ((0, seen[:len(problems)]), (1, seen[len(problems):])):
        assert all(any(text.startswith(row["prompt"]) for text in texts) for row in rows_for(epoch)), epoch
    assert len(set(seen[:len(problems)]) & set(seen[len(problems):])) <= len(problems) // 2  # mostly new draws


# ---------------------------------------------------------------- 3. teacher thinking is its own part of the target


def test_authors_teacher_file_thinking_is_a_part_not_steps(tmp_path):
    samples = json.loads(SAMPLES.read_text(encoding="utf-8"))
    source = tmp_path / "train.jsonl"
    source.write_text("".join(json.dumps({"question": s["question"], "answer": f"x = 1.\n#### {s['gold_answer']}"})
                              + "\n" for s in samples), encoding="utf-8")
    cfg = C.resolve(preset="smoke", overrides=[f"data.source={source}", f"data.teacher={SAMPLES}",
                                               "data.stage1_rows=[0, 2]", "data.stage2_rows=[0, 2]",
                                               "data.teacher_latex=math"])
    problems = train_problems(cfg, "stage1")
    first = problems[0]
    assert len(first.steps) == 3 and first.thinking.startswith("First, find how many marbles")
    assert "[math]" in first.steps[0]  # the authors' stage-1 LaTeX swap
    assert "\\[" in train_problems(cfg, "stage2")[0].steps[0]  # ... for stage 1 only

    row = stage1.build_rows(problems, seed=0, mask_prob=0.0)[0]
    target = row["completion"]
    assert target.startswith(f"\n{THINKING_MARK}\nFirst, find how many marbles")
    assert target.count("Step ") == 3 and target.endswith("Step 3: Marbles left: [math]\nFinal Answer: 16")
    assert "Then take away" not in " ".join(row["shuffled"]) and row["teacher_steps"] == 3

    row2 = stage2.build_rows(train_problems(cfg, "stage2"), seed=0)[0]
    assert row2["teacher_steps"] == 3 and THINKING_MARK not in row2["teacher_solution"]  # budget: real steps only
    row3 = stage3.build_rows([Problem.from_dict(first.to_dict())])[0]
    assert row3["teacher_solution"].startswith(THINKING_MARK) and row3["teacher_steps"] == 3
    assert row3["teacher_solution"] in row3["prompt"]
    _, fields = rows_mod.teacher_fields(first, "Final Answer:")
    assert fields["teacher_words"] == len(row3["teacher_solution"].split())


# ---------------------------------------------------------------- 4. the authors' evaluation stop rule


class Chars:
    """A character-level tokenizer: enough for a stopping criterion that decodes the generated tail."""

    def batch_decode(self, rows, skip_special_tokens=True):
        return ["".join(chr(int(t)) for t in row if int(t) > 0) for row in rows]


def _batch(prompt: str, tails: list[str]) -> torch.Tensor:
    width = max(map(len, tails))
    return torch.tensor([[ord(c) for c in prompt + t] + [0] * (width - len(t)) for t in tails])


def test_paper_protocol_stops_as_the_authors_evaluation_does():
    prompt = 'Question: Q?\nYou must end your response with "Final Answer: [number]"\nReasoning:'
    tails = ["\nStep 1: 2+3=5\nanswer: 5 apples", "\nStep 1: 2+3=5\nThe Answer: $1,000\n",
             "\nFinal Answer: 5 and now some more text", "\nFinal Answer: five, so 5\n", "\nStep 1: x\nQuestion: next"]
    batch = _batch(prompt, tails)
    paper = StopAfterAnswerLine(Chars(), len(prompt), stopping.STOP_TEXTS, rule="paper")
    ours = StopAfterAnswerLine(Chars(), len(prompt), stopping.STOP_TEXTS, rule="answer_line")
    assert paper(batch, None).tolist() == [False, True, True, False, True]
    assert ours(batch, None).tolist() == [False, False, False, True, True]
    assert stopping.cut_finished("Step 1: x\nAnswer: 12 kg\nStep 2: more", "paper") == "Step 1: x\nAnswer: 12 kg"

    paper_protocol = evaluate.protocol(C.resolve(preset="smoke").eval, "Final Answer:")
    assert paper_protocol["stop_rule"]["rule"] == "paper"
    assert paper_protocol["stop_rule"]["pattern"] == r"(Final Answer|Answer):\s*\$?[\d,]+(?:\.\d+)?"
    chat = evaluate.protocol(C.resolve(preset="smoke", overrides=["eval.prompt=chat"]).eval, "Final Answer:")
    assert chat["stop_rule"]["rule"] == "answer_line"
    forced = C.resolve(preset="smoke", overrides=["eval.prompt=chat", "eval.stop_rule=paper"]).eval
    assert evaluate.protocol(forced, "Final Answer:")["stop_rule"]["rule"] == "paper"


# ---------------------------------------------------------------- 5. official verdicts in the evaluation record


def test_evaluation_records_official_verdicts_on_the_raw_gold_text():
    problems = [{"id": "test-0", "question": "Q?", "answer": "5600"}, {"id": "test-1", "question": "Q?", "answer": "7"}]
    gens = ["Step 1: 8 * 700 = 5600\nFinal Answer: 5,600", "Step 1: 7\nFinal Answer: 7"]
    metrics, rows = evaluate.score_generations(problems, gens, official_golds=["#### 5,600", "#### 7"])
    assert [r["correct"] for r in rows] == [True, True]
    assert [r["official_correct"] for r in rows] == [False, True]  # their gold parser reads "5,600" as "5"
    assert (metrics["accuracy"], metrics["official_accuracy"], metrics["official_n_correct"]) == (1.0, 0.5, 1)
    assert evaluate.official_golds("synthetic:4", "test", [{"id": "test-3"}])[0].split("####")[-1].strip()
    # the verdict reads the uncut generation, kept beside the scored text
    uncut = Generation(prompt="p", text="Step 1: x\nanswer: 7 kg", n_tokens=9, truncated=False,
                       raw="Step 1: x\nanswer: 7 kg\nStep 2: so Final Answer: 8")
    _, (row,) = evaluate.score_generations(problems[1:], [uncut], official_golds=["#### 7"])
    assert row["raw_completion"] == uncut.raw and row["official_correct"] is False  # they read the first Final Answer


# ---------------------------------------------------------------- 6. the paper preset's stage 3


def test_paper_preset_mines_with_the_authors_cap_over_stage2_rows():
    cfg = C.resolve(preset="paper")
    assert cfg.stage3.mining_max_new_tokens == 400
    assert cfg.stage3.mining_temperature == 0.0 and cfg.stage3.mining_k == 1
    start2, end2 = cfg.data.stage2_rows
    assert cfg.data.stage3_rows[0] < end2  # overlapping stage 2, as their released failures do
    text = C.preset_text("paper")
    assert "disjoint" not in text.lower().replace("not disjoint", "")


@pytest.mark.parametrize("stage", ["stage2", "stage3"])
def test_paper_preset_lora_learning_rate_is_not_the_full_finetuning_one(stage):
    cfg = C.resolve(preset="paper")
    assert getattr(cfg, stage).learning_rate > 1e-5  # 1e-5 was theirs for full fine-tuning


@pytest.mark.slow  # ~1 min: two real GRPO epochs on the tiny model
def test_grpo_trainer_reads_a_new_mask_in_each_epoch(tmp_path, monkeypatch):
    """TRL's GRPOTrainer, 2 epochs: the prompts its reward scores are epoch 0's rows, then epoch 1's (new masks),
    each prompt once per generation group."""
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={tmp_path / 'cache'}", "stage2.max_steps=-1",
                                               "stage2.num_train_epochs=2", "stage2.save_steps=100",
                                               "stage2.max_completion_length=8", "stage2.num_generations=2",
                                               "stage2.per_device_train_batch_size=4"])
    problems = [p for p in train_problems(cfg, "stage2") if len(p.steps) >= 4][:4]
    model, tokenizer = model_mod.load(cfg.model, trainable=True, seed=cfg.run.seed, for_grpo=True)
    rows_for = stage2.rows_for_epoch(cfg, problems, tokenizer)
    scored: list[str] = []

    def recording(*args, **kwargs):
        def wrap(reward):
            def scored_by(prompts=None, **kw):
                scored.extend(prompts or [])
                return reward(prompts=prompts, **kw)
            scored_by.__name__ = reward.__name__
            return scored_by
        rewards = real(*args, **kwargs)
        return [wrap(rewards[0])] + rewards[1:]

    real = grpo.make_rewards
    monkeypatch.setattr(grpo, "make_rewards", recording)
    grpo.train_grpo(cfg, "stage2", model, tokenizer, rows_for(0), tmp_path / "stage2", rows_for_epoch=rows_for)
    n = len(problems)
    assert scored[::2] == scored[1::2]  # each prompt scored for its group of 2 completions
    prompts = scored[::2]
    assert len(prompts) == 2 * n
    assert sorted(prompts[:n]) == sorted(r["prompt"] for r in rows_for(0))
    assert sorted(prompts[n:]) == sorted(r["prompt"] for r in rows_for(1))
    assert prompts[:n] != prompts[n:]
