"""Prometheus metrics (spec 15, ``metrics.listen``): what the daemon did, and what waits right now.

Two kinds of numbers, one registry per ``Metrics`` (never the process-global one, so tests can run several):

* events, counted when they happen - the daemon calls :meth:`Metrics.file_done`, :meth:`Metrics.findings`,
  :meth:`Metrics.forward_retry`, :meth:`Metrics.deferred`, :meth:`Metrics.overflow`, :meth:`Metrics.rescan`;
* queue depths, computed at every beat of the daemon's main loop by calling its ``depths`` callable (see
  :data:`DepthSource` for what it must return and how cheap it must be), served as of the last beat.

Exposed (``fdep_gateway_`` prefix)::

    files_total{station,outcome}           files that reached an outcome (forwarded, rejected, duplicate)
    file_latency_seconds{station,outcome}  histogram, claim -> outcome, buckets 10 ms .. 10 min
    findings_total{code}                   files that ended with a finding of that code (once per file)
    forward_retries_total{route}           attempts the core did not take and that are retried
    deferred_total{station,route}          files moved to deferred/ because the core could not take them
    route_broken_total{route}              deliveries given up because the route's config is wrong (alert)
    lease_groups, lease_epoch_max          with PostgreSQL: lease groups this node holds, their highest epoch,
    lease_valid_seconds, cluster_nodes     how long they stay valid unrenewed, the live nodes it sees
    watch_overflows_total                  inotify queue overflows (events lost, a rescan follows)
    rescans_total                          full reconcile scans of the inboxes
    queue_files{station,state}             files now waiting (in in/), in work, deferred, held
    oldest_waiting_seconds{station}        age of the oldest file waiting in in/ (0 when none)
    process_*                              the daemon's CPU, memory, open files (Linux)

Restricted tables (spec 5) and senders' file names never reach a label: the only label names are
``station``, ``outcome``, ``code``, ``state`` and ``route`` (and the histogram's ``le``), and every value is
checked before use: stations against ``k`` + 4 digits, outcomes and states against their closed sets,
codes against the finding catalogue, routes against the configured route names. A value that fails is
counted under ``other`` (``OTHER`` for finding codes) instead: a bug in a caller can cost precision, never
leak a file name or a field value.
The label sets stay small, so cardinality is bounded by the configuration and the finding catalogue.

The endpoint is prometheus-client's own HTTP server (``start_http_server``: the stdlib's threaded WSGI
server around the library's exposition), on a thread of its own, in both modes: no HTTP code of ours to
keep right. It serves ``GET`` on any path in the text format, OpenMetrics when the scraper asks for it,
gzipped when the scraper accepts it (Prometheus does), and answers 405 to other methods (``HEAD`` too).
A scrape runs on the server's thread, not the daemon's loop, so it must not read the daemon's dicts: the
``depths`` callable is called on the loop by :meth:`Metrics.publish`, at every beat of the daemon's main
loop (twice a second) and once at :meth:`Metrics.start`, and the scrape serves the last answer, kept as
an immutable tuple that one assignment replaces (no lock needed). Rather than the scrape asking the loop
for fresh numbers: a scrape never waits on a busy loop, and the numbers are at most half a second old.
Counters and histograms lock their own values. ``stop()`` shuts the server down and closes its listener,
so a daemon stop frees the port; a connection still open then (a client that says nothing) is left to
its daemon thread, which ends with the process.

When ``metrics.listen`` is not configured the daemon gets a :class:`NullMetrics`: the same methods, doing
nothing, so call sites need no checks.

With ``processes`` > 1 the supervisor serves one endpoint for all its processes with prometheus-client's
multiprocess mode (:class:`SharedEndpoint`): each gateway process writes its counters and histograms to
files of its own in a directory the supervisor made (``PROMETHEUS_MULTIPROC_DIR``), and a scrape adds them
up. Each process publishes its queue depths at every beat, as a single one does, but into those files,
and the scrape adds up those of the processes alive (``queue_files``; ``oldest_waiting_seconds`` takes
the largest). ``process_*`` describes the supervisor only in that mode.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, multiprocess
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.config import MetricsConfig
from gateway.metrics.sink import STATES, DepthSource, NullMetrics, QueueDepth
from validators.findings import CATALOGUE

log = structlog.get_logger("gateway.metrics")

PREFIX = "fdep_gateway"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Claim -> outcome: 10 ms (a small file rejected by name) .. 10 min (pair_timeout, a slow core)."""

