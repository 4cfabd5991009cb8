"""run.parallel_entries: run-all runs up to N entries and evaluations at once, each in its own child
process -- the plan (what waits for what, in which order), the scheduler (with fake handles), the manifest written by
several processes at once, the config check, the relayed output, and run-all itself with stand-in children."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from recipe.config import core as C
from recipe.entries import ENTRIES
from recipe.errors import RunError
from recipe.run import orchestrator as run
from recipe.run import parallel, subrun
from recipe.run.parallel import Task
from recipe.store import rundir
from tests import forked

REPO = Path(__file__).resolve().parents[1]
EVALS = ["eval:base", "eval:stage1", "eval:stage2", "eval:stage3", "eval:baseline-sft", "eval:baseline-grpo"]


@pytest.fixture(autouse=True)
def _whole_manifest_writer():
    """rundir.write_only is process state: every test starts and ends as a plain (whole-manifest) writer."""
    rundir.write_only(set())
    yield
    rundir.write_only(set())


# the plans below read the proof preset with the budgets of its previous version: the SFT baseline at a step count and
# the two step-budget baselines, so every entry can start beside the stages (the shipped one waits for stage 3's
# tokens: test_what_a_task_waits_for_follows_the_config)
STEP_BUDGETS = ["baseline_sft.budget=400", "run.baselines=[sft, grpo]"]


def proof(*sets: str) -> C.Config:
    return C.resolve(preset="proof", overrides=[*STEP_BUDGETS, *sets])


def done(*names: str) -> dict:
    return {rundir.ENTRIES_KEY: {name: {"status": "done", "output": f"{name}/model"} for name in names}}


def waits(tasks: list[Task]) -> dict[str, tuple[str, ...]]:
    return {task.id: task.after for task in tasks}


# --------------------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------------------


def test_the_proof_plan_puts_the_curriculum_first_and_each_task_after_what_it_reads():
    tasks = parallel.plan(proof(), done())
    w = "train:warmup"
    assert waits(tasks) == {
        w: (),
        "train:stage1": (w,), "train:stage2": (w, "train:stage1"), "train:stage3": (w, "train:stage2"),
        # both baselines' budgets are step counts (baseline_sft.budget: 400; stage 3's max_steps): no waiting
        "train:baseline-sft": (w,), "train:baseline-grpo": (w,),
        "eval:base": (w,), "eval:stage1": (w, "train:stage1"), "eval:stage2": (w, "train:stage2"),
        "eval:stage3": (w, "train:stage3"), "eval:baseline-sft": (w, "train:baseline-sft"),
        "eval:baseline-grpo": (w, "train:baseline-grpo")}
    assert [t.id for t in tasks] == list(waits(tasks))  # priority: curriculum, baselines (run.baselines), evaluations
    assert [t.label for t in tasks[:2]] + [tasks[6].label] == ["warmup", "stage1", "eval:base"]


def test_finished_entries_leave_the_plan_and_stop_being_waited_for():
    tasks = parallel.plan(proof("baseline_sft.budget=tokens"), done("warmup", "stage1", "baseline-grpo"))
    assert waits(tasks) == {
        "train:stage2": (), "train:stage3": ("train:stage2",),
        "train:baseline-sft": ("train:stage2", "train:stage3"),
        "eval:base": (), "eval:stage1": (), "eval:stage2": ("train:stage2",), "eval:stage3": ("train:stage3",),
        "eval:baseline-sft": ("train:baseline-sft",), "eval:baseline-grpo": ()}


@pytest.mark.parametrize("sets, expected", [
    (["baseline_sft.budget=stage1"], {"train:baseline-sft": ()}),
    (["baseline_sft.budget=tokens"], {"train:baseline-sft": ("train:stage1", "train:stage2", "train:stage3")}),
    (["stage3.max_steps=-1"], {"train:baseline-grpo": ("train:stage3",)}),  # its budget counts stage 3's mined rows
    # the concise-RL baseline spends the same GRPO budget: it waits for stage 3 only then, and never for stage 1
    (["run.baselines=[concise]"], {"train:baseline-concise": ()}),
    (["run.baselines=[concise]", "stage3.max_steps=-1"], {"train:baseline-concise": ("train:stage3",)}),
    (["stage2.enabled=false", "baseline_sft.budget=tokens"],
     {"train:stage3": ("train:stage1",), "train:baseline-sft": ("train:stage1", "train:stage3")}),
])
def test_what_a_task_waits_for_follows_the_config(sets, expected):
    tasks = waits(parallel.plan(proof("warmup.enabled=false", *sets), done()))
    assert {k: tasks[k] for k in expected} == expected


def test_evaluations_are_what_eval_run_would_evaluate():
    cfg = proof("warmup.enabled=false", "stage2.enabled=false", "run.baselines=[grpo]")
    tasks = parallel.plan(cfg, done("baseline-sft"))  # a baseline trained earlier is evaluated too
    assert [t.id for t in tasks if t.kind == "eval"] == ["eval:base", "eval:stage1", "eval:stage3",
                                                        "eval:baseline-sft", "eval:baseline-grpo"]
    assert [t.id for t in parallel.plan(proof("eval.enabled=false"), done())] == [
        "train:warmup", "train:stage1", "train:stage2", "train:stage3", "train:baseline-sft", "train:baseline-grpo"]


# --------------------------------------------------------------------------------------------------------------------
# The scheduler (fake handles on a fake clock: one tick per sleep)
# --------------------------------------------------------------------------------------------------------------------


class World:
    def __init__(self, durations: dict[str, int], codes: dict[str, int] | None = None):
        self.t, self.durations, self.codes = 0, durations, codes or {}
        self.started: dict[str, int] = {}
        self.ended: dict[str, int] = {}
        self.stopped: list[str] = []

    def start(self, task: Task) -> World.Handle:
        self.started[task.id] = self.t
        return World.Handle(self, task.id)

    def finish(self, task: Task, handle: World.Handle) -> None:
        self.ended[task.id] = self.t
        if handle.poll():
            raise RunError(f"{task.id} failed")

    def sleep(self, _seconds: float) -> None:
        self.t += 1

    def running_at(self, t: int) -> list[str]:
        return [i for i, s in self.started.items() if s <= t < self.ended.get(i, 10**9)]

    class Handle:
        def __init__(self, world: World, task_id: str):
            self.world, self.id, self.end = world, task_id, world.t + world.durations[task_id]

        def poll(self) -> int | None:
            return self.world.codes.get(self.id, 0) if self.world.t >= self.end else None


def test_two_lanes_on_the_proof_plan():
    tasks = parallel.plan(proof(), done("warmup"))
    world = World({"train:stage1": 2, "train:stage2": 4, "train:stage3": 3, "train:baseline-sft": 2,
                   "train:baseline-grpo": 7, **dict.fromkeys(EVALS, 1)})
    parallel.schedule(tasks, 2, world.start, world.finish, sleep=world.sleep)
    s = world.started
    # stage 1 and the SFT baseline (a step budget: it waits for no stage) start together; stage 2 and the GRPO
    # baseline take the lanes they free, stage 3 follows stage 2 (the critical path before any evaluation), and the
    # evaluations come last
    assert s["train:stage1"] == s["train:baseline-sft"] == 0
    assert s["train:stage2"] == s["train:baseline-grpo"] == 2 and s["train:stage3"] == 6
    assert s["eval:base"] == s["eval:stage1"] == world.ended["train:stage3"] == 9
    assert all(s[dep] < s[task.id] and world.ended[dep] <= s[task.id] for task in tasks for dep in task.after)
    assert max(len(world.running_at(t)) for t in range(world.t + 1)) == 2
    assert set(world.ended) == {t.id for t in tasks}
    # one lane: one task at a time, in priority order as each becomes ready
    world = World(dict.fromkeys((t.id for t in tasks), 1))
    parallel.schedule(tasks, 1, world.start, world.finish, sleep=world.sleep)
    assert list(world.started) == [t.id for t in tasks]
    assert max(len(world.running_at(t)) for t in range(world.t + 1)) == 1


def test_a_failure_starts_nothing_new_waits_for_the_running_and_raises_the_first():
    tasks = parallel.plan(proof(), done("warmup"))
    world = World({"train:stage1": 1, "train:baseline-sft": 5, **dict.fromkeys(
        ["train:stage2", "train:stage3", "train:baseline-grpo", *EVALS], 1)}, codes={"train:stage1": 1})
    with pytest.raises(RunError, match="^train:stage1 failed$"):
        parallel.schedule(tasks, 2, world.start, world.finish, sleep=world.sleep)
    assert set(world.started) == {"train:stage1", "train:baseline-sft"}  # the lane stage 1 freed stays empty
    assert world.ended == {"train:stage1": 1, "train:baseline-sft": 5}  # the SFT baseline ran to its end


def test_a_task_that_cannot_start_counts_as_failed_and_ctrl_c_stops_the_running():
    tasks = [Task("train", "stage1"), Task("train", "baseline-grpo"), Task("eval", "base")]
    world = World(dict.fromkeys((t.id for t in tasks), 3))

    def start(task):
        if task.name == "baseline-grpo":
            raise OSError("fork failed")
        return world.start(task)

    with pytest.raises(OSError, match="fork failed"):
        parallel.schedule(tasks, 2, start, world.finish, sleep=world.sleep)
    assert set(world.started) == {"train:stage1"} and world.ended == {"train:stage1": 3}

    def interrupted(_seconds):
        raise KeyboardInterrupt

    world = World(dict.fromkeys((t.id for t in tasks), 3))
    with pytest.raises(KeyboardInterrupt):
        parallel.schedule(tasks, 2, world.start, world.finish, stop=lambda h: world.stopped.append(h.id),
                          sleep=interrupted)
    assert world.stopped == ["train:stage1", "train:baseline-grpo"] and not world.ended


# --------------------------------------------------------------------------------------------------------------------
# The manifest with several writers
# --------------------------------------------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from recipe.store import rundir
    run_dir, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rundir.write_only({name})
    manifest = rundir.load_manifest(run_dir)  # this process's copy, as a training child holds one
    for i in range(rounds):
        manifest["entries"][name] = {"status": "running", "round": i, "pad": "x" * 2000}
        rundir.save_manifest(run_dir, manifest)
""")


