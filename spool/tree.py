"""Removing a directory tree of any depth: iterative, a bounded number of descriptors, never following.

A quarantined entry can be any tree a sender dropped, nested deeper than Python's recursion limit (and
than PATH_MAX). shutil.rmtree recurses (up to Python 3.12), so a tree 1,500 levels deep raised
RecursionError and ended the whole retention sweep. Here a sub-directory met inside a nested directory
is renamed up to the top of the tree being removed and handled there later: at most two directories
are open at once, every path is one name relative to an open directory, and each entry is touched once.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

_HOIST = ".gateway-rm-"
"""Names of sub-directories moved up to the top: never a name the gateway or a sender's file has there
(quarantined entries are ``<file_id>.<name>``, day folders hold transfer-code folders)."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it; symlinks are removed, never followed. A directory
    without owner rwx is given it (it is the gateway's own, in its state tree) and retried once.
    Raises OSError for what cannot be removed (the rest of the tree may be gone already)."""
    top = _open_dir(str(path), None)
    try:
        pending: list[str | None] = [None]  # None: the top itself
        hoisted = 0
        prefix = f"{_HOIST}{secrets.token_hex(6)}-"  # a sweep killed midway left others' names there
        while pending:
            name = pending.pop()
            fd = top if name is None else _open_dir(name, top)
            try:
                for entry in _list(fd):
                    if entry.is_dir(follow_symlinks=False):
                        if name is None:
                            pending.append(entry.name)
                            continue
                        hoisted += 1
                        moved = f"{prefix}{hoisted}"
                        os.rename(entry.name, moved, src_dir_fd=fd, dst_dir_fd=top)
                        pending.append(moved)
                    else:
                        os.unlink(entry.name, dir_fd=fd)
            finally:
                if fd != top:
                    os.close(fd)
            if name is not None:
                os.rmdir(name, dir_fd=top)
    finally:
        os.close(top)
    path.rmdir()


def _open_dir(name: str, parent: int | None) -> int:
    """Open a directory to list and empty it: with owner rwx added if it lacks them."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            raise
        os.chmod(name, stat.S_IMODE(info.st_mode) | stat.S_IRWXU, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & stat.S_IRWXU != stat.S_IRWXU:
            os.fchmod(fd, mode | stat.S_IRWXU)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _list(fd: int) -> list[os.DirEntry[str]]:
    """The entries of an open directory, read whole before any of them is changed."""
    with os.scandir(fd) as entries:
        return list(entries)
