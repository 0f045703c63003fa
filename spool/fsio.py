"""Durable file-system primitives: fsync discipline and hand-offs that never overwrite.

Every acknowledged step of the gateway rests on these: data fsynced, then the directory entry fsynced.
A failed fsync raises; callers must treat the step as not done (never retry as if it had succeeded).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
"""The C library, errno kept, for the calls Python's os module lacks (renameat2, syncfs, ...)."""
_renameat2 = getattr(libc, "renameat2", None)


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (creates, renames, unlinks) durable."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def fsync_path(path: Path) -> None:
    """Make a file's bytes and metadata, or a directory's entries, durable."""
    _fsync(path, os.O_RDONLY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def datasync_file(path: Path) -> None:
    """Make a file's bytes durable (and what reading them back needs: its size and blocks), not its
    timestamps: a file already on disk and merely renamed costs no write."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Contents:
    """A small file's bytes."""

    data: bytes
    mtime_ns: int  # taken before the bytes were read: a later write shows as a newer one


def read_small(path: Path, limit: int, *, datasync: bool) -> Contents | None:
    """A regular file of at most ``limit`` bytes, read whole in one open (a claimed file is read anyway,
    to validate it), after ``datasync_file`` if asked (else the caller makes it durable, with other
    files at once, before it acknowledges anything). ``None`` for a larger file, one that is not regular,
    or one whose size changed after its stat (someone still writes it: bytes beyond those stated, and
    synced, must not be acknowledged, nor read without bound): such a file gets the slow path, which
    syncs it in a thread of its own (that may take seconds) and reads it in bounded chunks."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        if datasync:
            os.fdatasync(fd)
        data = read_exactly(fd, info.st_size)
        return None if data is None else Contents(data, info.st_mtime_ns)
    finally:
        os.close(fd)


def read_exactly(fd: int, size: int) -> bytes | None:
    """The ``size`` bytes from ``fd``'s position to its end; None if there are fewer or more (the file
    changed after the stat that gave ``size``)."""
    wanted = size + 1  # one byte more shows a file that grew
    chunks, got = [], 0
    while got < wanted and (chunk := os.read(fd, wanted - got)):
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks) if got == size else None


def makedirs_durable(path: Path) -> None:
    """Create ``path`` and its missing parents, fsyncing each parent so that they survive a crash."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        # Created by someone else meanwhile: still fsync, as they may not have yet.
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        fsync_dir(directory.parent)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, raising FileExistsError instead of replacing an existing ``dst``.

    Uses renameat2(RENAME_NOREPLACE) where the kernel and filesystem support it, else link + unlink
    (which also never replaces, and leaves both names only if killed in between: ``dst`` is complete).
    """
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    os.link(src, dst, follow_symlinks=False)
    src.unlink()


def move_durable(src: Path, dst: Path) -> None:
    """Hand a file from one state directory to another: rename without replacing, fsync both dirs."""
    rename_noreplace(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


_NAME_MAX = 255
_TEMP_EXTRA = len(".") + 8 + len("..tmp")


def temp_name(final: Path) -> Path:
    """A hidden temporary name beside ``final``: never picked up, removed by recovery if left behind.

    ``final`` may already use the whole 255 bytes a name can have: its part in the temp name is cut
    (at a character) so the temp name fits too.
    """
    stem = final.name
    while len(os.fsencode(stem)) + _TEMP_EXTRA > _NAME_MAX:
        stem = stem[:-1]
    return final.with_name(f".{stem}.{secrets.token_hex(4)}.tmp")


def write_atomic(
    path: Path, data: bytes, *, replace: bool = True, mode: int = 0o644, sync_dir: bool = True
) -> None:
    """Write ``data`` to ``path`` all or nothing: temp file, fsync, rename, fsync the directory.

    With ``sync_dir=False`` the caller fsyncs the directory (for many files at once) before it
    acknowledges the file."""
    publish(stage(path, data, mode=mode), path, replace=replace)
    if sync_dir:
        fsync_dir(path.parent)


def stage(path: Path, data: bytes, *, mode: int = 0o644, sync: bool = True) -> Path:
    """The first half of ``write_atomic``: ``data`` in a new temp file beside ``path``, returned. With
    ``sync=False`` the caller makes it durable (with many others, ``sync_paths``) before ``publish``:
    the name must never reach the disk before the bytes it names."""
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(tmp: Path, path: Path, *, replace: bool = True) -> None:
    """The second half of ``write_atomic``: rename the durable ``tmp`` to ``path`` (or, with
    ``replace=False``, raise FileExistsError if ``path`` exists); ``tmp`` is gone either way. The caller
    fsyncs ``path``'s directory."""
    try:
        if replace:
            tmp.replace(path)
        else:
            rename_noreplace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def same_filesystem(*paths: Path) -> bool:
    devices = {p.stat().st_dev for p in paths}
    return len(devices) <= 1
