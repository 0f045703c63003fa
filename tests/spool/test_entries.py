from __future__ import annotations

import os
from pathlib import Path

import pytest

from spool.entries import EntryKind, NotRegularFileError, classify, is_temp_name, list_inbox, open_regular
from tests.spool.helpers import make_socket


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """One entry of every kind."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "file.TXT").write_bytes(b"12345")
    (tmp_path / "target").write_bytes(b"outside")
    (d / "link").symlink_to(tmp_path / "target")
    (d / "dangling").symlink_to(tmp_path / "nowhere")
    (d / "dir").mkdir()
    os.mkfifo(d / "fifo")
    make_socket(d / "sock")
    return d


def test_classify_by_lstat(zoo: Path) -> None:
    assert classify(zoo / "file.TXT") is EntryKind.REGULAR
    assert classify(zoo / "link") is EntryKind.SYMLINK
    assert classify(zoo / "dangling") is EntryKind.SYMLINK
    assert classify(zoo / "dir") is EntryKind.DIRECTORY
    assert classify(zoo / "fifo") is EntryKind.FIFO
    assert classify(zoo / "sock") is EntryKind.SOCKET
    assert classify(Path("/dev/null")) is EntryKind.DEVICE
    assert classify(zoo / "gone") is EntryKind.VANISHED
    assert classify(zoo / "file.TXT" / "below") is EntryKind.VANISHED


@pytest.mark.parametrize(
    "name",
    [
        ".x.TXT",
        ".",
        "A.TXT.tmp",
        "A.TXT.part",
        ".A.TXT.1a2b3c4d.tmp",
        "A.TMP",
        "A.TXT.PART",
        "A.TXT.filepart",
    ],
)
def test_temp_names(name: str) -> None:
    assert is_temp_name(name)


@pytest.mark.parametrize("name", ["A.TXT", "A.tmp.TXT", "A.partial", "tmp", "A.ZIP", "A.TXTpart"])
def test_not_temp_names(name: str) -> None:
    assert not is_temp_name(name)


def test_list_inbox_reports_kinds_and_stats_without_temp_names(zoo: Path) -> None:
    (zoo / ".hidden").write_bytes(b"")
    (zoo / "A.TXT.part").write_bytes(b"")
    entries = {e.name: e for e in list_inbox(zoo)}
    assert list(entries) == sorted(["file.TXT", "link", "dangling", "dir", "fifo", "sock"])
    assert {n: e.kind for n, e in entries.items()} == {
        "file.TXT": EntryKind.REGULAR,
        "link": EntryKind.SYMLINK,
        "dangling": EntryKind.SYMLINK,
        "dir": EntryKind.DIRECTORY,
        "fifo": EntryKind.FIFO,
        "sock": EntryKind.SOCKET,
    }
    st = (zoo / "file.TXT").stat()
    f = entries["file.TXT"]
    assert (f.size, f.mtime_ns, f.ctime_ns, f.ino, f.dev) == (
        5,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        st.st_dev,
    )
    assert entries["link"].size == len(str(zoo.parent / "target"))  # the link itself, not its target


def test_open_regular_reads_a_regular_file(zoo: Path) -> None:
    fd = open_regular(zoo / "file.TXT")
    try:
        assert os.read(fd, 100) == b"12345"
    finally:
        os.close(fd)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("link", EntryKind.SYMLINK),
        ("dangling", EntryKind.SYMLINK),
        ("dir", EntryKind.DIRECTORY),
        ("fifo", EntryKind.FIFO),
        ("sock", EntryKind.SOCKET),
    ],
)
def test_open_regular_refuses_everything_else_without_blocking(zoo: Path, name: str, kind: EntryKind) -> None:
    with pytest.raises(NotRegularFileError) as caught:
        open_regular(zoo / name)
    assert caught.value.kind is kind
    assert caught.value.path == zoo / name


@pytest.mark.timeout(10)
def test_open_regular_never_follows_a_symlink_to_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "fifo")
    with pytest.raises(NotRegularFileError) as caught:
        open_regular(tmp_path / "link")
    assert caught.value.kind is EntryKind.SYMLINK


def test_open_regular_refuses_a_device() -> None:
    with pytest.raises(NotRegularFileError) as caught:
        open_regular(Path("/dev/null"))
    assert caught.value.kind is EntryKind.DEVICE


def test_open_regular_on_a_vanished_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "gone")
