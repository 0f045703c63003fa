"""The cluster under load while its database restarts, while one node is cut off from the database only,
and while a node joins and another leaves: mailboxes move, nothing is lost or doubled, and a node that
cannot renew its leases forwards nothing once they ran out (default lease settings: 10 s, renewed every 2).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from psycopg.conninfo import make_conninfo

from gateway.cluster.spread import owner
from gateway.config import PostgresStore
from harness.cluster import (
    OUTCOMES,
    Cluster,
    Node,
    Stream,
    drop,
    ended_once,
    first_forward_after,
    mailboxes_of,
    server_now,
)
from harness.daemon import wait_for
from harness.postgres import PostgresServer
from harness.proxy import TcpProxy

LEASE = float(PostgresStore.model_fields["lease_seconds"].default)
RENEW = float(PostgresStore.model_fields["renew_seconds"].default)
GROUPS = int(PostgresStore.model_fields["groups"].default)
SEND_SLACK = 1.0  # a send that passed its lease check just before the lease ran out may finish after


def both_hold(cluster: Cluster) -> None:
    wait_for(lambda: len(cluster.holders()) == 2, timeout=30, what="both nodes to hold leases")


def two_nodes_under_load(cluster: Cluster) -> tuple[Node, Node, Stream]:
    """node-a and node-b started and holding leases, files streaming into every mailbox, the first in."""
    a, b = cluster.node("node-a"), cluster.node("node-b")
    a.start()
    b.start()
    both_hold(cluster)
    stream = Stream(cluster.spool, range(cluster.codes), per_second=20).start()
    wait_for(lambda: cluster.outcome_count() >= 20, timeout=30, what="the first outcomes")
    return a, b, stream


def spread_out(cluster: Cluster, nodes: list[str]) -> None:
    """Wait until every group is held by the node the spread gives it (the hand-overs are done)."""
    spread = {g: owner(g, nodes) for g in range(GROUPS)}

    def held() -> dict[int, str | None]:
        return {g: holder for g, (holder, _) in cluster.leases().items()}

    wait_for(lambda: held() == spread, timeout=30, what="the groups to be spread")


def test_postgresql_restarted_under_load_the_nodes_reconnect_and_lose_nothing(
    own_cluster: Cluster, own_server: PostgresServer
) -> None:
    cluster = own_cluster
    a, b, stream = two_nodes_under_load(cluster)
    spread_out(cluster, ["node-a", "node-b"])
    leases = cluster.leases()
    before = len(stream.names)
    down_at = time.monotonic()
    own_server.stop()
    time.sleep(2)  # files go on arriving while the server is down
    own_server.start()
    outage = time.monotonic() - down_at
    during = len(stream.names) - before
    served = cluster.outcome_count()
    wait_for(lambda: cluster.outcome_count() >= served + 20, timeout=30, what="outcomes after the restart")
    names = stream.stop()
    cluster.wait_for_outcomes(len(names), timeout=60)
    print(f"restart: {outage:.1f} s down; files {before} before, {during} during, {len(names)} in all")
    assert outage < LEASE - 2 * RENEW  # no node can have looked gone to the other: nothing may move
    assert during > 0
    for node in (a, b):
        assert node.running, f"{node.node_id} exited ({node.wait()}):\n{node.log()}"
        assert "lease.beat_failed" in node.log(), f"{node.node_id} never saw the server go"
    ended_once(cluster, names)
    assert cluster.leases() == leases  # every group with its holder, at its epoch: none was taken over
    assert a.stop() == 0
    assert b.stop() == 0
    assert cluster.holders() == {}
    assert cluster.left_in_flight() == []


def test_postgresql_down_longer_than_a_lease_the_first_node_back_takes_every_group(
    own_cluster: Cluster, own_server: PostgresServer
) -> None:
    """What the leases do (``gateway/cluster/leases.py``): every lease has expired and each node looks
    dead to the others, so the first node back takes every group; the other finds its leases taken over,
    exits 75 and, restarted as systemd does, rejoins. Safe (nothing lost or doubled), not gentle."""
    cluster = own_cluster
    a, b, stream = two_nodes_under_load(cluster)
    own_server.stop()
    time.sleep(LEASE + RENEW)
    own_server.start()
    wait_for(lambda: not (a.running and b.running), timeout=20, what="a node to find its leases taken over")
    gone, stayed = (a, b) if not a.running else (b, a)
    assert gone.wait() == 75
    wait_for(lambda: cluster.holders() == {stayed.node_id: GROUPS}, timeout=10, what="one node to hold all")
    assert stayed.running
    gone.start()
    both_hold(cluster)
    names = stream.stop()
    cluster.wait_for_outcomes(len(names), timeout=60)
    ended_once(cluster, names)
    assert a.stop() == 0
    assert b.stop() == 0
    assert cluster.left_in_flight() == []


@pytest.mark.parametrize("cut", ["closing", "mid-transaction"])
def test_a_node_cut_off_from_postgresql_stops_and_the_other_takes_its_mailboxes(
    cluster: Cluster, postgres_server: PostgresServer, cut: str
) -> None:
    """``closing``: node-a's connections are closed, new ones hang. ``mid-transaction``: silence the
    moment node-a has written a file's row, so that its transaction (and its lock on the lease row) stays
    open on the server, which hears nothing more of it."""
    with TcpProxy(postgres_server.port) as proxy:
        a = cluster.node("node-a", dsn=make_conninfo(cluster.dsn, port=proxy.port))
        b = cluster.node("node-b")
        a.start()
        b.start()
        both_hold(cluster)
        assert proxy.accepted > 0, "node-a does not reach the database through the proxy"
        victims = mailboxes_of(cluster, "node-a")
        assert victims, "node-a serves no mailbox of this test"
        names = [drop(cluster.spool, n, 1) for n in range(cluster.codes)]
        stream = Stream(cluster.spool, victims, per_second=10, first_serial=2).start()
        wait_for(lambda: cluster.outcome_count() >= 8, timeout=30, what="the first outcomes")
        if cut == "closing":  # while files flow into node-a's mailboxes
            proxy.cut("blackhole")
        else:
            proxy.cut_on(b"INSERT INTO files")
            assert proxy.was_cut.wait(timeout=30)
        cut_at = server_now(cluster)
        ran_out = cut_at + timedelta(seconds=LEASE - RENEW)  # node-a's last renewal was sent before the cut
        wait_for(lambda: cluster.holders() == {"node-b": GROUPS}, timeout=40, what="node-b to take over")
        failover = (server_now(cluster) - cut_at).total_seconds()
        assert a.running, f"node-a exited while cut off ({a.wait()})"  # it fails safe: it waits
        time.sleep(2)  # node-a's mailboxes go on receiving, now served by node-b
        names += stream.stop()
        cluster.wait_for_outcomes(len(names), timeout=60)
        healed_after = cluster.last_seq()
        proxy.heal()
        assert a.wait(timeout=30) == 75  # it finds its leases taken over: EX_TEMPFAIL, systemd restarts it
        left_at = server_now(cluster)
        print(f"partition: cut -> node-b holds every group {failover:.1f} s; {len(names)} files")

        history = cluster.history()
        late = [e for e in history if e["node"] == "node-a" and e["at"] > cut_at and e["event"] in OUTCOMES]
        assert late == []  # no outcome of node-a's after the cut
        healed = [
            (e["event"], e["name"]) for e in history if e["node"] == "node-a" and e["seq"] > healed_after
        ]
        assert healed == []  # nor anything else once it reached the database again without its leases
        ended_once(cluster, names)
        forwarded = {e["name"]: e for e in history if e["event"] == "forwarded"}
        made_late = {
            p.name for p in cluster.core.iterdir() if p.stat().st_ctime > ran_out.timestamp() + SEND_SLACK
        }
        assert made_late, "no file reached the core after node-a's leases ran out: nothing was tested"
        not_by_b = {
            name: forwarded[name]["detail"]["core"]
            for name in made_late
            if forwarded[name]["node"] != "node-b" or forwarded[name]["detail"]["core"].startswith("already")
        }
        assert not_by_b == {}  # every copy the core got after node-a's leases ran out, node-b made

        a.start()  # as systemd would: it rejoins
        both_hold(cluster)
        again = [drop(cluster.spool, n, 500) for n in range(cluster.codes)]
        cluster.wait_for_outcomes(len(names) + len(again), timeout=30)
        ended_once(cluster, names + again)
        assert first_forward_after(cluster.history(), left_at, by="node-a") is not None
        assert a.stop() == 0
        assert b.stop() == 0
        assert cluster.holders() == {}
        assert cluster.left_in_flight() == []


def test_a_node_joins_and_another_leaves_under_load_and_each_file_ends_once(cluster: Cluster) -> None:
    a, b = cluster.node("node-a"), cluster.node("node-b")
    a.start()
    wait_for(lambda: cluster.holders() == {"node-a": GROUPS}, timeout=30, what="node-a to hold every group")
    stream = Stream(cluster.spool, range(cluster.codes), per_second=20).start()
    wait_for(lambda: cluster.outcome_count() >= 20, timeout=30, what="the first outcomes")
    joined_at = server_now(cluster)
    b.start()
    both_hold(cluster)  # the groups the spread gives node-b move to it
    wait_for(
        lambda: first_forward_after(cluster.history(), joined_at, by="node-b") is not None,
        timeout=30,
        what="node-b to forward",
    )
    assert "lease.handed_over" in a.log()
    assert a.stop() == 0  # a graceful stop: its files are done and its leases given back at once
    stopped = time.monotonic()
    left_at = server_now(cluster)
    wait_for(lambda: cluster.holders() == {"node-b": GROUPS}, timeout=LEASE, what="node-b to hold all")
    handover = time.monotonic() - stopped
    time.sleep(2)  # the stream goes on, node-b alone serves it
    names = stream.stop()
    cluster.wait_for_outcomes(len(names), timeout=60)
    print(f"join and leave: {len(names)} files; node-a gone -> node-b holds every group {handover:.1f} s")
    assert handover < 2 * RENEW + 1  # at node-b's next beat, not once node-a's leases expired
    ended_once(cluster, names)
    history = cluster.history()
    assert {e["node"] for e in history if e["event"] == "forwarded"} == {"node-a", "node-b"}
    assert [e for e in history if e["node"] == "node-a" and e["at"] > left_at] == []
    assert first_forward_after(history, left_at, by="node-b") is not None
    assert b.stop() == 0
    assert cluster.holders() == {}
    assert cluster.left_in_flight() == []
