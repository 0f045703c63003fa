"""The Prometheus endpoint, scraped over real HTTP on 127.0.0.1 and parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import gzip
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from structlog.testing import capture_logs

from gateway.config import MetricsConfig
from gateway.metrics.exporter import (
    LABEL_NAMES,
    LATENCY_BUCKETS,
    OTHER,
    OTHER_CODE,
    OUTCOMES,
    Metrics,
    metrics_for,
    parse_listen,
)
from gateway.metrics.sink import (
    NULL_METRICS,
    STATES,
    DepthSource,
    NullMetrics,
    QueueDepth,
    claim_age,
    queue_depths,
)
from spool.ids import new_file_id
from validators.findings import CATALOGUE

STATIONS = ("k1237", "k6666")
ROUTES = ("core-test", "core-prod")
ZONE = ZoneInfo("Asia/Shanghai")

# What senders control: file names and field values, the restricted table D1005's among them.
FILE_NAME = "CISP-41210000_D1005_V01_1_20220401_01_Q.TXT"
FIELD_VALUE = "张三"
SALARY = "1234567.89"

Families = dict[str, list[Sample]]


@pytest.fixture
async def make_metrics() -> AsyncIterator[Callable[..., Any]]:
    """Start ``Metrics`` on a free 127.0.0.1 port; every one is stopped at the end of the test."""
    started: list[Metrics] = []

    async def make(depths: DepthSource | None = None, **options: Any) -> Metrics:
        options.setdefault("stations", STATIONS)
        options.setdefault("routes", ROUTES)
        metrics = Metrics("127.0.0.1:0", depths=depths, **options)
        await metrics.start()
        assert metrics.port
        started.append(metrics)
        return metrics

    yield make
    for metrics in started:
        await metrics.stop()


def url(metrics: Metrics, path: str = "/metrics") -> str:
    return f"http://127.0.0.1:{metrics.port}{path}"


async def fetch(
    address: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A real HTTP request, from a thread so that the test's loop stays free."""

    def get() -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(address, method=method, headers=dict(headers or {}))  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()

    return await asyncio.to_thread(get)


async def scrape(metrics: Metrics) -> Families:
    status, headers, body = await fetch(url(metrics))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        family.name: list(family.samples) for family in text_string_to_metric_families(body.decode("utf-8"))
    }


def value(families: Families, family: str, sample: str | None = None, **labels: str) -> float:
    """The one sample of ``family`` named ``sample`` (default: the family's name) with exactly ``labels``."""
    name = sample or family
    found = [s.value for s in families[family] if s.name == name and s.labels == labels]
    assert len(found) == 1, (family, name, labels, families.get(family))
    return found[0]


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    await writer.wait_closed()
    return answer


# -- events ----------------------------------------------------------------------------------------------


