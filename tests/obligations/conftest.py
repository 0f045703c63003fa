"""A real SQLite ledger and sync history holding National Day 2024's files, for the obligation tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, load_config
from gateway.daemon.start import ledger_path
from gateway.obligations.assess import LEDGER_NAME
from gateway.store.history import HistoryEvent, HistoryWriter
from gateway.store.ledger import Ledger, State
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
