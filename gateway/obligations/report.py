"""The daily reconciliation report: per institution, what was due, what arrived, what was rejected and
why; as JSON (for machines) and as CSV (for a spreadsheet). Written by the daily housekeeping and by
``fdep-gateway report``.

The CSV starts with a UTF-8 byte order mark: it is for operators' spreadsheets, and without it Excel
opens the Chinese names as mojibake. (Report files sent *to* the platform must not carry one; this file
never goes there.)
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from gateway.obligations.status import Standing, State
from spool.fsio import makedirs_durable, write_atomic

COLUMNS = (
    "institution",
    "name",
    "station",
    "transfer_code",
    "table",
    "period",
    "deadline",
    "state",
    "received_at",
    "file_id",
    "batch",
    "forwarded",
    "rejected_files",
    "last_finding",
    "why",
    "to_do",
)

_TO_DO = {
    State.RECEIVED: "",
    State.LATE: "逾期报送：请按规定申请迟报或补报 / Late: apply for a late or supplementary report",
    State.MISSING: (
        "未报送：请尽快报送并申请迟报或补报 / Missing: send it and apply for a late or supplementary report"
    ),
    State.AT_RISK: "临近截止时间仍未报送成功 / Due soon and nothing accepted yet",
    State.REJECTED: "已拒收：请按回执修正后重新报送 / Rejected: fix it as the receipt says and send again",
    State.PENDING: "",
}


def rows(items: Sequence[Standing]) -> list[dict[str, object]]:
    """One row an obligation, by institution, station, table."""
    out = []
    for item in sorted(
        items, key=lambda s: (s.obligation.institution, s.obligation.station, s.obligation.table)
    ):
        row = item.as_dict()
        row["to_do"] = _TO_DO[item.state]
        out.append({column: row[column] for column in COLUMNS})
    return out


def as_json(items: Sequence[Standing], *, day: date, now: datetime) -> dict[str, object]:
    """The report as one JSON document: per institution, its counts by state and its rows."""
    institutions: dict[str, dict[str, object]] = {}
    for row in rows(items):
        entry = institutions.setdefault(
            str(row["institution"]), {"name": row["name"], "counts": {}, "obligations": []}
        )
        counts = entry["counts"]
        assert isinstance(counts, dict)  # noqa: S101 - built just above
        counts[str(row["state"])] = counts.get(str(row["state"]), 0) + 1
        listed = entry["obligations"]
        assert isinstance(listed, list)  # noqa: S101 - built just above
        listed.append({k: v for k, v in row.items() if k not in ("institution", "name")})
    return {"date": f"{day:%Y%m%d}", "generated_at": now.isoformat(), "institutions": institutions}


def as_csv(items: Sequence[Standing]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows(items))
    return buffer.getvalue()


def write(directory: Path, items: Sequence[Standing], *, day: date, now: datetime) -> tuple[Path, Path]:
    """``reconciliation-YYYYMMDD.json`` and ``.csv`` in ``directory``, each written atomically: the CSV
    first, so that a reader that sees the JSON finds the CSV of the same run beside it."""
    makedirs_durable(directory)
    stem = directory / f"reconciliation-{day:%Y%m%d}"
    document = json.dumps(as_json(items, day=day, now=now), ensure_ascii=False, indent=1)
    json_path, csv_path = stem.with_suffix(".json"), stem.with_suffix(".csv")
    write_atomic(csv_path, as_csv(items).encode("utf-8-sig"), mode=0o640)
    write_atomic(json_path, document.encode("utf-8"), mode=0o640)
    return json_path, csv_path