async def test_events_are_counted_and_scraped_over_http(make_metrics: Callable[..., Any]) -> None:
    metrics = await make_metrics()
    metrics.file_done("k1237", "forwarded", 0.004)
    metrics.file_done("k1237", "forwarded", 3.0)
    metrics.file_done("k1237", "rejected", 700.0)
    metrics.file_done("k6666", "duplicate", None)  # claim time unknown: counted, not timed
    metrics.findings(["FIELD_TOO_LONG", "FIELD_TOO_LONG", "REQUIRED_EMPTY"])  # one file: codes once each
    metrics.findings(["FIELD_TOO_LONG"])
    metrics.finding("LATE")
    metrics.forward_retry("core-prod")
    metrics.forward_retry("core-prod")
    metrics.deferred("k6666", "core-prod")
    metrics.overflow()
    metrics.rescan()
    metrics.rescan()
    metrics.rescan()

    got = await scrape(metrics)

    files = "fdep_gateway_files"
    assert value(got, files, "fdep_gateway_files_total", station="k1237", outcome="forwarded") == 2
    assert value(got, files, "fdep_gateway_files_total", station="k1237", outcome="rejected") == 1
    assert value(got, files, "fdep_gateway_files_total", station="k6666", outcome="duplicate") == 1
    assert value(got, files, "fdep_gateway_files_total", station="k6666", outcome="forwarded") == 0

    findings = "fdep_gateway_findings"
    assert value(got, findings, "fdep_gateway_findings_total", code="FIELD_TOO_LONG") == 2
    assert value(got, findings, "fdep_gateway_findings_total", code="REQUIRED_EMPTY") == 1
    assert value(got, findings, "fdep_gateway_findings_total", code="LATE") == 1
    assert value(got, findings, "fdep_gateway_findings_total", code="BOM_PRESENT") == 0

    retries = "fdep_gateway_forward_retries"
    assert value(got, retries, "fdep_gateway_forward_retries_total", route="core-prod") == 2
    assert value(got, retries, "fdep_gateway_forward_retries_total", route="core-test") == 0
    deferred = "fdep_gateway_deferred"
    assert value(got, deferred, "fdep_gateway_deferred_total", station="k6666", route="core-prod") == 1
    overflows, rescans = "fdep_gateway_watch_overflows", "fdep_gateway_rescans"
    assert value(got, overflows, "fdep_gateway_watch_overflows_total") == 1
    assert value(got, rescans, "fdep_gateway_rescans_total") == 3

    latency = "fdep_gateway_file_latency_seconds"
    fwd = {"station": "k1237", "outcome": "forwarded"}
    assert value(got, latency, f"{latency}_count", **fwd) == 2
    assert value(got, latency, f"{latency}_sum", **fwd) == pytest.approx(3.004)
    assert value(got, latency, f"{latency}_bucket", le="0.01", **fwd) == 1
    assert value(got, latency, f"{latency}_bucket", le="2.5", **fwd) == 1
    assert value(got, latency, f"{latency}_bucket", le="5.0", **fwd) == 2
    rej = {"station": "k1237", "outcome": "rejected"}
    assert value(got, latency, f"{latency}_bucket", le="600.0", **rej) == 0  # beyond 10 min
    assert value(got, latency, f"{latency}_bucket", le="+Inf", **rej) == 1
    assert value(got, latency, f"{latency}_count", station="k6666", outcome="duplicate") == 0


async def test_latency_buckets_span_10ms_to_10min(make_metrics: Callable[..., Any]) -> None:
    assert LATENCY_BUCKETS[0] == 0.01
    assert LATENCY_BUCKETS[-1] == 600
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
    metrics = await make_metrics()
    got = await scrape(metrics)
    bounds = {
        s.labels["le"]
        for s in got["fdep_gateway_file_latency_seconds"]
        if s.name.endswith("_bucket")
        and s.labels["station"] == "k1237"
        and s.labels["outcome"] == "forwarded"
    }
    assert bounds == {str(float(b)) for b in LATENCY_BUCKETS} | {"+Inf"}


async def test_known_series_exist_at_zero_before_any_event(make_metrics: Callable[..., Any]) -> None:
    """So that rate() and alerts see a 0 -> 1 step instead of a series appearing from nowhere."""
    got = await scrape(await make_metrics())
    files = {(s.labels["station"], s.labels["outcome"]) for s in got["fdep_gateway_files"]}
    assert files >= {(station, outcome) for station in STATIONS for outcome in OUTCOMES}
    codes = {s.labels["code"] for s in got["fdep_gateway_findings"] if s.name.endswith("_total")}
    assert codes == set(CATALOGUE)
    routes = {s.labels["route"] for s in got["fdep_gateway_forward_retries"] if s.name.endswith("_total")}
    assert routes == set(ROUTES)
    assert all(s.value == 0 for s in got["fdep_gateway_files"] if s.name.endswith("_total"))


# -- queue depths ----------------------------------------------------------------------------------------


async def test_queue_gauges_are_published_on_the_loop_thread_and_scraped_from_the_snapshot(
    make_metrics: Callable[..., Any],
) -> None:
    """The scrape runs on the server's thread: it serves what the last publish (start, then each beat)
    read on the loop, and never calls the source itself."""
    depths = {
        "k1237": QueueDepth(waiting=3, work=2, deferred=1, held=0, oldest_waiting_seconds=42.5),
        "k6666": QueueDepth(),
    }
    threads: list[int] = []

    def source() -> dict[str, QueueDepth]:
        threads.append(threading.get_ident())
        return dict(depths)

    metrics = await make_metrics(source)  # start() publishes
    got = await scrape(metrics)
    queue = "fdep_gateway_queue_files"
    assert value(got, queue, station="k1237", state="waiting") == 3
    assert value(got, queue, station="k1237", state="work") == 2
    assert value(got, queue, station="k1237", state="deferred") == 1
    assert value(got, queue, station="k1237", state="held") == 0
    for state in STATES:
        assert value(got, queue, station="k6666", state=state) == 0
    oldest = "fdep_gateway_oldest_waiting_seconds"
    assert value(got, oldest, station="k1237") == 42.5
    assert value(got, oldest, station="k6666") == 0  # nothing waiting

    depths["k1237"] = QueueDepth(waiting=0, work=7)
    metrics.publish()  # the daemon's next beat
    got = await scrape(metrics)
    assert value(got, queue, station="k1237", state="waiting") == 0
    assert value(got, queue, station="k1237", state="work") == 7
    assert value(got, oldest, station="k1237") == 0
    assert threads == [threading.get_ident()] * 2  # the daemon's loop: no locks needed in the source


