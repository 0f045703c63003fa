"""How long and how often a file is offered to the core (tenacity), and when the pipeline hears of it.

Two nested tenacity loops, so each kind of trouble keeps its own rhythm:

* inner: ``Transient`` (core down, slow, full) is retried forever with exponential backoff and jitter.
  The backoff starts afresh whenever the core gives a real answer, such as a 409.
* outer: ``TaskNotReady`` (409 TASK_NOT_IN_PREPARATION) is retried every ``task_retry_seconds`` until the
  core has answered 409 for ``task_retry_total_seconds``, then becomes ``Rejected``. Only time between
  two consecutive 409 answers counts: while the core is unreachable nobody knows the task's state, so an
  outage pauses the 409 clock (it never resets it, and never rejects a file by itself).

The first failure of either kind calls ``on_deferred`` once (the pipeline moves the file to deferred/ and
returns the moved ``Outbound``, which later attempts send);
``stop_event`` interrupts any wait, and ``deliver`` raises ``Cancelled`` leaving the file where it is.

``Misconfigured`` (a redirect: the route's url is wrong) is a ``Transient`` that does not last: after
``MISCONFIGURED_TRIES`` such answers in a row ``deliver`` raises ``RouteBroken`` (the pipeline keeps the
file in deferred/ and logs an error; it is sent at the next start, once the url is fixed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter, wait_fixed

from gateway.config import DirectoryRoute, HttpRoute
from gateway.forward.base import Forwarder, Misconfigured, Outbound, Rejected, TaskNotReady, Transient

log = structlog.get_logger(__name__)


MISCONFIGURED_TRIES = 5
"""Redirects in a row before a route is reported broken: a core being moved may redirect briefly."""


class RouteBroken(Exception):  # noqa: N818 - the agreed API names outcomes, not errors
    """The route's configuration is wrong (the core keeps redirecting): the file stays in deferred/."""


class Cancelled(Exception):  # noqa: N818 - the agreed API names outcomes, not errors
    """The daemon is stopping: the file was not delivered and stays where it is (deferred/ once deferred)."""


@dataclass(frozen=True)
class RetryPolicy:
    """All the waits of ``deliver``, in seconds (small floats make tests fast)."""

    backoff_initial: float
    backoff_max: float
    task_retry_seconds: float
    task_retry_total_seconds: float

    @classmethod
    def for_route(cls, route: DirectoryRoute | HttpRoute) -> RetryPolicy:
        if isinstance(route, HttpRoute):
            return cls(
                backoff_initial=min(1.0, route.max_backoff_seconds),
                backoff_max=route.max_backoff_seconds,
                task_retry_seconds=route.task_retry_seconds,
                task_retry_total_seconds=route.task_retry_total_seconds,
            )
        return DIRECTORY_POLICY


DIRECTORY_POLICY = RetryPolicy(
    backoff_initial=1.0,
    backoff_max=60.0,  # a local or mounted directory: once it is back, files go within a minute
    task_retry_seconds=60.0,  # a directory core never answers "task not ready"; the HTTP defaults
    task_retry_total_seconds=1800.0,
)


async def deliver(
    forwarder: Forwarder,
    item: Outbound,
    route: DirectoryRoute | HttpRoute,
    *,
    on_deferred: Callable[[str], Awaitable[Outbound | None]],
    stop_event: asyncio.Event | None = None,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[], None] | None = None,
) -> str:
    """Send ``item`` until the core takes it; return where it went.

    Raises ``Rejected`` (permanent), ``Cancelled`` (``stop_event`` set while waiting), or whatever a
    send raised that is neither transient nor a 409 (a plain ``ForwardError``, an ``OSError`` of the
    spool file). ``policy`` overrides the waits the route implies.
    """
    delivery = _Delivery(forwarder, item, policy or RetryPolicy.for_route(route), on_deferred, stop_event)
    delivery.on_retry = on_retry
    return await delivery.run()


class _Delivery:
    def __init__(
        self,
        forwarder: Forwarder,
        item: Outbound,
        policy: RetryPolicy,
        on_deferred: Callable[[str], Awaitable[Outbound | None]],
        stop_event: asyncio.Event | None,
    ) -> None:
        self.forwarder = forwarder
        self.item = item
        self.policy = policy
        self.on_deferred = on_deferred
        self.stop_event = stop_event
        self.deferred = False
        self.not_ready_seconds = 0.0  # time the core has been answering 409
        self.last_not_ready: float | None = None  # when the latest answer was a 409; None otherwise
        self.on_retry: Callable[[], None] | None = None  # counts each retry (metrics)
        self.first_failure: Transient | TaskNotReady | None = None
        self.misconfigured = 0  # redirects in a row

    async def run(self) -> str:
        try:  # the usual case, the core takes the file at once: without tenacity's ~45 us of set-up
            return await self._attempt()
        except (Transient, TaskNotReady) as exc:
            self.first_failure = exc  # tenacity's first attempt raises it: the retries run as they would
        task_not_ready = AsyncRetrying(
            retry=retry_if_exception_type(TaskNotReady),
            wait=wait_fixed(self.policy.task_retry_seconds),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
        )
        result: str = await task_not_ready(self._until_answered)
        return result

    async def _until_answered(self) -> str:
        """Retry transient failures, with a fresh backoff, until the core answers."""
        transient = AsyncRetrying(
            retry=retry_if_exception_type(Transient),
            wait=wait_exponential_jitter(
                multiplier=self.policy.backoff_initial,
                max=self.policy.backoff_max,
                jitter=self.policy.backoff_initial,
            ),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
        )
        result: str = await transient(self._retried)
        return result

    async def _retried(self) -> str:
        """Tenacity's attempt: first the failure of the attempt made before tenacity, then real ones."""
        if self.first_failure is not None:
            failure, self.first_failure = self.first_failure, None
            raise failure
        return await self._attempt()

    async def _attempt(self) -> str:
        try:
            sent = await self.forwarder.send(self.item)
        except Misconfigured as exc:
            self.last_not_ready = None
            self.misconfigured += 1
            if self.misconfigured >= MISCONFIGURED_TRIES:
                raise RouteBroken(str(exc)) from exc
            raise
        except Transient:
            self.last_not_ready = None  # an outage pauses the 409 clock
            self.misconfigured = 0
            raise
        except TaskNotReady as exc:
            now = time.monotonic()
            if self.last_not_ready is not None:
                self.not_ready_seconds += now - self.last_not_ready
            self.last_not_ready = now
            if self.not_ready_seconds >= self.policy.task_retry_total_seconds:
                minutes = f"{self.policy.task_retry_total_seconds / 60:g}"
                raise Rejected("TASK_NOT_IN_PREPARATION", exc.core_message, minutes=minutes) from exc
            self.misconfigured = 0
            raise
        return sent

    async def _before_sleep(self, state: RetryCallState) -> None:
        reason = str(state.outcome.exception()) if state.outcome else "unknown"
        log.warning(
            "forward_retry",
            file_id=self.item.file_id,
            name=self.item.name,
            reason=reason,
            wait_seconds=round(state.upcoming_sleep, 3),
        )
        if self.on_retry is not None:
            self.on_retry()
        if not self.deferred:
            self.deferred = True
            moved = await self.on_deferred(reason)
            if moved is not None:
                self.item = moved

    async def _sleep(self, seconds: float) -> None:
        if self.stop_event is None:
            await asyncio.sleep(seconds)
            return
        try:
            async with asyncio.timeout(seconds):
                await self.stop_event.wait()
        except TimeoutError:
            return
        raise Cancelled(f"{self.item.name}: not delivered, the gateway is stopping")
