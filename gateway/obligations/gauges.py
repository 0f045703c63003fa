"""Prometheus gauges of obligations, registered beside the daemon's own metrics with one call.

Computing standings reads the ledger and the history, so it never runs at a scrape (that is on the event
loop): the daemon refreshes a snapshot in a thread every ``obligations.gauges_seconds`` and a scrape
serves the last one. Labels are bounded by the configuration: ``station`` (configured stations),
``table`` (the catalogue) and ``state`` (a closed set); never an institution or a file name.

Exposed (``fdep_gateway_`` prefix)::

    obligations{station,table,state}       reports owed in the open periods, by state (zeros included)
    obligations_refreshed_timestamp_seconds  when the snapshot was computed (stale: the refresh is stuck)
    oldest_deferred_seconds{station}       age (since its claim) of the oldest file waiting in deferred/
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from gateway.config import GatewayConfig
from gateway.metrics.exporter import Metrics
from gateway.metrics.sink import NullMetrics
from gateway.obligations.assess import assess_days, calendar_of, ledger_facts, open_days
from gateway.obligations.status import Standing, State
from gateway.windows import PLATFORM_ZONE

PREFIX = "fdep_gateway"


class ObligationGauges:
    """A collector serving the last snapshot; ``refresh`` (in a thread) computes a new one."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._deferred: dict[str, float] = {}
        self._refreshed: float | None = None

    def refresh(self, now: datetime) -> None:
        config = self.config
        calendar = calendar_of(config)
        days = open_days(now.astimezone(PLATFORM_ZONE).date(), calendar)
        facts = ledger_facts(config)
        found = assess_days(config, facts, days=days, now=now, calendar=calendar)
        counts = snapshot(found, config.stations, config.tables)
        oldest = facts.oldest_deferred()
        deferred = {
            station: max(0.0, (now - oldest[station]).total_seconds()) if station in oldest else 0.0
            for station in config.stations
        }
        with self._lock:
            self._counts, self._deferred, self._refreshed = counts, deferred, now.timestamp()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no values collected at registration (a refresh comes later)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, deferred, refreshed = dict(self._counts), dict(self._deferred), self._refreshed
        owed = GaugeMetricFamily(
            f"{PREFIX}_obligations",
            "Reports owed in the open periods, by station, table and state",
            labels=("station", "table", "state"),
        )
        for (station, table, state), n in sorted(counts.items()):
            owed.add_metric((station, table, state), n)
        yield owed
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_deferred_seconds",
            "Age since its claim of the oldest file in deferred/ (0 when none)",
            labels=("station",),
        )
        for station, seconds in sorted(deferred.items()):
            oldest.add_metric((station,), seconds)
        yield oldest
        if refreshed is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_obligations_refreshed_timestamp_seconds",
                "When the obligation gauges were last computed",
                value=refreshed,
            )


def register(metrics: Metrics | NullMetrics, config: GatewayConfig) -> ObligationGauges | None:
    """Add the gauges to the daemon's metrics registry; None when metrics are off (a ``NullMetrics``) or
    served by a supervisor for several processes (it keeps the gauges itself: one computation, not N)."""
    if not isinstance(metrics, Metrics) or metrics.shared:
        return None
    gauges = ObligationGauges(config)
    metrics.registry.register(gauges)
    return gauges


def snapshot(
    found: Iterable[Standing], stations: Iterable[str], tables: Iterable[str]
) -> dict[tuple[str, str, str], int]:
    """Counts by (station, table, state), every combination present (zeros too) so alerts see a 0, not
    an absent series; values outside the configuration are dropped, never turned into labels."""
    station_set, table_set = set(stations), set(tables)
    counts = {(s, t, state.value): 0 for s in station_set for t in table_set for state in State}
    for item in found:
        key = (item.obligation.station, item.obligation.table, item.state.value)
        if key in counts:
            counts[key] += 1
    return counts
