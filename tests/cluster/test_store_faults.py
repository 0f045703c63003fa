"""A node's background jobs live through the database ending its connections (a server restart does)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from harness.cluster import Cluster, report_body, report_name, tc
from harness.daemon import ZONE, wait_for
from spool.ids import new_file_id


def test_orphans_are_still_adopted_after_the_server_ended_the_node_s_connections(cluster: Cluster) -> None:
    node = cluster.node("node-a", lease_seconds=3, renew_seconds=1)  # orphans swept every 3 s
    node.start()
    wait_for(lambda: cluster.holders() == {"node-a": 64}, timeout=30, what="node-a to hold every lease")
    with cluster.db() as conn:  # what a fast shutdown does to every session: the pool's idle ones too
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    time.sleep(4)  # a sweep meets a connection that is gone
    name = report_name(0, 1)  # claimed a minute ago by a node that lost its lease since: an orphan
    work = cluster.spool / "k1237" / ".gateway" / "work" / tc(0)
    work.mkdir(parents=True, exist_ok=True)
    claimed = new_file_id(datetime.now(ZONE) - timedelta(minutes=1))
    (work / f"{claimed}.{name}").write_bytes(report_body(0, 1))
    wait_for(lambda: cluster.outcomes().get(name) == ["forwarded"], timeout=20, what="the orphan's forward")
    assert node.stop() == 0
    assert cluster.left_in_flight() == []
