"""`cotrecipe teach` against a real OpenAI-compatible HTTP server on 127.0.0.1 (canned replies, HTTP 500s, timeouts,
malformed JSON), a SIGKILL halfway, the tiny hf model, and the written file read back as ``data.teacher``."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recipe.config import core as C
from recipe.errors import TeachError
from recipe.teacher.rationales import apply_teacher, load_teacher_rationales
from recipe.teacher.teach import TeachCache, TeachOptions, cache_key, load_problems, run_teach, teach_prompt
from recipe.train.rows import train_problems
from tests import forked

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-do-not-leak-31337"


def good_reply(answer: str) -> str:
    return f"Thinking…\nLet me work it out.\n\nIt is {answer}.\n\nStep 1: first part.\nStep 2: so {answer}.\nFinal Answer: {answer}"


class Teacher:
    """A canned OpenAI-compatible server: ``plan[question]`` is the list of actions for successive attempts
    (the last repeats): ``("ok", text)``, ``("status", code)``, ``("sleep", seconds)`` or ``("malformed", None)``.
    With ``hold_at=n`` the n-th request (counting from 1, once) sets ``held`` and waits for ``release`` before it is
    answered, so a test can act while the client is known to be mid-run."""

    def __init__(self, plan: dict[str, list], delay: float = 0.0, hold_at: int | None = None):
        self.plan, self.delay, self.hold_at = plan, delay, hold_at
        self.held, self.release = threading.Event(), threading.Event()
        self.requests = 0
        self.hits: Counter = Counter()
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/v1/chat/completions" and body["model"] == "teacher-14b"
                prompt = body["messages"][0]["content"]
                question = prompt.split("Question: ", 1)[1].strip()
                with teacher.lock:
                    n = teacher.hits[question]
                    teacher.hits[question] += 1
                    teacher.auth.append(self.headers.get("Authorization"))
                    teacher.requests += 1
                    hold = teacher.requests == teacher.hold_at
                if hold:
                    teacher.held.set()
                    teacher.release.wait(60)
                actions = teacher.plan[question]
                kind, arg = actions[min(n, len(actions) - 1)]
                time.sleep(teacher.delay)
                if kind == "sleep":
                    time.sleep(arg)
                    kind, arg = "ok", "Step 1: too late.\nFinal Answer: 0"
                if kind == "status":
                    payload, code = b'{"error": "busy"}', arg
                elif kind == "malformed":
                    payload, code = b'{"choices": [{"message": ', 200
                else:
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": arg}}]}).encode()
                    code = 200
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def cfg():
    return C.resolve(preset="smoke")


def flaky_plan(problems):
    """Per problem i: 0 right, 1 wrong answer, 2 unparseable, 3 HTTP 500 then right, 4 malformed JSON, a timeout,
    then right, 5 HTTP 500 forever (a failed request)."""
    plan, expected = {}, {"kept": set(), "wrong": set(), "unparseable": set(), "failed": set()}
    for i, p in enumerate(problems):
        good = ("ok", good_reply(p.answer))
        kind = i % 6
        plan[p.question] = [
            [good], [("ok", good_reply(str(int(float(p.answer)) + 1)))], [("ok", "I am not sure about this one.")],
            [("status", 500), good], [("malformed", None), ("sleep", 4.0), good], [("status", 503)],
        ][kind]
        expected[["kept", "wrong", "unparseable", "kept", "kept", "failed"][kind]].add(p.id)
    return plan, expected


def test_flaky_server_keeps_exactly_the_gold_matching_rationales(cfg, tmp_path, monkeypatch, caplog):
    problems = load_problems(cfg, limit=12)
    plan, expected = flaky_plan(problems)
    server = Teacher(plan)
    monkeypatch.setenv("TEACH_TEST_KEY", KEY)
    out = tmp_path / "teacher.jsonl"
    opts = TeachOptions(source=f"openai:{server.url}", model="teacher-14b", output=str(out), concurrency=3,
                        timeout=1.5, retries=2, backoff=0.01, api_key_env="TEACH_TEST_KEY")
    try:
        with caplog.at_level(logging.DEBUG, logger="recipe"):
            summary = run_teach(cfg, opts, problems)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert {r["id"] for r in rows} == expected["kept"] and len(rows) == len(expected["kept"])
        assert (summary.kept, summary.wrong, summary.unparseable, summary.failed) == (
            len(expected["kept"]), len(expected["wrong"]), len(expected["unparseable"]), len(expected["failed"]))
        by_id = {p.id: p for p in problems}
        assert all(r["answer"] == by_id[r["id"]].answer and r["thinking"].startswith("Let me work") for r in rows)
        assert all(r["steps"] == ["first part.", f"so {r['answer']}."] for r in rows)
        # retries happened: 500 -> 2 hits, malformed + timeout + ok -> 3 hits, 503 forever -> 1 + 2 retries
        hits = {p.id: server.hits[p.question] for p in problems}
        assert [hits[f"train-{i}"] for i in range(6)] == [1, 1, 1, 2, 3, 3]
        # the key went to the server in the header only
        assert set(server.auth) == {f"Bearer {KEY}"}
        for path in tmp_path.iterdir():
            assert KEY not in path.read_text()
        assert KEY not in caplog.text and KEY not in repr(opts)

        # a rerun asks only for the failed rows; nothing is duplicated
        before = Counter(server.hits)
        server.plan.update({p.question: [("ok", good_reply(p.answer))] for p in problems if p.id in expected["failed"]})
        again = run_teach(cfg, opts, problems)
        asked = {q for q in server.hits if server.hits[q] > before[q]}
        assert asked == {p.question for p in problems if p.id in expected["failed"]}
        assert again.cached == 10 and again.requested == 2 and again.kept == len(expected["kept"]) + 2
        keys = [json.loads(line)["key"] for line in opts.cache.read_text().splitlines()]
        assert len(keys) == len(set(keys)) == 12
    finally:
        server.close()


def teach_file(cfg, tmp_path, n: int):
    """The first ``n`` problems taught by a well-behaved local server: (problems, the teacher file written)."""
    problems = load_problems(cfg, limit=n)
    server = Teacher({p.question: [("ok", good_reply(p.answer))] for p in problems})
    out = tmp_path / "teacher.jsonl"
    try:
        run_teach(cfg, TeachOptions(source=f"openai:{server.url}", model="teacher-14b", output=str(out)), problems)
    finally:
        server.close()
    return problems, out


def test_teach_file_drives_the_stages_through_data_teacher(cfg, tmp_path):
    problems, out = teach_file(cfg, tmp_path, 4)
    replaced, n = apply_teacher(problems, str(out))
    assert n == 4 and all(p.steps == ("first part.", f"so {p.answer}.") for p in replaced)
    assert all(r.thinking == f"Let me work it out.\n\nIt is {p.answer}." for r, p in
               zip(load_teacher_rationales(str(out)).values(), problems, strict=True))
    staged = train_problems(C.resolve(preset="smoke", overrides=[f"data.teacher={out}"]), "stage1")
    assert [p.steps for p in staged[:4]] == [p.steps for p in replaced]


def test_sigkill_halfway_then_rerun_has_no_duplicates(cfg, tmp_path):
    problems = load_problems(cfg, limit=10)
    server = Teacher({p.question: [("ok", good_reply(p.answer))] for p in problems}, hold_at=4)
    out = tmp_path / "teacher.jsonl"
    cache = Path(f"{out}.cache.jsonl")
    cmd = [sys.executable, "-m", "recipe.cli", "teach", "--preset", "smoke", "--limit", "10", "--concurrency", "1",
           "--source", f"openai:{server.url}", "--model", "teacher-14b", "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = forked.Popen(cmd[1:], env=env, cwd=ROOT, output=tmp_path / "killed.log")  # a process of its own
        assert server.held.wait(120), "the teacher never got its 4th request"
        # one request at a time: rows 1-3 are answered, the 4th waits on the server; their cache lines follow
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and (
                not cache.exists() or cache.read_text().count("\n") < 3):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        done_before = {json.loads(line)["question"] for line in cache.read_text().splitlines()}
        assert len(done_before) == 3 and not out.exists()  # killed halfway, before the output was written
        with open(cache, "ab") as fh:  # and as if the kill had torn a line in half
            fh.write(b'{"key": "abc", "raw": "Step 1')
        from click.testing import CliRunner

        from recipe.cli import main

        result = CliRunner().invoke(main, cmd[3:])  # the rerun in-process: only the kill needs its own process
        assert result.exit_code == 0, result.output
        assert "10 kept" in result.stdout and f"{len(done_before)} from the cache" in result.stdout
        keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
        assert len(keys) == len(set(keys)) == 10
        assert all(server.hits[q] == 1 for q in done_before)  # finished rows were never asked again
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(p.id for p in problems)
    finally:
        server.close()


def test_torn_cache_line_is_dropped_and_appends_stay_valid(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"key": "a", "raw": "x"}) + "\n" + '{"key": "b", "ra')
    cache = TeachCache(path)
    assert set(cache.rows) == {"a"}
    cache.add({"key": "b", "raw": "y"})
    cache.add({"key": "a", "raw": "again"})  # already there: ignored
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "b"]
    path.write_text("not json\n")
    with pytest.raises(TeachError, match="line 1"):
        TeachCache(path)


def test_cache_key_changes_with_teacher_and_prompt():
    q = "What is 2 + 2?"
    base = cache_key(q, "openai:x|m", teach_prompt(q))
    assert base != cache_key(q, "openai:x|other", teach_prompt(q))
    assert base != cache_key(q, "openai:x|m", teach_prompt(q) + " ")
    assert base == cache_key(q + "  ", "openai:x|m", teach_prompt(q))


def test_fatal_http_status_stops_with_one_line(cfg, tmp_path):
    problems = load_problems(cfg, limit=8)
    server = Teacher({p.question: [("status", 401)] for p in problems}, delay=0.05)
    try:
        with pytest.raises(TeachError, match="HTTP 401"):
            run_teach(cfg, TeachOptions(source=f"openai:{server.url}", model="teacher-14b",
                                        output=str(tmp_path / "t.jsonl"), concurrency=1), problems)
        assert sum(server.hits.values()) <= 3  # the queued requests were dropped, not sent
    finally:
        server.close()


def teach_cli(url: str, out: Path, *extra: str):
    from click.testing import CliRunner

    from recipe.cli import main

    return CliRunner().invoke(main, ["teach", "--preset", "smoke", "--limit", "5", "--source", f"openai:{url}",
                                     "--model", "teacher-14b", "--output", str(out), *extra])


def test_an_unreachable_server_exits_non_zero_with_the_count_and_the_rerun(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on: every request is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "teacher.jsonl"
    result = teach_cli(f"http://127.0.0.1:{port}/v1", out, "--retries", "1")
    assert result.exit_code == 1
    assert "0 kept, 0 wrong answer, 0 unparseable, 5 failed requests" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 5 of 5 teacher requests still failed after retrying (--retries 1); 0 kept rows are written and "
        "every finished reply is cached. Rerun to ask only for the 5 missing: cotrecipe teach --preset smoke "
        f"--source openai:http://127.0.0.1:{port}/v1 --model teacher-14b --output {out} --limit 5 --retries 1")
    assert out.read_text() == ""


def test_failed_requests_exit_non_zero_and_the_printed_rerun_asks_only_for_them(cfg, tmp_path):
    problems = load_problems(cfg, limit=5)
    failing = {problems[1].question, problems[3].question}
    server = Teacher({p.question: [("status", 503)] if p.question in failing else [("ok", good_reply(p.answer))]
                      for p in problems})
    out = tmp_path / "teacher.jsonl"
    try:
        first = teach_cli(server.url, out, "--retries", "1", "--concurrency", "2")
        assert first.exit_code == 1
        assert "3 kept, 0 wrong answer, 0 unparseable, 2 failed requests" in first.stdout
        error = first.stderr.strip().splitlines()[-1]
        assert error.startswith("error: 2 of 5 teacher requests still failed") and "3 kept rows are written" in error
        assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == [
            problems[i].id for i in (0, 2, 4)]  # the good rows are kept
        rerun = shlex.split(error.split("Rerun to ask only for the 2 missing: ", 1)[1])
        assert rerun[:2] == ["cotrecipe", "teach"]
        assert {q: server.hits[q] for q in failing} == dict.fromkeys(failing, 2)  # 1 try + 1 retry each

        server.plan.update({p.question: [("ok", good_reply(p.answer))] for p in problems if p.question in failing})
        before = Counter(server.hits)
        from click.testing import CliRunner

        from recipe.cli import main

        second = CliRunner().invoke(main, rerun[1:])
        assert second.exit_code == 0, second.output
        assert "5 kept" in second.stdout and "(3 from the cache, 2 requested now)" in second.stdout
        asked = {q for q in server.hits if server.hits[q] > before[q]}
        assert asked == failing  # the rerun asked only for what was missing
        assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == sorted(p.id for p in problems)
    finally:
        server.close()


def test_without_a_key_no_authorization_header_is_sent(cfg, tmp_path, monkeypatch):
    """A local server needs no key: with the key variable unset the request carries no Authorization header at all
    (not even the client's placeholder), and OPENAI_API_KEY is not read for another variable."""
    problems = load_problems(cfg, limit=2)
    server = Teacher({p.question: [("ok", good_reply(p.answer))] for p in problems})
    monkeypatch.delenv("TEACH_TEST_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    try:
        summary = run_teach(cfg, TeachOptions(source=f"openai:{server.url}", model="teacher-14b",
                                              output=str(tmp_path / "t.jsonl"), api_key_env="TEACH_TEST_KEY"), problems)
        assert summary.kept == 2 and server.auth == [None, None]
    finally:
        server.close()


def test_without_the_teacher_extra_an_openai_source_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # as if not installed: `import openai` raises ImportError
    result = teach_cli("http://127.0.0.1:9/v1", tmp_path / "t.jsonl")
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --source openai:<base_url> needs the openai client") and \
        line.endswith("pip install 'cotrecipe[teacher]'"), line
    assert not (tmp_path / "t.jsonl").exists()


def test_gold_source_and_stats_via_the_cli(tmp_path, tiny_model):
    from click.testing import CliRunner

    from recipe.cli import main

    out, png = tmp_path / "gold.jsonl", tmp_path / "stats.png"
    result = CliRunner().invoke(main, ["teach", "--preset", "smoke", "--set", f"model.name_or_path={tiny_model}",
                                       "--limit", "8", "--output", str(out), "--stats", str(png)])
    assert result.exit_code == 0, result.output
    assert "8 kept" in result.output and png.read_bytes().startswith(b"\x89PNG")
    stats = json.loads(png.with_suffix(".json").read_text())
    gold = load_problems(C.resolve(preset="smoke"), limit=8)
    assert stats["gold"]["steps"]["mean"] == round(sum(len(p.steps) for p in gold) / 8, 2)
    assert stats["teacher"] == stats["gold"]  # the gold file measured against itself


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from recipe.models.tiny import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "tiny-qwen2")


def test_hf_source_generates_batched_on_the_tiny_model(cfg, tmp_path, tiny_model):
    problems = load_problems(cfg, limit=5)
    opts = TeachOptions(source=f"hf:{tiny_model}", output=str(tmp_path / "t.jsonl"), batch_size=2, max_new_tokens=12)
    summary = run_teach(cfg, opts, problems)
    assert summary.requested == 5 and summary.kept + summary.wrong + summary.unparseable == 5
    rows = [json.loads(line) for line in opts.cache.read_text().splitlines()]
    assert len(rows) == 5 and all(isinstance(r["raw"], str) for r in rows)
    assert run_teach(cfg, opts, problems).requested == 0  # a rerun generates nothing


def test_teacher_file_survives_unicode_line_separators(cfg, tmp_path):
    from recipe.data.gsm8k import Problem

    problem = Problem("train-0", "Ann has 3\u2028apples. How many?", ("She has 3.",), "3")  # as GSM8K train row 2381
    out = tmp_path / "gold.jsonl"
    run_teach(cfg, TeachOptions(source="gold", output=str(out)), [problem])
    assert apply_teacher([problem], str(out))[1] == 1


def test_file_source_filters_an_authors_format_file(cfg, tmp_path):
    from recipe.data.gsm8k import Problem

    fixture = ROOT / "tests" / "data" / "teach_stage3_samples.json"
    rows = json.loads(fixture.read_text())
    problems = [Problem("train-0", rows[0]["question"], ("gold.",), "16"),
                Problem("train-1", rows[1]["question"], ("gold.",), "35"),  # the teacher's 36 is wrong here
                Problem("train-2", "Not in the file?", ("gold.",), "1")]
    out = tmp_path / "t.jsonl"
    summary = run_teach(cfg, TeachOptions(source=f"file:{fixture}", output=str(out), latex="math"), problems)
    assert (summary.kept, summary.wrong) == (1, 1)
    table = load_teacher_rationales(str(out))
    assert list(table) == [rows[0]["question"]] and table[rows[0]["question"]].steps[2] == "Marbles left: [math]"


def test_teach_file_drives_a_real_run_through_data_teacher(cfg, tmp_path):
    """The file `teach` writes is what a run trains on: stage 1 of the smoke preset, once with GSM8K-style gold
    rationales and once with `data.teacher` set to the teach output, trains on different rows, and the teacher's
    thinking reaches the stage-1 targets."""
    from recipe.run.orchestrator import run_one
    from recipe.store import rundir
    from recipe.train import stage1

    problems, out = teach_file(cfg, tmp_path, 6)
    small = ["stage1.max_steps=1", "data.stage1_rows=[0, 6]"]
    fingerprints = {}
    for name, extra in (("gold", []), ("teach", [f"data.teacher={out}"])):
        run_cfg = C.resolve(preset="smoke", overrides=[*small, *extra, f"run.output_dir={tmp_path / name}"])
        run_one(run_cfg, "stage1")
        entry = rundir.load_manifest(tmp_path / name)["entries"]["stage1"]
        assert entry["status"] == "done"
        fingerprints[name] = entry["data"]["sha256"]
        if name == "teach":
            rows = stage1.rows_for_epoch(run_cfg, train_problems(run_cfg, "stage1"))(0)
            assert len(rows) == 6 and all("Let me work it out." in row["completion"] for row in rows)
    assert fingerprints["gold"] != fingerprints["teach"]
