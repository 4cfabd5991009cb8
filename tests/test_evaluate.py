"""Evaluation: metrics on fixed generations (expected values worked out by hand), prompt styles, and the tiny model
end to end through ``cotrecipe eval`` (a model on its own, and a run directory with a faked finished stage), and
the evaluation cache: keyed on the weights, redone when its files are damaged."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from recipe import fsio
from recipe.cli import main
from recipe.config import core as C
from recipe.config import schema
from recipe.data import prompts
from recipe.data.answers import answers_match, extract_answer
from recipe.data.gsm8k import load_gsm8k, load_raw_rows
from recipe.data.stopping import stop_rule_record
from recipe.errors import EvalError, RunError
from recipe.eval import evaluate
from recipe.eval.evaluate import FEWSHOT_EXAMPLES, build_prompt, dataset_hash, score_generations
from recipe.eval.official_checker import official_verdicts
from recipe.eval.scoring import score_file
from recipe.fsio import read_json, read_jsonl, write_jsonl, write_text
from recipe.models.generation import (
    STOP_TEXTS,
    Generation,
    StopAfterAnswerLine,
    cut_after_answer,
    generate,
    plain_greedy,
)
from recipe.models.model import load as load_model
from recipe.models.model import load_tokenizer, resolve_model_path
from recipe.models.tiny import build_tiny_qwen2
from recipe.rewards import step_format_ok
from recipe.run.orchestrator import ENTRIES, evaluate_run, run_baseline
from recipe.store import rundir
from recipe.train.baseline_sft import build_rows as baseline_rows
from recipe.train.rows import train_problems
from tests.conftest import first_table
from tests.helpers import cfg_no_eval, cli, safetensors_bytes

PROBLEMS = [
    {"id": "test-0", "question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
     "answer": "72"},
    {"id": "test-1", "question": "What is 2 + 3?", "answer": "5"},
    {"id": "test-2", "question": "How many dollars?", "answer": "1000"},
    {"id": "test-3", "question": "How much per box?", "answer": "18"},
]
TEXTS = [
    "Step 1: 48/2 = 24\nStep 2: 48 + 24 = 72\nFinal Answer: 72",  # right, formatted, 5 + 7 + 3 = 15 words
    "Step 1: 2 + 2 = 4\nFinal Answer: 4",  # wrong, formatted, 7 + 3 = 10 words
    "The total is 1,000 dollars",  # right via the last number, no format, 5 words, truncated
    "Step 1: 18.00 each\nFinal Answer: 18.00",  # right (18.00 == 18 numerically), formatted, 4 + 3 = 7 words
]
TOKENS = [20, 10, 30, 12]


def fixed_generations() -> list[Generation]:
    return [Generation(prompt=prompts.eval_prompt(p["question"]), text=t, n_tokens=n, truncated=(i == 2))
            for i, (p, t, n) in enumerate(zip(PROBLEMS, TEXTS, TOKENS))]


def test_metrics_on_fixed_generations():
    metrics, rows = score_generations(PROBLEMS, fixed_generations())
    assert metrics == {
        "accuracy": 0.75,  # 3 of 4
        "n": 4,
        "n_correct": 3,
        "avg_tokens": 18.0,  # (20 + 10 + 30 + 12) / 4
        "avg_words": 9.25,  # (15 + 10 + 5 + 7) / 4
        "truncation_rate": 0.25,
        "format_rate": 0.75,
    }
    assert [r["extracted_answer"] for r in rows] == ["72", "4", "1000", "18"]
    assert [r["correct"] for r in rows] == [True, False, True, True]
    assert [r["n_words"] for r in rows] == [15, 10, 5, 7]
    first = rows[0]
    assert set(first) >= {"id", "question", "answer", "prompt", "completion", "extracted_answer", "correct",
                          "n_tokens", "n_words", "truncated"}
    assert (first["id"], first["answer"], first["completion"], first["n_tokens"]) == ("test-0", "72", TEXTS[0], 20)
    assert first["prompt"].endswith("Reasoning:")


def test_fixed_generations_rescore_identically_with_score_file(tmp_path):
    metrics, rows = score_generations(PROBLEMS, fixed_generations())
    write_jsonl(tmp_path / "generations.jsonl", rows)
    summary = score_file(str(tmp_path / "generations.jsonl"), completion_field="completion", answer_field="answer")
    assert (summary["accuracy"], summary["n_correct"], summary["mean_words"]) == (0.75, 3, 9.25)


class WordTokenizer:
    """Counts whitespace words as tokens: enough to check that plain strings get counted by the tokenizer."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_plain_string_generations():
    metrics, rows = score_generations(PROBLEMS, TEXTS, tokenizer=WordTokenizer())
    assert metrics["avg_tokens"] == 9.25 and metrics["truncation_rate"] == 0.0 and metrics["accuracy"] == 0.75
    metrics, _ = score_generations(PROBLEMS, TEXTS)
    assert metrics["avg_tokens"] is None  # unknown without a tokenizer, never guessed
    with pytest.raises(EvalError, match="4 problems but 3 generations"):
        score_generations(PROBLEMS, TEXTS[:3])


