"""The obligation gauges in the daemon's own metrics registry: bounded labels, zeros present, refreshed
from the real ledger and history, and the oldest deferred file's age."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import GatewayConfig
from gateway.daemon.start import ledger_path
from gateway.metrics.exporter import Metrics
from gateway.metrics.sink import NullMetrics
from gateway.obligations.gauges import register
from gateway.store.ledger import Ledger, State
from spool.ids import new_file_id
from tests.obligations.conftest import BJ


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_gauges_count_the_open_periods_by_station_table_and_state(
    config: GatewayConfig, store: dict[str, str]
) -> None:
    with Ledger.open(ledger_path(config)) as ledger:
        deferred = new_file_id(datetime(2024, 10, 10, 8, 0, tzinfo=BJ))
        ledger.record(deferred, state=State.DEFERRED.value, station="k6666")
    metrics = Metrics(None, process=False)
    gauges = register(metrics, config)
    assert gauges is not None and register(NullMetrics(), config) is None
    assert not any(name.startswith("fdep_gateway_obligations") for name, _ in samples(metrics))  # not yet
    now = datetime(2024, 10, 10, 9, 0, tzinfo=BJ)
    gauges.refresh(now)
    got = samples(metrics)

    def owed(table: str, state: str) -> float:
        return got[("fdep_gateway_obligations", (("state", state), ("station", "k6666"), ("table", table)))]

    # open on 10 Oct 09:00, the last five trading days: 41210000's D2001 for 26 Sep (missing), 27 Sep
    # (late: the empty Z), 30 Sep (received), 8 Oct (due by the end of the 10th: at risk), 9 Oct
    # (pending); 41220000, valid until 27 Sep, missed 26 and 27 Sep. D1001 for September: rejected.
    assert owed("D2001", "received") == 1
    assert owed("D2001", "late") == 1
    assert owed("D2001", "missing") == 3
    assert owed("D2001", "at-risk") == 1
    assert owed("D2001", "pending") == 1
    assert owed("D1001", "rejected") == 1
    assert owed("D1001", "missing") == 0  # zeros are there, so an alert sees 0 rather than nothing
    labels = {dict(key[1]).get("table") for key in got if key[0] == "fdep_gateway_obligations"}
    assert labels == set(config.tables)  # bounded by the catalogue; never an institution or a file name
    assert got[("fdep_gateway_oldest_deferred_seconds", (("station", "k6666"),))] == 3600
    assert got[("fdep_gateway_oldest_deferred_seconds", (("station", "k1237"),))] == 0
    assert got[("fdep_gateway_obligations_refreshed_timestamp_seconds", ())] == now.timestamp()