def test_two_processes_writing_their_own_records_at_once_both_survive(tmp_path):
    rundir.save_manifest(tmp_path, {"created": "t", "entries": {"warmup": {"status": "done"}}})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [forked.Popen(["-c", WRITER, str(tmp_path), name, "150"], env=env) for name in ("stage1", "baseline-grpo")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0], [w.stdout.read() for w in writers]
    records = rundir.load_manifest(tmp_path)["entries"]
    assert {name: records[name].get("round") for name in records} == {"warmup": None, "stage1": 149,
                                                                       "baseline-grpo": 149}
    assert (tmp_path / rundir.MANIFEST_LOCK).is_file() and not list(tmp_path.glob(".manifest.json.*.tmp"))


def test_a_child_beside_others_reopens_the_run_without_touching_their_records(tmp_path):
    cfg = C.resolve(preset="smoke", overrides=[f"run.output_dir={tmp_path}"])
    rundir.save_manifest(tmp_path, {"created": "t", "entries": {"stage2": {"status": "running", "pid": 1}}})
    rundir.write_only({"baseline-grpo"})
    _, manifest = rundir.open_run(cfg, ENTRIES, force=False)
    on_disk = rundir.load_manifest(tmp_path)["entries"]
    assert on_disk["stage2"] == {"status": "running", "pid": 1}  # a sibling's live record, not "interrupted"
    assert manifest["entries"]["stage2"]["status"] == "running"
    rundir.write_only(set())  # the parent (or a lone child) repairs every entry, as before
    rundir.open_run(cfg, ENTRIES, force=False)
    assert rundir.load_manifest(tmp_path)["entries"]["stage2"]["status"] == "interrupted"


