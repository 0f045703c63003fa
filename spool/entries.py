"""What is in an inbox, found by lstat alone: nothing here follows a symlink or opens what could block."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from spool.errors import SpoolError

TEMP_SUFFIXES = (".tmp", ".part", ".filepart")  # spec 2, plus WinSCP's resumable uploads


class EntryKind(StrEnum):
    REGULAR = "regular"
    SYMLINK = "symlink"
    DIRECTORY = "directory"
    FIFO = "fifo"
    SOCKET = "socket"
    DEVICE = "device"
    VANISHED = "vanished"


class NotRegularFileError(SpoolError):
    """The path is not a regular file, so it is not opened (or was closed at once): quarantine it."""

    def __init__(self, path: Path, kind: EntryKind) -> None:
        self.path = path
        self.kind = kind
        super().__init__(f"{path} is not a regular file but a {kind}")


@dataclass(frozen=True, slots=True)
class InboxEntry:
    name: str
    kind: EntryKind
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int


def kind_of(mode: int) -> EntryKind:
    if stat.S_ISREG(mode):
        return EntryKind.REGULAR
    if stat.S_ISLNK(mode):
        return EntryKind.SYMLINK
    if stat.S_ISDIR(mode):
        return EntryKind.DIRECTORY
    if stat.S_ISFIFO(mode):
        return EntryKind.FIFO
    if stat.S_ISSOCK(mode):
        return EntryKind.SOCKET
    return EntryKind.DEVICE  # character or block: the only file types left on Linux


def classify(path: Path) -> EntryKind:
    try:
        return kind_of(path.lstat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return EntryKind.VANISHED


def is_temp_name(name: str) -> bool:
    """A writer's temporary name (spec 2): never taken, however long it stays."""
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES)


def list_inbox(path: Path) -> list[InboxEntry]:
    """The entries of ``path`` that may be taken (not temp names), sorted by name, one lstat each."""
    found: list[InboxEntry] = []
    with os.scandir(path) as entries:
        for entry in entries:
            if is_temp_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found.append(
                InboxEntry(
                    name=entry.name,
                    kind=kind_of(st.st_mode),
                    size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                    ctime_ns=st.st_ctime_ns,
                    ino=st.st_ino,
                    dev=st.st_dev,
                )
            )
    found.sort(key=lambda e: e.name)
    return found


def open_regular(path: Path) -> int:
    """Open a regular file read-only; anything else raises NotRegularFileError and is never followed.

    The lstat check keeps devices and sockets from being opened at all; O_NOFOLLOW and O_NONBLOCK make
    the open itself safe should the entry be swapped in between, and fstat decides.
    """
    kind = classify(path)
    if kind is EntryKind.VANISHED:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    if kind is not EntryKind.REGULAR:
        raise NotRegularFileError(path, kind)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # swapped for a symlink, a socket or a device
            raise NotRegularFileError(path, classify(path)) from exc
        raise
    kind = kind_of(os.fstat(fd).st_mode)
    if kind is not EntryKind.REGULAR:
        os.close(fd)
        raise NotRegularFileError(path, kind)
    return fd
