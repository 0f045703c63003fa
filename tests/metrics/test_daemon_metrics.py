"""The real daemon with ``metrics.listen``: files, findings, queues and retries, scraped over HTTP."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from harness.daemon import Gateway, d1001_body, d1001_name, drop, wait_for
from tests.forward.helpers import free_port

pytestmark = pytest.mark.slow

Families = dict[str, list[Sample]]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(root=tmp_path, config_path=tmp_path / "gateway.yaml")
    yield gw
    if gw.process is not None and gw.process.poll() is None:
        gw.kill()


def scrape(port: int) -> Families:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    return {family.name: list(family.samples) for family in text_string_to_metric_families(text)}


def sample(families: Families, name: str, **labels: str) -> float:
    for samples in families.values():
        for s in samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"no {name}{labels}")


def metrics_config(gateway: Gateway, **overrides: object) -> int:
    port = free_port()
    gateway.write_config(metrics={"listen": f"127.0.0.1:{port}"}, **overrides)
    return port


@pytest.mark.parametrize("processes", [1, 2])
def test_files_findings_and_queues(gateway: Gateway, processes: int) -> None:
    """With two processes the supervisor serves one endpoint for both: the same numbers."""
    port = metrics_config(gateway, settle_seconds=60, processes=processes)
    gateway.start()
    # a file dropped before its process watches the inbox would be found by the scan, and settle 60 s
    wait_for(lambda: gateway.log().count('"gateway.started"') == processes, what="every process")
    wait_for(lambda: "metrics.listening" in gateway.log(), what="the metrics endpoint")
    inbox = gateway.inbox()
    good = d1001_name()
    drop(inbox, good, d1001_body())
    bad = "CISP-41210000_D1001_V01_1_20200101_01_Q.txt"  # lower-case extension: NAME_INVALID
    drop(inbox, bad, d1001_body())
    (inbox / d1001_name(part=2)).write_bytes(d1001_body())  # written in place: settles for 60 s
    wait_for(lambda: len(gateway.outcomes()) == 2, what="two outcomes")

    def settled() -> bool:  # queues are published twice a second, not computed at the scrape
        got = scrape(port)
        return (
            sample(got, "fdep_gateway_files_total", station="k1237", outcome="rejected") == 1
            and sample(got, "fdep_gateway_queue_files", station="k1237", state="waiting") == 1
            and "fdep_gateway_obligations_refreshed_timestamp_seconds" in got  # once, however many processes
        )

    wait_for(settled, what="the rejection to be counted")
    got = scrape(port)
    assert sample(got, "fdep_gateway_files_total", station="k1237", outcome="forwarded") == 1
    assert sample(got, "fdep_gateway_findings_total", code="NAME_INVALID") == 1
    assert sample(got, "fdep_gateway_file_latency_seconds_count", station="k1237", outcome="forwarded") == 1
    assert sample(got, "fdep_gateway_rescans_total") >= 1
    assert sample(got, "fdep_gateway_queue_files", station="k1237", state="waiting") == 1
    assert sample(got, "fdep_gateway_queue_files", station="k1237", state="work") == 0
    assert sample(got, "fdep_gateway_queue_files", station="k6666", state="waiting") == 0
    assert sample(got, "fdep_gateway_oldest_waiting_seconds", station="k1237") > 0
    text = "\n".join(str(s) for samples in got.values() for s in samples)
    for name in (good, bad, d1001_name(part=2), "41210000", "示例基金"):
        assert name not in text
    assert gateway.stop() == 0
    with pytest.raises(OSError):
        scrape(port)


def test_deferred_and_retries_while_the_core_is_down(gateway: Gateway, tmp_path: Path) -> None:
    down = free_port()  # nothing listens there: connection refused, retried forever
    port = metrics_config(
        gateway,
        routes={
            "core-test": {"type": "http", "url": f"http://127.0.0.1:{down}", "max_backoff_seconds": 0.2},
            "core-prod": {"type": "directory", "path": str(tmp_path / "core" / "k6666")},
        },
    )
    gateway.start()
    wait_for(lambda: "metrics.listening" in gateway.log(), what="the metrics endpoint")
    drop(gateway.inbox(), d1001_name(), d1001_body())

    def retried() -> bool:  # queue gauges are published at the daemon's beats, not computed at the scrape
        got = scrape(port)
        return (
            sample(got, "fdep_gateway_forward_retries_total", route="core-test") >= 2
            and sample(got, "fdep_gateway_queue_files", station="k1237", state="deferred") == 1
        )

    wait_for(retried, what="retries to be counted and the file seen in deferred/")
    got = scrape(port)
    assert sample(got, "fdep_gateway_deferred_total", station="k1237", route="core-test") == 1
    assert sample(got, "fdep_gateway_queue_files", station="k1237", state="deferred") == 1
    assert sample(got, "fdep_gateway_queue_files", station="k1237", state="work") == 0
    assert sample(got, "fdep_gateway_files_total", station="k1237", outcome="forwarded") == 0
    assert gateway.stop() == 0
