"""The durable ledger: where every claimed file stands and which batch holds each report key (spec 7).

SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk when it returns, so the daemon may
acknowledge what it committed. One connection, guarded by a lock: the daemon calls in from
``asyncio.to_thread`` workers, any thread may call, calls are serialized, and a ``transaction()`` holds
the lock until it commits, so a decide-then-accept in one transaction cannot interleave with another.
Other processes (``status``, ``replay``) may open the same file: SQLite's own locking covers them, and
every write transaction starts ``BEGIN IMMEDIATE`` so it takes the write lock before it reads.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Unpack

from gateway.store.rules import (
    FACTS,
    TAKEN,
    TIMES,
    Accept,
    Decision,
    Duplicate,
    Facts,
    FileRow,
    FirstNotFull,
    KeyTakenError,
    LedgerError,
    Stale,
    State,
    decide,
)

__all__ = [
    "TAKEN",
    "Accept",
    "Decision",
    "Duplicate",
    "Facts",
    "FileRow",
    "FirstNotFull",
    "KeyTakenError",
    "Ledger",
    "LedgerError",
    "Stale",
    "State",
]

SCHEMA_VERSION = 1


_SCHEMA = (
    """CREATE TABLE files (
        file_id TEXT PRIMARY KEY,
        station TEXT, transfer_code TEXT, name TEXT, sha256 TEXT, size INTEGER,
        state TEXT NOT NULL DEFAULT 'claimed',
        table_code TEXT, institution TEXT, data_date TEXT, part INTEGER, batch INTEGER, mode TEXT,
        claimed_at REAL, updated_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL, outcome TEXT
    ) STRICT""",
    "CREATE INDEX files_by_content ON files (station, name, sha256)",
    "CREATE INDEX files_by_state ON files (state, station)",
    """CREATE TABLE reports (
        station TEXT NOT NULL, institution TEXT NOT NULL, table_code TEXT NOT NULL,
        data_date TEXT NOT NULL, part INTEGER NOT NULL,
        batch INTEGER NOT NULL, sha256 TEXT NOT NULL,
        file_id TEXT NOT NULL REFERENCES files (file_id), accepted_at REAL NOT NULL,
        PRIMARY KEY (station, institution, table_code, data_date, part)
    ) STRICT""",
    "CREATE INDEX reports_by_file ON reports (file_id)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_TAKEN_SQL = ", ".join(f"'{s.value}'" for s in sorted(TAKEN))


class Ledger:
    """Open with ``Ledger.open``; all methods are synchronous (call them via ``asyncio.to_thread``)."""

    def __init__(self, conn: sqlite3.Connection, now: Callable[[], datetime]) -> None:
        self._conn = conn
        self._now = now
        self._lock = threading.RLock()
        self._depth = 0

    @classmethod
    def open(cls, path: Path, *, now: Callable[[], datetime] | None = None) -> Ledger:
        """Open (creating if needed) the ledger at ``path``; refuses a schema of another version."""
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            ledger = cls(conn, now or (lambda: datetime.now(UTC)))
            with ledger.transaction():
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                elif version != SCHEMA_VERSION:
                    raise LedgerError(f"{path}: ledger schema {version}, this gateway knows {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return ledger

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several updates in one durable commit; rolled back if the block raises.

        Nested blocks are savepoints: an inner one that raises undoes only its own updates. Some errors
        (a full disk, an interrupt) make SQLite roll back the whole transaction: the error is raised
        as it is, and every later nested block fails instead of writing outside any transaction.
        """
        with self._lock:
            depth = self._depth
            if depth and not self._conn.in_transaction:
                raise LedgerError("the enclosing transaction was rolled back by an earlier error")
            self._conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT s{depth}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth = depth
                if not self._conn.in_transaction:
                    raise  # SQLite rolled it all back already: nothing left to undo
                if depth == 0:
                    self._conn.execute("ROLLBACK")
                else:
                    self._conn.execute(f"ROLLBACK TO s{depth}")
                    self._conn.execute(f"RELEASE s{depth}")
                raise
            self._depth = depth
            if depth:
                self._conn.execute(f"RELEASE s{depth}")
                return
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):  # SQLite may have rolled back already
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One method's updates: its own transaction when called alone; inside a caller's transaction,
        part of it, with no savepoint of its own (if it raises, the caller's block undoes it all). Each
        statement saved matters: under load every one waits for the GIL again."""
        with self._lock:
            if self._depth:
                yield
                return
            with self.transaction():
                yield

    def integrity_ok(self) -> bool:
        """``PRAGMA integrity_check`` passed; a file too damaged to check counts as failed."""
        with self._lock:
            try:
                rows = self._conn.execute("PRAGMA integrity_check").fetchall()
            except sqlite3.DatabaseError:
                return False
        return [tuple(r) for r in rows] == [("ok",)]

    def record(self, file_id: str, *, state: str | None = None, **facts: Unpack[Facts]) -> None:
        """Insert or update a file's row with ``facts`` (a new row starts ``claimed``).

        Leaving the TAKEN states gives the report key back: it falls to the highest batch still taken.
        """
        unknown = facts.keys() - FACTS
        if unknown:
            raise TypeError(f"not ledger facts: {sorted(unknown)}")
        new_state = State(state) if state is not None else None
        values: dict[str, Any] = {k: _to_sql(k, v) for k, v in facts.items()}
        if new_state is not None:
            values["state"] = new_state.value
        values["updated_at"] = self._now().timestamp()
        with self.atomic():
            self._conn.execute(_upsert(tuple(values)), (file_id, *values.values()))
            if new_state is not None and new_state not in TAKEN:
                self._release(file_id)

    def set_state(self, file_id: str, state: str, **facts: Unpack[Facts]) -> None:
        self.record(file_id, state=state, **facts)

    def get(self, file_id: str) -> FileRow | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM files WHERE file_id = ?", (file_id,)).fetchone()
        return _file_row(row) if row else None

    def by_state(self, state: str, station: str | None = None) -> list[FileRow]:
        """Files in ``state`` (optionally of one station), oldest file_id first: recovery's work list."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM files WHERE state = ?1 AND (?2 IS NULL OR station = ?2) ORDER BY file_id",
                (State(state).value, station),
            ).fetchall()
        return [_file_row(r) for r in rows]

    def counts_by_state(self, station: str) -> dict[str, int]:
        """How many of the station's files are in each state (every state listed, zeros included)."""
        counts = dict.fromkeys(State, 0)
        with self._lock:
            for state, n in self._conn.execute(
                "SELECT state, COUNT(*) FROM files WHERE station = ? GROUP BY state", (station,)
            ):
                counts[State(state)] = n
        return {s.value: n for s, n in counts.items()}

    def oldest(self, state: str, station: str | None = None) -> FileRow | None:
        """The file longest in the gateway among those in ``state`` (by claim time): ``status``'s age."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM files WHERE state = ?1 AND (?2 IS NULL OR station = ?2) "
                "ORDER BY COALESCE(claimed_at, updated_at), file_id LIMIT 1",
                (State(state).value, station),
            ).fetchone()
        return _file_row(row) if row else None

    def decide(
        self,
        *,
        station: str,
        institution: str,
        table: str,
        date: str,
        part: int,
        batch: int,
        mode: str,
        sha256: str,
        name: str,
        incremental: bool,
    ) -> Decision:
        """Spec 7 (``rules.decide``) on the facts one statement fetches."""
        with self._lock:  # one statement: under load every statement waits for the GIL again
            dup, held, first = self._conn.execute(
                f"SELECT (SELECT file_id FROM files WHERE station = ?1 AND name = ?2 AND sha256 = ?3 "  # noqa: S608 - fixed state list
                f"AND state IN ({_TAKEN_SQL}) ORDER BY file_id LIMIT 1), "
                "(SELECT batch FROM reports WHERE station = ?1 AND institution = ?4 AND table_code = ?5 "
                "AND data_date = ?6 AND part = ?7), "
                "EXISTS (SELECT 1 FROM reports WHERE station = ?1 AND institution = ?4 AND table_code = ?5)",
                (station, name, sha256, institution, table, date, part),
            ).fetchone()
        return decide(
            duplicate_of=dup, held_batch=held, table_reported=bool(first), batch=batch, mode=mode,
            incremental=incremental,
        )

    def accept(
        self,
        file_id: str,
        *,
        station: str,
        institution: str,
        table: str,
        date: str,
        part: int,
        batch: int,
        sha256: str,
    ) -> None:
        """Take the report key for ``file_id`` and mark it accepted: write-ahead, before forwarding.

        Idempotent for the file that holds the key (recovery). Raises ``KeyTakenError`` when another file
        holds it with a batch at least as high, so racing files cannot both be accepted.
        """
        key = (station, institution, table, date, part)
        now = self._now().timestamp()
        with self.atomic():
            try:
                taken = self._conn.execute(
                    "INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO UPDATE SET batch = excluded.batch, sha256 = excluded.sha256, "
                    "file_id = excluded.file_id, accepted_at = excluded.accepted_at "
                    "WHERE reports.file_id = excluded.file_id OR reports.batch < excluded.batch",
                    (*key, batch, sha256, file_id, now),
                ).rowcount
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" not in str(exc):
                    raise
                raise LedgerError(f"accept: file {file_id} was never recorded") from exc
            if not taken:  # the key is held at a batch as high: a file never recorded is still that
                if self._conn.execute("SELECT 1 FROM files WHERE file_id = ?", (file_id,)).fetchone() is None:
                    raise LedgerError(f"accept: file {file_id} was never recorded")
                held = self._conn.execute(
                    "SELECT batch FROM reports WHERE station = ? AND institution = ? "
                    "AND table_code = ? AND data_date = ? AND part = ?",
                    key,
                ).fetchone()
                raise KeyTakenError(held["batch"])
            self._conn.execute(
                "UPDATE files SET station = ?, institution = ?, table_code = ?, data_date = ?, part = ?, "
                "batch = ?, sha256 = ?, state = ?, updated_at = ? WHERE file_id = ?",
                (*key, batch, sha256, State.ACCEPTED.value, now, file_id),
            )

    def _release(self, file_id: str) -> None:
        """Give back the report key ``file_id`` held: to the highest batch still taken, or to nobody."""
        held = self._conn.execute(
            "SELECT station, institution, table_code, data_date, part FROM reports WHERE file_id = ?",
            (file_id,),
        ).fetchone()
        if held is None:
            return
        key = tuple(held)
        self._conn.execute(
            "DELETE FROM reports WHERE station = ? AND institution = ? AND table_code = ? "
            "AND data_date = ? AND part = ?",
            key,
        )
        self._conn.execute(
            "INSERT INTO reports SELECT station, institution, table_code, data_date, part, batch, sha256, "  # noqa: S608 - fixed state list
            "file_id, updated_at FROM files WHERE station = ? AND institution = ? AND table_code = ? "
            f"AND data_date = ? AND part = ? AND state IN ({_TAKEN_SQL}) "
            "ORDER BY batch DESC, file_id DESC LIMIT 1",
            key,
        )


@functools.lru_cache(maxsize=64)
def _upsert(columns: tuple[str, ...]) -> str:
    """The upsert of a file's row for these columns: a few shapes, each written once (every state change
    of every file makes one)."""
    names = ", ".join(columns)  # checked against Facts by the caller: safe to splice into SQL
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    marks = ", ".join("?" * len(columns))
    return (
        f"INSERT INTO files (file_id, {names}) VALUES (?, {marks}) "  # noqa: S608 - checked names
        f"ON CONFLICT (file_id) DO UPDATE SET {updates}"
    )


def _to_sql(column: str, value: object) -> object:
    if column in TIMES and isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{column} must be an aware datetime")
        return value.timestamp()
    return value


def _file_row(row: sqlite3.Row) -> FileRow:
    data = dict(row)
    for column in TIMES:
        if data[column] is not None:
            data[column] = datetime.fromtimestamp(data[column], UTC)
    data["state"] = State(data["state"])
    return FileRow(**data)
