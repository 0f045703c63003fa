"""What the console reads: files and their events, behind one small protocol.

``ConsoleReader`` is all the pages need; ``HistoryIndex`` implements it over the JSON Lines history with
a SQLite index beside it (the daily files stay the truth: the index only remembers how far it has read
each one and can be deleted at any time). A PostgreSQL store can implement the same protocol.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from gateway.store.history import daily_files
from gateway.store.historyview import read_after

STATE_EVENTS = ("received", "held", "deferred", "forwarded", "rejected", "duplicate", "vanished", "replayed")
"""Events that change where a file stands; ``feedback`` and ``recovered`` add to its story only."""
_SCHEMA = 1


@dataclass(frozen=True, slots=True)
class FileFilter:
    """The institution's search: each given field must match; ``name`` is a case-insensitive substring."""

    table: str | None = None
    date: str | None = None  # data date, YYYYMMDD
    name: str | None = None
    state: str | None = None


@dataclass(frozen=True, slots=True)
class FileRow:
    file_id: str
    station: str | None
    transfer_code: str | None
    institution: str | None
    table: str | None
    date: str | None
    name: str | None
    state: str
    first_ts: str
    last_ts: str
    records: int | None
    findings_total: int | None


class ConsoleReader(Protocol):
    """The console's reads. ``codes`` scopes every call to those transfer codes; None is every file."""

    def files(
        self, codes: Collection[str] | None, flt: FileFilter, *, limit: int, offset: int = 0
    ) -> list[FileRow]:
        """Files newest first (by their last event)."""

    def file(self, codes: Collection[str] | None, file_id: str) -> FileRow | None:
        """One file, or None when it does not exist or is outside ``codes`` (the two look the same)."""

    def events(self, file_id: str) -> list[dict[str, Any]]:
        """Every event of one file, oldest first (call ``file`` first: this one is not scoped)."""

    def last_event(self, file_id: str, kind: str) -> dict[str, Any] | None:
        """The file's newest event of ``kind`` (the deferred list's reason)."""


