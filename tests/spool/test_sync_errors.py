"""sync_paths on a disk that fails writes: no file is reported durable whose bytes did not reach it.

A real ext4 filesystem on a loop device whose backing file lives in an 8 MB tmpfs: the filesystem
believes it has 64 MB, so write-back beyond the tmpfs's room fails (ENOSPC or EIO), as a failing disk
would. Needs root (mount, losetup), as the fault suite's other filesystems do.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spool.sync import SYNCFS_FROM, SYNCFS_REPORTS_ERRORS
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not SYNCFS_REPORTS_ERRORS, reason="needs root for a loop device, and syncfs"
)


def _run(*command: str | Path) -> str:
    return subprocess.run(
        [str(c) for c in command], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def _unmount(path: Path) -> None:
    """Unmount; lazily if it is still busy (a process of the test left behind), never leaving it."""
    try:
        _run("umount", path)
    except subprocess.CalledProcessError:
        _run("umount", "--lazy", path)


@pytest.fixture
def failing_disk(tmp_path: Path) -> Iterator[Path]:
    backing, mount = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mount.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", backing)
    try:
        image = backing / "disk.img"
        _run("truncate", "-s", "64M", image)
        _run(
            "mkfs.ext4",
            "-q",
            "-b",
            "4096",
            "-O",
            "^has_journal",
            "-N",
            "2048",
            "-E",
            "lazy_itable_init=0",
            image,
        )
        loop = _run("losetup", "--find", "--show", image).strip()
        try:
            _run("mount", loop, mount)
            try:
                yield mount
            finally:
                _unmount(mount)
        finally:
            _run("losetup", "--detach", loop)
    finally:
        _unmount(backing)


_SCENARIO = """
import json, os, sys
from pathlib import Path
from spool.sync import SYNCFS_FROM, sync_paths

def written_back(path, size):
    # write, and start the write-back now, as the kernel's flusher would in its own time
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, os.urandom(size))
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)

def failures(paths):
    return {p.name: e.errno for p, e in sync_paths(paths).items()}

disk = Path(sys.argv[1])
others = [disk / f"other{n}" for n in range(SYNCFS_FROM + 8)]
for path in others:
    path.write_bytes(b"o" * 1024)
print(json.dumps(failures(others)))
filler = disk / "filler"
written_back(filler, 12 << 20)
fd = os.open(filler, os.O_RDONLY)
try:
    os.fsync(fd)  # waits until the disk is full: what is written next cannot reach it
except OSError:
    pass
os.close(fd)
claimed = disk / "claimed"
written_back(claimed, 65536)
print(json.dumps(failures(others)))
print(json.dumps(failures([claimed, *others])))
"""


def test_a_file_whose_write_back_failed_before_its_batch_is_not_reported_durable(
    failing_disk: Path,
) -> None:
    """Other files are synced (the filesystem's descriptor is opened and held); then more is written
    than the disk has room for, and, once it is full, a claimed file whose write-back fails before
    its own batch. The
    next batch's syncfs reports the failure, which is the filesystem's: every path of it fails,
    though none of them was lost. The lost file's own batch has nothing new for syncfs to report; the
    file's own check must fail it. (In a process of its own: the held descriptor keeps the
    filesystem mounted while its process lives.)"""
    result = subprocess.run(
        [sys.executable, "-c", _SCENARIO, str(failing_disk)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    clean, next_batch, own_batch = (json.loads(line) for line in result.stdout.splitlines())
    others = {f"other{n}" for n in range(SYNCFS_FROM + 8)}
    assert clean == {}
    assert set(next_batch) == others
    assert set(own_batch) >= {"claimed"}
    assert own_batch["claimed"] in (errno.ENOSPC, errno.EIO)
