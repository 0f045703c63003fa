"""The detector's bound on what it tracks, on a real spool in a temp dir: the rest waits in in/ (the inbox
is the queue) and is taken by later scans, fairly between mailboxes and within one; nothing waits forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.detect.detector import MAX_TRACKED, Claims, Detector, tracked_share
from gateway.detect.listing import Key
from spool.ids import new_file_id
from spool.layout import SpoolLayout

STATION = "k1237"
BIG, SMALL = "TC41210000", "TC41220000"
ZONE = ZoneInfo("Asia/Shanghai")


class Spool:
    """A spool with inboxes, and a detector on it that records what it hands over and what it tracks."""

    def __init__(self, root: Path, bound: int, awaited: Iterable[Key] = ()) -> None:
        self.layout = SpoolLayout(root)
        self.claimed: list[tuple[str, str]] = []  # (transfer code, name), in the order handed over
        self.most_tracked = 0
        self.detector = Detector(
            self.layout,
            lambda: [STATION],
            settle_seconds=0,  # found by a scan: ready at once
            rescan_seconds=3600,  # only the first scan and those the bound triggers
            max_in_flight=1000,
            now_id=lambda: new_file_id(datetime.now(ZONE)),
            on_claimed=self.on_claimed,
            max_tracked=bound,
            awaited=lambda: awaited,
        )

    def inbox(self, tc: str) -> Path:
        path = self.layout.station(STATION).inbox(tc)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def drop(self, tc: str, names: list[str]) -> None:
        for name in names:
            (self.inbox(tc) / name).write_bytes(b"x")

    def note(self) -> None:
        self.most_tracked = max(self.most_tracked, len(self.detector.first_seen))
        assert len(self.detector.tracker) <= len(self.detector.first_seen)

    async def on_claimed(self, claims: Claims, done: Callable[[], None]) -> None:
        self.note()
        self.claimed.extend((item.tc, item.name) for _, item in claims)

    async def round(self) -> None:
        """One scan, then claim what it made ready and let the hand-overs run."""
        await self.detector.scan()
        self.note()
        await self.detector.claim_ready()
        while self.detector.in_flight:
            await asyncio.sleep(0)


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n:05d}.TXT" for n in range(count)]


async def test_never_more_than_the_bound_and_the_small_mailbox_is_served_beside_a_backlog(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool", bound=100)
    spool.drop(BIG, names("big", 900))
    spool.drop(SMALL, names("small", 100))
    assert await spool.detector.scan() == 1000  # counted, tracked or not
    assert len(spool.detector.first_seen) == 100
    assert spool.detector.backlogged and not spool.detector.settled
    for _ in range(40):
        await spool.round()
        if len(spool.claimed) == 1000:
            break
    everything = [(BIG, name) for name in names("big", 900)] + [(SMALL, name) for name in names("small", 100)]
    assert sorted(spool.claimed) == sorted(everything)
    assert spool.most_tracked == 100
    assert [path for tc in (BIG, SMALL) for path in spool.inbox(tc).iterdir()] == []
    assert spool.detector.settled
    last_small = max(i for i, (tc, _) in enumerate(spool.claimed) if tc == SMALL)
    assert last_small < 300, "the small mailbox waited behind the big one's backlog"


async def test_queue_gauges_count_the_files_beyond_the_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", bound=10)
    spool.drop(BIG, names("big", 50))
    await spool.detector.scan()
    await asyncio.sleep(0.2)
    waiting = list(spool.detector.unclaimed(time.monotonic()))
    assert sum(files for _, files, _ in waiting) == 50
    assert all(station == STATION for station, _, _ in waiting)
    assert max(seconds for _, _, seconds in waiting) >= 0.2
    assert spool.detector.last_scan_found == 50


async def test_each_share_goes_round_the_mailbox_while_new_files_keep_coming(tmp_path: Path) -> None:
    """As many new files come as are claimed: every one of the first ones is still taken within a few
    rounds, not only those early in the directory's order."""
    spool = Spool(tmp_path / "spool", bound=10)
    first = names("first", 50)
    spool.drop(BIG, first)
    for round_ in range(25):
        await spool.round()
        spool.drop(BIG, names(f"new{round_:02d}", 10))
    taken = {name for _, name in spool.claimed}
    assert set(first) <= taken, f"{len(set(first) - taken)} of the first 50 files still wait"


async def test_events_beyond_the_bound_are_dropped_and_a_scan_takes_the_files_later(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", bound=5)
    spool.drop(BIG, names("old", 5))
    spool.detector.start_watching()
    try:
        await spool.detector.scan()  # arms the watch; all five tracked, nothing beyond
        assert not spool.detector.backlogged
        spool.drop(BIG, [".late.part"])
        (spool.inbox(BIG) / ".late.part").rename(spool.inbox(BIG) / "late.TXT")
        await until(lambda: spool.detector.backlogged)  # its event came and was dropped
        assert (STATION, BIG, "late.TXT") not in spool.detector.first_seen
        assert len(spool.detector.first_seen) == 5
        await spool.round()
        assert (BIG, "late.TXT") not in spool.claimed  # the five tracked came first
        await spool.round()
        assert (BIG, "late.TXT") in spool.claimed
    finally:
        spool.detector.stop_watching()


async def test_a_partner_awaited_is_taken_beyond_the_bound(tmp_path: Path) -> None:
    awaited = (STATION, BIG, "pair-00042.ZIP")
    spool = Spool(tmp_path / "spool", bound=3, awaited=[awaited])
    spool.drop(BIG, [*names("queue", 20), awaited[2]])
    await spool.detector.scan()
    assert awaited in spool.detector.first_seen
    assert len(spool.detector.first_seen) == 4


@pytest.mark.timeout(30)
async def test_the_run_loop_refills_without_waiting_for_the_rescan(tmp_path: Path) -> None:
    """rescan_seconds is an hour: the files beyond the bound are taken once the tracked ones are claimed."""
    spool = Spool(tmp_path / "spool", bound=50)
    spool.drop(BIG, names("big", 120))
    spool.drop(SMALL, names("small", 30))
    stopping = asyncio.Event()
    running = asyncio.create_task(spool.detector.run(stopping))
    await until(lambda: len(spool.claimed) == 150)
    stopping.set()
    spool.detector.wake()
    await running
    assert spool.most_tracked <= 50
    assert spool.detector.settled


async def until(condition: Callable[[], bool], seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within the time")


def test_the_bound_is_the_gateways_shared_among_its_processes_but_never_below_two_claim_batches() -> None:
    assert tracked_share(1, 2048) == MAX_TRACKED
    assert tracked_share(2, 2048) == MAX_TRACKED // 2
    assert tracked_share(16, 2048) == 2 * 2048
