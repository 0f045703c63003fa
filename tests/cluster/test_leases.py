"""Leases and fencing against a real PostgreSQL: acquired, renewed, taken over with a higher epoch, and a
stale epoch's writes refused by the database itself."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from gateway.cluster.leases import ClusterConfigError, LeaseKeeper, LeaseLostError, LeaseTerms
from gateway.store.fencing import FencedError, lease_group
from gateway.store.migrate import migrate
from gateway.store.postgres import PostgresStore

GROUPS = 8
CODE = "TC41210000"


def keeper(dsn: str, node: str, *, lease: float = 3, renew: float = 1, groups: int = GROUPS) -> LeaseKeeper:
    return LeaseKeeper(dsn, LeaseTerms(node, groups, lease, renew))


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        migrate(conn)
    return postgres_dsn


def expire(dsn: str, node: str) -> None:
    """What a node's silence comes to, without waiting: its leases' time is up by the server's clock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE leases SET expires_at = now() - interval '1 s' WHERE node_id = %s", (node,))
        conn.execute("UPDATE nodes SET seen_at = now() - interval '1 h' WHERE node_id = %s", (node,))


async def test_one_node_takes_every_group_and_a_second_gets_its_share_handed_over(dsn: str) -> None:
    a, b = keeper(dsn, "a"), keeper(dsn, "b")
    await a.start()
    assert sorted(a.held) == list(range(GROUPS)) and a.valid()
    assert set(a.epochs().values()) == {1}
    await b.start()
    await a.beat()  # a sees b: hands over b's groups (nothing of theirs is in flight)
    await b.beat()
    assert a.held.keys() | b.held.keys() == set(range(GROUPS))
    assert not a.held.keys() & b.held.keys() and b.held
    assert set(b.epochs().values()) == {2}  # each acquisition raises the epoch
    await a.release_all()
    await b.beat()
    assert sorted(b.held) == list(range(GROUPS))
    await b.release_all()


async def test_a_group_is_handed_over_only_once_nothing_of_it_is_in_flight(dsn: str) -> None:
    busy = {"yes": True}
    a = LeaseKeeper(dsn, LeaseTerms("a", GROUPS, 3, 1), busy=lambda group: busy["yes"])
    b = keeper(dsn, "b")
    await a.start()
    await b.start()
    await a.beat()
    assert sorted(a.held) == list(range(GROUPS)) and a.leaving  # b's share, kept while busy
    handed = [f"TC{n:08d}" for n in range(200) if lease_group(f"TC{n:08d}", GROUPS) in a.leaving]
    assert handed and not any(a.claims(code) for code in handed)
    busy["yes"] = False
    await a.beat()
    await b.beat()
    assert b.held and not a.leaving
    await a.release_all()
    await b.release_all()


async def test_a_silent_node_s_groups_are_taken_with_a_new_epoch_and_its_writes_refused(dsn: str) -> None:
    a, b = keeper(dsn, "a"), keeper(dsn, "b")
    await a.start()
    a.ready |= set(a.held)
    store_a = PostgresStore.open(dsn, fence=a)
    store_a.record("f1", station="k1237", transfer_code=CODE, name="x")  # a holds the group: accepted
    group = lease_group(CODE, GROUPS)
    expire(dsn, "a")
    await b.start()  # a is silent: b takes everything, a higher epoch each
    assert sorted(b.held) == list(range(GROUPS)) and b.held[group] == 2
    assert a.owns(CODE)  # a's own view has not caught up yet: the database is the last word
    with pytest.raises(FencedError):
        store_a.record("f1", state="forwarded", outcome="forwarded")
    with pytest.raises(FencedError):
        store_a.record("f2", station="k1237", transfer_code=CODE, name="y")
    with pytest.raises(LeaseLostError):
        await a.beat()
    assert not a.owns(CODE) and a.epochs() == {}
    await a.close()
    store_b = PostgresStore.open(dsn, fence=b)
    store_b.record("f1", state="forwarded", outcome="forwarded")
    row = store_b.get("f1")
    assert row is not None and row.state.value == "forwarded"
    store_a.close()
    store_b.close()
    await b.release_all()


async def test_a_node_that_cannot_renew_stops_owning_before_its_lease_ends_on_the_server(dsn: str) -> None:
    a = keeper(dsn, "a", lease=3, renew=1)
    await a.start()
    a.ready |= set(a.held)
    assert a.claims(CODE)
    sent = time.monotonic()
    await a.beat()
    assert a.valid_until <= sent + 3 - 1 + 0.01  # lease - renew from the moment the beat was sent
    await asyncio.sleep(max(0.0, a.valid_until - time.monotonic()) + 0.05)
    assert not a.owns(CODE) and not a.claims(CODE) and a.epochs() == {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT expires_at > now() FROM leases WHERE grp = 0").fetchone()
    assert row is not None and row[0]  # the server's lease still runs: the node stopped first
    await a.beat()  # nobody took it meanwhile: renewed at the same epoch, valid again
    assert a.owns(CODE) and set(a.epochs().values()) == {1}
    await a.release_all()


async def test_every_node_must_use_the_same_number_of_groups(dsn: str) -> None:
    a = keeper(dsn, "a")
    await a.start()
    with pytest.raises(ClusterConfigError, match=r"store\.groups"):
        await keeper(dsn, "b", groups=16).start()
    await a.release_all()


async def test_a_takeover_waits_for_the_holder_s_write_and_a_renewal_never_does(dsn: str) -> None:
    a, b = keeper(dsn, "a"), keeper(dsn, "b")
    await a.start()
    store_a = PostgresStore.open(dsn, fence=a)
    group = lease_group(CODE, GROUPS)
    with store_a.transaction():
        store_a.record("f1", station="k1237", transfer_code=CODE, name="x")  # locks the lease: key share
        await asyncio.wait_for(a.beat(), timeout=5)  # its own renewal goes through beside it
        expire(dsn, "a")
        taking = asyncio.create_task(b.start())
        await asyncio.sleep(1)
        assert not taking.done()  # the takeover waits for the write in flight to commit
    await asyncio.wait_for(taking, timeout=10)
    assert group in b.held and b.held[group] == 2
    row = store_a.get("f1")
    assert row is not None and row.name == "x"  # committed before the epoch moved on
    store_a.close()
    await a.close()
    await b.release_all()