def test_prompt_styles():
    question = PROBLEMS[0]["question"]
    assert build_prompt(question, "paper") == prompts.eval_prompt(question)
    fewshot = build_prompt(question, "fewshot")
    assert fewshot.endswith(prompts.eval_prompt(question))
    assert fewshot.count("Reasoning:") == len(FEWSHOT_EXAMPLES) + 1
    for q, steps, answer in FEWSHOT_EXAMPLES:  # the worked examples are in the target format and self-consistent
        solution = prompts.render_solution(steps, answer)
        assert f"Question: {q}\n" in fewshot and solution in fewshot
        assert step_format_ok(solution) and answers_match(extract_answer(solution), answer)
    with pytest.raises(EvalError, match="chat template"):
        build_prompt(question, "chat", tokenizer=WordTokenizer())


def test_dataset_hash_tracks_content_and_order():
    assert dataset_hash(PROBLEMS) == dataset_hash([dict(p) for p in PROBLEMS])
    assert dataset_hash(PROBLEMS) != dataset_hash(PROBLEMS[::-1])
    assert dataset_hash(PROBLEMS) != dataset_hash(PROBLEMS[:3])


# --------------------------------------------------------------------------------------------------------------------
# With the tiny model
# --------------------------------------------------------------------------------------------------------------------


def test_chat_prompt_uses_the_tokenizer_template(cache_dir):
    tokenizer = load_tokenizer(str(build_tiny_qwen2(cache_dir / "tiny-qwen2")))
    text = build_prompt("What is 2 + 3?", "chat", tokenizer=tokenizer)
    assert text == f"<|im_start|>user\n{prompts.eval_prompt('What is 2 + 3?')}<|im_end|>\n<|im_start|>assistant\n"


def test_rows_stop_at_the_answer_line_or_a_new_question(cache_dir):
    """The paper's stopping rule, checked on the criterion generate() uses: a row is done after its final-answer
    line or once it writes "Question:" (in the generated part only: the prompt itself contains "Question:")."""
    tokenizer = load_tokenizer(str(build_tiny_qwen2(cache_dir / "tiny-qwen2")))
    prompt = tokenizer(prompts.eval_prompt("What is 2 + 3?"), add_special_tokens=False)["input_ids"]
    tails = ["\nStep 1: 2 + 3 = 5.", "\nStep 1: 2 + 3 = 5.\nFinal Answer: 5\n", "\nStep 1: 5.\n\nQuestion: Tom"]
    generated = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in tails]
    width = max(map(len, generated))  # rows that finished early are padded on the right, as generate() does
    batch = torch.tensor([prompt + g + [tokenizer.pad_token_id] * (width - len(g)) for g in generated])
    stop = StopAfterAnswerLine(tokenizer, prompt_len=len(prompt), stop_texts=STOP_TEXTS)
    assert stop(batch, None).tolist() == [False, True, True]
    # data.answer_label reaches the stopping rule: with "Answer:" the "Final Answer: 5" line ends a row too, and a
    # row in the other label's format does not end early
    assert StopAfterAnswerLine(tokenizer, len(prompt), STOP_TEXTS, answer_label="Answer:")(batch, None).tolist() == \
        [False, True, True]
    assert StopAfterAnswerLine(tokenizer, len(prompt), (), answer_label="Result =")(batch, None).tolist() == \
        [False, False, False]


