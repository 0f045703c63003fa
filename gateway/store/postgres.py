"""The ledger in PostgreSQL, for several nodes: the same ``Store`` as the SQLite ledger, and fenced.

psycopg 3 with a psycopg-pool ``ConnectionPool``: the pool hands out a live connection for each
transaction and drops one that broke (a server restart), so the store reconnects by itself; the daemon
calls in from threads, as it does the SQLite ledger, and calls are serialized the same way (one lock; a
``transaction()`` holds its connection until it commits). psycopg's own nested ``transaction()`` blocks
are the savepoints. Every daemon transaction carries the node's lease epochs (``gateway.store.fencing``).
The spec-7 rules are ``gateway.store.rules``; this module only fetches their facts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Unpack

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from gateway.store.fencing import Fence, FencedError, lease_group
from gateway.store.migrate import migrate
from gateway.store.rules import (
    FACTS,
    TAKEN,
    TIMES,
    Decision,
    Facts,
    FileRow,
    KeyTakenError,
    LedgerError,
    State,
    decide,
)

FENCED = "FD001"
"""The SQLSTATE ``fdep_fence`` raises."""
_TAKEN = [s.value for s in sorted(TAKEN)]
_ROW = (
    "file_id, station, transfer_code, name, sha256, size, state, table_code, institution, data_date, part, "
    "batch, mode, claimed_at, updated_at, attempts, next_attempt_at, outcome"
)


def session_options(dsn: str, *, idle_in_transaction: float) -> str:
    """The DSN's own ``options`` and a limit the server puts on a session left idle inside a transaction
    (``idle_in_transaction_session_timeout``): a node cut off mid-transaction leaves its session there
    holding its locks, the lease rows' among them, until TCP gives up on it (hours); ended sooner than the
    leases expire, its locks are gone before another node takes them over (else that node's beat waits
    for them, and its own leases lapse)."""
    own = conninfo_to_dict(dsn).get("options") or ""
    return f"{own} -c idle_in_transaction_session_timeout={max(1, round(idle_in_transaction * 1000))}".strip()


def client_liveness(seconds: float) -> dict[str, Any]:
    """libpq settings that make a connection to a server gone silent (a lost route) fail within about
    ``seconds``, instead of the hours TCP takes: keepalives while it waits for an answer, and a limit
    on data the server does not acknowledge. Else a cut-off node's store calls hang in their threads
    and even a stop waits for them."""
    whole = max(1, round(seconds))
    return {
        "keepalives": 1,
        "keepalives_idle": max(1, whole // 2),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": whole * 1000,
    }


def connect_pool(
    dsn: str,
    *,
    password: str | None,
    max_size: int = 4,
    name: str = "fdep-store",
    idle_in_transaction: float | None = None,
) -> ConnectionPool:
    """A pool of autocommit connections (blocks are explicit ``transaction()``s); opened, and waited
    for until the server answers (``psycopg_pool.PoolTimeout`` after 30 s). With ``idle_in_transaction``
    (seconds) the server ends a session left idle inside a transaction (``session_options``)."""
    kwargs: dict[str, Any] = {"autocommit": True}
    if password is not None:
        kwargs["password"] = password
    if idle_in_transaction is not None:
        kwargs["options"] = session_options(dsn, idle_in_transaction=idle_in_transaction)
        kwargs.update(client_liveness(idle_in_transaction * 2))
    pool = ConnectionPool(dsn, min_size=1, max_size=max_size, kwargs=kwargs, name=name, open=False)
    pool.open(wait=True, timeout=30)
    return pool


class PostgresStore:
    """Open with ``PostgresStore.open``; synchronous, like the SQLite ``Ledger`` (call from threads)."""

    def __init__(
        self, pool: ConnectionPool, *, fence: Fence | None = None, now: Callable[[], datetime] | None = None
    ) -> None:
        self._pool = pool
        self._fence = fence
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None

    @classmethod
    def open(
        cls,
        dsn: str,
        *,
        password: str | None = None,
        fence: Fence | None = None,
        now: Callable[[], datetime] | None = None,
        idle_in_transaction: float | None = None,
    ) -> PostgresStore:
        """Connect and migrate (refusing a schema newer than this gateway's); ``idle_in_transaction``: see
        ``connect_pool``."""
        pool = connect_pool(dsn, password=password, idle_in_transaction=idle_in_transaction)
        try:
            with pool.connection() as conn:
                migrate(conn)
        except BaseException:
            pool.close()
            raise
        return cls(pool, fence=fence, now=now)

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One durable commit for the block; nested blocks are savepoints that undo only their own work."""
        with self._lock:
            if self._conn is not None:
                with _fenced(), self._conn.transaction():
                    yield
                return
            with _fenced(), self._pool.connection() as conn:
                self._conn = conn
                try:
                    with conn.transaction():
                        self._carry_fence(conn)
                        yield
                finally:
                    self._conn = None

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One method's work: inside a caller's transaction part of it (no savepoint), else its own."""
        with self._lock:
            if self._conn is not None:
                yield
                return
            with self.transaction():
                yield

    def _carry_fence(self, conn: psycopg.Connection[Any]) -> None:
        if self._fence is None:
            return
        conn.execute(
            "SELECT set_config('fdep.node', %s, true), set_config('fdep.epochs', %s, true)",
            (self._fence.node_id, json.dumps({str(g): e for g, e in self._fence.epochs().items()})),
        )

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            if self._conn is not None:
                yield self._conn
                return
            with self._pool.connection() as conn:
                yield conn

    def record(self, file_id: str, *, state: str | None = None, **facts: Unpack[Facts]) -> None:
        """Insert or update a file's row (a new row starts ``claimed``); leaving TAKEN gives the key back."""
        unknown = facts.keys() - FACTS
        if unknown:
            raise TypeError(f"not ledger facts: {sorted(unknown)}")
        new_state = State(state) if state is not None else None
        values: dict[str, Any] = {k: _checked(k, v) for k, v in facts.items()}
        if new_state is not None:
            values["state"] = new_state.value
        values["updated_at"] = self._now()
        transfer_code = facts.get("transfer_code")
        if transfer_code is not None and self._fence is not None:
            values["grp"] = lease_group(transfer_code, self._fence.groups)
        columns = ", ".join(values)  # names checked against Facts above: safe to splice into SQL
        updates = ", ".join(f"{c} = excluded.{c}" for c in values)
        marks = ", ".join(["%s"] * len(values))
        with self.atomic():
            conn = self._connection()
            conn.execute(
                f"INSERT INTO files (file_id, {columns}) VALUES (%s, {marks}) "  # noqa: S608 - checked names
                f"ON CONFLICT (file_id) DO UPDATE SET {updates}",
                (file_id, *values.values()),
            )
            if new_state is not None and new_state not in TAKEN:
                self._release(conn, file_id)

    def set_state(self, file_id: str, state: str, **facts: Unpack[Facts]) -> None:
        self.record(file_id, state=state, **facts)

    def get(self, file_id: str) -> FileRow | None:
        with self._reading() as conn:
            row = conn.execute(f"SELECT {_ROW} FROM files WHERE file_id = %s", (file_id,)).fetchone()  # noqa: S608
        return _file_row(row) if row else None

    def by_state(self, state: str, station: str | None = None) -> list[FileRow]:
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_ROW} FROM files WHERE state = %s AND (%s::text IS NULL OR station = %s) "  # noqa: S608
                "ORDER BY file_id",
                (State(state).value, station, station),
            ).fetchall()
        return [_file_row(r) for r in rows]

    def counts_by_state(self, station: str) -> dict[str, int]:
        counts = dict.fromkeys(State, 0)
        with self._reading() as conn:
            for state, n in conn.execute(
                "SELECT state, count(*) FROM files WHERE station = %s GROUP BY state", (station,)
            ).fetchall():
                counts[State(state)] = n
        return {s.value: n for s, n in counts.items()}

    def oldest(self, state: str, station: str | None = None) -> FileRow | None:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_ROW} FROM files WHERE state = %s AND (%s::text IS NULL OR station = %s) "  # noqa: S608
                "ORDER BY COALESCE(claimed_at, updated_at), file_id LIMIT 1",
                (State(state).value, station, station),
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
        with self._reading() as conn:
            row = conn.execute(
                "SELECT (SELECT file_id FROM files WHERE station = %(station)s AND name = %(name)s "
                "AND sha256 = %(sha)s AND state = ANY(%(taken)s) ORDER BY file_id LIMIT 1), "
                "(SELECT batch FROM reports WHERE station = %(station)s AND institution = %(inst)s "
                "AND table_code = %(table)s AND data_date = %(date)s AND part = %(part)s), "
                "EXISTS (SELECT 1 FROM reports WHERE station = %(station)s AND institution = %(inst)s "
                "AND table_code = %(table)s)",
                {
                    "station": station,
                    "name": name,
                    "sha": sha256,
                    "taken": _TAKEN,
                    "inst": institution,
                    "table": table,
                    "date": date,
                    "part": part,
                },
            ).fetchone()
        assert row is not None  # noqa: S101 - a SELECT without FROM returns one row
        dup, held, first = row
        return decide(
            duplicate_of=dup,
            held_batch=held,
            table_reported=bool(first),
            batch=batch,
            mode=mode,
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
        """Take the report key for ``file_id`` and mark it accepted (write-ahead, before forwarding).
        Idempotent for the holder; ``KeyTakenError`` when another file holds it at a batch as high."""
        key = (station, institution, table, date, part)
        now = self._now()
        with self.atomic():
            conn = self._connection()
            if conn.execute("SELECT 1 FROM files WHERE file_id = %s", (file_id,)).fetchone() is None:
                raise LedgerError(f"accept: file {file_id} was never recorded")
            taken = conn.execute(
                "INSERT INTO reports VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (station, institution, table_code, data_date, part) DO UPDATE SET "
                "batch = excluded.batch, sha256 = excluded.sha256, file_id = excluded.file_id, "
                "accepted_at = excluded.accepted_at "
                "WHERE reports.file_id = excluded.file_id OR reports.batch < excluded.batch",
                (*key, batch, sha256, file_id, now),
            ).rowcount
            if not taken:
                held = conn.execute(
                    "SELECT batch FROM reports WHERE station = %s AND institution = %s AND table_code = %s "
                    "AND data_date = %s AND part = %s",
                    key,
                ).fetchone()
                raise KeyTakenError(held[0] if held else batch)
            conn.execute(
                "UPDATE files SET station = %s, institution = %s, table_code = %s, data_date = %s, "
                "part = %s, batch = %s, sha256 = %s, state = %s, updated_at = %s WHERE file_id = %s",
                (*key, batch, sha256, State.ACCEPTED.value, now, file_id),
            )

    def _connection(self) -> psycopg.Connection[Any]:
        assert self._conn is not None  # noqa: S101 - only called inside atomic()
        return self._conn

    @staticmethod
    def _release(conn: psycopg.Connection[Any], file_id: str) -> None:
        """Give back the report key ``file_id`` held: to the highest batch still taken, or to nobody."""
        held = conn.execute(
            "DELETE FROM reports WHERE file_id = %s "
            "RETURNING station, institution, table_code, data_date, part",
            (file_id,),
        ).fetchone()
        if held is None:
            return
        conn.execute(
            "INSERT INTO reports SELECT station, institution, table_code, data_date, part, batch, sha256, "
            "file_id, updated_at FROM files WHERE station = %s AND institution = %s AND table_code = %s "
            "AND data_date = %s AND part = %s AND state = ANY(%s) ORDER BY batch DESC, file_id DESC LIMIT 1",
            (*held, _TAKEN),
        )


@contextmanager
def _fenced() -> Iterator[None]:
    """The database's refusal (``fdep_fence``) as ``FencedError``."""
    try:
        yield
    except psycopg.Error as exc:
        if exc.sqlstate == FENCED:
            raise FencedError(str(exc.diag.message_primary or exc)) from exc
        raise


def _checked(column: str, value: object) -> object:
    if column in TIMES and isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"{column} must be an aware datetime")
    return value


def _file_row(row: tuple[Any, ...]) -> FileRow:
    data = dict(zip(_ROW.split(", "), row, strict=True))
    for column in TIMES:
        if data[column] is not None:
            data[column] = data[column].astimezone(UTC)
    data["state"] = State(data["state"])
    return FileRow(**data)
