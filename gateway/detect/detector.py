"""detect -> settle -> claim: inotify hints and reconcile scans decide when an inbox file may be taken.

Events are hints, the scan is the truth: a full scan runs at start, every ``rescan_seconds``, and at once
after the watcher reports lost events. Ready files are claimed in batches per mailbox (one fsync pair
per batch), never more than ``max_in_flight`` at a time: the inbox itself is the back-pressure queue.

The inbox is the queue for what is not tracked either: at most ``max_tracked`` inbox files are tracked
(settling, ready, their first-seen times), whatever waits in in/. A scan takes new names up to that bound,
shared fairly among the mailboxes (gateway/detect/listing.py), and only counts the rest; an event of a
name beyond the bound is dropped (the scan is the truth). When the tracked files fall to half the bound
while files wait untracked, the next scan comes at once rather than at ``rescan_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.detect.listing import Box, InboxLister, Key, Listing
from gateway.detect.settle import SettleTracker, Snapshot, is_candidate
from gateway.detect.watch import InboxWatcher, WatchEvent, WatchKind
from gateway.metrics.sink import NULL_METRICS, MetricsSink
from spool.claim import Claimed, claim_many
from spool.errors import BatchError
from spool.layout import SpoolLayout

log = structlog.get_logger("gateway.detect")

MAX_TRACKED = 20_000
"""Inbox files a gateway tracks at most, its processes each a share (``tracked_share``). About 0.8 KB
each (settle entry, first-seen time, ready-queue slot): 16 MB whatever waits in in/. Ten claim batches
of ``max_in_flight`` (2,048): the 10,000 left when an early scan starts keep a process busy longer than
that scan takes (500,000 waiting names: 0.6 s idle, ~3 s and at most 7 s beside a busy pipeline). A
20,000-file burst is tracked from its events alone. With two processes each has half of all of it."""


def tracked_share(processes: int, max_in_flight: int) -> int:
    """One process's bound: its share of ``MAX_TRACKED``, so that the whole tree's memory does not grow
    with ``processes`` (two processes at 20,000 each: 32 MB of tracked files), but at least
    two claim batches, so that a process never runs dry while it scans."""
    return max(MAX_TRACKED // processes, 2 * max_in_flight)


_REFILL_GAP = 1.0
"""Seconds at least between the end of one scan and a scan triggered early to refill the tracked set."""
_CLAIM_BATCH = 1024
_BOXES_A_THREAD = 8
_CLAIM_THREADS = 8  # a batch over many mailboxes leaves the other I/O threads to the files in flight


@dataclass(frozen=True, slots=True)
class Mailbox:
    station: str
    transfer_code: str


Spawn = Callable[[Coroutine[Any, Any, None], str], object]
"""Start a claimed batch's task under a name (``gateway.batch.tasks.Tasks`` in the daemon)."""

Claims = list[tuple[str, Claimed]]  # (station, claimed file), as claimed together
OnClaimed = Callable[[Claims, Callable[[], None]], Awaitable[None]]
"""The hand-off of one claimed batch. The receiver calls ``done`` once a file as it finishes with it, so
that its slot frees up at once (a large file must not hold a batch's slots); a file it has not called
``done`` for when it returns is counted done then."""

_HELD: set[asyncio.Task[None]] = set()


def _spawn(work: Coroutine[Any, Any, None], name: str) -> None:
    """Without the daemon's owner of tasks (tests): hold the task until it is done."""
    task = asyncio.get_running_loop().create_task(work, name=name)
    _HELD.add(task)
    task.add_done_callback(_HELD.discard)


