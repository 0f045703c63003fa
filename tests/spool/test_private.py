"""The gateway's own copy of a claimed file: kept when nobody else can write it, else a new inode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spool.private import make_private

DATA = b"41210000|row|one\n" * 100


def put(path: Path) -> Path:
    path.write_bytes(DATA)
    return path


def test_a_file_nobody_else_can_write_is_kept_as_it_is(tmp_path: Path) -> None:
    path = put(tmp_path / "a.TXT")
    inode = path.stat().st_ino
    assert make_private(path, 1 << 20) is False
    assert path.stat().st_ino == inode


def test_a_file_with_another_link_is_copied_and_the_link_no_longer_reaches_it(tmp_path: Path) -> None:
    path = put(tmp_path / "a.TXT")
    senders = tmp_path / "senders-own"
    os.link(path, senders)
    assert make_private(path, 1 << 20) is True
    senders.write_bytes(DATA.replace(b"41210000", b"41220000"))
    assert path.read_bytes() == DATA and path.stat().st_nlink == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_file_with_a_writable_handle_is_copied(tmp_path: Path) -> None:
    path = put(tmp_path / "a.TXT")
    mtime = path.stat().st_mtime_ns
    fd = os.open(path, os.O_WRONLY)
    try:
        assert make_private(path, 1 << 20) is True
        os.pwrite(fd, b"X" * 8, 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == DATA
    assert path.stat().st_mtime_ns == mtime  # a later write must still show as a newer mtime


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_a_file_another_account_owns_is_copied(tmp_path: Path) -> None:
    """The sender's account could open it again through a path of its own: never trusted."""
    path = put(tmp_path / "a.TXT")
    os.chown(path, 12345, 12345)
    assert make_private(path, 1 << 20) is True
    assert path.stat().st_uid == 0


def test_a_file_over_the_limit_is_left_for_its_size_finding(tmp_path: Path) -> None:
    path = put(tmp_path / "a.TXT")
    os.link(path, tmp_path / "b")
    assert make_private(path, 10) is False