def test_answer_label_decides_where_a_completion_is_cut():
    text = "Step 1: 2 + 3 = 5\nResult = 5\nStep 2: junk\nFinal Answer: 9\nmore"
    assert cut_after_answer(text, answer_label="Result =") == "Step 1: 2 + 3 = 5\nResult = 5"
    assert cut_after_answer(text) == "Step 1: 2 + 3 = 5\nResult = 5\nStep 2: junk\nFinal Answer: 9"


def test_eval_command_on_a_model_writes_results_that_rescore_identically(cache_dir, tmp_path):
    out = tmp_path / "eval-out"
    result = CliRunner().invoke(main, ["eval", "--preset", "smoke", "--set", f"model.cache_dir={cache_dir}",
                                       "--limit", "4", "--output-dir", str(out), "--checker", "official"])
    assert result.exit_code == 0, result.output
    assert "| model" in result.output and "accuracy (%)" in result.output and "official (%)" in result.output

    results = read_json(out / "results.json")
    rows = read_jsonl(out / "generations.jsonl")
    cfg = C.resolve(preset="smoke")
    problems = load_gsm8k(cfg.data.eval_source, split="test")[0][:4]
    assert [r["id"] for r in rows] == [p.id for p in problems]
    assert [r["prompt"] for r in rows] == [prompts.eval_prompt(p.question) for p in problems]
    assert results["metrics"]["n"] == 4 and results["data"]["sha256"] == dataset_hash(problems)
    assert results["protocol"] == {"prompt": "paper", "greedy": True, "max_new_tokens": cfg.eval.max_new_tokens,
                                   "answer_label": "Final Answer:", "stop_texts": ["Question:"], "split": "test",
                                   "limit": 4, "stop_rule": stop_rule_record("paper"), "official_checker": True}
    # the authors' verdicts on the raw GSM8K answer text of each row (ids test-i -> raw row i), printed on request
    raw = load_raw_rows(cfg.data.eval_source, "test")
    official = official_verdicts([r.get("raw_completion", r["completion"]) for r in rows],
                                 [raw[i]["answer"] for i in range(4)])
    assert [r["official_correct"] for r in rows] == official
    assert results["metrics"]["official_n_correct"] == sum(official)
    assert f"official checker {100 * sum(official) / 4:.2f}% ({sum(official)}/4)" in result.output
    assert all(0 < r["n_tokens"] <= cfg.eval.max_new_tokens for r in rows)
    assert results["metrics"]["avg_tokens"] == sum(r["n_tokens"] for r in rows) / 4
    assert results["versions"]["torch"]

    rescored = tmp_path / "rescored.jsonl"
    summary = score_file(str(out / "generations.jsonl"), completion_field="completion", answer_field="answer",
                         output_path=str(rescored))
    assert summary["accuracy"] == results["metrics"]["accuracy"] and summary["n_scored"] == 4
    assert summary["mean_words"] == results["metrics"]["avg_words"]
    assert [(r["extracted_answer"], r["correct"]) for r in read_jsonl(rescored)] == \
        [(r["extracted_answer"], r["correct"]) for r in rows]