async def test_depth_source_can_be_set_after_start(make_metrics: Callable[..., Any]) -> None:
    metrics = await make_metrics()
    got = await scrape(metrics)
    assert "fdep_gateway_queue_files" not in got
    metrics.depths = lambda: {"k1237": QueueDepth(held=4)}
    metrics.publish()
    got = await scrape(metrics)
    assert value(got, "fdep_gateway_queue_files", station="k1237", state="held") == 4


def test_queue_depths_from_what_the_daemon_keeps_in_memory() -> None:
    depths = queue_depths(
        STATIONS,
        waiting=[("k1237", 1, 3.0), ("k1237", 1, 12.5), ("k1238", 1, 1.0), ("k1238", 500, 40.0)],
        files=[
            ("k1237", "work"),
            ("k1237", "work"),
            ("k1237", "deferred"),
            ("k6666", "held"),
            ("k6666", "20260301"),  # archived or quarantined (a day dir): no longer queued
            ("k6666", "waiting"),  # not a state dir: ignored
        ],
    )
    assert depths == {
        "k1237": QueueDepth(waiting=2, work=2, deferred=1, held=0, oldest_waiting_seconds=12.5),
        "k6666": QueueDepth(held=1),
        "k1238": QueueDepth(waiting=501, oldest_waiting_seconds=40.0),  # 500 beyond the detector's bound
    }


async def test_a_failing_depth_source_leaves_only_the_gauges_out(make_metrics: Callable[..., Any]) -> None:
    def broken() -> dict[str, QueueDepth]:
        raise RuntimeError("the detector is not there yet")

    with capture_logs() as logs:
        metrics = await make_metrics(broken)
        metrics.rescan()
        metrics.publish()
        got = await scrape(metrics)
    assert "fdep_gateway_queue_files" not in got
    assert value(got, "fdep_gateway_rescans", "fdep_gateway_rescans_total") == 1
    assert any(entry["event"] == "metrics.depths_failed" for entry in logs)
    failed = [entry for entry in logs if entry["event"] == "metrics.depths_failed"]
    assert len(failed) == 1  # once per failing streak, not at every beat


async def test_gauges_last_published_are_left_out_once_the_source_fails(
    make_metrics: Callable[..., Any],
) -> None:
    """Stale queue numbers would look current: a failed publish drops them until one works again."""
    depths: dict[str, QueueDepth] | None = {"k1237": QueueDepth(work=2)}

    def source() -> dict[str, QueueDepth]:
        if depths is None:
            raise RuntimeError("broken")
        return depths

    metrics = await make_metrics(source)
    assert value(await scrape(metrics), "fdep_gateway_queue_files", station="k1237", state="work") == 2
    depths = None
    with capture_logs() as logs:
        metrics.publish()
        metrics.publish()
    assert "fdep_gateway_queue_files" not in await scrape(metrics)
    assert [entry["event"] for entry in logs] == ["metrics.depths_failed"]
    depths = {"k1237": QueueDepth(work=5)}
    metrics.publish()
    assert value(await scrape(metrics), "fdep_gateway_queue_files", station="k1237", state="work") == 5


# -- restricted tables: labels are only station, outcome, code, state, route -------------------------------


def _allowed(name: str, label_value: str) -> bool:
    if name == "station":
        return bool(re.fullmatch(r"k[0-9]{4}", label_value)) or label_value == OTHER
    if name == "outcome":
        return label_value in (*OUTCOMES, OTHER)
    if name == "code":
        return label_value in CATALOGUE or label_value == OTHER_CODE
    if name == "state":
        return label_value in STATES
    if name == "route":
        return label_value in (*ROUTES, OTHER)
    if name == "le":
        return label_value == "+Inf" or float(label_value) in LATENCY_BUCKETS
    return False


