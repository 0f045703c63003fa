"""offload.to_thread: each caller gets its own result or error; one turn's calls share few thread jobs."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from gateway.batch import offload


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting the thread jobs it was given."""

    def __init__(self) -> None:
        super().__init__(max_workers=64)
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
async def executor() -> AsyncIterator[CountingExecutor]:
    pool = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(pool)
    yield pool
    pool.shutdown()


async def test_each_caller_gets_its_own_result(executor: CountingExecutor) -> None:
    results = await asyncio.gather(*(offload.to_thread(lambda n=n: n * n) for n in range(200)))
    assert results == [n * n for n in range(200)]


async def test_calls_of_one_turn_share_at_most_parallel_thread_jobs(executor: CountingExecutor) -> None:
    workers: set[int] = set()

    def work() -> None:
        workers.add(threading.get_ident())

    await asyncio.gather(*(offload.to_thread(work) for _ in range(200)))
    assert 1 < executor.jobs <= offload.PARALLEL  # shared out; asyncio.to_thread would have taken 200
    assert len(workers) <= offload.PARALLEL


async def test_an_error_goes_to_its_caller_only(executor: CountingExecutor) -> None:
    def step(n: int) -> int:
        if n % 3 == 0:
            raise OSError(28, f"No space left on device ({n})")
        if n % 3 == 1:
            raise StopIteration  # an asyncio future refuses this one: it must not strand the others
        return n

    calls = 4 * offload.PARALLEL  # several calls a job: each fails or succeeds for its own caller
    results = await asyncio.wait_for(
        asyncio.gather(*(offload.to_thread(step, n) for n in range(calls)), return_exceptions=True), timeout=5
    )
    for n, result in enumerate(results):
        if n % 3 == 0:
            assert isinstance(result, OSError)
            assert str(n) in str(result)
        elif n % 3 == 1:
            assert isinstance(result, RuntimeError)
        else:
            assert result == n
    assert executor.jobs == offload.PARALLEL


async def test_a_cancelled_caller_leaves_the_others_their_results(executor: CountingExecutor) -> None:
    release = threading.Event()

    def slow(value: int) -> int:
        release.wait(5)
        return value

    calls = [asyncio.ensure_future(offload.to_thread(slow, n)) for n in range(2 * offload.PARALLEL)]
    await asyncio.sleep(0.05)  # handed to their thread jobs, two calls each
    for gone in calls[::2]:
        gone.cancel()
    release.set()
    kept = await asyncio.wait_for(asyncio.gather(*calls[1::2]), timeout=5)
    assert kept == list(range(1, 2 * offload.PARALLEL, 2))
    assert all(gone.cancelled() for gone in calls[::2])


async def test_the_callers_context_variables_are_seen_in_the_thread(executor: CountingExecutor) -> None:
    request = contextvars.ContextVar[int]("request")

    async def call(value: int) -> int:
        request.set(value)
        return await offload.to_thread(request.get)

    calls = 4 * offload.PARALLEL  # several calls a job, each in its own caller's context
    assert await asyncio.gather(*(call(n) for n in range(calls))) == list(range(calls))


async def test_a_call_whose_caller_was_cancelled_before_it_started_never_runs(
    executor: CountingExecutor,
) -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def first() -> None:
        started.set()
        release.wait(5)

    running = asyncio.ensure_future(offload.to_thread(first))
    queued = asyncio.ensure_future(offload.to_thread(ran.append, "queued"))  # in the same job, behind it
    others = [asyncio.ensure_future(offload.to_thread(int)) for _ in range(offload.PARALLEL)]  # 2 a job
    await asyncio.to_thread(started.wait, 5)
    queued.cancel()
    release.set()
    await asyncio.gather(running, *others)
    await asyncio.sleep(0.05)
    assert ran == []
    assert queued.cancelled()

