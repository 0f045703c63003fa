"""Fencing in PostgreSQL: a node writes a file's row and its history only while it holds the lease of the
file's mailbox at the epoch it believes, by the server's clock; an unfenced writer (an operator tool,
feedback) is not asked."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from gateway.store.fencing import FencedError, lease_group
from gateway.store.history import HistoryEvent
from gateway.store.postgres import PostgresStore
from gateway.store.postgres_history import PostgresHistory

GROUPS = 4
CODE = "TC41210000"
GROUP = lease_group(CODE, GROUPS)


@dataclass
class Belief:
    """What a node believes it holds (``gateway.store.fencing.Fence``)."""

    node_id: str = "node-a"
    groups: int = GROUPS
    held: dict[int, int] = field(default_factory=dict)

    def epochs(self) -> Mapping[int, int]:
        return self.held


@pytest.fixture
def store(postgres_dsn: str) -> Iterator[PostgresStore]:
    opened = PostgresStore.open(postgres_dsn)
    with opened.pool.connection() as conn:
        conn.execute("INSERT INTO leases (grp) SELECT generate_series(0, %s - 1)", (GROUPS,))
    yield opened
    opened.close()


def lease(store: PostgresStore, node: str | None, epoch: int, seconds: float) -> None:
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE leases SET node_id = %s, epoch = %s, expires_at = now() + make_interval(secs => %s) "
            "WHERE grp = %s",
            (node, epoch, seconds, GROUP),
        )


def received(file_id: str) -> HistoryEvent:
    return HistoryEvent(event="received", file_id=file_id, station="k1237", transfer_code=CODE, message="m")


def told(store: PostgresStore) -> list[tuple[str, str]]:
    with store.pool.connection() as conn:
        rows = conn.execute("SELECT file_id, node_id FROM history ORDER BY seq").fetchall()
    return [(f, n) for f, n in rows]


def now() -> datetime:
    return datetime.now(UTC)


def test_a_node_tells_a_file_s_history_only_under_the_lease_it_believes(store: PostgresStore) -> None:
    belief = Belief(held={GROUP: 3})
    history = PostgresHistory(store.pool, "node-a", now).fenced(belief)
    lease(store, "node-a", 3, 10)
    history.append([received("f1")])
    belief.held = {}  # its lease ran out here (it could not renew): it sends no epoch
    with pytest.raises(FencedError):
        history.append([received("f2")])
    belief.held = {GROUP: 3}
    lease(store, "node-b", 4, 10)  # taken over meanwhile
    with pytest.raises(FencedError):
        history.append([received("f3")])
    lease(store, "node-a", 3, -1)  # expired by the server's clock, though not taken yet
    with pytest.raises(FencedError):
        history.append([received("f4")])
    PostgresHistory(store.pool, "node-a", now).append([received("f5")])  # not fenced: an operator's tool
    assert told(store) == [("f1", "node-a"), ("f5", "node-a")]


def test_a_batch_with_one_event_of_a_mailbox_not_held_is_refused_whole(store: PostgresStore) -> None:
    other = next(n for n in range(100) if lease_group(f"TC{n:08d}", GROUPS) != GROUP)
    lease(store, "node-a", 1, 10)
    history = PostgresHistory(store.pool, "node-a", now).fenced(Belief(held={GROUP: 1}))
    stranger = HistoryEvent(
        event="received", file_id="f2", station="k1237", transfer_code=f"TC{other:08d}", message="m"
    )
    with pytest.raises(FencedError):
        history.append([received("f1"), stranger])
    assert told(store) == []


def test_a_file_row_is_fenced_the_same_way(store: PostgresStore) -> None:
    belief = Belief(held={GROUP: 2})
    fenced = PostgresStore(store.pool, fence=belief)
    lease(store, "node-a", 2, 10)
    with fenced.transaction():
        fenced.record("f1", station="k1237", transfer_code=CODE, name="A.TXT")
    lease(store, "node-b", 3, 10)
    with pytest.raises(FencedError), fenced.transaction():
        fenced.record("f1", state="accepted")


def test_a_node_s_session_left_idle_in_a_transaction_is_ended_by_the_server(postgres_dsn: str) -> None:
    """A node cut off mid-transaction would hold its locks (lease rows among them) until TCP gives up."""
    dsn = make_conninfo(postgres_dsn, options="-c application_name=fdep-test")
    with PostgresStore.open(dsn, idle_in_transaction=0.3) as store, store.pool.connection() as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("fdep-test",)  # the DSN's own kept
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout), conn.transaction():
            conn.execute("SELECT grp FROM leases FOR SHARE")
            time.sleep(1)
            conn.execute("SELECT 1")