async def test_labels_never_carry_file_names_or_field_values(make_metrics: Callable[..., Any]) -> None:
    """Whatever a caller passes by mistake, labels hold only the allowed sets; no name, no value leaks."""
    secrets = [FILE_NAME, FIELD_VALUE, SALARY, "../etc/passwd", 'k1237",evil="1', "k1237\nx 1"]
    metrics = await make_metrics(
        lambda: {
            "k1237": QueueDepth(waiting=1, oldest_waiting_seconds=5),
            FILE_NAME: QueueDepth(work=2, oldest_waiting_seconds=9),
            FIELD_VALUE: QueueDepth(work=3),
        }
    )
    metrics.file_done("k1237", "forwarded", 0.5)
    metrics.findings(["FIELD_TOO_LONG"])
    metrics.forward_retry("core-test")
    metrics.forward_retry("not-configured")  # a plain name, but not a route of this config
    for secret in secrets:
        metrics.file_done(secret, secret, 1.0)
        metrics.findings([secret, f"FIELD_ENUM:{secret}"])
        metrics.finding(secret)
        metrics.forward_retry(secret)
        metrics.deferred(secret, secret)

    status, _headers, body = await fetch(url(metrics))
    assert status == 200
    text = body.decode("utf-8")
    for secret in secrets:
        assert secret not in text
    got = {f.name: list(f.samples) for f in text_string_to_metric_families(text)}
    for samples in got.values():
        for sample in samples:
            assert set(sample.labels) <= LABEL_NAMES, sample
            for name, label_value in sample.labels.items():
                assert _allowed(name, label_value), sample
    # The mistakes were counted, under "other", and the bad stations' queues added up there.
    files = "fdep_gateway_files"
    assert value(got, files, "fdep_gateway_files_total", station=OTHER, outcome=OTHER) == len(secrets)
    assert value(got, "fdep_gateway_findings", "fdep_gateway_findings_total", code=OTHER_CODE) == 2 * len(
        secrets
    )
    retries = "fdep_gateway_forward_retries"
    assert value(got, retries, "fdep_gateway_forward_retries_total", route="core-test") == 1
    assert value(got, retries, "fdep_gateway_forward_retries_total", route=OTHER) == len(secrets) + 1
    assert value(got, "fdep_gateway_queue_files", station=OTHER, state="work") == 5
    assert value(got, "fdep_gateway_oldest_waiting_seconds", station=OTHER) == 9
    assert value(got, "fdep_gateway_queue_files", station="k1237", state="waiting") == 1


# -- the endpoint ----------------------------------------------------------------------------------------