OUTCOMES = ("forwarded", "rejected", "duplicate")
LABEL_NAMES = frozenset({"station", "outcome", "code", "state", "route", "le"})
"""Every label name the endpoint can show (``le``: the histogram's bucket bound)."""
OTHER = "other"
OTHER_CODE = "OTHER"

_STATION = re.compile(r"k[0-9]{4}")
_ROUTE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a sane config key, also when configured


# -- labels ----------------------------------------------------------------------------------------------


def station_label(station: str) -> str:
    return station if _STATION.fullmatch(station) else OTHER


def outcome_label(outcome: str) -> str:
    return outcome if outcome in OUTCOMES else OTHER


def code_label(code: str) -> str:
    return code if code in CATALOGUE else OTHER_CODE


def route_label(route: str, known: frozenset[str] | set[str]) -> str:
    """Route names are free-form config keys: only configured ones of a plain shape become labels."""
    return route if route in known and _ROUTE.fullmatch(route) else OTHER


_DepthSnapshot = tuple[tuple[str, QueueDepth], ...]
"""Queue depths by station label, as last published: immutable, so a scrape's thread can read them."""


class _DepthCollector:
    """Queue gauges as of the last :meth:`Metrics.publish` (none before one, or after a failed one)."""

    def __init__(self) -> None:
        self.published: _DepthSnapshot | None = None  # replaced whole on the loop, read by the server

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        depths = self.published
        if depths is None:
            return
        queue, oldest = self._families()
        for station, depth in depths:
            for state in STATES:
                queue.add_metric([station, state], getattr(depth, state))
            oldest.add_metric([station], depth.oldest_waiting_seconds or 0.0)
        yield queue
        yield oldest

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                f"{PREFIX}_queue_files",
                "Files now waiting in in/, in work, deferred or held, per station",
                labels=["station", "state"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_oldest_waiting_seconds",
                "Age of the oldest file waiting in in/ (since the gateway first saw it); 0 when none",
                labels=["station"],
            ),
        )


def _merge(depths: Mapping[str, QueueDepth]) -> dict[str, QueueDepth]:
    """Key by label; stations that are not labels (a caller's bug) are added up under ``other``."""
    out: dict[str, QueueDepth] = {}
    for station, depth in depths.items():
        label = station_label(station)
        have = out.get(label)
        if have is None:
            out[label] = depth
            continue
        ages = [a for a in (have.oldest_waiting_seconds, depth.oldest_waiting_seconds) if a is not None]
        out[label] = QueueDepth(
            waiting=have.waiting + depth.waiting,
            work=have.work + depth.work,
            deferred=have.deferred + depth.deferred,
            held=have.held + depth.held,
            oldest_waiting_seconds=max(ages, default=None),
        )
    return out