# --------------------------------------------------------------------------------------------------------------------
# Config check
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sets, env, why", [
    (["run.parallel_entries=0"], {}, r"0 \(must be >= 1"),
    (["run.parallel_entries=2", "run.process_per_entry=false"], {}, r"2 \(.*set run.process_per_entry to auto or"),
    (["run.parallel_entries=2", "run.device=cuda"], {}, r"2 \(entries side by side are for CPU runs"),
    (["run.parallel_entries=2"], {"WORLD_SIZE": "2", "RANK": "0"}, r"2 \(.*not of a multi-process launch"),
])
def test_parallel_entries_is_refused_where_it_cannot_work(sets, env, why, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(C.ConfigError, match=r"^bad value for 'run.parallel_entries': " + why):
        C.resolve(preset="smoke", overrides=sets)


def test_parallel_entries_with_cuda_available_is_refused_before_the_run_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = C.resolve(preset="smoke", overrides=["run.parallel_entries=2", "run.device=auto",
                                               f"run.output_dir={tmp_path / 'run'}"])
    with pytest.raises(C.ConfigError, match=r"'run.parallel_entries': 2 \(.*CUDA is available here"):
        run.run_all(cfg)
    assert not (tmp_path / "run" / rundir.MANIFEST_FILE).exists()
    assert parallel.lanes(C.resolve(preset="smoke", overrides=["run.parallel_entries=2"])) == 2  # device: cpu
    assert proof().run.parallel_entries == 2 and C.resolve(preset="smoke").run.parallel_entries == 1


# --------------------------------------------------------------------------------------------------------------------
# Relayed output
# --------------------------------------------------------------------------------------------------------------------


def test_a_childs_lines_are_prefixed_and_its_progress_bar_thinned(capsys):
    script = ("import sys; print('loading'); sys.stdout.write('\\r 1%|#\\r 2%|##\\r 3%|###\\r100%|####\\n'); "
              "print('done'); sys.stdout.write('no newline at the end')")
    child = parallel.Child(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT), Task("train", "stage2"))
    assert child.wait(timeout=60) == 0
    err = capsys.readouterr().err.splitlines()
    # the first redraw is shown, the next ones within BAR_EVERY_S are not, the bar's final line (ending in \n) is
    assert err == ["[stage2] loading", "[stage2]  1%|#", "[stage2] 100%|####", "[stage2] done",
                   "[stage2] no newline at the end"]
    assert child.tail().splitlines() == ["loading", " 1%|#", " 2%|##", " 3%|###", "100%|####", "done",
                                         "no newline at the end"]


