"""Config files under attack: one clear ConfigError line, bounded time and memory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from recipe.config.core import ConfigError, parse_override, resolve
from recipe.config.safe_yaml import MAX_BYTES
from recipe.errors import short_repr

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


def config_error(tmp_path: Path, payload: bytes) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(payload)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        resolve(preset="smoke", config_file=path)
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert "Traceback" not in message
    assert "\n" not in message and len(message) < 400, message[:500]
    return message


def test_non_utf8_file(tmp_path: Path) -> None:
    assert "not UTF-8" in config_error(tmp_path, b"run:\n  seed: 1\xff\n")


@pytest.mark.parametrize("payload", ["[" * 100_000 + "]" * 100_000, "{a: " * 50_000 + "}" * 50_000, "- " * 5_000 + "x"])
def test_deep_nesting(tmp_path: Path, payload: str) -> None:
    message = config_error(tmp_path, payload.encode())
    assert "nested deeper than" in message or "not valid YAML" in message


def test_alias_bomb_is_refused_before_expanding(tmp_path: Path) -> None:
    assert len(BOMB) < 400
    assert "expands to over" in config_error(tmp_path, BOMB.encode())


@pytest.mark.parametrize("value", ["!!int abc", "!!float x", "!!timestamp 2020-13-01", "1" * 5_000])
def test_a_scalar_yaml_cannot_read_is_one_line(tmp_path: Path, value: str) -> None:
    """PyYAML raises a bare ValueError for these (a tag's constructor; Python's 4,300-digit limit on int())."""
    assert "not valid YAML" in config_error(tmp_path, f"run:\n  seed: {value}\n".encode())
    with pytest.raises(ConfigError, match="'run.seed'"):  # --set reads text that is not YAML as text
        resolve(preset="smoke", overrides=[f"run.seed={value}"])


def test_oversized_file(tmp_path: Path) -> None:
    assert "more than a config may hold" in config_error(tmp_path, b"# " + b"x" * MAX_BYTES + b"\n")


def test_long_values_are_cut_in_messages(tmp_path: Path) -> None:
    message = config_error(tmp_path, b"run:\n  seed: " + b"x" * 50_000 + b"\n")
    assert "run.seed" in message and "..." in message
    small_bomb = "run: {seed: [&a [" + ", ".join(["x" * 60] * 40) + "], " + ", ".join(["*a"] * 40) + "]}\n"
    assert "run.seed" in config_error(tmp_path, small_bomb.encode())


def test_anchors_within_bounds_still_work(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("run: &r {seed: 7}\n", encoding="utf-8")
    assert resolve(preset="smoke", config_file=path).run.seed == 7


def test_override_values_are_bounded_too() -> None:
    with pytest.raises(ConfigError, match="--set run.seed is refused"):
        parse_override("run.seed=" + "[" * 10_000 + "]" * 10_000)
    assert parse_override("run.tag=a: b: c")[1] == "a: b: c"  # not YAML: kept as text


def test_short_repr_is_bounded() -> None:
    assert len(short_repr("y" * 10**6)) <= 83 and len(short_repr(list(range(10**5)))) <= 83
