"""read_small: a small claimed file (synced and) read in one open; stage and publish: write_atomic in
two halves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spool.fsio import Contents, publish, read_small, stage


def test_a_small_file_is_read_whole_with_its_mtime(tmp_path: Path) -> None:
    path = tmp_path / "f.TXT"
    path.write_bytes(b"a|b\n" * 1000)
    os.utime(path, ns=(1, 1_700_000_000_123_456_789))
    contents = read_small(path, limit=4000, datasync=True)
    assert contents is not None
    assert contents.data == b"a|b\n" * 1000
    assert contents.mtime_ns == 1_700_000_000_123_456_789


def test_an_empty_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    contents = read_small(tmp_path / "empty", limit=10, datasync=True)
    assert contents is not None and contents.data == b""


def test_a_file_over_the_limit_is_left_to_the_slow_path(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 4001)
    assert read_small(path, limit=4000, datasync=True) is None
    assert read_small(path, limit=4001, datasync=True) is not None


def test_a_fifo_is_not_waited_for(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_small(fifo, limit=4000, datasync=True) is None  # no writer: a blocking open would hang here


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(OSError):
        read_small(tmp_path / "link", limit=4000, datasync=True)


def test_a_file_that_grew_after_its_stat_is_left_to_the_slow_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer still holding the file appends right after read_small stated (and so synced) it: the
    bytes beyond those synced must not come back as the file's content (the slow path reads a file
    still being written in bounded chunks)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    real_fstat = os.fstat
    with path.open("ab") as writer:

        def fstat_then_append(fd: int) -> os.stat_result:
            info = real_fstat(fd)
            writer.write(b"y" * 50)
            writer.flush()
            return info

        monkeypatch.setattr(os, "fstat", fstat_then_append)
        assert read_small(path, limit=4000, datasync=True) is None
        monkeypatch.setattr(os, "fstat", real_fstat)
    assert read_small(path, limit=4000, datasync=True) == Contents(
        b"x" * 100 + b"y" * 50, path.stat().st_mtime_ns
    )


def test_stage_leaves_the_name_alone_until_publish(tmp_path: Path) -> None:
    final = tmp_path / "r_OK.TXT"
    final.write_bytes(b"old")
    tmp = stage(final, b"new", sync=False)
    assert tmp.parent == tmp_path and tmp.name.startswith(".") and final.read_bytes() == b"old"
    publish(tmp, final)
    assert final.read_bytes() == b"new" and not tmp.exists()
    taken = stage(final, b"newer")
    with pytest.raises(FileExistsError):
        publish(taken, final, replace=False)
    assert final.read_bytes() == b"new" and not taken.exists()
