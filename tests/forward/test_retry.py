"""The retry policy end to end: a real HTTP core scripted per test, waits shortened via the route."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import HttpRoute
from gateway.forward import Cancelled, HttpForwarder, Outbound, Rejected, RetryPolicy, RouteBroken, deliver
from gateway.forward.retry import MISCONFIGURED_TRIES
from tests.forward.helpers import Core, Reply, free_port, outbound

MakeFile = Callable[[bytes], Path]
NOT_READY = Reply(409, {"code": "TASK_NOT_IN_PREPARATION", "message": "任务不在数据准备状态"})


def http_route(url: str, **overrides: Any) -> HttpRoute:
    fields = {
        "type": "http",
        "url": url,
        "timeout_seconds": 2,
        "task_retry_seconds": 0.05,
        "task_retry_total_seconds": 5,
        "max_backoff_seconds": 0.05,
        **overrides,
    }
    return HttpRoute.model_validate(fields)


class Deferrals:
    """The pipeline's ``on_deferred``: records each call (it must come once per delivery)."""

    def __init__(self, then: Callable[[], object] | None = None) -> None:
        self.reasons: list[str] = []
        self.then = then

    async def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        if self.then is not None:
            self.then()


async def run(
    route: HttpRoute,
    item: Outbound,
    deferrals: Deferrals,
    stop_event: asyncio.Event | None = None,
    policy: RetryPolicy | None = None,
) -> str:
    sender = HttpForwarder(route)
    try:
        return await deliver(
            sender, item, route, on_deferred=deferrals, stop_event=stop_event, policy=policy
        )
    finally:
        await sender.aclose()


async def test_success_at_once_is_never_deferred(core: Core, make_file: MakeFile) -> None:
    deferrals = Deferrals()
    where = await run(http_route(core.url), outbound(make_file(b"x")), deferrals)
    assert where.endswith(": 201")
    assert deferrals.reasons == []
    assert len(core.requests) == 1


async def test_task_not_ready_then_accepted_defers_once(core: Core, make_file: MakeFile) -> None:
    core.script(NOT_READY, NOT_READY, then=Reply(201))
    deferrals = Deferrals()
    await run(http_route(core.url), outbound(make_file(b"x")), deferrals)
    assert len(deferrals.reasons) == 1
    assert "data-preparation" in deferrals.reasons[0]
    assert len(core.requests) == 3


