"""Two real nodes on one spool and one PostgreSQL: they split the mailboxes and lose nothing; operators
see the nodes and query or follow the one history of both."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

from harness.cluster import Cluster, drop
from harness.config import REPO
from harness.daemon import run_gateway, wait_for


def test_two_nodes_split_the_mailboxes_and_each_file_ends_once(cluster: Cluster) -> None:
    a, b = cluster.node("node-a"), cluster.node("node-b")
    a.start()
    b.start()
    wait_for(lambda: len(cluster.holders()) == 2, timeout=30, what="both nodes to hold leases")
    names = [drop(cluster.spool, n, serial) for serial in (1, 2) for n in range(cluster.codes)]
    cluster.wait_for_outcomes(len(names), timeout=60)
    outcomes = cluster.outcomes()
    assert {name: outcomes.get(name) for name in names} == {name: ["forwarded"] for name in names}
    assert cluster.core_files() == dict.fromkeys(names, 1)
    by_node = {e["node"] for e in cluster.history() if e["event"] == "forwarded"}
    assert by_node == {"node-a", "node-b"}

    shown = run_gateway("nodes", "-c", str(a.config_path), "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert [(n["node_id"], n["live"]) for n in view["nodes"]] == [("node-a", True), ("node-b", True)]
    assert sum(len(n["groups"]) for n in view["nodes"]) == 64 and view["unserved_groups"] == []
    assert sorted(m for n in view["nodes"] for m in n["mailboxes"]) == sorted(a.config["transfer_codes"])
    text = run_gateway("nodes", "-c", str(b.config_path)).stdout
    assert "node-a" in text and "live" in text and "not served now: 0 groups" in text

    forwarded = run_gateway("history", "-c", str(b.config_path), "--json", "--status", "forwarded")
    lines = [json.loads(line) for line in forwarded.stdout.splitlines()]
    assert sorted(e["name"] for e in lines) == sorted(names)
    shown = run_gateway("show", "-c", str(a.config_path), lines[0]["file_id"])
    assert shown.returncode == 0 and "forwarded" in shown.stdout, shown.stderr
    status = run_gateway("status", "-c", str(a.config_path)).stdout
    assert "k1237" in status and "node-a" in status and "node-b" in status
    for command in ("due", "report"):
        refused = run_gateway(command, "-c", str(a.config_path))
        assert refused.returncode == 1 and "not available with store kind postgresql" in refused.stderr

    assert a.stop() == 0
    assert b.stop() == 0
    assert cluster.holders() == {}  # a graceful stop gives the leases back
    assert cluster.left_in_flight() == []
    assert "leaving" in run_gateway("nodes", "-c", str(a.config_path)).stdout


def test_history_follow_wakes_on_a_new_event_of_any_node(cluster: Cluster) -> None:
    a = cluster.node("node-a")
    a.start()
    follower = subprocess.Popen(
        [sys.executable, "-m", "gateway", "history", "-c", str(a.config_path), "--follow", "--json",
         "--status", "forwarded"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        time.sleep(1.5)  # the follower is listening
        name = drop(cluster.spool, 3, 1)
        assert follower.stdout is not None
        ready, _, _ = select.select([follower.stdout], [], [], 30)
        assert ready, "no event followed within 30 s"
        assert json.loads(follower.stdout.readline())["name"] == name
    finally:
        follower.kill()
        follower.communicate(timeout=10)
    assert a.stop() == 0
