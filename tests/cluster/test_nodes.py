"""Two real nodes on one spool and one PostgreSQL: they split the mailboxes and lose nothing."""

from __future__ import annotations

from harness.cluster import Cluster, drop
from harness.daemon import wait_for


def test_two_nodes_split_the_mailboxes_and_each_file_ends_once(cluster: Cluster) -> None:
    a, b = cluster.node("node-a"), cluster.node("node-b")
    a.start()
    b.start()
    wait_for(lambda: len(cluster.holders()) == 2, timeout=30, what="both nodes to hold leases")
    names = [drop(cluster.spool, n, batch) for batch in (1, 2) for n in range(cluster.codes)]
    cluster.wait_for_outcomes(len(names), timeout=60)
    outcomes = cluster.outcomes()
    assert {name: outcomes.get(name) for name in names} == {name: ["forwarded"] for name in names}
    assert cluster.core_files() == dict.fromkeys(names, 1)
    by_node = {e["node"] for e in cluster.history() if e["event"] == "forwarded"}
    assert by_node == {"node-a", "node-b"}
    assert a.stop() == 0
    assert b.stop() == 0
    assert cluster.holders() == {}  # a graceful stop gives the leases back
    assert cluster.left_in_flight() == []
