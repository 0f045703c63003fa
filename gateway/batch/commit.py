"""Group commit: many concurrent files share one fsync (history), one SQLite commit (ledger) or one
syncfs (their own files and directories).

Each caller awaits its own work; a single flusher takes everything queued since the last flush and
makes it durable in one go, in a worker thread. Nothing is acknowledged before its batch is durable:
a caller's await returns only after the batch containing its work was written (or raises its error).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from spool.sync import sync_paths

T = TypeVar("T")
R = TypeVar("R")


class StoppedError(OSError):
    """The group was stopped (cancelled) while it made this caller's batch durable: nothing of the batch
    may be taken as done. An OSError, so callers handle it as a failed fsync: retried later."""


class GroupCommit(Generic[T]):
    """Queue items from any coroutine; ``flush`` (blocking, in a thread) makes a whole batch durable."""

    def __init__(self, flush: Callable[[Sequence[T]], None], *, max_batch: int = 2000) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._queue: deque[tuple[Sequence[T], asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        """Start the flusher (once: after ``stop``, and without it, each ``submit`` flushes inline)."""
        if self._task is None and not self._stopped:
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Flush what is queued, then stop. Cancelled meanwhile (a flush that hangs), the callers of the
        batch in flush get ``StoppedError``."""
        self._stopped = True
        if self._task is not None:
            self._wake.set()
            try:
                await self._task
            finally:
                self._task = None
        while self._queue:
            await self._flush_once()

    async def submit(self, items: Sequence[T]) -> None:
        """Return once ``items`` are durable."""
        if not items:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((items, future))
        if self._task is None or self._task.done():
            await self._flush_once()
        else:
            self._wake.set()
        await future

    async def _run(self) -> None:
        while not self._stopped:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._flush_once()

    async def _flush_once(self) -> None:
        batch: list[tuple[Sequence[T], asyncio.Future[None]]] = []
        count = 0
        while self._queue and count < self._max_batch:
            items, future = self._queue.popleft()
            batch.append((items, future))
            count += len(items)
        flat = [item for items, _ in batch for item in items]
        try:
            await asyncio.to_thread(self._flush, flat)
        except Exception as exc:  # each waiter gets the failure of the batch it was in
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: its waiters must not wait for ever
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoppedError("stopped before this batch was made durable"))
            raise
        for _, future in batch:
            if not future.done():
                future.set_result(None)


class _PieceFailedError(Exception):
    """A piece of a batch raised (not the commit): the batch is run again apart."""


@dataclass(slots=True)
class _Work:
    run: Callable[[], Any]
    result: Any = None
    error: Exception | None = None


class GroupTransaction:
    """Ledger work of many files in one SQLite commit. Later pieces of a batch see what earlier ones wrote
    (as they would have, committed one by one), and a piece that raises undoes only itself. ``run``
    returns once the commit holding its piece is durable.

    A batch first runs without a savepoint per piece: under load every SQL statement waits for the GIL
    again, and two of them per piece cost as much as the piece's own work. Only if a piece raises is the
    whole batch rolled back and run again, each piece in its own savepoint (a failed commit fails the
    batch, as before). So a piece may run twice: it must do nothing but ledger work.
    """

    def __init__(self, transaction: Callable[[], AbstractContextManager[None]]) -> None:
        self._transaction = transaction
        self._group: GroupCommit[_Work] = GroupCommit(self._flush)

    def start(self) -> None:
        self._group.start()

    async def stop(self) -> None:
        await self._group.stop()

    async def run(self, work: Callable[[], R]) -> R:
        piece = _Work(work)
        await self._group.submit([piece])
        if piece.error is not None:
            raise piece.error
        return cast(R, piece.result)

    async def run_many(self, works: Sequence[Callable[[], R]]) -> list[R | Exception]:
        """``run`` for many pieces at once (a claimed batch's decisions): one submit, and each piece's
        result or the error it raised, in order."""
        pieces = [_Work(work) for work in works]
        await self._group.submit(pieces)
        return [piece.error if piece.error is not None else cast(R, piece.result) for piece in pieces]

    def _flush(self, pieces: Sequence[_Work]) -> None:
        try:
            with self._transaction():
                self._run_all(pieces)
        except _PieceFailedError:  # rolled back: run again, to find the failing pieces one savepoint each
            self._flush_apart(pieces)

    @staticmethod
    def _run_all(pieces: Sequence[_Work]) -> None:
        for piece in pieces:
            try:
                piece.result = piece.run()
            except Exception as exc:
                raise _PieceFailedError from exc

    def _flush_apart(self, pieces: Sequence[_Work]) -> None:
        with self._transaction():
            for piece in pieces:
                try:
                    with self._transaction():
                        piece.result = piece.run()
                except Exception as exc:  # this piece's savepoint is rolled back; the batch commits
                    piece.error = exc


@dataclass(slots=True)
class _Sync:
    paths: tuple[Path, ...]
    error: OSError | None = None


class GroupSync:
    """The fsyncs of many files' steps in one go: each caller awaits its own paths (a temp file before
    it is renamed, the directories of its renames), and a batch makes every distinct path durable once:
    a burst renames hundreds of files into the same few ``out/``, ``archive/`` and core directories, and
    from ``spool.sync.SYNCFS_FROM`` paths on a batch is one syncfs per filesystem (``sync_paths``). A
    path whose sync fails fails only the callers that asked for it (with syncfs: for its filesystem)."""

    def __init__(self) -> None:
        self._group: GroupCommit[_Sync] = GroupCommit(_sync_batch)

    def start(self) -> None:
        self._group.start()

    async def stop(self) -> None:
        await self._group.stop()

    async def sync(self, *paths: Path) -> None:
        """Return once every one of ``paths`` has been made durable after this call was made."""
        request = _Sync(paths)
        await self._group.submit([request])
        if request.error is not None:
            raise request.error


def _sync_batch(requests: Sequence[_Sync]) -> None:
    failed = sync_paths(path for request in requests for path in request.paths)
    for request in requests:
        request.error = next((failed[p] for p in request.paths if p in failed), None)