async def test_task_never_ready_is_rejected_after_the_total(core: Core, make_file: MakeFile) -> None:
    core.script(then=NOT_READY)
    deferrals = Deferrals()
    route = http_route(core.url, task_retry_seconds=0.05, task_retry_total_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(Rejected) as caught:
        await run(route, outbound(make_file(b"x")), deferrals)
    assert time.monotonic() - started >= 0.3
    assert caught.value.code == "TASK_NOT_IN_PREPARATION"
    assert caught.value.core_message == "任务不在数据准备状态"
    finding = caught.value.finding()
    assert finding.code == "TASK_NOT_IN_PREPARATION"
    assert "数据准备状态" in finding.hint_zh
    assert "data-preparation state" in str(caught.value)
    assert len(deferrals.reasons) == 1
    assert 5 <= len(core.requests) <= 8  # every task_retry_seconds, until 0.3 s of 409s


async def test_server_errors_are_retried_until_accepted(core: Core, make_file: MakeFile) -> None:
    core.script(Reply(500), Reply(500), then=Reply(201))
    deferrals = Deferrals()
    where = await run(http_route(core.url), outbound(make_file(b"x")), deferrals)
    assert where.endswith(": 201")
    assert len(deferrals.reasons) == 1
    assert "500" in deferrals.reasons[0]
    assert len(core.requests) == 3


async def test_rejection_is_final_and_never_deferred(core: Core, make_file: MakeFile) -> None:
    core.script(Reply(400, {"message": "字段数不符"}), then=Reply(201))
    deferrals = Deferrals()
    with pytest.raises(Rejected) as caught:
        await run(http_route(core.url), outbound(make_file(b"x")), deferrals)
    assert (caught.value.code, caught.value.core_message) == ("CORE_REJECTED", "字段数不符")
    assert deferrals.reasons == []
    assert len(core.requests) == 1


async def test_core_hanging_past_the_timeout_is_retried(core: Core, make_file: MakeFile) -> None:
    core.script(Reply(201, delay=5), then=Reply(201))
    deferrals = Deferrals()
    started = time.monotonic()
    await run(http_route(core.url, timeout_seconds=0.2), outbound(make_file(b"x")), deferrals)
    assert time.monotonic() - started < 2
    assert len(deferrals.reasons) == 1
    assert "timeout" in deferrals.reasons[0]
    assert len(core.requests) == 2


async def test_refused_until_the_core_comes_up(
    make_file: MakeFile, start_core: Callable[[int], Core]
) -> None:
    port = free_port()
    started: list[Core] = []
    deferrals = Deferrals(then=lambda: started.append(start_core(port)))
    where = await run(http_route(f"http://127.0.0.1:{port}"), outbound(make_file(b"abc")), deferrals)
    assert where.endswith(": 201")
    assert "ConnectError" in deferrals.reasons[0]
    [request] = started[0].requests
    assert request.body == b"abc"


async def test_an_outage_pauses_the_task_clock(core: Core, make_file: MakeFile) -> None:
    outage = [Reply(503)] * 12  # about 0.6 s, twice the 409 total: must not count as 409 time
    core.script(NOT_READY, *outage, NOT_READY, then=Reply(201))
    deferrals = Deferrals()
    route = http_route(core.url, task_retry_seconds=0.05, task_retry_total_seconds=0.3)
    started = time.monotonic()
    await run(route, outbound(make_file(b"x")), deferrals)
    assert time.monotonic() - started > 0.3
    assert len(core.requests) == 15
    assert len(deferrals.reasons) == 1


async def test_backoff_starts_afresh_after_the_core_answers(core: Core, make_file: MakeFile) -> None:
    policy = RetryPolicy(
        backoff_initial=0.02, backoff_max=0.64, task_retry_seconds=0.05, task_retry_total_seconds=5
    )
    core.script(*[Reply(503)] * 6, NOT_READY, Reply(503), then=Reply(201))
    await run(http_route(core.url), outbound(make_file(b"x")), Deferrals(), policy=policy)
    times = [r.at for r in core.requests]
    assert len(times) == 9
    assert times[5] - times[4] > 0.3  # the backoff had grown to its ceiling ...
    assert times[8] - times[7] < 0.3  # ... and after the 409 it starts again from 0.02 s


@pytest.mark.parametrize("trouble", ["transient", "task-not-ready"])
async def test_stop_event_ends_a_wait_promptly(core: Core, make_file: MakeFile, trouble: str) -> None:
    core.script(then=NOT_READY if trouble == "task-not-ready" else Reply(503))
    stop = asyncio.Event()
    deferrals = Deferrals(then=lambda: asyncio.get_running_loop().call_later(0.1, stop.set))
    route = http_route(core.url, task_retry_seconds=30, max_backoff_seconds=30)  # waits >= 1 s
    started = time.monotonic()
    with pytest.raises(Cancelled):
        await run(route, outbound(make_file(b"x")), deferrals, stop_event=stop)
    assert time.monotonic() - started < 0.8
    assert len(deferrals.reasons) == 1  # deferred first: the file waits in deferred/ for the restart
    assert len(core.requests) == 1


async def test_stop_event_set_before_start_defers_and_stops(core: Core, make_file: MakeFile) -> None:
    core.script(then=Reply(503))
    stop = asyncio.Event()
    stop.set()
    deferrals = Deferrals()
    with pytest.raises(Cancelled):
        await run(http_route(core.url), outbound(make_file(b"x")), deferrals, stop_event=stop)
    assert len(deferrals.reasons) == 1
    assert len(core.requests) == 1


async def test_failure_to_defer_stops_the_delivery(core: Core, make_file: MakeFile) -> None:
    core.script(then=Reply(503))

    async def on_deferred(reason: str) -> None:
        raise OSError(28, "No space left on device")

    sender = HttpForwarder(http_route(core.url))
    try:
        with pytest.raises(OSError, match="No space left"):
            await deliver(sender, outbound(make_file(b"x")), http_route(core.url), on_deferred=on_deferred)
    finally:
        await sender.aclose()
    assert len(core.requests) == 1


async def test_a_core_that_keeps_redirecting_is_a_broken_route_after_a_few_tries(
    core: Core, make_file: MakeFile
) -> None:
    """A 301 was retried every ~2 s forever: now a bounded number of tries, then RouteBroken."""
    core.script(then=Reply(301, headers={"Location": "http://elsewhere/"}))
    deferrals = Deferrals()
    with pytest.raises(RouteBroken) as caught:
        await asyncio.wait_for(run(http_route(core.url), outbound(make_file(b"x")), deferrals), timeout=10)
    assert len(core.requests) == MISCONFIGURED_TRIES
    assert "fix the route's url" in str(caught.value)
    assert len(deferrals.reasons) == 1


async def test_a_brief_redirect_between_other_answers_is_retried(core: Core, make_file: MakeFile) -> None:
    moved = Reply(301, headers={"Location": "http://elsewhere/"})
    core.script(*([moved] * (MISCONFIGURED_TRIES - 1)), Reply(503), *([moved] * 2), then=Reply(201))
    where = await run(http_route(core.url), outbound(make_file(b"x")), Deferrals())
    assert where.endswith(": 201")
