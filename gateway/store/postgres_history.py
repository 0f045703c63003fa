"""The sync history in PostgreSQL, for several nodes: the same events as the JSON Lines files, one row
each (the line itself, and the columns a query filters on), durable when ``append`` returns.

Every append also sends ``NOTIFY fdep_history`` in its transaction, so ``fdep-gateway history --follow``
wakes when a row commits instead of polling.

A node's own file events are fenced as its ledger writes are (``fenced``): a node cut off from the
database keeps them waiting, and once it reaches the database again its leases may be another node's,
which has told those files' story meanwhile; written then, they would tell it twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.store.fencing import Fence, FencedError, lease_group
from gateway.store.history import HistoryEvent, Logged

CHANNEL = "fdep_history"


class PostgresHistory:
    """A ``HistorySink`` on the store's connection pool; thread-safe (each append takes a connection)."""

    def __init__(
        self, pool: ConnectionPool, node_id: str, now: Callable[[], datetime], fence: Fence | None = None
    ) -> None:
        self._pool = pool
        self._node_id = node_id
        self._now = now
        self._fence = fence

    def fenced(self, fence: Fence) -> PostgresHistory:
        """This history for the events of the files a node serves: a batch is written only while the node
        holds, at the epochs it believes, the lease of every event's mailbox (else ``FencedError``, and
        nothing is written), checked in the transaction that writes it."""
        return PostgresHistory(self._pool, self._node_id, self._now, fence)

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
            self._check_leases(conn, events)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO history (ts, event, file_id, station, transfer_code, node_id, line) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )
            conn.execute(f"NOTIFY {CHANNEL}")

    def _check_leases(self, conn: psycopg.Connection[Any], events: Sequence[HistoryEvent]) -> None:
        """As ``fdep_fence`` does for a file's row; the lease rows are locked as there (FOR KEY SHARE), so a
        takeover waits for this batch to commit."""
        fence = self._fence
        if fence is None:
            return
        groups = sorted({lease_group(e.transfer_code, fence.groups) for e in events if e.transfer_code})
        believed = fence.epochs()
        claimed = [g for g in groups if g in believed]
        held = conn.execute(
            "SELECT l.grp FROM leases AS l JOIN unnest(%s::int[], %s::bigint[]) AS h(grp, epoch) "
            "ON l.grp = h.grp AND l.epoch = h.epoch "
            "WHERE l.node_id = %s AND l.expires_at > clock_timestamp() ORDER BY l.grp FOR KEY SHARE OF l",
            (claimed, [believed[g] for g in claimed], fence.node_id),
        ).fetchall()
        refused = set(groups) - {g for (g,) in held}
        if refused:
            raise FencedError(
                f"history: node {fence.node_id} does not hold the leases of groups {sorted(refused)}"
            )

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
    return event.to_json_line(stamp)


def read_lines(
    conn: psycopg.Connection[Any],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int = 0,
    last: int | None = None,
) -> list[tuple[int, str]]:
    """``(seq, line)`` of the events in ``[since, until)`` after row ``after``, oldest first (or only
    the ``last`` ones): the time bounds use the index, the other filters are ``historyview.select``'s."""
    rows = conn.execute(
        "SELECT seq, line FROM history WHERE seq > %s AND (%s::timestamptz IS NULL OR ts >= %s) "
        "AND (%s::timestamptz IS NULL OR ts < %s) ORDER BY seq DESC LIMIT %s",
        (after, since, since, until, until, last),
    ).fetchall()
    return [(seq, line) for seq, line in reversed(rows)]


def follow_lines(
    conn: psycopg.Connection[Any], *, since: datetime | None, last: int, wait_seconds: float = 1.0
) -> Iterator[str]:
    """The last ``last`` lines (or all from ``since``), then each new one as it commits: woken by
    ``NOTIFY``, and looking anyway every ``wait_seconds`` (a notification is lost while reconnecting)."""
    conn.execute(f"LISTEN {CHANNEL}")
    start = read_lines(conn, since=since) if since is not None else read_lines(conn, last=last)
    after = start[-1][0] if start else _newest(conn)
    yield from (line for _, line in start)
    while True:
        for _ in conn.notifies(timeout=wait_seconds, stop_after=1):
            pass
        fresh = read_lines(conn, after=after)
        if fresh:
            after = fresh[-1][0]
            yield from (line for _, line in fresh)


def _newest(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM history").fetchone()
    return int(row[0]) if row else 0
