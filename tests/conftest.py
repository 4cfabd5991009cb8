"""Tests marked ``slow`` (more than ~20 s on 2 CPU cores) run only with ``--run-slow`` (or ``-m slow``), so the default
run stays a quick loop. Every hypothesis test is marked ``fuzz`` and draws as many examples as the loaded profile says:
``quick`` (:data:`QUICK_EXAMPLES`, the default) or ``deep`` (:data:`DEEP_EXAMPLES`, CI's second step:
``-m "slow or fuzz" --hypothesis-profile=deep``).

The suite never reaches a model hub: every model is the tiny one built locally, and a hub id a test names is served by
a stand-in. ``HF_HUB_OFFLINE`` is set here, before anything imports ``huggingface_hub`` (which reads it once, at
import), so that a lookup that slips through fails at once instead of waiting on network retries, in this process and
in every child process a test starts.
"""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist (addopts: 2 workers): one torch thread per worker, set before anything imports torch, and
    # inherited by every child process a test starts; two workers of 2 threads each on 2 cores spend their time
    # spinning against each other (measured: 148 s for the suite, against 93 s with one thread each)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import huggingface_hub.constants  # noqa: E402  (after the variable it reads at import)
import pytest  # noqa: E402
from hypothesis import is_hypothesis_test, settings  # noqa: E402

from recipe.models import tiny  # noqa: E402
from tests import forked  # noqa: E402
from tests.fault_injection import command, kill_after_save_env  # noqa: E402

huggingface_hub.constants.HF_HUB_OFFLINE = True  # in case a plugin imported it before this file ran

REPO = Path(__file__).resolve().parents[1]
QUICK_EXAMPLES, DEEP_EXAMPLES = 50, 300  # deep: at least what each fuzz test drew before the profiles (150-300)

# Registered here, before hypothesis' plugin loads the one --hypothesis-profile names, and before any test module
# builds its settings (which take the loaded profile's max_examples).
settings.register_profile("quick", max_examples=QUICK_EXAMPLES)
settings.register_profile("deep", max_examples=DEEP_EXAMPLES)
settings.load_profile("quick")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if is_hypothesis_test(getattr(item, "obj", None)):
            item.add_marker(pytest.mark.fuzz)
    if config.getoption("--run-slow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow (> ~20 s): run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_unconfigure(config):
    forked.stop()


def pytest_collection_finish(session):
    """Freeze the objects that importing and collecting left (~0.5 million: torch, transformers, trl, every test
    module): the full collections the recipe asks for (``gc.collect()`` after each evaluation and engine release)
    and the interpreter's own oldest-generation passes then skip them. Without this, those passes took ~80 of the
    suite's ~320 CPU seconds."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A cache folder holding the tiny local Qwen2 (built once per test session), for tests that only read it."""
    root = tmp_path_factory.mktemp("cache")
    tiny.build_tiny_qwen2(root / "tiny-qwen2")
    return root


def run_killed_after_save(args: list[str], entry_and_step: str, output: Path, timeout: int = 300) -> None:
    """Run ``cotrecipe <args>`` in a separate process (a fork of :mod:`tests.forked`'s server, which imported the
    libraries once) that SIGKILLs itself right after ``entry_and_step``'s checkpoint is saved (``"stage2:2"``: stage
    2's checkpoint-2; :mod:`tests.fault_injection`), and check that it died that way; its output goes to ``output``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **kill_after_save_env(entry_and_step)}
    done = forked.run(command(*args)[1:], output, env=env, timeout=timeout)
    assert done.returncode == -signal.SIGKILL, (
        f"the run should have killed itself after {entry_and_step}'s checkpoint (exit {done.returncode}):\n"
        f"{done.output[-3000:]}")


def first_table(text: str) -> list[str]:
    """The header and body lines of the first Markdown table in ``text`` (its separator line left out)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| ")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [line for line in lines[start:end] if line.startswith("| ")]
