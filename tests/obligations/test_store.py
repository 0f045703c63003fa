"""Obligations read from a real SQLite ledger and a real sync history, through ``due`` and ``report``."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import GatewayConfig
from gateway.obligations.assess import assess, ledger_facts
from gateway.obligations.status import State as Standing
from tests.obligations.conftest import NOW, ORG


def test_the_ledger_and_history_answer_for_the_period(config: GatewayConfig, store: dict[str, str]) -> None:
    found = {
        (s.obligation.institution, s.obligation.table, s.obligation.period.label): s
        for s in assess(
            config, ledger_facts(config), day=datetime(2024, 9, 30).date(), now=datetime.fromisoformat(NOW)
        )
    }
    assert set(found) == {(ORG, "D1001", "202409"), (ORG, "D2001", "20240930")}  # 41220000 had expired
    daily = found[(ORG, "D2001", "20240930")]
    assert (daily.state, daily.accepted and daily.accepted.file_id, daily.rejected) == (
        Standing.RECEIVED,
        store["good"],
        1,
    )
    monthly = found[(ORG, "D1001", "202409")]
    assert monthly.state is Standing.REJECTED  # deadline 15 Oct 11:30, more than 24 h away
    assert monthly.last_rejected is not None
    assert (monthly.last_rejected.file_id, monthly.last_rejected.finding) == (
        store["other_bad"],
        "FIELD_FORMAT",
    )


def test_due_lists_states_and_exits_1_when_anything_is_missing(
    config: GatewayConfig,
    store: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(config.history.dir.parent / "gateway.yaml")
    code = main(["due", "-c", path, "--date", "2024-09-27", "--now", NOW, "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by = {(r["institution"], r["table"]): r for r in rows}
    assert by[(ORG, "D2001")]["state"] == "late"  # the empty Z file counts, after its 9 Oct 00:00 deadline
    assert by[(ORG, "D2001")]["file_id"] == store["empty"]
    assert by[("41220000", "D2001")]["state"] == "missing"  # valid on its last day, nothing came
    assert code == 1
    # one institution and the states asked for only; nothing open among them -> 0
    code = main(
        ["due", "-c", path, "--date", "20240930", "--now", NOW, "--institution", ORG, "--state", "received"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "D2001" in out and "D1001" not in out and "1 received" in out
    assert main(["due", "-c", path, "--date", "2024-13-01"]) == 2


def test_report_writes_json_and_a_spreadsheet_csv(
    config: GatewayConfig, store: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(config.history.dir.parent / "gateway.yaml")
    assert main(["report", "-c", path, "--date", "20240930", "--now", "2024-10-16T09:00:00+08:00"]) == 0
    written = [Path(p) for p in capsys.readouterr().out.split()]
    assert [p.name for p in written] == ["reconciliation-20240930.json", "reconciliation-20240930.csv"]
    assert written[0].parent == config.obligations.reports_dir
    document = json.loads(written[0].read_text(encoding="utf-8"))
    entry = document["institutions"][ORG]
    assert entry["counts"] == {"received": 1, "missing": 1}
    missing = next(o for o in entry["obligations"] if o["state"] == "missing")
    assert (missing["table"], missing["last_finding"]) == ("D1001", "FIELD_FORMAT")
    assert "补报" in missing["to_do"]
    raw = written[1].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel needs the BOM to read UTF-8
    table = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    assert {(r["institution"], r["table"], r["state"]) for r in table} == {
        (ORG, "D1001", "missing"),
        (ORG, "D2001", "received"),
    }
    assert next(r for r in table if r["table"] == "D1001")["why"] == "FIELD_FORMAT 中文 / FIELD_FORMAT text"
