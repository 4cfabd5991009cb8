"""Tests marked ``slow`` (more than ~20 s on 2 CPU cores) run only with ``--run-slow`` (or ``-m slow``), so the default
run stays a quick loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe import tiny


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow (> ~20 s): run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A cache folder holding the tiny local Qwen2 (built once per test module), for tests that only read it."""
    root = tmp_path_factory.mktemp("cache")
    tiny.build_tiny_qwen2(root / "tiny-qwen2")
    return root
