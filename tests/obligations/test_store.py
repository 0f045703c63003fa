"""Obligations read from a real SQLite ledger and a real sync history, through ``due`` and ``report``."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import GatewayConfig, load_config
from gateway.history import HistoryEvent, HistoryWriter
from gateway.ledger import Ledger, State
from gateway.obligations.assess import LEDGER_NAME, assess, ledger_facts
from gateway.obligations.status import State as Standing
from gateway.service import ledger_path
from gateway.windows import PLATFORM_ZONE
from spool.ids import new_file_id

BJ = PLATFORM_ZONE
ORG = "41210000"
NOW = "2024-10-10T09:00:00+08:00"


def at(m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2024, m, d, hh, mm, tzinfo=BJ)


def accept(
    ledger: Ledger, when: datetime, table: str, date: str, *, batch: int = 1, mode: str = "Q", size: int = 10
) -> str:
    file_id = new_file_id(when)
    name = f"CISP-{ORG}_{table}_V01_1_{date}_{batch:02d}_{mode}.TXT"
    ledger.record(file_id, station="k6666", transfer_code="TC41210000", name=name, size=size, mode=mode)
    ledger.accept(
        file_id,
        station="k6666",
        institution=ORG,
        table=table,
        date=date,
        part=1,
        batch=batch,
        sha256=f"{file_id}",
    )
    ledger.set_state(file_id, State.FORWARDED.value)
    return file_id


def reject(writer: HistoryWriter, ledger: Ledger, when: datetime, table: str, date: str, code: str) -> str:
    file_id = new_file_id(when)
    ledger.record(file_id, state=State.REJECTED.value, outcome="rejected")
    finding = {"code": code, "severity": "error", "message_zh": f"{code} 中文", "message_en": f"{code} text"}
    writer.append(
        [
            HistoryEvent(
                ts=when,
                event="rejected",
                file_id=file_id,
                station="k6666",
                transfer_code="TC41210000",
                institution=ORG,
                table=table,
                date=date,
                batch="01",
                mode="Q",
                name=f"CISP-{ORG}_{table}_V01_1_{date}_01_Q.TXT",
                findings=[{"code": "LATE", "severity": "notice"}, finding],
                findings_total=1,
                message="rejected",
            )
        ]
    )
    return file_id


@pytest.fixture
def config(write_config: Callable[..., Path], tmp_path: Path) -> GatewayConfig:
    path = write_config(
        transfer_codes={
            "TC41210000": {
                "institution": ORG,
                "name": "示例基金",
                "stations": ["k6666"],
                "owes": ["D1001", "D2001"],
            },
            "TC41220000": {
                "institution": "41220000",
                "stations": ["k6666"],
                "owes": ["D2001"],
                "valid_until": "2024-09-27",
            },
        },
        obligations={"reports_dir": str(tmp_path / "reports")},
    )
    loaded = load_config(path)
    assert ledger_path(loaded).name == LEDGER_NAME  # the facts read the daemon's own ledger
    return loaded


@pytest.fixture
def store(config: GatewayConfig) -> dict[str, str]:
    """On 30 Sep (data date) 41210000 sends D2001 with a BOM, then a fixed re-report, both in time; D1001
    for September is not sent yet; an empty incremental D2001 for 27 Sep comes late."""
    ledger_path(config).parent.mkdir(parents=True, exist_ok=True)
    writer = HistoryWriter(config.history.dir, config.zone)
    with Ledger.open(ledger_path(config)) as ledger:
        ids = {
            "bad": reject(writer, ledger, at(10, 8, 9), "D2001", "20240930", "BOM_PRESENT"),
            "good": accept(ledger, at(10, 8, 10), "D2001", "20240930", batch=2),
            "empty": accept(ledger, at(10, 9, 8), "D2001", "20240927", mode="Z", size=0),
            "other_bad": reject(writer, ledger, at(10, 9, 9), "D1001", "20240930", "FIELD_FORMAT"),
        }
    return ids


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