_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (path TEXT PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, file_id TEXT NOT NULL, event TEXT NOT NULL, ts TEXT NOT NULL, line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_file ON events (file_id, event, seq);
CREATE TABLE IF NOT EXISTS files (
    file_id TEXT PRIMARY KEY, station TEXT, transfer_code TEXT, institution TEXT, table_code TEXT,
    data_date TEXT, name TEXT, state TEXT NOT NULL, first_ts TEXT NOT NULL, last_ts TEXT NOT NULL,
    records INTEGER, findings_total INTEGER
);
CREATE INDEX IF NOT EXISTS files_code_time ON files (transfer_code, last_ts);
CREATE INDEX IF NOT EXISTS files_time ON files (last_ts);
"""
_COLUMNS = (
    "file_id, station, transfer_code, institution, table_code, data_date, name, state, first_ts, last_ts, "
    "records, findings_total"
)


class HistoryIndex:
    """A SQLite index of the history, brought up to date (from where it stopped) before each read."""

    def __init__(self, history_dir: Path, index_path: Path) -> None:
        self._dir = history_dir
        index_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(index_path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # a lost tail is read again from the history
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(_DDL)
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(_SCHEMA),))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def refresh(self) -> int:
        """Read what the history gained since the last call; return how many events were added."""
        with self._lock:
            known = dict(self._conn.execute("SELECT path, offset FROM sources").fetchall())
            present = daily_files(self._dir)
            stale = set(known) - {str(path) for _, path in present}
            if stale:
                self._forget(stale, present)
            added = 0
            for day, path in present:
                start = int(known.get(str(path), 0))
                try:
                    if path.stat().st_size == start:
                        continue
                except FileNotFoundError:
                    continue
                events, end = read_after(day, path, start)
                self._conn.execute("BEGIN")
                try:
                    self._add(events)
                    self._conn.execute("INSERT OR REPLACE INTO sources VALUES (?, ?)", (str(path), end))
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                added += len(events)
            return added

    def _forget(self, stale: Collection[str], present: Sequence[tuple[date, Path]]) -> None:
        """Retention removed daily files: drop the files whose last event is older than what is left.

        The console then shows no more than the history holds (and the index does not grow forever).
        A file with events on both sides of the cut keeps its whole story until it goes too.
        """
        cutoff = present[0][0].isoformat() if present else "9999"
        self._conn.execute("BEGIN")
        try:
            gone = self._conn.execute("SELECT file_id FROM files WHERE last_ts < ?", (cutoff,)).fetchall()
            self._conn.executemany("DELETE FROM events WHERE file_id = ?", gone)
            self._conn.execute("DELETE FROM files WHERE last_ts < ?", (cutoff,))
            self._conn.executemany("DELETE FROM sources WHERE path = ?", [(path,) for path in stale])
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _add(self, events: Sequence[dict[str, Any]]) -> None:
        rows = []
        for e in events:
            file_id = e.get("file_id")
            if not isinstance(file_id, str) or not file_id:
                continue
            rows.append((file_id, str(e["event"]), str(e["ts"]), json.dumps(e, ensure_ascii=False)))
        self._conn.executemany("INSERT INTO events (file_id, event, ts, line) VALUES (?, ?, ?, ?)", rows)
        for e in events:
            file_id = e.get("file_id")
            if not isinstance(file_id, str) or not file_id:
                continue
            kind = str(e["event"])
            self._conn.execute(
                f"INSERT INTO files ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "  # noqa: S608 (constant)
                "ON CONFLICT (file_id) DO UPDATE SET "
                "station=coalesce(excluded.station, station), "
                "transfer_code=coalesce(excluded.transfer_code, transfer_code), "
                "institution=coalesce(excluded.institution, institution), "
                "table_code=coalesce(excluded.table_code, table_code), "
                "data_date=coalesce(excluded.data_date, data_date), "
                "name=coalesce(excluded.name, name), "
                "state=CASE WHEN excluded.state IN ({states}) THEN excluded.state ELSE state END, "
                "last_ts=excluded.last_ts, "
                "records=coalesce(excluded.records, records), "
                "findings_total=coalesce(excluded.findings_total, findings_total)".format(
                    states=",".join(f"'{s}'" for s in STATE_EVENTS)
                ),
                (
                    file_id,
                    e.get("station"),
                    e.get("transfer_code"),
                    e.get("institution"),
                    e.get("table"),
                    e.get("date"),
                    e.get("name"),
                    kind,
                    str(e["ts"]),
                    str(e["ts"]),
                    e.get("records"),
                    e.get("findings_total"),
                ),
            )

    def files(
        self, codes: Collection[str] | None, flt: FileFilter, *, limit: int, offset: int = 0
    ) -> list[FileRow]:
        self.refresh()
        where, params = _where(flt)
        want = limit + offset
        with self._lock:
            if codes is None:
                found = self._select(where, params, want)
            else:  # one index range per code, merged: an OR of codes would sort every row of them
                found = []
                for code in sorted(set(codes)):
                    found += self._select(["transfer_code = ?", *where], [code, *params], want)
        found.sort(key=lambda r: (r.last_ts, r.file_id), reverse=True)
        return found[offset:want]

    def _select(self, where: list[str], params: list[Any], limit: int) -> list[FileRow]:
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_COLUMNS} FROM files {clause} ORDER BY last_ts DESC, file_id DESC LIMIT ?"  # noqa: S608
        return [FileRow(*row) for row in self._conn.execute(sql, [*params, limit])]

    def file(self, codes: Collection[str] | None, file_id: str) -> FileRow | None:
        self.refresh()
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM files WHERE file_id = ?",  # noqa: S608 (constant columns)
                (file_id,),
            ).fetchone()
        if row is None:
            return None
        found = FileRow(*row)
        if codes is not None and found.transfer_code not in codes:
            return None
        return found

    def events(self, file_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT line FROM events WHERE file_id = ? ORDER BY seq", (file_id,))
            return [json.loads(line) for (line,) in rows.fetchall()]

    def last_event(self, file_id: str, kind: str) -> dict[str, Any] | None:
        self.refresh()
        with self._lock:
            row = self._conn.execute(
                "SELECT line FROM events WHERE file_id = ? AND event = ? ORDER BY seq DESC LIMIT 1",
                (file_id, kind),
            ).fetchone()
        return json.loads(row[0]) if row else None


def _where(flt: FileFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if flt.table:
        where.append("table_code = ?")
        params.append(flt.table.upper())
    if flt.date:
        where.append("data_date = ?")
        params.append(flt.date.replace("-", ""))
    if flt.state:
        where.append("state = ?")
        params.append(flt.state)
    if flt.name:
        where.append("instr(lower(name), ?) > 0")
        params.append(flt.name.lower())
    return where, params
