"""Nodes die, pause and lose the database under load: their mailboxes move on and nothing is lost,
doubled or sent by a node that no longer holds the lease (default lease settings: 10 s, renewed every 2)."""

from __future__ import annotations

import signal
import time

from harness.cluster import Cluster, drop, ended_once, first_forward_after, mailboxes_of, server_now
from harness.daemon import wait_for


def test_a_killed_node_s_mailboxes_are_taken_over_and_nothing_is_lost(cluster: Cluster) -> None:
    a, b = cluster.node("node-a"), cluster.node("node-b")
    a.start()
    b.start()
    wait_for(lambda: len(cluster.holders()) == 2, timeout=30, what="both nodes to hold leases")
    victims = mailboxes_of(cluster, "node-a")
    assert victims, "node-a serves no mailbox of this test"
    names = [drop(cluster.spool, n, batch) for batch in range(1, 4) for n in range(cluster.codes)]
    wait_for(lambda: cluster.outcome_count() >= 8, timeout=30, what="the first outcomes")
    killed_at = server_now(cluster)
    assert a.kill() == -signal.SIGKILL  # under load: files of its mailboxes in flight
    later = [drop(cluster.spool, n, 4) for n in victims]
    cluster.wait_for_outcomes(len(names) + len(later), timeout=90)
    ended_once(cluster, names + later)
    history = cluster.history()
    first = first_forward_after(
        [e for e in history if e["name"] in set(later)], killed_at, by="node-b"
    )
    assert first is not None
    failover = (first - killed_at).total_seconds()
    print(f"failover: kill -9 -> first forward by the new owner {failover:.1f} s")
    assert failover <= 30
    assert cluster.holders() == {"node-b": 64}
    assert b.stop() == 0
    assert cluster.left_in_flight() == []


def test_a_paused_node_forwards_nothing_after_its_lease_ran_out(cluster: Cluster) -> None:
    a, b = cluster.node("node-a"), cluster.node("node-b")
    a.start()
    b.start()
    wait_for(lambda: len(cluster.holders()) == 2, timeout=30, what="both nodes to hold leases")
    victims = mailboxes_of(cluster, "node-a")
    a.signal(signal.SIGSTOP)
    names = [drop(cluster.spool, n, batch) for batch in (1, 2) for n in victims]
    time.sleep(0.5)
    wait_for(lambda: cluster.holders().get("node-b") == 64, timeout=40, what="node-b to take over")
    cluster.wait_for_outcomes(len(names), timeout=60)
    resumed_at = server_now(cluster)
    a.signal(signal.SIGCONT)
    assert a.wait(timeout=30) == 75  # it finds its leases taken over: EX_TEMPFAIL, systemd restarts it
    history = cluster.history()
    after = [e for e in history if e["node"] == "node-a" and e["at"] > resumed_at]
    assert [e for e in after if e["event"] in ("forwarded", "deferred", "rejected", "duplicate")] == []
    ended_once(cluster, names)
    assert b.stop() == 0
    assert cluster.left_in_flight() == []
