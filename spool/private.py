"""The gateway's own copy of a claimed file: after it is taken, the sender cannot change what is kept.

A claim renames the sender's inode into ``work/``. The sender may still reach that inode: through
another hard link (it linked a file of its own into ``in/``) or a handle it kept open (written in
place, or open after the rename). Validated, archived, quarantined or linked to the core, that inode
could then be rewritten after the fact. ``make_private`` keeps the inode only when nobody else can
write it, else it puts a copy (a new inode) at the same name in ``work/``.

The inode is provably private when it has one link (``work/`` is the gateway's: no other path to it)
and no open writable handle anywhere: a read lease (``F_SETLEASE``, ``F_RDLCK``) is granted only then.
The kernel grants a lease only to the file's owner (or with CAP_LEASE): a file a sender's own account
wrote is always copied.
"""

from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from spool.entries import open_regular
from spool.fsio import publish, read_exactly, temp_name

_CHUNK = 8 * 1024 * 1024


def is_private(fd: int, info: os.stat_result) -> bool:
    """No other link, no writable handle: nobody but the gateway can change the file's bytes."""
    if info.st_nlink != 1 or info.st_uid != os.geteuid():
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:  # EAGAIN: open for writing somewhere; EINVAL: no leases on this filesystem
        return False
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return True


def make_private(path: Path, limit: int) -> bool:
    """Make the regular file at ``path`` the gateway's own; True when that took a copy. The copy is
    fsynced before it takes the name: the sender's inode leaves ``work/`` only for durable bytes."""
    staged = stage_private(path, limit, sync=True)
    if staged is None:
        return False
    publish(staged, path, replace=True)
    return True


def stage_private(path: Path, limit: int, *, sync: bool) -> Path | None:
    """The first half of ``make_private``: None when the file at ``path`` is private already, else a
    copy beside it under a temp name, for ``publish(copy, path)``. With ``sync=False`` the caller makes
    the copy durable (with other files' at once) before it publishes it.

    The copy holds the bytes there when it began (a file over ``limit`` is rejected for its size, and
    a sparse giant is not worth copying: it stays as it is), with the original's timestamps and its mode
    without execute or group/other write bits."""
    fd = open_regular(path)
    try:
        info = os.fstat(fd)
        if info.st_size > limit or is_private(fd, info):
            return None
        tmp = temp_name(path)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                _copy(fd, out, info.st_size)
                os.fchmod(out, stat.S_IMODE(info.st_mode) & 0o644)
                os.utime(out, ns=(info.st_atime_ns, info.st_mtime_ns))
                if sync:
                    os.fsync(out)
            finally:
                os.close(out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Small:
    """A small claimed file's bytes, and the private copy of them to publish at its name."""

    data: bytes
    mtime_ns: int  # the file's, and its copy's
    staged: Path | None  # None: the file is private already


def take_small(path: Path, limit: int) -> Small | None:
    """``stage_private(sync=False)`` and ``read_small`` in one open, for a burst: a file of at most ``limit``
    bytes is read once, and the copy (unless the file is private already) is written from those very
    bytes. The caller syncs the copy, or the private file, with other files' before it publishes the copy
    (``publish(staged, path)``) or acknowledges anything. None for a larger file or one whose size changed
    while it was read: the one-file path takes it."""
    fd = open_regular(path)
    try:
        info = os.fstat(fd)
        if info.st_size > limit:
            return None
        private = is_private(fd, info)  # before the read: then nobody can change what is read
        data = read_exactly(fd, info.st_size)
        if data is None:
            return None
        if private:
            return Small(data, info.st_mtime_ns, None)
        tmp = temp_name(path)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view) :]
                os.fchmod(out, stat.S_IMODE(info.st_mode) & 0o644)
                os.utime(out, ns=(info.st_atime_ns, info.st_mtime_ns))
            finally:
                os.close(out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Small(data, info.st_mtime_ns, tmp)
    finally:
        os.close(fd)


def _copy(src: int, dst: int, size: int) -> None:
    """``size`` bytes from the start of ``src``: in the kernel where it can (copy_file_range), else
    read and write; fewer if the file was cut meanwhile."""
    offset = 0
    try:
        while offset < size:
            done = os.copy_file_range(src, dst, min(_CHUNK, size - offset), offset, offset)
            if done == 0:
                return
            offset += done
        return
    except OSError:  # EXDEV, ENOSYS, EINVAL on some filesystems: the plain way, from where it stopped
        pass
    while offset < size:
        chunk = os.pread(src, min(_CHUNK, size - offset), offset)
        if not chunk:
            return
        written = 0
        while written < len(chunk):
            written += os.pwrite(dst, chunk[written:], offset + written)
        offset += written
