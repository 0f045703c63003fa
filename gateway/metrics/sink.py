"""The metrics sink: what the daemon's steps call to count what happens, and nothing of how it is served.

Steps (detect, pipeline, forward) import this module only; ``gateway.metrics.exporter`` records into
Prometheus and serves it, at the edge. :data:`NULL_METRICS` is what a component built without metrics
gets, so call sites need no checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from spool.ids import file_id_time

STATES = ("waiting", "work", "deferred", "held")


# -- queue depths ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One station's files right now. Counts are files (a TXT and its ZIP are two)."""

    waiting: int = 0  # in an in/, not claimed yet: tracked (settling, ready, held back by max_in_flight),
    # and beyond the detector's bound, as counted by its last scan
    work: int = 0  # claimed, in .gateway/work/ (validating, waiting for the partner, forwarding)
    deferred: int = 0  # in .gateway/deferred/: the core could not take it yet, retried
    held: int = 0  # in .gateway/held/: accepted, waiting for the reporting window
    oldest_waiting_seconds: float | None = None  # the oldest of ``waiting``, since the gateway first saw it
    # (beyond the bound: since its mailbox has had files beyond it, see Detector.unclaimed)


DepthSource = Callable[[], Mapping[str, QueueDepth]]
"""What ``Metrics(depths=...)`` calls at each beat of the daemon's main loop: station -> its
:class:`QueueDepth`; scrapes serve the last answer.

Called on the event loop's thread (by ``Metrics.publish``, twice a second), synchronously, so it may read
the daemon's dicts without locks; scrapes run on the server's thread and never call it. It must not
block, do I/O or await: it reads counts the daemon already keeps in memory (the detector's unclaimed
keys, the pipeline's files in flight), O(files in memory) at most. Stations left out are not shown; a
station with nothing queued should be returned with zeros so its series do not vanish. If it raises,
scrapes succeed without the queue gauges until it works again, and the error is logged.
"""


def queue_depths(
    stations: Iterable[str],
    waiting: Iterable[tuple[str, int, float]],
    files: Iterable[tuple[str, str]],
) -> dict[str, QueueDepth]:
    """A :data:`DepthSource` answer from what the daemon keeps in memory, one pass over each.

    ``stations``: the configured ones, reported even when empty. ``waiting``: ``(station, files, seconds
    the oldest of them has waited)`` covering every file in an in/ that is not claimed yet. ``files``:
    ``(station, state)`` for every claimed file without an outcome, ``state`` being the name of the state
    dir it is in now (``work``, ``deferred``, ``held``); any other name (a file already archived or
    quarantined) is skipped.
    """
    counts: dict[str, dict[str, int]] = {s: dict.fromkeys(STATES, 0) for s in stations}
    oldest: dict[str, float] = {}
    for station, count, seconds in waiting:
        counts.setdefault(station, dict.fromkeys(STATES, 0))["waiting"] += count
        oldest[station] = max(oldest.get(station, 0.0), seconds)
    for station, state in files:
        if state in STATES and state != "waiting":
            counts.setdefault(station, dict.fromkeys(STATES, 0))[state] += 1
    return {
        station: QueueDepth(**by_state, oldest_waiting_seconds=oldest.get(station))
        for station, by_state in counts.items()
    }


# -- what the daemon calls -------------------------------------------------------------------------------


class MetricsSink(Protocol):
    """The calls the daemon makes; :class:`Metrics` records them, :class:`NullMetrics` drops them."""

    def file_done(self, station: str, outcome: str, seconds_since_claim: float | None) -> None: ...
    def findings(self, codes: Iterable[str]) -> None: ...
    def finding(self, code: str) -> None: ...
    def forward_retry(self, route: str) -> None: ...
    def deferred(self, station: str, route: str) -> None: ...
    def overflow(self) -> None: ...
    def rescan(self) -> None: ...
    def route_broken(self, route: str) -> None: ...
    def leases(self, held: int, epoch: int, valid_seconds: float, live_nodes: int) -> None: ...


class NullMetrics:
    """``metrics.listen`` is not configured: every call does nothing, so callers need no checks."""

    depths: DepthSource | None = None

    def file_done(self, station: str, outcome: str, seconds_since_claim: float | None) -> None:
        pass

    def findings(self, codes: Iterable[str]) -> None:
        pass

    def finding(self, code: str) -> None:
        pass

    def forward_retry(self, route: str) -> None:
        pass

    def deferred(self, station: str, route: str) -> None:
        pass

    def overflow(self) -> None:
        pass

    def rescan(self) -> None:
        pass

    def route_broken(self, route: str) -> None:
        pass

    def leases(self, held: int, epoch: int, valid_seconds: float, live_nodes: int) -> None:
        pass

    def prepare(self, stations: Iterable[str], routes: Iterable[str]) -> None:
        pass

    def publish(self) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    @property
    def port(self) -> int | None:
        return None


NULL_METRICS = NullMetrics()
"""The default for components built without metrics (tests, ``check``)."""


def claim_age(file_id: str, now: datetime) -> float | None:
    """Seconds since the file was claimed, from its id (made at the claim, in the daemon's zone)."""
    try:
        claimed = file_id_time(file_id, now.tzinfo)
    except ValueError:
        return None
    return max(0.0, (now - claimed).total_seconds())
