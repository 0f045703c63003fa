"""One owner of the daemon's tasks: every part starts its tasks here, under a role, and a stop drains
them in one place: stop taking, wait for what is in flight, cancel the rest (as uvicorn's ``Server`` and
arq's worker do), instead of searching the loop's task list for what to wait on and what to spare.

The roles say what a task is, so each part can ask how busy it is: files claimed by the detector
(``claimed``), resumed by recovery (``recovered``), spawned by the pipeline (``pipeline``: partner timeouts,
retries), waiting for a reporting window (``held``), and the daemon's own loops (``service``, ``lease``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, Literal

Role = Literal["claimed", "recovered", "pipeline", "held", "service", "lease"]
ROLES: tuple[Role, ...] = ("claimed", "recovered", "pipeline", "held", "service", "lease")


class Tasks:
    """Holds every task it spawned (the loop keeps only weak references) until it is done."""

    def __init__(self) -> None:
        self._running: dict[Role, set[asyncio.Task[None]]] = {role: set() for role in ROLES}

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str, role: Role) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        running = self._running[role]
        running.add(task)
        task.add_done_callback(running.discard)
        return task

    def running(self, *roles: Role) -> int:
        return sum(len(self._running[role]) for role in roles or ROLES)

    async def finish(self, roles: Iterable[Role], timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the tasks of ``roles``, and for those they start meanwhile;
        cancel what is left and wait for it to end. Returns how many were cancelled."""
        roles = tuple(roles)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending := self._of(roles):
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait(pending, timeout=left)
        still = self._of(roles)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)
        return len(still)

    def _of(self, roles: tuple[Role, ...]) -> list[asyncio.Task[None]]:
        return [task for role in roles for task in self._running[role] if not task.done()]
