"""One daemon per spool root: an flock the kernel drops when its holder dies, even by SIGKILL."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from spool.errors import SpoolError, SpoolLocked

LOCK_NAME = ".gateway.lock"

_held: set[int] = set()


def _close_in_child() -> None:
    """A forked child (a process-pool worker) must not keep the lock alive after the daemon dies."""
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class SpoolLock:
    """``with SpoolLock(root):`` holds ``<root>/.gateway.lock``, this pid in it, or raises SpoolLocked."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> SpoolLock:
        try:
            fd = open_lock_file(self.path)
        except FileNotFoundError:
            raise SpoolError(f"spool root {self.path.parent} does not exist") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise SpoolLocked(self.path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _held.add(fd)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _held.discard(fd)
        try:
            os.ftruncate(fd, 0)  # no stale pid for the next reader
        finally:
            os.close(fd)  # releases the lock


def open_lock_file(path: Path, mode: int = 0o644) -> int:
    """A lock file's descriptor, the file made if missing; never through a symlink, never inherited."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


WORKERS_LOCK_NAME = ".gateway-workers.lock"


def hold_shared(root: Path) -> int:
    """A gateway process takes ``<root>/.gateway-workers.lock`` shared for as long as it lives (the
    kernel drops it when the process dies): its supervisor's successor waits for it to be free."""
    fd = open_lock_file(root / WORKERS_LOCK_NAME)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held.add(fd)
    return fd


def wait_until_free(root: Path, timeout: float) -> bool:
    """Wait until no process holds the workers' lock (those of a supervisor that was killed are
    dying with it); False if some still do after ``timeout`` seconds."""
    fd = open_lock_file(root / WORKERS_LOCK_NAME)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
    finally:
        os.close(fd)
