"""The one owner of the daemon's tasks: a stop waits for the files in flight, then cancels the rest."""

from __future__ import annotations

import asyncio

from gateway.batch.tasks import Tasks


async def test_finish_waits_for_work_started_meanwhile_and_cancels_what_outlives_the_timeout() -> None:
    tasks = Tasks()
    done: list[str] = []

    async def quick(name: str) -> None:
        await asyncio.sleep(0.05)
        done.append(name)

    async def spawns_more() -> None:
        await asyncio.sleep(0.02)
        tasks.spawn(quick("child"), name="child", role="pipeline")  # started while the stop waits

    async def stuck() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            done.append("stuck cancelled")

    tasks.spawn(quick("file"), name="file", role="claimed")
    tasks.spawn(spawns_more(), name="parent", role="pipeline")
    tasks.spawn(stuck(), name="stuck", role="held")
    lease = tasks.spawn(asyncio.sleep(60), name="lease", role="lease")
    assert tasks.running("claimed", "pipeline") == 2 and tasks.running() == 4

    cut = await tasks.finish(("claimed", "pipeline", "held"), timeout=0.5)

    assert cut == 1 and sorted(done) == ["child", "file", "stuck cancelled"]
    assert tasks.running("claimed", "pipeline", "held") == 0
    assert not lease.done()  # another role: left for its own turn
    assert await tasks.finish(("lease",), timeout=0) == 1 and lease.cancelled()