def make_run(cache_dir: Path, run_dir: Path) -> C.Config:
    """A run directory whose stage 1 is *faked* as finished: the tiny base model itself is copied into
    ``stage1/model`` and the manifest says stage1 is done (training it would only slow the test down; evaluation
    treats a full-model folder exactly like a trained one). Stages 2 and 3 are absent from the manifest."""
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                               "eval.limit=3"])
    run_dir.mkdir(parents=True)
    shutil.copytree(resolve_model_path(cfg.model), run_dir / "stage1" / "model")
    write_text(run_dir / "config.yaml", C.dump_yaml(cfg))
    manifest = rundir.load_manifest(run_dir)
    manifest["entries"]["stage1"] = {"status": "done", "output": "stage1/model", "ended": "2026-01-01T00:00:00+00:00",
                                     "config": rundir.entry_config(cfg, ENTRIES["stage1"])}
    rundir.save_manifest(run_dir, manifest)
    return cfg


def table_names(output: str) -> list[str]:
    """Row names of the results table (the first table; report.md's paired-comparison table comes later)."""
    lines = first_table(output)
    return [line.strip("|").split("|")[0].strip() for line in lines if "accuracy (%)" not in line]


def test_eval_run_evaluates_done_stages_reports_and_resumes(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    make_run(cache_dir, run_dir)
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert table_names(result.output) == ["base", "stage1"]  # stage2/3 not done: skipped, not errors
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == ["base", "stage1"]
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert table_names(md) == ["base", "stage1"] and "## Accuracy–length frontier" in md  # figures: test_report.py

    base = read_json(run_dir / "eval" / "base" / "results.json")
    stage1 = read_json(run_dir / "eval" / "stage1" / "results.json")
    assert base["model"]["init_from"] is None and base["model"]["name_or_path"] == "builtin:tiny-qwen2"
    assert base["data"]["source"] == "synthetic:400" and base["protocol"]["limit"] == 3
    assert stage1["model"]["init_from"] == "stage1/model"  # relative: a moved run keeps its evaluations
    # Same weights (the fake stage is the base model) and greedy decoding: identical generations.
    assert stage1["metrics"] == base["metrics"]
    assert read_jsonl(run_dir / "eval" / "stage1" / "generations.jsonl") == \
        read_jsonl(run_dir / "eval" / "base" / "generations.jsonl")

    # Resume: the same protocol, model and data are not evaluated again; a changed protocol is.
    mtime = (run_dir / "eval" / "stage1" / "results.json").stat().st_mtime_ns
    assert runner.invoke(main, ["eval", "--run", str(run_dir), "--stage", "stage1"]).exit_code == 0
    assert (run_dir / "eval" / "stage1" / "results.json").stat().st_mtime_ns == mtime
    result = runner.invoke(main, ["eval", "--run", str(run_dir), "--stage", "stage1", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert read_json(run_dir / "eval" / "stage1" / "results.json")["metrics"]["n"] == 2
    assert "different protocol" in (run_dir / "report.md").read_text(encoding="utf-8")


def test_a_stage_that_handed_on_earlier_weights_reuses_their_results(cache_dir, tmp_path):
    """Stage 3 with no persistent failures finishes with the stage-before's weights as its output (faked here on
    top of the faked stage 1): its evaluation is copied, not recomputed."""
    run_dir = tmp_path / "run"
    cfg = make_run(cache_dir, run_dir)
    manifest = rundir.load_manifest(run_dir)
    manifest["entries"]["stage3"] = {"status": "done", "output": "stage1/model", "ended": "2026-01-02T00:00:00+00:00"}
    rundir.save_manifest(run_dir, manifest)
    evaluate_run(cfg, run_dir, names=["stage1"])
    evaluate_run(cfg, run_dir, names=["stage3"])
    stage1 = read_json(run_dir / "eval" / "stage1" / "results.json")
    stage3 = read_json(run_dir / "eval" / "stage3" / "results.json")
    assert stage3["copied_from"] == "stage1" and stage3["metrics"] == stage1["metrics"]
    assert stage3["model"]["weights_sha256"] == stage1["model"]["weights_sha256"]  # stage 1's weights
    assert table_names((run_dir / "report.md").read_text(encoding="utf-8")) == ["stage1", "stage3"]


def test_eval_run_missing_stage_is_a_one_line_error(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    make_run(cache_dir, run_dir)
    result = CliRunner().invoke(main, ["eval", "--run", str(run_dir), "--stage", "stage2"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "stage2" in lines[0], result.output
    assert "Traceback" not in result.output and not (run_dir / "eval").exists()


@pytest.mark.parametrize("args, message", [
    (["--run", "{run}", "--model", "x"], "drop --model"),
    (["--run", "{tmp}"], "is not a run directory"),
    (["--stage", "stage1", "--preset", "smoke"], "--stage needs --run"),
    (["--preset", "smoke", "--limit", "0"], "--limit must be a positive count"),
])
def test_eval_command_bad_options(cache_dir, tmp_path, args, message):
    run_dir = tmp_path / "run"
    make_run(cache_dir, run_dir)
    args = [a.format(run=run_dir, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, ["eval", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_sft_baseline_trains_on_full_rationales_evaluates_and_resumes(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                               "stage1.max_steps=1", "eval.limit=2"])
    problems = train_problems(cfg, "stage1") + train_problems(cfg, "stage2")
    rows = baseline_rows(problems)
    assert len(rows) == 128 and [r["id"] for r in rows] == [f"train-{i}" for i in range(128)]  # smoke: [0, 128)
    assert rows[5]["prompt"] == prompts.eval_prompt(problems[5].question)
    assert rows[5]["completion"] == "\n" + prompts.render_solution(problems[5].steps, problems[5].answer)

    paths = run_baseline(cfg, "sft")
    model_dir = run_dir / "baseline-sft" / "model"
    assert (model_dir / "adapter_model.safetensors").is_file()
    record = rundir.load_manifest(run_dir)["entries"]["baseline-sft"]  # a manifest entry, like a stage
    assert record["status"] == "done" and record["data"]["n_rows"] == 128
    results = read_json(run_dir / "eval" / "baseline-sft" / "results.json")
    assert results["model"]["init_from"] == "baseline-sft/model" and results["metrics"]["n"] == 2
    assert table_names(paths[0].read_text(encoding="utf-8")) == ["baseline-sft"]
    assert C.resolve(config_file=run_dir / "config.yaml") == cfg  # a fresh run folder gets the config for `eval --run`

    weights = (model_dir / "adapter_model.safetensors").stat().st_mtime_ns
    run_baseline(cfg, "sft")  # resume: neither trained nor evaluated again
    assert (model_dir / "adapter_model.safetensors").stat().st_mtime_ns == weights
    changed = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                                   "stage1.max_steps=1", "stage1.learning_rate=0.5"])
    with pytest.raises(RunError, match="changed keys: stage1.learning_rate"):
        run_baseline(changed, "sft")


def test_pruned_greedy_generation_writes_what_hf_generate_writes(cache_dir):
    """Greedy decoding whose finished rows leave the batch writes what HF ``generate`` writes, row for
    row: same text, token count and truncation flag, with rows ending at different lengths (a stop text that random
    weights write at different times) and one prompt per batch much longer than the rest (padding differs)."""
    path = build_tiny_qwen2(cache_dir / "tiny-qwen2")
    model, tokenizer = load_model(schema.ModelConfig(name_or_path=str(path), backend="hf", load_in_4bit=False,
                                              dtype="float32"), trainable=False)
    torch.manual_seed(0)
    with torch.no_grad():  # the built weights repeat one token; these write varied text
        for param in model.parameters():
            param.normal_(0, 0.3)
    texts = [prompts.eval_prompt(q) for q in ("What is 2 + 3?", "Tom has 4 apples and buys 7 more. How many?",
                                              "A " * 40 + "question?", "Sum 1 and 1.", "Half of 10?")]
    kwargs = dict(max_new_tokens=24, batch_size=3, stop_texts=("\ufffd", "ges"), stop_rule="answer_line")
    whole = generate(model, tokenizer, texts, prune=False, **kwargs)
    parts = generate(model, tokenizer, texts, prune=True, **kwargs)
    lengths = [g[0].n_tokens for g in whole]
    assert len(set(lengths)) > 1 and min(lengths) < 24  # rows really did end at different times
    assert [(g[0].raw, g[0].text, g[0].n_tokens, g[0].truncated) for g in parts] == \
        [(g[0].raw, g[0].text, g[0].n_tokens, g[0].truncated) for g in whole]
    assert plain_greedy(model)
    model.generation_config.repetition_penalty = 1.3  # a logits processor: HF generate must run instead
    assert not plain_greedy(model)


def _base_eval_run(run_dir: Path, cache_dir: Path) -> None:
    cfg = C.resolve(preset="smoke", overrides=[f"model.cache_dir={cache_dir}", f"run.output_dir={run_dir}",
                                               "eval.limit=3", "eval.max_new_tokens=4"])
    fsio.write_text(run_dir / rundir.CONFIG_FILE, C.dump_yaml(cfg))


def test_a_truncated_or_malformed_evaluation_is_redone(tmp_path, cache_dir, caplog):
    run_dir = tmp_path / "run"
    _base_eval_run(run_dir, cache_dir)
    folder = rundir.eval_dir(run_dir, "base")
    assert cli("eval", "--run", str(run_dir), "--stage", "base").exit_code == 0
    good_rows = read_jsonl(folder / rundir.GENERATIONS)
    assert len(good_rows) == 3
    mtime = (folder / rundir.RESULTS).stat().st_mtime_ns
    assert cli("eval", "--run", str(run_dir), "--stage", "base").exit_code == 0  # intact: kept
    assert (folder / rundir.RESULTS).stat().st_mtime_ns == mtime
    damages = {
        "truncated at a line end": lambda: (folder / rundir.GENERATIONS).write_text(
            json.dumps(good_rows[0]) + "\n", encoding="utf-8"),
        "torn mid-line": lambda: (folder / rundir.GENERATIONS).write_bytes(
            (folder / rundir.GENERATIONS).read_bytes()[:-40]),
        "results.json a list": lambda: (folder / rundir.RESULTS).write_text("[1, 2]", encoding="utf-8"),
        "results.json torn": lambda: (folder / rundir.RESULTS).write_text('{"metrics": {"n', encoding="utf-8"),
    }
    for what, damage in damages.items():
        damage()
        caplog.clear()
        result = cli("eval", "--run", str(run_dir), "--stage", "base")
        assert result.exit_code == 0 and "Traceback" not in result.output, (what, result.output)
        assert "is broken" in caplog.text and "evaluating it again" in caplog.text, what
        assert read_jsonl(folder / rundir.GENERATIONS) == good_rows, what
        assert isinstance(read_json(folder / rundir.RESULTS), dict), what


def test_eval_cache_key_survives_a_move_and_sees_replaced_weights(tmp_path):
    cfg = cfg_no_eval(tmp_path / "a")
    weights = tmp_path / "a" / "stage3" / "model"
    fsio.write_bytes(weights / "adapter_model.safetensors", safetensors_bytes())
    first = evaluate.model_record(cfg, str(weights), tmp_path / "a")
    assert first["init_from"] == "stage3/model" and len(first["weights_sha256"]) == 64
    os.replace(tmp_path / "a", tmp_path / "b")
    moved = evaluate.model_record(cfg, str(tmp_path / "b" / "stage3" / "model"), tmp_path / "b")
    assert moved == first  # a moved run is not evaluated again
    fsio.write_bytes(tmp_path / "b" / "stage3" / "model" / "adapter_model.safetensors", safetensors_bytes(8))
    replaced = evaluate.model_record(cfg, str(tmp_path / "b" / "stage3" / "model"), tmp_path / "b")
    assert replaced["weights_sha256"] != first["weights_sha256"]  # replaced in place: evaluated again