class Detector:
    def __init__(
        self,
        layout: SpoolLayout,
        stations: Callable[[], Sequence[str]],
        *,
        settle_seconds: float,
        rescan_seconds: float,
        max_in_flight: int,
        now_id: Callable[[], str],
        on_claimed: OnClaimed,
        metrics: MetricsSink = NULL_METRICS,
        owns: Callable[[str], bool] = lambda transfer_code: True,
        spawn: Spawn = _spawn,
        awaited: Callable[[], Iterable[Key]] = tuple,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.layout = layout
        self._owns = owns  # this process's share of the mailboxes
        self._stations = stations  # the current ones: a reload may change them
        self.rescan_seconds = rescan_seconds
        self.tracker: SettleTracker[Key] = SettleTracker(settle_seconds)
        self._now_id = now_id
        self._on_claimed = on_claimed
        self._ready: dict[Key, None] = {}  # ordered set: ready, not claimed yet
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wake = asyncio.Event()
        self._rescan = asyncio.Event()
        self._watcher: InboxWatcher | None = None
        self._unwatched: set[Mailbox] = set()  # watch() failed: logged once
        self._known: set[Mailbox] = set()  # state dirs exist
        self._spawn = spawn  # the daemon's one owner of tasks takes each claimed batch's
        self.in_flight = 0
        self.scans = 0
        self.overflows = 0
        self.last_scan_found = 0
        self.metrics = metrics
        self.max_tracked = max_tracked
        self._awaited = awaited  # the partners that claimed TXTs and ZIPs wait for: tracked beyond the bound
        self.first_seen: dict[Key, float] = {}  # the tracked files (settling or ready): monotonic first seen
        self._lister = InboxLister()
        self._untracked: dict[Box, tuple[int, float]] = {}  # left in in/ at the last scan: count, since when
        self._dropped = False  # an event of a name beyond the bound came after the last scan
        self._scanned_at = 0.0
        self._scanning = asyncio.Lock()

    # -- watcher --------------------------------------------------------------------------------------

    def start_watching(self) -> None:
        self._watcher = InboxWatcher(asyncio.get_running_loop(), self._on_event)
        self._watcher.start()

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def _on_event(self, event: WatchEvent) -> None:
        now = time.monotonic()
        if event.kind is WatchKind.OVERFLOW:
            self.overflows += 1
            self.metrics.overflow()
            self.tracker.events_lost(now)
            self._rescan.set()
        elif len(event.key) == 3 and event.name and is_candidate(event.name):
            key: Key = (event.key[0], event.key[1], event.key[2])
            first = key not in self.first_seen
            if event.kind is WatchKind.GONE:
                self._forget(key)
            elif first and len(self.first_seen) >= self.max_tracked:
                self._dropped = True  # it waits in in/ for a scan, as the files the scans left there
                return
            else:
                self.first_seen.setdefault(key, now)
            if event.kind is WatchKind.RENAMED_IN or (
                event.kind is WatchKind.WRITTEN and first and self._hard_linked(key)
            ):
                self.tracker.renamed_in(key, now)
            elif event.kind is WatchKind.WRITTEN:
                self.tracker.written(key, now)
            elif event.kind is WatchKind.CLOSED:
                self.tracker.closed(key, now)
        self._wake.set()

    def _forget(self, key: Key) -> None:
        self.first_seen.pop(key, None)
        self._ready.pop(key, None)
        self.tracker.gone(key)

    def _hard_linked(self, key: Key) -> bool:
        """A file linked into the inbox (ln, cp -l) appears complete, without a write or a close: like
        a rename. One lstat, on the first event of a name only."""
        try:
            st = os.lstat(self.layout.station(key[0]).inbox(key[1]) / key[2])
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_nlink > 1

    def _watch(self, mailboxes: Iterable[Mailbox]) -> None:
        """(Re-)arm the watch of every inbox: cheap when already watched, and a directory that was
        lost or failed before is picked up again at the next scan."""
        if self._watcher is None:
            return
        for box in mailboxes:
            try:
                self._watcher.watch(
                    self.layout.station(box.station).inbox(box.transfer_code),
                    (box.station, box.transfer_code),
                )
            except (OSError, ValueError) as exc:
                if box not in self._unwatched:
                    log.warning(
                        "watch.failed",
                        station=box.station,
                        transfer_code=box.transfer_code,
                        error=str(exc),
                        note="served by the reconcile scan only",
                    )
                self._unwatched.add(box)
            else:
                self._unwatched.discard(box)

    @property
    def watcher_alive(self) -> bool:
        return self._watcher is not None and self._watcher.alive

    # -- reconcile scan -------------------------------------------------------------------------------

    def mailboxes(self) -> list[Mailbox]:
        """Every mailbox on disk that this process serves, registered or not (an unregistered one is
        served to reject its files)."""
        boxes = [
            Mailbox(s, tc)
            for s in self._stations()
            for tc in self.layout.station(s).mailboxes()
            if self._owns(tc)
        ]
        for box in boxes:
            if box not in self._known:
                self.layout.station(box.station).ensure([box.transfer_code])
                self._known.add(box)
        return boxes

    async def scan(self) -> int:
        """Stat every tracked inbox entry and up to the bound new ones; regular files go to settle,
        anything else is claimed as is. Returns the inbox files found, tracked or not."""
        async with self._scanning:  # drain scans beside the run loop: one listing at a time
            return await self._scan()

    async def _scan(self) -> int:
        boxes = await asyncio.to_thread(self.mailboxes)
        self._watch(boxes)
        scan_started = time.monotonic()
        tracked = set(self.first_seen)
        wanted = set(self._awaited()) - tracked
        self._dropped = False
        inboxes = [
            ((box.station, box.transfer_code), self.layout.station(box.station).inbox(box.transfer_code))
            for box in boxes
        ]
        room = max(0, self.max_tracked - len(tracked))
        listing = await asyncio.to_thread(self._lister.list, inboxes, tracked, wanted, room)
        now = time.monotonic()
        self._apply(listing, tracked, wanted, scan_started, now)
        if self._untracked:
            log.info(
                "scan.backlog",
                found=listing.found,
                tracked=len(self.first_seen),
                mailboxes_behind=len(self._untracked),
                seconds=round(now - scan_started, 3),
            )
        self._scanned_at = now
        self.scans += 1
        self.metrics.rescan()
        self.last_scan_found = listing.found
        self._wake.set()
        return listing.found

    def _apply(
        self, listing: Listing, tracked: set[Key], wanted: set[Key], started: float, now: float
    ) -> None:
        """The listing onto the tracked files, which may have changed while it ran: a name claimed or gone
        meanwhile stays forgotten, one an event added is kept, and the bound holds."""
        left = dict(listing.left)
        for key, snapshot in listing.seen:
            if key in self.first_seen and key not in self._ready:
                self._observe(key, snapshot, now)
        room = self.max_tracked - len(self.first_seen)  # events may have taken some while it listed
        for key, snapshot in listing.taken:
            if key in self.first_seen:
                continue
            if key not in wanted:
                if room <= 0:
                    left[key[:2]] = left.get(key[:2], 0) + 1
                    continue
                room -= 1
            self.first_seen[key] = now
            self._observe(key, snapshot, now)
        for key in tracked.difference(key for key, _ in listing.seen):
            self.tracker.not_listed(key, started)
            if key not in self.tracker:
                self.first_seen.pop(key, None)
                self._ready.pop(key, None)
        before = self._untracked
        self._untracked = {box: (count, before.get(box, (0, started))[1]) for box, count in left.items()}

    def _observe(self, key: Key, snapshot: Snapshot | None, now: float) -> None:
        if snapshot is None:
            self._ready[key] = None  # not a regular file: never settles, claimed and quarantined
        else:
            self.tracker.observed(key, snapshot, now)

    async def _stat_due(self) -> None:
        due = self.tracker.due(time.monotonic())
        if not due:
            return
        stats = await asyncio.to_thread(self._stat_keys, due)
        now = time.monotonic()
        for key, snap in stats:
            if snap is None:
                self._forget(key)
            elif key in self.tracker:  # not claimed or gone meanwhile
                self.tracker.observed(key, snap, now)

    def _stat_keys(self, keys: list[Key]) -> list[tuple[Key, Snapshot | None]]:
        out: list[tuple[Key, Snapshot | None]] = []
        for key in keys:
            path = self.layout.station(key[0]).inbox(key[1]) / key[2]
            try:
                out.append((key, Snapshot.from_stat(os.lstat(path))))
            except OSError:
                out.append((key, None))
        return out

    # -- claim ----------------------------------------------------------------------------------------

    async def claim_ready(self) -> None:
        """Claim ready files per mailbox, as many as free slots allow; each batch is handed on in a task."""
        for key in self.tracker.ready():
            self._ready[key] = None
        while self._ready and not self._slots.locked():
            batch: dict[tuple[str, str], list[str]] = {}
            taken = 0
            for key in list(self._ready):
                if taken >= _CLAIM_BATCH or self._slots.locked():
                    break
                if not self._owns(key[1]):  # its lease moved on since it was seen: another node's now
                    self._forget(key)
                    continue
                await self._slots.acquire()
                self._forget(key)
                batch.setdefault((key[0], key[1]), []).append(key[2])
                taken += 1
            claimed = await self._claim(batch)
            for _ in range(taken - len(claimed)):
                self._slots.release()  # vanished before the claim: nothing to do
            if claimed:
                self.in_flight += len(claimed)
                self._spawn(self._hand_on(claimed), f"claimed {claimed[0][1].file_id} +{len(claimed) - 1}")

    async def _claim(self, batch: dict[tuple[str, str], list[str]]) -> list[tuple[str, Claimed]]:
        """A large batch's mailboxes in parallel threads, a few mailboxes each: their fsyncs overlap
        instead of queueing one after another (a steady trickle touches a few mailboxes: one thread,
        fewer hand-offs). The loop still waits for the whole batch, so files ready meanwhile make the
        next one."""
        boxes = list(batch.items())
        size = max(_BOXES_A_THREAD, -(-len(boxes) // _CLAIM_THREADS))  # at most _CLAIM_THREADS shares
        shares = [boxes[i : i + size] for i in range(0, len(boxes), size)]
        done = await asyncio.gather(
            *(asyncio.to_thread(self._claim_boxes, share) for share in shares), return_exceptions=True
        )
        claimed: list[tuple[str, Claimed]] = []
        for share, result in zip(shares, done, strict=True):
            if isinstance(result, BaseException):  # a bug, not the disk: the rest of the batch goes on
                log.error("claim.failed", mailboxes=[tc for (_, tc), _ in share], error=repr(result))
            else:
                claimed.extend(result)
        return claimed

    def _claim_boxes(self, boxes: list[tuple[tuple[str, str], list[str]]]) -> list[tuple[str, Claimed]]:
        return [pair for (station, tc), names in boxes for pair in self._claim_box(station, tc, names)]

    def _claim_box(self, station: str, tc: str, names: list[str]) -> list[tuple[str, Claimed]]:
        try:
            done = claim_many(self.layout.station(station), tc, names, self._now_id)
        except BatchError as exc:
            done = list(exc.done)
            for path, error in exc.errors.items():
                log.error("claim.failed", path=str(path), error=str(error))
        except OSError as exc:
            log.error("claim.failed", station=station, transfer_code=tc, error=str(exc))
            return []
        return [(station, item) for item in done]

    async def _hand_on(self, claimed: Claims) -> None:
        left = len(claimed)

        def done() -> None:
            nonlocal left
            if left:
                left -= 1
                self.in_flight -= 1
                self._slots.release()
                self._wake.set()

        try:
            await self._on_claimed(claimed, done)
        finally:
            while left:
                done()

    # -- the loop -------------------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """React to events, deadlines and rescans until ``stopping`` is set (the first scan came before)."""
        if self.scans == 0:
            await self.scan()
        next_scan = time.monotonic() + self.rescan_seconds
        while not stopping.is_set():
            now = time.monotonic()
            if self._rescan.is_set() or now >= next_scan or self._refill_at() <= now:
                self._rescan.clear()
                await self.scan()
                next_scan = time.monotonic() + self.rescan_seconds
            await self._stat_due()
            await self.claim_ready()
            deadline = self.tracker.next_deadline()
            timeout = min(next_scan, self._refill_at()) - time.monotonic()
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            self._wake.clear()
            if self._ready and self._slots.locked():
                timeout = max(timeout, 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, timeout))

    def _refill_at(self) -> float:
        """When to scan early: files wait untracked and the tracked ones fell to half the bound."""
        if not self.backlogged or len(self.first_seen) > self.max_tracked // 2:
            return float("inf")
        return self._scanned_at + _REFILL_GAP

    @property
    def backlogged(self) -> bool:
        """Files wait in in/ beyond the bound (as of the last scan, or an event dropped since)."""
        return self._dropped or bool(self._untracked)

    @property
    def settled(self) -> bool:
        """Nothing ready to claim, settling or waiting untracked: every file seen has been handed on."""
        return not self._ready and len(self.tracker) == 0 and not self.backlogged

    def unclaimed(self, now: float) -> Iterator[tuple[str, int, float]]:
        """(station, files, seconds the oldest of them has waited) of the inbox files not claimed yet, for
        the queue gauges: each tracked file, since it was first seen; and per mailbox the files the last
        scan left untracked, since the first scan of an unbroken run that left some there (so never less
        than the oldest of them has waited when nothing new arrives, more when new files keep it full)."""
        for key, since in self.first_seen.items():
            yield key[0], 1, now - since
        for (station, _tc), (count, since) in self._untracked.items():
            yield station, count, now - since

    def wake(self) -> None:
        self._wake.set()

    def rescan(self) -> None:
        """Scan every inbox soon (mailboxes were just taken over)."""
        self._rescan.set()
        self._wake.set()
