"""What arrived, read through one small protocol so that another store can answer it.

``ReceivedFacts`` is all the obligation logic needs from a store. ``LedgerFacts`` answers it on the
embedded store: accepted files from the SQLite ledger (it keeps every row forever, see
``gateway.daemon.retention``), rejected ones from the sync history's ``rejected`` events, because the ledger
row of a file rejected by validation holds no table or date and no finding, and the history holds both.
A PostgreSQL store answers the same two questions from its own tables.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from gateway.obligations.status import Arrival
from gateway.store.history import daily_files
from gateway.store.rules import TAKEN, State
from spool.ids import file_id_time

_REJECTED = b'"event":"rejected"'
_TAKEN_STATES = tuple(sorted(s.value for s in TAKEN))


class ReceivedFacts(Protocol):
    """What a store tells the obligation logic."""

    def arrivals(self, first: date, last: date) -> Iterable[Arrival]:
        """The files that arrived for data dates ``first`` .. ``last`` (inclusive), accepted or rejected."""
        ...

    def oldest_deferred(self) -> dict[str, datetime]:
        """Per station, when the oldest file now in deferred/ was taken (stations without any: absent)."""
        ...


class LedgerFacts:
    """``ReceivedFacts`` on the SQLite ledger (accepted files) and the JSON Lines history (rejections).

    Only reads: it opens its own connection per call and never writes, so ``due`` and ``report`` can
    run beside the daemon.
    """

    def __init__(self, ledger: Path, history: Path, zone: ZoneInfo) -> None:
        self.ledger = ledger
        self.history = history
        self.zone = zone

    def arrivals(self, first: date, last: date) -> list[Arrival]:
        accepted = list(self._accepted(first, last))
        taken = {a.file_id for a in accepted}
        rejected = [a for a in self._rejected(first, last) if a.file_id not in taken]  # replayed and accepted
        return accepted + rejected

    def _accepted(self, first: date, last: date) -> Iterator[Arrival]:
        if not self.ledger.exists():
            return
        conn = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            marks = ", ".join("?" * len(_TAKEN_STATES))
            rows = conn.execute(
                "SELECT file_id, station, institution, table_code, data_date, batch, state "  # noqa: S608 - marks only
                f"FROM files WHERE data_date BETWEEN ? AND ? AND state IN ({marks})",
                (f"{first:%Y%m%d}", f"{last:%Y%m%d}", *_TAKEN_STATES),
            ).fetchall()
        finally:
            conn.close()
        forwarded = State.FORWARDED.value
        taken_at = self._taken_at
        make = Arrival._make  # tuple.__new__, for 100,000 rows
        for file_id, station, institution, table, data_date, batch, state in rows:
            if station is None or institution is None or table is None or batch is None:
                continue
            at = taken_at(file_id)
            yield make(
                (
                    file_id,
                    station,
                    institution,
                    table,
                    data_date,
                    batch,
                    at,
                    True,
                    state == forwarded,
                    None,
                    None,
                )
            )

    def oldest_deferred(self) -> dict[str, datetime]:
        if not self.ledger.exists():
            return {}
        conn = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            rows = conn.execute(  # file ids sort by the time they were made
                "SELECT station, MIN(file_id) FROM files WHERE state = ? AND station IS NOT NULL "
                "GROUP BY station",
                (State.DEFERRED.value,),
            ).fetchall()
        finally:
            conn.close()
        return {station: self._taken_at(file_id) for station, file_id in rows}

    def _rejected(self, first: date, last: date) -> Iterator[Arrival]:
        """Rejected events for the data dates, from the history days a file for them can have come in
        (none before its data date: a date in the future is rejected by name)."""
        low, high = f"{first:%Y%m%d}", f"{last:%Y%m%d}"
        since = first - timedelta(days=1)
        for day, path in daily_files(self.history):
            if day < since:
                continue
            for event in _rejections(path):
                data_date = event.get("date")
                if not isinstance(data_date, str) or not low <= data_date <= high:
                    continue
                arrival = self._arrival(event)
                if arrival is not None:
                    yield arrival

    def _arrival(self, event: dict[str, Any]) -> Arrival | None:
        file_id, station = event.get("file_id"), event.get("station")
        institution, table, batch = event.get("institution"), event.get("table"), event.get("batch")
        if not (isinstance(file_id, str) and station and institution and table and batch):
            return None
        first = _first_error(event.get("findings"))
        try:
            at = self._taken_at(file_id)
            number = int(batch)
        except ValueError:
            return None
        return Arrival(
            file_id=file_id,
            station=station,
            institution=institution,
            table=table,
            data_date=event["date"],
            batch=number,
            at=at,
            accepted=False,
            finding=first.get("code") if first else None,
            why=f"{first.get('message_zh')} / {first.get('message_en')}" if first else None,
        )

    def _taken_at(self, file_id: str) -> datetime:
        """When the gateway took the file: its id says (made at the claim, in the gateway's zone).

        The ledger's ids are the gateway's own: read straight from their digits (a third of the time
        of ``file_id_time``'s checks, which matters for 100,000 rows); anything odd goes the checked way.
        """
        try:
            return datetime(
                int(file_id[:4]),
                int(file_id[4:6]),
                int(file_id[6:8]),
                int(file_id[9:11]),
                int(file_id[11:13]),
                int(file_id[13:15]),
                int(file_id[16:22]),
                tzinfo=self.zone,
            )
        except ValueError:
            return file_id_time(file_id, self.zone)


def _rejections(path: Path) -> Iterator[dict[str, Any]]:
    """The ``rejected`` events of one history file; lines that do not parse are skipped (as readers do)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:  # swept away meanwhile
        return
    with handle:
        for line in handle:
            if _REJECTED not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "rejected":
                yield event


def _first_error(found: object) -> dict[str, Any] | None:
    """The first error finding of a rejected event (notices such as LATE do not say why)."""
    if not isinstance(found, list):
        return None
    return next((f for f in found if isinstance(f, dict) and f.get("severity") == "error"), None)