async def test_http_surface(make_metrics: Callable[..., Any]) -> None:
    """prometheus-client's own server: GET only (HEAD and POST get 405), gzip when the scraper accepts it
    (Prometheus does), and its ``name[]`` filter."""
    metrics = await make_metrics()
    metrics.rescan()
    for method in ("HEAD", "POST"):
        status, headers, _ = await fetch(url(metrics), method=method)
        assert status == 405
        assert "GET" in headers["Allow"]
    status, headers, body = await fetch(url(metrics), headers={"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert b"fdep_gateway_rescans_total 1.0" in gzip.decompress(body)
    status, _, body = await fetch(url(metrics, "/metrics?name[]=fdep_gateway_rescans_total"))
    assert status == 200
    assert b"fdep_gateway_rescans_total 1.0" in body
    assert b"fdep_gateway_files_total" not in body


async def test_openmetrics_when_the_scraper_asks_for_it(make_metrics: Callable[..., Any]) -> None:
    metrics = await make_metrics()
    metrics.rescan()
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, body = await fetch(url(metrics), headers={"Accept": accept})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b"fdep_gateway_rescans_total 1.0" in body


async def test_malformed_requests_get_an_error_not_a_hang(make_metrics: Callable[..., Any]) -> None:
    metrics = await make_metrics()
    answer = await raw_request(metrics.port, b"NONSENSE\r\n\r\n")  # answered as HTTP/0.9: no status line
    assert b"Error code: 400" in answer
    answer = await raw_request(metrics.port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 431 ")  # the stdlib's limit: 64 KiB a line
    answer = await raw_request(metrics.port, b"GET /metrics HTTP/1.0\n\n")  # bare LF line ends
    assert answer.startswith(b"HTTP/1.0 200 ")
    assert b"fdep_gateway_rescans_total" in answer


async def test_stop_frees_the_port_even_with_an_idle_connection_open() -> None:
    metrics = Metrics("127.0.0.1:0")
    await metrics.start()
    port = metrics.port
    assert port
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)  # connected, says nothing
    await asyncio.sleep(0.05)
    await asyncio.wait_for(metrics.stop(), timeout=5)
    assert metrics.port is None
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    again = Metrics(f"127.0.0.1:{port}")  # a restarted daemon binds the same port
    await again.start()
    assert again.port == port
    await again.stop()
    writer.close()
    await writer.wait_closed()
    await metrics.stop()  # twice is fine


async def test_a_port_in_use_is_logged_and_files_keep_flowing() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        metrics = Metrics(f"127.0.0.1:{busy.getsockname()[1]}")
        with capture_logs() as logs:
            await metrics.start()
        assert metrics.port is None
        assert [entry["event"] for entry in logs] == ["metrics.unavailable"]
        metrics.file_done("k1237", "forwarded", 1.0)  # recording still works
        await metrics.stop()


async def test_a_listen_address_out_of_range_is_logged_not_raised() -> None:
    metrics = Metrics("127.0.0.1:99999")  # the config's pattern lets 5 digits through
    with capture_logs() as logs:
        await metrics.start()
    assert metrics.port is None
    assert [entry["event"] for entry in logs] == ["metrics.unavailable"]


async def test_several_instances_keep_their_own_registries(make_metrics: Callable[..., Any]) -> None:
    one, two = await make_metrics(), await make_metrics()
    assert one.port != two.port
    one.overflow()
    got_one, got_two = await scrape(one), await scrape(two)
    assert value(got_one, "fdep_gateway_watch_overflows", "fdep_gateway_watch_overflows_total") == 1
    assert value(got_two, "fdep_gateway_watch_overflows", "fdep_gateway_watch_overflows_total") == 0


# -- disabled mode and helpers ---------------------------------------------------------------------------


async def test_without_metrics_listen_every_call_is_a_no_op() -> None:
    metrics = metrics_for(None, stations=STATIONS, routes=ROUTES, depths=dict)
    assert isinstance(metrics, NullMetrics)
    for sink in (metrics, NULL_METRICS):
        sink.prepare(STATIONS, ROUTES)
        sink.file_done("k1237", "forwarded", 1.0)
        sink.findings(["LATE"])
        sink.finding("LATE")
        sink.forward_retry("core-test")
        sink.deferred("k1237", "core-test")
        sink.overflow()
        sink.rescan()
        await sink.start()
        assert sink.port is None
        await sink.stop()


async def test_metrics_for_a_configured_listen() -> None:
    metrics = metrics_for(MetricsConfig(listen="127.0.0.1:0"), stations=STATIONS, routes=ROUTES)
    assert isinstance(metrics, Metrics)
    await metrics.start()
    try:
        got = await scrape(metrics)
        assert "fdep_gateway_files" in got
    finally:
        await metrics.stop()


def test_claim_age_from_the_file_id() -> None:
    now = datetime(2026, 3, 2, 10, 0, 0, tzinfo=ZONE)
    assert claim_age(new_file_id(now - timedelta(seconds=2.5)), now) == pytest.approx(2.5)
    assert claim_age(new_file_id(now + timedelta(seconds=5)), now) == 0  # the clock went back
    assert claim_age("not-an-id", now) is None


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("localhost:0", ("localhost", 0))],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["127.0.0.1", ":9464", "127.0.0.1:99999", "127.0.0.1:x"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_listen(listen)


async def test_lease_gauges_say_what_this_node_holds(make_metrics: Callable[..., Any]) -> None:
    metrics = await make_metrics()
    families = await scrape(metrics)
    assert value(families, "fdep_gateway_lease_groups") == 0  # a single node: always there, at 0
    metrics.leases(held=21, epoch=7, valid_seconds=7.5, live_nodes=3)
    families = await scrape(metrics)
    assert value(families, "fdep_gateway_lease_groups") == 21
    assert value(families, "fdep_gateway_lease_epoch_max") == 7
    assert value(families, "fdep_gateway_lease_valid_seconds") == 7.5
    assert value(families, "fdep_gateway_cluster_nodes") == 3