# --------------------------------------------------------------------------------------------------------------------
# run-all with stand-in children (small python processes that record their entry done, no model)
# --------------------------------------------------------------------------------------------------------------------

STAND_IN = textwrap.dedent("""
    import json, os, struct, sys
    from recipe import fsio
    from recipe.store import rundir
    args = sys.argv[1:]
    run_dir, name = args[args.index("--run") + 1], args[args.index("--entry") + 1]
    assert args[0] == "train" and "--beside-others" in args, args
    rundir.write_only({name})
    manifest = rundir.load_manifest(run_dir)
    manifest["entries"][name] = {"status": "running", "pid": os.getpid()}
    rundir.save_manifest(run_dir, manifest)
    print(f"training {name}", flush=True)
    if name == os.environ.get("FAIL_ENTRY"):
        sys.exit(3)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    fsio.write_bytes(os.path.join(run_dir, name, "model", "adapter_model.safetensors"),
                     struct.pack("<Q", len(header)) + header + bytes(4))  # a small valid adapter
    manifest["entries"][name].update(
        status="done", output=f"{name}/model", threads=os.environ.get("OMP_NUM_THREADS"),
        init_from=args[args.index("--from") + 1] if "--from" in args else None)
    rundir.save_manifest(run_dir, manifest)
""")


@pytest.fixture
def stand_in_children(monkeypatch):
    started: list[tuple[list[str], dict]] = []

    def start_child(run_dir, args, env=None, fork=False):
        started.append((args, env))
        assert fork  # CPU children: forks of the server that imported the training libraries
        return forked.Popen(["-c", STAND_IN, *args], env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})

    monkeypatch.setattr(subrun, "start_child", start_child)
    monkeypatch.setattr(parallel, "POLL_S", 0.05)
    return started


def cfg_two_lanes(run_dir: Path, cache_dir: Path, *extra: str) -> C.Config:
    return C.resolve(preset="smoke", overrides=[
        f"run.output_dir={run_dir}", f"model.cache_dir={cache_dir}", "eval.enabled=false", "run.parallel_entries=2",
        "run.baselines=[sft, grpo]", "baseline_sft.budget=tokens", *extra])


