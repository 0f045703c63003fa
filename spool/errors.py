"""Errors of the spool: bad on-disk state or configuration, never a rejection of a file's content."""

from __future__ import annotations

from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class SpoolError(Exception):
    """The spool cannot be used as it is on disk (the daemon refuses to start or to go on)."""


class SpoolLocked(SpoolError):  # noqa: N818 - the name the design gives it
    """Another process holds the spool root's lock: one daemon per spool root."""

    def __init__(self, lock_path: Path, pid: int | None) -> None:
        self.lock_path = lock_path
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "a process that has not written its pid yet"
        super().__init__(
            f"spool {lock_path.parent} is in use by another fdep-gateway ({holder}, lock file {lock_path}); "
            "only one daemon may serve a spool root"
        )


class BatchError(SpoolError, Generic[T]):
    """Some items of a batch failed; ``done`` were handed off and are durable, ``errors`` were not moved.

    Raised only after the rest of the batch went through, so one bad file never holds back the others.
    """

    def __init__(self, done: list[T], errors: dict[Path, OSError]) -> None:
        self.done = done
        self.errors = errors
        first = next(iter(errors.items()))
        super().__init__(f"{len(errors)} of {len(done) + len(errors)} failed, first {first[0]}: {first[1]}")