class Metrics:
    """The gateway's metrics in a registry of their own, served by :meth:`start` on ``listen``.

    Every recording method is cheap, never raises for a bad label value, and is thread-safe
    (``prometheus_client`` locks its values), so it may be called from ``asyncio.to_thread`` code too.
    """

    def __init__(
        self,
        listen: str | None = None,
        *,
        depths: DepthSource | None = None,
        stations: Iterable[str] = (),
        routes: Iterable[str] = (),
        process: bool = True,
        shared: bool = False,
    ) -> None:
        """``shared``: one of several gateway processes behind a :class:`SharedEndpoint`; it serves
        nothing itself, and :meth:`publish` writes its queue depths for the supervisor's scrapes."""
        self.listen = listen
        self.depths = depths  # may be set later, once the daemon has what it reads
        self.registry = CollectorRegistry()
        r = self.registry
        self._files = Counter(
            f"{PREFIX}_files", "Files that reached an outcome", ["station", "outcome"], registry=r
        )
        self._latency = Histogram(
            f"{PREFIX}_file_latency_seconds",
            "Time from claim to outcome (recorded at the outcome; includes time deferred and time down)",
            ["station", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._findings = Counter(
            f"{PREFIX}_findings",
            "Files that ended with at least one finding of this code (counted once per file)",
            ["code"],
            registry=r,
        )
        self._retries = Counter(
            f"{PREFIX}_forward_retries",
            "Forward attempts the core did not take (down, slow, task not in preparation), retried",
            ["route"],
            registry=r,
        )
        self._deferred = Counter(
            f"{PREFIX}_deferred",
            "Files moved to deferred/ because the core could not take them at once",
            ["station", "route"],
            registry=r,
        )
        self._overflows = Counter(
            f"{PREFIX}_watch_overflows",
            "Inotify queue overflows: events lost, a full rescan follows",
            registry=r,
        )
        self._rescans = Counter(f"{PREFIX}_rescans", "Full reconcile scans of the inboxes", registry=r)
        self._route_broken = Counter(
            f"{PREFIX}_route_broken",
            "Deliveries given up because the route's configuration is wrong (the core redirects): alert",
            ["route"],
            registry=r,
        )
        self._lease_groups = Gauge(
            f"{PREFIX}_lease_groups", "Mailbox lease groups this node holds (PostgreSQL store)", registry=r
        )
        self._lease_epoch = Gauge(
            f"{PREFIX}_lease_epoch_max", "The highest fencing epoch of the leases this node holds", registry=r
        )
        self._lease_valid = Gauge(
            f"{PREFIX}_lease_valid_seconds",
            "How long this node's leases stay valid without another renewal (0: it stopped serving)",
            registry=r,
        )
        self._live_nodes = Gauge(f"{PREFIX}_cluster_nodes", "Live nodes this node sees", registry=r)
        self._shared_depths: tuple[Gauge, Gauge] | None = None
        self._depths = _DepthCollector()
        self._depths_failing = False  # logged once per failing streak, not twice a second
        by_state, by_station = ["station", "state"], ["station"]
        if shared:
            queue, oldest = _DepthCollector._families()
            self._shared_depths = (  # added up over the processes alive; the oldest is the largest
                Gauge(queue.name, queue.documentation, by_state, registry=r, multiprocess_mode="livesum"),
                Gauge(oldest.name, oldest.documentation, by_station, registry=r, multiprocess_mode="livemax"),
            )
        else:
            r.register(self._depths)
        if process and not shared:
            ProcessCollector(registry=r)
        self._endpoint: _Endpoint | None = None
        self._routes: set[str] = set()  # the configured routes: the only route labels besides "other"
        self.prepare(stations, routes)

    def prepare(self, stations: Iterable[str], routes: Iterable[str]) -> None:
        """Create the known series at 0, so rates work from the first event; call again after a reload.

        ``routes`` are also the only route names that become labels (routes of an older config stay).
        """
        self._routes |= {r for r in routes if _ROUTE.fullmatch(r)}
        stations, routes = [station_label(s) for s in stations], sorted(self._routes)
        for station in stations:
            for outcome in OUTCOMES:
                self._files.labels(station, outcome)
                self._latency.labels(station, outcome)
            for route in routes:
                self._deferred.labels(station, route)
        for route in routes:
            self._retries.labels(route)
            self._route_broken.labels(route)
        for code in CATALOGUE:
            self._findings.labels(code)

    # -- events --------------------------------------------------------------------------------------------

    def file_done(self, station: str, outcome: str, seconds_since_claim: float | None) -> None:
        """A file reached its outcome; ``seconds_since_claim`` None when unknown (see :func:`claim_age`)."""
        labels = (station_label(station), outcome_label(outcome))
        self._files.labels(*labels).inc()
        if seconds_since_claim is not None:
            self._latency.labels(*labels).observe(max(0.0, seconds_since_claim))

    def findings(self, codes: Iterable[str]) -> None:
        """The codes of one finished file's findings: each distinct code counts once."""
        for code in {code_label(c) for c in codes}:
            self._findings.labels(code).inc()

    def finding(self, code: str) -> None:
        self._findings.labels(code_label(code)).inc()

    def forward_retry(self, route: str) -> None:
        self._retries.labels(route_label(route, self._routes)).inc()

    def deferred(self, station: str, route: str) -> None:
        self._deferred.labels(station_label(station), route_label(route, self._routes)).inc()

    def overflow(self) -> None:
        self._overflows.inc()

    def rescan(self) -> None:
        self._rescans.inc()

    @property
    def shared(self) -> bool:
        """One of several processes behind a :class:`SharedEndpoint` (it serves nothing itself)."""
        return self._shared_depths is not None

    def publish(self) -> None:
        """The queue depths now, for the next scrapes (call on the loop: it reads the daemon's dicts).

        A single process keeps them for its own endpoint; if ``depths`` is unset or raises, the queue
        gauges are left out until a publish works (stale numbers would look current). A shared process
        sets its gauges in its files for the supervisor; a failure leaves them as they were. A failure
        is logged once until a publish works again, not at every beat."""
        if self.depths is None:
            self._depths.published = None
            return
        try:
            depths = _merge(self.depths())
        except Exception:
            self._depths.published = None
            if not self._depths_failing:
                log.exception("metrics.depths_failed", note="queue gauges left out until they can be read")
            self._depths_failing = True
            return
        self._depths_failing = False
        if self._shared_depths is None:
            self._depths.published = tuple(sorted(depths.items()))
            return
        queue, oldest = self._shared_depths
        for station, depth in depths.items():
            for state in STATES:
                queue.labels(station, state).set(getattr(depth, state))
            oldest.labels(station).set(depth.oldest_waiting_seconds or 0.0)

    def route_broken(self, route: str) -> None:
        self._route_broken.labels(route_label(route, self._routes)).inc()

    def leases(self, held: int, epoch: int, valid_seconds: float, live_nodes: int) -> None:
        self._lease_groups.set(held)
        self._lease_epoch.set(epoch)
        self._lease_valid.set(valid_seconds)
        self._live_nodes.set(live_nodes)

    # -- endpoint ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Publish the queue depths, then serve on ``listen``. A port that cannot be bound (or a listen
        address that is not ``host:port``) is logged, not fatal: files keep flowing, and the scraper's
        ``up == 0`` says the endpoint is missing."""
        if self.listen is None or self._endpoint is not None:
            return
        self.publish()
        self._endpoint = _Endpoint.serve(self.listen, self.registry)
        if self._endpoint is not None:
            log.info("metrics.listening", listen=self.listen, port=self._endpoint.port)

    async def stop(self) -> None:
        """Stop serving and free the port (in a thread: the server's shutdown waits up to half a second)."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            await asyncio.to_thread(endpoint.close)

    @property
    def port(self) -> int | None:
        """The bound port (useful with port 0), None when not serving."""
        return self._endpoint.port if self._endpoint is not None else None


def metrics_for(
    config: MetricsConfig | None,
    *,
    stations: Iterable[str] = (),
    routes: Iterable[str] = (),
    depths: DepthSource | None = None,
    shared: bool = False,
) -> Metrics | NullMetrics:
    """What the daemon uses: real metrics when ``metrics.listen`` is configured, else :class:`NullMetrics`.

    ``shared``: a process of several, whose supervisor serves the endpoint (see :class:`SharedEndpoint`).
    """
    if config is None:
        return NullMetrics()
    if shared:
        return Metrics(None, depths=depths, stations=stations, routes=routes, shared=True)
    return Metrics(config.listen, depths=depths, stations=stations, routes=routes)


class SharedEndpoint:
    """The supervisor's endpoint for all its gateway processes (prometheus-client's multiprocess mode).

    :meth:`open` empties ``directory`` and returns the environment the processes must start with (the
    library reads it when it is imported); :meth:`serve` starts prometheus-client's own HTTP server on a
    thread of its own (the supervisor has no event loop, and a scrape only reads the processes' files);
    :meth:`process_ended` drops a dead process's queue gauges. A port that cannot be bound is logged, not
    fatal, as in a single process.
    """

    def __init__(self, listen: str, directory: Path) -> None:
        self.listen = listen
        self.directory = directory
        self._endpoint: _Endpoint | None = None

    def open(self) -> dict[str, str]:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(mode=0o700, parents=True)
        return {"PROMETHEUS_MULTIPROC_DIR": str(self.directory)}

    def serve(self, *collectors: Collector) -> None:
        """Serve the processes' metrics, the supervisor's ``process_*`` and ``collectors`` of its own."""
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        ProcessCollector(registry=registry)
        for collector in collectors:
            registry.register(collector)
        self._endpoint = _Endpoint.serve(self.listen, registry)
        if self._endpoint is not None:
            log.info("metrics.listening", listen=self.listen, port=self.port, processes="shared")

    @property
    def port(self) -> int | None:
        return None if self._endpoint is None else self._endpoint.port

    def process_ended(self, pid: int) -> None:
        multiprocess.mark_process_dead(pid, str(self.directory))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            endpoint.close()
        shutil.rmtree(self.directory, ignore_errors=True)


# -- the HTTP endpoint -----------------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); port 0 picks a free one (tests)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"metrics.listen must be host:port with a port 0..65535, got {listen!r}")
    return host.strip("[]"), int(port_text)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """prometheus-client's own HTTP server and the thread it serves from."""

    server: WSGIServer
    thread: threading.Thread

    @classmethod
    def serve(cls, listen: str, registry: CollectorRegistry) -> _Endpoint | None:
        """Serve ``registry`` on ``listen``; None (logged) when the address is unusable or taken."""
        try:
            host, port = parse_listen(listen)
            return cls(*start_http_server(port, host, registry=registry))
        except (OSError, ValueError) as exc:
            log.error("metrics.unavailable", listen=listen, error=str(exc), note="running without metrics")
            return None

    @property
    def port(self) -> int:
        return self.server.server_port

    def close(self) -> None:
        """Stop serving, close the listener (the port is free again), and wait for the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