def test_run_all_with_two_lanes_trains_every_entry_from_the_right_weights(tmp_path, cache_dir, stand_in_children,
                                                                            monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    run_dir = tmp_path / "run"
    run.run_all(cfg_two_lanes(run_dir, cache_dir))
    records = rundir.load_manifest(run_dir)["entries"]
    assert {name: r["status"] for name, r in records.items()} == dict.fromkeys(
        ["stage1", "stage2", "stage3", "baseline-sft", "baseline-grpo"], "done")
    assert records["stage1"]["init_from"] is None and records["baseline-grpo"]["init_from"] is None
    assert records["stage2"]["init_from"] == str(run_dir / "stage1" / "model")
    assert records["stage3"]["init_from"] == str(run_dir / "stage2" / "model")
    cores = len(os.sched_getaffinity(0))
    assert {r["threads"] for r in records.values()} == {str(max(1, cores // 2))}
    assert "[stage3] training stage3" in capsys.readouterr().err
    assert not any(args[0] == "eval" for args, _ in stand_in_children)  # eval.enabled=false
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own: inherited, not replaced
    run.run_all(cfg_two_lanes(tmp_path / "run2", cache_dir))
    assert all(env == {} for _, env in stand_in_children[5:]) and len(stand_in_children) == 10


def test_a_failed_child_stops_new_starts_and_only_its_record_is_marked(tmp_path, cache_dir, stand_in_children,
                                                                        monkeypatch, caplog):
    monkeypatch.setenv("FAIL_ENTRY", "stage1")
    run_dir = tmp_path / "run"
    with pytest.raises(RunError, match=r"^stage1 failed in its own process \(pid \d+, which exited with status 3\)"):
        run.run_all(cfg_two_lanes(run_dir, cache_dir))
    records = rundir.load_manifest(run_dir)["entries"]
    assert records["stage1"]["status"] == "interrupted"
    assert records["baseline-grpo"]["status"] == "done"  # started beside stage 1, ran to its end
    assert set(records) == {"stage1", "baseline-grpo"}  # nothing started after the failure
    assert "training stage1" in caplog.text  # the failed child's last lines
    monkeypatch.delenv("FAIL_ENTRY")
    run.run_all(cfg_two_lanes(run_dir, cache_dir))  # the same command resumes
    assert {r["status"] for r in rundir.load_manifest(run_dir)["entries"].values()} == {"done"}
    assert [args[args.index("--entry") + 1] for args, _ in stand_in_children[2:]] == [
        "stage1", "stage2", "stage3", "baseline-sft"]


# --------------------------------------------------------------------------------------------------------------------
# End to end with real children (slow: not run by default)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_run_all_with_two_lanes_end_to_end(tmp_path, cache_dir):
    """`run-all --preset smoke --set run.parallel_entries=2` with both baselines: every entry trains and is evaluated
    in a child of its own (a fork of the server), two at a time, and the report has every row."""
    forked._start_server()  # the tests' server (its hash seed), should this be this process's first fork
    cfg = C.resolve(preset="smoke", overrides=[
        f"run.output_dir={tmp_path / 'run'}", f"model.cache_dir={cache_dir}", "run.parallel_entries=2",
        "run.baselines=[sft, grpo]", "baseline_sft.budget=tokens", "stage2.log_completions=false",
        "stage3.log_completions=false"])
    run_dir = run.run_all(cfg)
    records = rundir.load_manifest(run_dir)["entries"]
    assert {name: r["status"] for name, r in records.items()} == dict.fromkeys(
        ["stage1", "stage2", "stage3", "baseline-sft", "baseline-grpo"], "done")
    assert len({r["pid"] for r in records.values()} | {os.getpid()}) == 6
    assert records["stage2"]["init_from"].endswith("stage1/model")
    for name in ("base", "stage1", "stage2", "stage3", "baseline-sft", "baseline-grpo"):
        assert (run_dir / "eval" / name / rundir.RESULTS).is_file(), name
    report = (run_dir / rundir.REPORT_MD).read_text()
    assert all(row in report for row in ("baseline-sft", "baseline-grpo", "stage3"))
    call = json.loads((run_dir / rundir.INVOCATIONS).read_text().splitlines()[0])
    assert call["peak_rss_mb_child"] > 200  # the forks' peak (the server collected): a trainer's, not 0
    run.run_all(cfg)  # everything done: nothing trains again, the report is rebuilt
    assert rundir.load_manifest(run_dir)["entries"] == records
