"""Many paths made durable at once: an fsync each, or for a burst one syncfs per filesystem.

A syncfs writes everything dirty on a filesystem with one cache flush: what the fsyncs of hundreds of
small files would have written, for less than half their kernel time. It is trusted only where it
reports what failed: Linux 5.17 or later, and a local disk filesystem (on a network or FUSE filesystem
it may not push each file to the server as fsync does).

Write-back errors are counted per open descriptor (errseq): a syncfs reports those of the whole
filesystem since its descriptor last looked, a file's own since the file was opened, unless another
descriptor already reported them. So each filesystem's descriptor is held open (a directory of it),
and after its syncfs every file of the batch is checked on a fresh descriptor (``sync_file_range``,
which writes nothing more and flushes no cache): a file whose pages were written back, and failed,
before this batch, its error taken by an earlier batch's syncfs, still fails here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from spool.fsio import fsync_path, libc

SYNCFS_FROM = 32
"""From this many paths on, a batch is one syncfs per filesystem instead of an fsync each. A 1 KiB
durable file costs ~230 us of kernel time fsynced alone, ~100 us as one of thousands in a syncfs; a
syncfs for a handful of paths costs what their fsyncs do (measured with 8 and 32 threads)."""

SYNCFS_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "f2fs", "tmpfs"})
"""Filesystems whose syncfs writes what an fsync of each file would; any other is fsynced path by path
(btrfs too: its subvolumes' device numbers are not the mount's, so it could not be looked up)."""

_syncfs = getattr(libc, "syncfs", None)
_sync_file_range = getattr(libc, "sync_file_range", None)
_WAIT_WRITE_WAIT = 1 | 2 | 4  # SYNC_FILE_RANGE_WAIT_BEFORE | _WRITE | _WAIT_AFTER


def _kernel_at_least(major: int, minor: int) -> bool:
    numbers = os.uname().release.split("-")[0].split(".")
    try:
        return (int(numbers[0]), int(numbers[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


SYNCFS_REPORTS_ERRORS = _syncfs is not None and _sync_file_range is not None and _kernel_at_least(5, 17)
"""Before Linux 5.8 syncfs returned 0 whatever failed to reach the disk, and before 5.17 it dropped the
filesystem's own failure (a journal commit that failed): there only fsync is trusted."""
_REFUSED = (errno.ENOSYS, errno.EPERM, errno.EINVAL)  # not allowed here (seccomp) or not implemented


@dataclass
class _Filesystem:
    fd: int | None  # a directory of it, held open; None: not one syncfs is trusted on
    lock: threading.Lock = field(default_factory=threading.Lock)  # one syncfs at a time per descriptor


_filesystems: dict[int, _Filesystem] = {}  # by st_dev, for the process's life
_filesystems_guard = threading.Lock()


def sync_paths(paths: Iterable[Path]) -> dict[Path, OSError]:
    """Make every path (a file's bytes and metadata, a directory's entries) durable; the failures by path.

    From ``SYNCFS_FROM`` paths on, one syncfs per trusted filesystem; a failed syncfs fails every path
    of its filesystem. Otherwise an fsync each.
    """
    unique = list(dict.fromkeys(paths))
    failed: dict[Path, OSError] = {}
    if len(unique) < SYNCFS_FROM or not SYNCFS_REPORTS_ERRORS:
        _fsync_each(unique, failed)
        return failed
    by_device: dict[int, list[tuple[Path, os.stat_result]]] = {}
    for path in unique:
        try:
            info = path.stat()
        except OSError as exc:
            failed[path] = exc
            continue
        by_device.setdefault(info.st_dev, []).append((path, info))
    for device, members in by_device.items():
        try:
            filesystem = _filesystem(device, members)
        except OSError as exc:
            failed.update(dict.fromkeys((path for path, _ in members), exc))
            continue
        if filesystem.fd is None or not _syncfs_each(filesystem, members, failed):
            _fsync_each([path for path, _ in members], failed)
    return failed


def trusts_syncfs(path: Path) -> bool:
    """Whether a large batch on ``path``'s filesystem would be one syncfs (else an fsync each)."""
    return SYNCFS_REPORTS_ERRORS and _mount_type(path.stat().st_dev) in SYNCFS_TYPES


def _fsync_each(paths: list[Path], failed: dict[Path, OSError]) -> None:
    for path in paths:
        try:
            fsync_path(path)
        except OSError as exc:
            failed[path] = exc


def _syncfs_each(
    filesystem: _Filesystem, members: list[tuple[Path, os.stat_result]], failed: dict[Path, OSError]
) -> bool:
    """One syncfs for ``members``, then each file's own check; False if syncfs is refused here (the
    filesystem is then fsynced path by path from now on)."""
    with filesystem.lock:
        if filesystem.fd is None:
            return False
        if _syncfs(filesystem.fd) != 0:  # type: ignore[misc]
            err = ctypes.get_errno()
            if err in _REFUSED:
                os.close(filesystem.fd)
                filesystem.fd = None
                return False
            error = OSError(err, f"syncfs: {os.strerror(err)}", str(members[0][0]))
            failed.update(dict.fromkeys((path for path, _ in members), error))
            return True
    for path, info in members:
        if stat.S_ISREG(info.st_mode):
            try:
                _check_written(path)
            except OSError as exc:
                failed[path] = exc
    return True


def _check_written(path: Path) -> None:
    """Raise the file's own write-back error not yet reported to anyone (its pages are clean by now)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(0), _WAIT_WRITE_WAIT) != 0:  # type: ignore[misc]
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def _filesystem(device: int, members: list[tuple[Path, os.stat_result]]) -> _Filesystem:
    """The filesystem's entry, made on first sight (outside the lock: opening a directory of a core
    mount that hangs must not hold up the other filesystems' batches)."""
    with _filesystems_guard:
        known = _filesystems.get(device)
    if known is not None:
        return known
    filesystem = _Filesystem(None)
    if _mount_type(device) in SYNCFS_TYPES:
        path, info = members[0]
        directory = path if stat.S_ISDIR(info.st_mode) else path.parent
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        if os.fstat(fd).st_dev != device:  # replaced since its stat: asked again next batch
            os.close(fd)
            raise OSError(errno.ESTALE, f"{directory} changed filesystems while being synced")
        filesystem.fd = fd
    with _filesystems_guard:
        known = _filesystems.setdefault(device, filesystem)
    if known is not filesystem and filesystem.fd is not None:
        os.close(filesystem.fd)  # another thread got there first
    return known


def _mount_type(device: int) -> str | None:
    """The filesystem type mounted as ``device`` (from /proc/self/mountinfo), or None if not found."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        with Path("/proc/self/mountinfo").open(encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == wanted and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:
        return None
    return None
