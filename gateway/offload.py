"""``to_thread`` for the per-file blocking steps of a burst: many calls, few thread hand-offs.

``asyncio.to_thread`` costs one executor job per call: a worker thread woken, the GIL taken and given
back, a future completed across threads. In a burst hundreds of files reach the same step (fsync the
claimed file, copy it to the core, write its receipt, archive it) in the same turn of the event loop;
a third of the daemon's CPU samples (``perf``) were futex waits and wake-ups. Here the calls made in one
turn of the loop are shared out into at most ``PARALLEL`` thread jobs, each running its share one after
another and completing all of its callers with one wake-up of the loop (5,000-file bursts, two
processes: 8 % less CPU a file, 10 % more files a second). The disk still sees several fsyncs at a
time, and a call made alone still starts at once. Calls sharing a job wait for each other, so only
short ones belong here: a step on a large file goes through ``to_thread_sized``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

SHORT_BYTES = 64 * 1024
"""A file step on more bytes than this (a large file's copy or fdatasync) may take seconds: it gets a
thread job of its own (``to_thread_sized``), so that it never holds up the calls sharing a job."""
PARALLEL = 8
"""Thread jobs per turn of the loop: the disk takes several fsyncs at once (4, 8 and 16 measured alike)."""

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class _Batcher:
    """The calls queued in this turn of one event loop; sent to its default executor at the turn's end."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queued: list[_Call] = []

    def add(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        if not self._queued:
            self._loop.call_soon(self._dispatch)
        self._queued.append((call, future))
        return future

    def _dispatch(self) -> None:
        calls, self._queued = self._queued, []
        share = -(-len(calls) // PARALLEL)
        for start in range(0, len(calls), share):
            self._loop.run_in_executor(None, self._run, calls[start : start + share])

    def _run(self, calls: list[_Call]) -> None:
        """In a worker thread: every call of the share, then one hand-back that completes them all."""
        done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for call, future in calls:
            try:
                done.append((future, call(), None))
            except BaseException as exc:  # handed to its caller, as asyncio.to_thread would
                done.append((future, None, exc))
        self._loop.call_soon_threadsafe(_complete, done)


def _complete(done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in done:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = weakref.WeakKeyDictionary()


async def to_thread(func: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Like ``asyncio.to_thread`` (the caller's context variables included), sharing a thread job with
    the other calls made in the same turn of the loop."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _Batcher(loop)
    context = contextvars.copy_context()
    result: R = await batcher.add(functools.partial(context.run, func, *args, **kwargs))
    return result


async def to_thread_sized(nbytes: int, func: Callable[..., R], /, *args: Any) -> R:
    """``to_thread`` for a step on a file of ``nbytes``; ``asyncio.to_thread`` beyond ``SHORT_BYTES``."""
    if nbytes > SHORT_BYTES:
        return await asyncio.to_thread(func, *args)
    return await to_thread(func, *args)
