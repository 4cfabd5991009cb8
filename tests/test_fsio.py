"""recipe.fsio and the filesystem errors a user can fix: an output directory that is a file, an unwritable location
and a full disk are one line naming the path and the cause (a full disk leaves the run resumable); atomic writes
get the umask's mode."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from recipe import fsio
from recipe.store import rundir
from tests.helpers import fake_trainers, one_error_line, run_all_no_eval


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "run"
    path.write_text("x", encoding="utf-8")
    line = one_error_line(run_all_no_eval(path))
    assert str(path) in line and "a file is in the way" in line, line


def test_an_unwritable_location_is_one_line(tmp_path):
    path = Path("/sys/cotrecipe-test-run")  # not writable even for root
    line = one_error_line(run_all_no_eval(path))
    assert str(path) in line and ("not permitted" in line or "denied" in line or "Read-only" in line), line


def test_a_full_disk_is_one_line_and_leaves_the_run_resumable(tmp_path, monkeypatch):
    """ENOSPC while a stage writes, and again when the manifest records the failure: one line, and the next start
    (disk freed) treats the stage as interrupted and trains it."""
    trained: list[str] = []
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "stage2" / "trainer"))
    fake_trainers(monkeypatch, trained, fail={"stage2": full})
    real_write_bytes = fsio.write_bytes

    def no_space_after_stage2_fails(path, payload):
        if Path(path).name == rundir.MANIFEST_FILE and b'"failed"' in payload:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write_bytes(path, payload)

    monkeypatch.setattr(fsio, "write_bytes", no_space_after_stage2_fails)
    run_dir = tmp_path / "run"
    line = one_error_line(run_all_no_eval(run_dir))
    assert "No space left on device (ENOSPC)" in line and "stage2" in line and "free space" in line, line
    assert rundir.load_manifest(run_dir)["entries"]["stage2"]["status"] == "running"  # could not write "failed"
    monkeypatch.setattr(fsio, "write_bytes", real_write_bytes)
    assert run_all_no_eval(run_dir).exit_code == 0
    assert trained == ["stage1", "stage2", "stage3"]
    assert rundir.load_manifest(run_dir)["entries"]["stage2"]["attempts"] == 2


def test_the_disk_full_message_names_path_and_cause():
    line = fsio.os_error_line(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"))
    assert line == "cannot write /mnt/ro/run: Read-only file system (EROFS); choose a writable --output-dir"
    assert fsio.os_error_line(OSError(errno.EPIPE, "Broken pipe")) is None  # not a user-fixable file error


def test_atomic_writes_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        fsio.write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        fsio.write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
