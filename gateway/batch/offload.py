"""``to_thread`` for the per-file blocking steps of a burst: many calls, few thread hand-offs.

``asyncio.to_thread`` costs one executor job per call: a worker thread woken, the GIL taken and given
back, a future completed across threads. In a burst hundreds of files reach the same step (fsync the
claimed file, write its receipt, archive it) in the same turn of the event loop; a third of the
daemon's CPU samples (``perf``) were futex waits and wake-ups. Here the calls made in one turn of the
loop are shared out into at most ``PARALLEL`` thread jobs, each running its share one after another
and completing all of its callers with one wake-up of the loop. The disk still sees several fsyncs at
a time, and a call made alone still starts at once.

Calls sharing a job wait for each other, so only short steps on the spool's own filesystem belong
here: a step on a large file (its fdatasync may take seconds) and a core's I/O (another filesystem,
perhaps a mount that hangs) go through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

PARALLEL = 8
"""Thread jobs per turn of the loop: the disk takes several fsyncs at once (4, 8 and 16 measured alike)."""

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]
_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]

_queued: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Call]] = weakref.WeakKeyDictionary()
"""Per event loop, the calls made in this turn; sent to its default executor at the turn's end."""


async def to_thread(func: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Like ``asyncio.to_thread`` (the caller's context variables included, and a call whose caller is
    cancelled before it started never runs), sharing a thread job with the other calls of the turn."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()
    queued = _queued.get(loop)
    if queued is None:
        queued = _queued[loop] = []
        loop.call_soon(_dispatch, loop)
    queued.append((functools.partial(contextvars.copy_context().run, func, *args, **kwargs), future))
    return await future


def _dispatch(loop: asyncio.AbstractEventLoop) -> None:
    calls = _queued.pop(loop)
    share = -(-len(calls) // PARALLEL)
    for start in range(0, len(calls), share):
        loop.run_in_executor(None, _run, loop, calls[start : start + share])


def _run(loop: asyncio.AbstractEventLoop, calls: list[_Call]) -> None:
    """In a worker thread: every call of the share, then one hand-back that completes them all."""
    done: list[_Done] = []
    for call, future in calls:
        if future.cancelled():  # a plain state read (as asyncio's own executor chaining does)
            continue
        try:
            done.append((future, call(), None))
        except StopIteration as exc:  # an asyncio future refuses it (asyncio.to_thread's caller hangs)
            error = RuntimeError(f"{call!r} raised StopIteration")
            error.__cause__ = exc
            done.append((future, None, error))
        except BaseException as exc:  # handed to its caller, as asyncio.to_thread would
            done.append((future, None, exc))
    if done:
        with contextlib.suppress(RuntimeError):  # the loop was closed: nobody waits for these any more
            loop.call_soon_threadsafe(_complete, done)


def _complete(done: list[_Done]) -> None:
    for future, result, error in done:
        if future.done():  # its caller was cancelled while the call ran
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

