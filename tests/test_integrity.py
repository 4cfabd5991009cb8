"""recipe.models.integrity: a weights file is judged by safetensors' own reader, and a cut-off file is named as
truncated with its size against the size its header promises."""

from __future__ import annotations

import json
import struct

from recipe.models.integrity import weights_file_problem
from tests.helpers import safetensors_bytes


def test_a_safetensors_file_is_judged_by_safetensors_own_reader(tmp_path):
    """What safetensors refuses to load is damaged, including what a hand parser of the header let through (bytes
    past the last tensor, offsets that disagree with a tensor's shape); an intact file passes."""
    good = safetensors_bytes()
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    cases = {"intact": good, "cut in half": good[: len(good) // 2], "a byte past the end": good + b"\0",
             "offsets disagree with the shape": struct.pack("<Q", len(header)) + header + b"\0" * 8,
             "header is not JSON": struct.pack("<Q", 5) + b"{abc}"}
    found = {}
    for name, payload in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(payload)
        found[name] = weights_file_problem(path)
    assert found.pop("intact") is None
    assert found.pop("cut in half").startswith("not readable by safetensors (")  # the header itself is cut
    for name, problem in found.items():
        assert problem is not None and problem.startswith("not readable by safetensors ("), (name, problem)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[:-3])
    assert weights_file_problem(cut).startswith(f"truncated ({len(good) - 3} of {len(good)} bytes; safetensors: ")
    assert "JSON" in found["header is not JSON"]
