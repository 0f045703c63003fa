"""The sync history in PostgreSQL, for several nodes: the same events as the JSON Lines files, one row
each (the line itself, and the columns a query filters on), durable when ``append`` returns.

Every append also sends ``NOTIFY fdep_history`` in its transaction, so ``fdep-gateway history --follow``
wakes when a row commits instead of polling.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime

from psycopg_pool import ConnectionPool

from gateway.store.history import HistoryEvent, Logged

CHANNEL = "fdep_history"


class PostgresHistory:
    """A ``HistorySink`` on the store's connection pool; thread-safe (each append takes a connection)."""

    def __init__(self, pool: ConnectionPool, node_id: str, now: Callable[[], datetime]) -> None:
        self._pool = pool
        self._node_id = node_id
        self._now = now

    def append(self, events: Sequence[HistoryEvent]) -> None:
        if not events:
            return
        stamp = self._now()
        if stamp.tzinfo is None:
            raise ValueError("the history clock must return aware datetimes")
        rows = [
            (stamp, e.event, e.file_id, e.station, e.transfer_code, self._node_id, _line(e, stamp))
            for e in events
        ]
        with self._pool.connection() as conn, conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO history (ts, event, file_id, station, transfer_code, node_id, line) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )
            conn.execute(f"NOTIFY {CHANNEL}")

    def logged(self, file_ids: Collection[str]) -> Logged:
        found = Logged(set(), {})
        if not file_ids:
            return found
        with self._pool.connection() as conn:
            for (line,) in conn.execute(
                "SELECT line FROM history WHERE file_id = ANY(%s) ORDER BY seq", (list(file_ids),)
            ):
                found.add(json.loads(line))
        return found

    def close(self) -> None:
        """The pool belongs to the store, which closes it."""


def _line(event: HistoryEvent, stamp: datetime) -> str:
    return replace(event, ts=stamp).to_json_line()
