"""SettleTracker driven by the real watcher's events and real stats, the way the daemon drives it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.detect.settle import SettleTracker, Snapshot, is_candidate
from gateway.detect.watch import InboxWatcher, WatchEvent, WatchKind
from tests.watch.helpers import NAME, SLOW_WRITER, STATION_TC, run_python

SETTLE = 1.0
Key = tuple[str, ...]


class MiniDaemon:
    """The settle part of the daemon: events and stats in; each ready name is claimed into ``work``."""

    def __init__(self, inbox: Path, work: Path) -> None:
        self.inbox = inbox
        self.work = work
        self.tracker: SettleTracker[Key] = SettleTracker(SETTLE)
        self.ready: dict[str, tuple[float, int]] = {}
        self._wake = asyncio.Event()

    def sink(self, event: WatchEvent) -> None:
        now = time.monotonic()
        if event.kind is WatchKind.OVERFLOW:
            self.tracker.events_lost(now)
        elif not is_candidate(event.name):
            return
        elif event.kind is WatchKind.RENAMED_IN:
            self.tracker.renamed_in(event.key, now)
        elif event.kind is WatchKind.WRITTEN:
            self.tracker.written(event.key, now)
        elif event.kind is WatchKind.CLOSED:
            self.tracker.closed(event.key, now)
        else:
            self.tracker.gone(event.key)
        self._wake.set()

    def scan(self) -> None:
        for path in self.inbox.iterdir():
            if is_candidate(path.name):
                self.tracker.observed(
                    (*STATION_TC, path.name), Snapshot.from_stat(path.lstat()), time.monotonic()
                )
        self._wake.set()

    async def rescan(self, every: float) -> None:
        """The reconcile scan, frequent here: it sees a paused writer's file unchanged for long."""
        while True:
            await asyncio.sleep(every)
            self.scan()

    def _stat(self, key: Key) -> tuple[Snapshot | None, float]:
        try:
            result = (self.inbox / key[-1]).lstat()
        except FileNotFoundError:
            return None, time.monotonic()
        return Snapshot.from_stat(result), time.monotonic()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            for key in self.tracker.due(time.monotonic()):
                snapshot, at = await asyncio.to_thread(self._stat, key)
                if snapshot is None:
                    self.tracker.gone(key)
                else:
                    self.tracker.observed(key, snapshot, at)
            for key in self.tracker.ready():
                claimed = (self.inbox / key[-1]).rename(self.work / key[-1])
                self.ready[key[-1]] = (time.monotonic(), claimed.stat().st_size)
            deadline = self.tracker.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def wait_ready(self, name: str, timeout: float) -> tuple[float, int]:
        async with asyncio.timeout(timeout):
            while name not in self.ready:
                await asyncio.sleep(0.02)
        return self.ready[name]


@pytest.mark.slow
async def test_slow_in_place_writer_is_ready_only_after_it_finished_plus_settle(
    inbox: Path, start_watcher: Callable[..., InboxWatcher]
) -> None:
    work = inbox.parent.parent / ".gateway" / "work"
    work.mkdir(parents=True)
    daemon = MiniDaemon(inbox, work)
    present = inbox / "ALREADY-THERE.TXT"  # dropped while the gateway was down: only scans know it
    present.write_bytes(b"41210000|x\n")
    start_watcher(daemon.sink).watch(inbox, STATION_TC)  # watch first, then scan: nothing falls between
    scanned_at = time.monotonic()
    daemon.scan()
    tasks = [asyncio.create_task(daemon.run()), asyncio.create_task(daemon.rescan(0.2))]
    try:
        # pauses longer than settle_seconds with the file open: quiet alone must not make it ready
        writer = run_python(SLOW_WRITER, str(inbox / NAME), "0.3,1.5,0.3,1.5,0.3")
        renamed_at = time.monotonic()
        (inbox / ".renamed.tmp").write_bytes(b"41210000|x\n")
        (inbox / ".renamed.tmp").rename(inbox / "RENAMED.TXT")

        ready_at, _ = await daemon.wait_ready("RENAMED.TXT", timeout=2)
        assert ready_at - renamed_at < 0.5  # a renamed-in file does not wait for settle
        ready_at, _ = await daemon.wait_ready(present.name, timeout=5)
        assert ready_at - scanned_at >= SETTLE

        stdout, _ = await asyncio.to_thread(writer.communicate, timeout=20)
        last_write = float(stdout)
        ready_at, size = await daemon.wait_ready(NAME, timeout=SETTLE + 3)
        assert ready_at >= last_write + SETTLE
        assert ready_at < last_write + SETTLE + 1.5  # and not stuck
        assert size == 5 * 1000 + len(b"41210000|last\n")
        assert daemon.tracker.keys() == []
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
