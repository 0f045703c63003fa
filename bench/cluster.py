"""Nodes on PostgreSQL: CPU a file against the SQLite store, files/s with 1-3 nodes, kill -9 failovers.

    python -m bench.cluster --cpu [--files 5000] [--rounds 1]
    python -m bench.cluster --nodes 1,2,3 [--files 5000] [--rounds 1]
    python -m bench.cluster --failover 10 [--rate 4]

A private PostgreSQL server is started for the run (``harness.postgres``: initdb in a temp dir) and each
measurement gets a fresh database, spool and core. The run directories are removed only at the end: a
burst right after another one's mass deletes costs the kernel more, which would bend the later runs.

``--cpu``: ``bench.burst``'s burst (valid ~1 KiB D2001 files over 64 k6666 mailboxes, staged first, then
renamed in by one process) through one gateway on the SQLite store and through one node on the PostgreSQL
store, taking turns ``--rounds`` times. The gateway's CPU is user + system of its process tree
(validation workers included) from the first rename until every file has its outcome; the server's CPU
(postmaster and backends, exited ones included) is counted apart. The ratio PG/SQLite is of the
gateway's CPU a file (user + system); its user CPU alone, the server's share and the sum are given
beside it.

``--nodes``: the same burst through 1, 2, 3 ... nodes (one process each, one shared spool), taking turns
``--rounds`` times; ratios to the first count given, in the same round.

``--failover N``: two nodes under a light load (``--rate`` files/s over the mailboxes), default lease
settings (10 s, renewed every 2 s). N times: kill -9 the node holding some mailboxes, drop a file into
each of them, and time kill -> the first of those files forwarded by the other node (its history
``ts``, against the server's clock at the kill); then restart the killed node as systemd would and wait
until the leases are spread again. The victims take turns. At the end every file dropped must have been
forwarded exactly once.

files/s: the files over the time from the first rename to the ``ts`` of the last outcome event. Results
go to ``bench/results/cluster-*.json``; a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.burst import (
    REPO,
    OutcomeCounter,
    config_data,
    gateway_config,
    history_events,
    names,
    rename_all,
    save_result,
    stage,
    start_gateway,
    stop_gateway,
    verify_gateway,
)
from bench.measure import tree_cpu
from gateway.cluster.spread import owner
from harness.cluster import Cluster, Node, drop, mailboxes_of, server_now
from harness.postgres import PostgresServer, start_server

CODES = 64
GROUPS = 64  # the store's default lease groups
OUTCOMES = ["forwarded", "rejected", "duplicate"]
RENEW_SECONDS = 2.0  # the store's default
POLL = 0.2


# -- what the server and the nodes show ------------------------------------------------------------------


def server_cpu(server: PostgresServer) -> tuple[float, float]:
    """(user, system) CPU seconds of the whole server so far: the postmaster, its live processes and the
    backends that have exited (a closed connection's)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    return tree_cpu(postmaster, reaped=True)


def cpu_delta(before: tuple[float, float], after: tuple[float, float]) -> dict[str, float]:
    return {"user_s": after[0] - before[0], "system_s": after[1] - before[1]}


def summed(values: Iterable[tuple[float, float]]) -> tuple[float, float]:
    pairs = list(values)
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def pg_outcomes(conn: psycopg.Connection[Any]) -> int:
    """Outcome events in the history table so far (the server's CPU for this count, every 0.2 s, is
    counted with the server's: a few ms a second)."""
    row = conn.execute("SELECT count(*) FROM history WHERE event = ANY(%s)", (OUTCOMES,)).fetchone()
    return int(row[0]) if row else 0


def pg_events(dsn: str) -> list[dict[str, Any]]:
    """Every event of the history table, as its JSON line, with the node that wrote it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT line, node_id FROM history ORDER BY seq").fetchall()
    return [{**json.loads(line), "node": node} for line, node in rows]


def leases(dsn: str) -> dict[int, str | None]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute("SELECT grp, node_id FROM leases").fetchall())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


def wait_spread(dsn: str, node_ids: list[str], timeout: float = 120) -> None:
    """Until every lease group is held by the node the spread gives it among ``node_ids``; then one more
    renewal, for the takeover recovery of the last groups acquired."""
    wait_until(
        lambda: leases(dsn) == {g: owner(g, node_ids) for g in range(GROUPS)},
        timeout,
        f"the leases to be spread over {', '.join(node_ids)}",
    )
    time.sleep(RENEW_SECONDS)


# -- one burst -------------------------------------------------------------------------------------------


def burst_figures(
    files: list[tuple[str, str, str]],
    wall: float,
    events: list[dict[str, Any]],
    bad: dict[str, int],
    cpu: dict[str, float],
) -> dict[str, Any]:
    ends = [datetime.fromisoformat(e["ts"]).timestamp() for e in events if e["event"] in OUTCOMES]
    seconds = max(ends, default=wall) - wall
    moved = len(files) - bad["not_forwarded"]
    return {
        "files": len(files),
        "seconds": seconds,
        "files_per_s": moved / seconds if seconds > 0 else 0.0,
        "cpu_ms_per_file": 1000 * (cpu["user_s"] + cpu["system_s"]) / len(files),
        "cpu": cpu,
        "load_average": os.getloadavg()[0],  # the machine is shared: what else ran meanwhile
        **bad,
    }


def wait_for_all(count: Callable[[], int], total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while count() < total and time.monotonic() < deadline:
        time.sleep(POLL)


def sqlite_burst(root: Path, files: list[tuple[str, str, str]], timeout: float) -> dict[str, Any]:
    """One gateway process on the SQLite store (the default)."""
    config = gateway_config(root, codes=CODES)
    pairs = stage(root, files)
    process = start_gateway(root, config)
    try:
        before = tree_cpu(process.pid, reaped=True)
        wall = time.time()
        rename_all(pairs)
        wait_for_all(OutcomeCounter(root), len(files), timeout)
        cpu = cpu_delta(before, tree_cpu(process.pid, reaped=True))
    finally:
        stop_gateway(process)
    figures = burst_figures(files, wall, list(history_events(root)), verify_gateway(root, files), cpu)
    return {"store": "sqlite", "nodes": 1, **figures}


def node_config(root: Path, dsn: str, node_id: str) -> dict[str, Any]:
    """The burst's config with the store in PostgreSQL (default lease settings)."""
    return config_data(root, codes=CODES, store={"kind": "postgresql", "dsn": dsn, "node_id": node_id})


def node_burst(
    root: Path,
    files: list[tuple[str, str, str]],
    server: PostgresServer,
    dsn: str,
    count: int,
    timeout: float,
) -> dict[str, Any]:
    """``count`` nodes on the PostgreSQL store, one shared spool; the server's CPU apart."""
    pairs = stage(root, files)
    ids = [f"node-{n + 1}" for n in range(count)]
    nodes = [Node(i, root / "nodes" / i, node_config(root, dsn, i)) for i in ids]
    try:
        for node in nodes:
            node.start()
        wait_spread(dsn, ids)
        pids = [node.process.pid for node in nodes if node.process is not None]
        before, pg_before = summed(tree_cpu(p, reaped=True) for p in pids), server_cpu(server)
        wall = time.time()
        rename_all(pairs)
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_for_all(lambda: pg_outcomes(conn), len(files), timeout)
        cpu = cpu_delta(before, summed(tree_cpu(p, reaped=True) for p in pids))
        pg = cpu_delta(pg_before, server_cpu(server))
    finally:
        for node in nodes:
            if node.running:
                node.stop()
    events = pg_events(dsn)
    result = burst_figures(files, wall, events, verify_gateway(root, files, events), cpu)
    by_node = {i: sum(e["event"] == "forwarded" and e["node"] == i for e in events) for i in ids}
    server_ms = 1000 * (pg["user_s"] + pg["system_s"]) / len(files)
    return {
        "store": "postgresql",
        "nodes": count,
        **result,
        "server_cpu": pg,
        "server_cpu_ms_per_file": server_ms,
        "forwarded_by": by_node,
    }


# -- failover --------------------------------------------------------------------------------------------


class Load(threading.Thread):
    """A light steady load: ``rate`` files a second into random mailboxes, each a report of its own."""

    def __init__(self, spool: Path, codes: int, rate: float, seed: int = 1237) -> None:
        super().__init__(daemon=True, name="load")
        self.spool, self.codes, self.rate = spool, codes, rate
        self.rng = random.Random(seed)
        self.serials = [0] * codes
        self.dropped: list[str] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def drop(self, mailbox: int) -> str:
        with self.lock:
            self.serials[mailbox] += 1
            serial = self.serials[mailbox]
        name = drop(self.spool, mailbox, serial)
        with self.lock:
            self.dropped.append(name)
        return name

    def run(self) -> None:
        while not self.done.wait(1 / self.rate):
            self.drop(self.rng.randrange(self.codes))


def forwarded_since(dsn: str, moment: datetime) -> dict[str, tuple[datetime, str]]:
    """name -> (ts, node) of the files forwarded since ``moment``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT line, node_id, ts FROM history WHERE event = 'forwarded' AND ts > %s", (moment,)
        ).fetchall()
    return {json.loads(line)["name"]: (ts, node) for line, node, ts in rows}


def one_failover(
    cluster: Cluster, load: Load, victim: Node, survivor: Node, timeout: float
) -> dict[str, Any]:
    boxes = mailboxes_of(cluster, victim.node_id)
    killed_at = server_now(cluster)
    victim.kill()
    names = [load.drop(n) for n in boxes]
    seen: dict[str, tuple[datetime, str]] = {}

    def all_forwarded() -> bool:
        seen.update(forwarded_since(cluster.dsn, killed_at))
        return all(n in seen for n in names)

    wait_until(all_forwarded, timeout, f"the files of {victim.node_id}'s mailboxes to be forwarded")
    times = [seen[n][0] for n in names]
    wrong = sorted({seen[n][1] for n in names} - {survivor.node_id})
    if wrong:
        raise SystemExit(f"files of the killed node forwarded by {wrong}")
    return {
        "victim": victim.node_id,
        "mailboxes": len(boxes),
        "failover_s": (min(times) - killed_at).total_seconds(),
        "all_forwarded_s": (max(times) - killed_at).total_seconds(),
    }


def run_failover(
    root: Path, dsn: str, rounds: int, rate: float, timeout: float, log: Callable[[str], None]
) -> dict[str, Any]:
    cluster = Cluster(root, dsn, codes=CODES)
    ids = ["node-a", "node-b"]
    a, b = (cluster.node(i) for i in ids)
    results: list[dict[str, Any]] = []
    load = Load(cluster.spool, CODES, rate)
    started = time.monotonic()
    try:
        a.start()
        b.start()
        wait_spread(dsn, ids)
        load.start()
        for n in range(rounds):
            round_started = time.monotonic()
            victim, survivor = (a, b) if n % 2 == 0 else (b, a)
            result = one_failover(cluster, load, victim, survivor, timeout)
            victim.start()
            wait_spread(dsn, ids)
            result["round_s"] = time.monotonic() - round_started
            results.append(result)
            log(
                f"{n + 1:5} {result['victim']:8} {result['mailboxes']:9} {result['failover_s']:11.1f} "
                f"{result['all_forwarded_s']:14.1f} {result['round_s']:8.1f}"
            )
        load.done.set()
        load.join()
        cluster.wait_for_outcomes(len(load.dropped), timeout=timeout)
    finally:
        load.done.set()
        for node in (a, b):
            if node.running:
                node.stop()
    outcomes = cluster.outcomes()
    copies = cluster.core_files()
    bad = {
        "not_forwarded_once": sum(outcomes.get(n) != ["forwarded"] for n in load.dropped),
        "core_copies_not_one": sum(copies.get(n) != 1 for n in load.dropped),
        "left_in_flight": len(cluster.left_in_flight()),
    }
    failovers = [r["failover_s"] for r in results]
    return {
        "rounds": results,
        "files": len(load.dropped),
        "rate": rate,
        "median_s": statistics.median(failovers),
        "max_s": max(failovers),
        "min_s": min(failovers),
        "seconds": time.monotonic() - started,
        "seconds_per_round": statistics.mean(r["round_s"] for r in results),
        **bad,
    }


# -- the command -----------------------------------------------------------------------------------------


def fresh(server: PostgresServer, made: list[int]) -> str:
    made.append(len(made) + 1)
    return server.fresh_database(f"bench_{len(made)}")


def cpu_run(base: Path, server: PostgresServer, files: int, rounds: int, timeout: float) -> dict[str, Any]:
    burst = names(files, CODES)
    runs: list[dict[str, Any]] = []
    made: list[int] = []
    print(f"{'round':>5} {'store':10} {'files/s':>8} {'CPU ms/file: gateway (user)':>28} {'server':>7}")
    for rnd in range(1, rounds + 1):
        for kind in ("sqlite", "postgresql"):
            root = base / f"{rnd}-{kind}"
            root.mkdir()
            if kind == "sqlite":
                run = sqlite_burst(root, burst, timeout)
            else:
                run = node_burst(root, burst, server, fresh(server, made), 1, timeout)
            run["round"] = rnd
            runs.append(run)
            server_ms = f"{run.get('server_cpu_ms_per_file', 0):7.2f}" if kind != "sqlite" else " " * 7
            print(
                f"{rnd:5} {kind:10} {run['files_per_s']:8.0f} {run['cpu_ms_per_file']:20.2f} "
                f"({user_ms(run):5.2f}) {server_ms}  load {run['load_average']:.1f} {problems(run)}",
                flush=True,
            )
    ratios = []
    for rnd in range(1, rounds + 1):
        by = {r["store"]: r for r in runs if r["round"] == rnd}
        lite, pg = by["sqlite"], by["postgresql"]
        ratio = {
            "round": rnd,
            "gateway_cpu": pg["cpu_ms_per_file"] / lite["cpu_ms_per_file"],
            "gateway_user_cpu": user_ms(pg) / user_ms(lite),
            "gateway_and_server_cpu": (pg["cpu_ms_per_file"] + pg["server_cpu_ms_per_file"])
            / lite["cpu_ms_per_file"],
            "files_per_s": pg["files_per_s"] / lite["files_per_s"],
        }
        ratios.append(ratio)
        print(
            f"round {rnd}: PG/SQLite CPU a file {ratio['gateway_cpu']:.2f}x the gateway's alone "
            f"(target <= 1.5x; user CPU alone {ratio['gateway_user_cpu']:.2f}x), "
            f"{ratio['gateway_and_server_cpu']:.2f}x with the server's; files/s {ratio['files_per_s']:.2f}x"
        )
    return {"files": files, "codes": CODES, "runs": runs, "ratios": ratios}


def nodes_run(
    base: Path, server: PostgresServer, files: int, counts: list[int], rounds: int, timeout: float
) -> dict[str, Any]:
    burst = names(files, CODES)
    runs: list[dict[str, Any]] = []
    made: list[int] = []
    print(f"{'round':>5} {'nodes':>5} {'files/s':>8} {'ratio':>6} {'CPU ms/file':>16} {'server':>7}  by node")
    for rnd in range(1, rounds + 1):
        first: dict[str, Any] | None = None
        for count in counts:
            root = base / f"{rnd}-nodes-{count}"
            root.mkdir()
            run = node_burst(root, burst, server, fresh(server, made), count, timeout)
            first = first or run
            run.update(round=rnd, vs_first=run["files_per_s"] / first["files_per_s"])
            runs.append(run)
            print(
                f"{rnd:5} {count:5} {run['files_per_s']:8.0f} {run['vs_first']:5.2f}x "
                f"{run['cpu_ms_per_file']:16.2f} {run['server_cpu_ms_per_file']:7.2f}  "
                f"{run['forwarded_by']} load {run['load_average']:.1f} {problems(run)}",
                flush=True,
            )
    return {"files": files, "codes": CODES, "counts": counts, "runs": runs}


def failover_run(
    base: Path, server: PostgresServer, rounds: int, rate: float, timeout: float
) -> dict[str, Any]:
    print(f"failover: {rounds} kill -9 of a node of two, {rate:g} files/s meanwhile")
    print(f"{'round':>5} {'killed':8} {'mailboxes':>9} {'failover s':>11} {'all forwarded s':>14} round s")
    root = base / "failover"
    root.mkdir()
    dsn = server.fresh_database("bench_failover")
    report = run_failover(root, dsn, rounds, rate, timeout, lambda s: print(s, flush=True))
    print(
        f"kill -9 -> first forward by the other node: median {report['median_s']:.1f} s (target <= 15), "
        f"max {report['max_s']:.1f} s (target <= 30), min {report['min_s']:.1f} s; "
        f"{timedelta(seconds=round(report['seconds_per_round']))} a round\n"
        f"{report['files']} files: not forwarded once {report['not_forwarded_once']}, core copies not one "
        f"{report['core_copies_not_one']}, left in flight {report['left_in_flight']}"
    )
    return report


def user_ms(run: dict[str, Any]) -> float:
    """The gateway's user CPU a file: the interpreter's work, which the store changes. The system CPU
    swings from run to run with what the file system does (creation right after another run's mass
    deletes costs several seconds more of kernel time in a 5,000-file burst, whichever store)."""
    return float(1000 * run["cpu"]["user_s"] / run["files"])


def problems(run: dict[str, Any]) -> str:
    keys = ("not_forwarded", "no_receipt", "no_core_copy", "left_in_inbox", "extra_outcomes")
    found = {k: run[k] for k in keys if run.get(k)}
    return f"PROBLEMS {found}" if found else "all forwarded once, receipted, in the core"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="CPU a file: SQLite store vs one PostgreSQL node")
    parser.add_argument("--nodes", default="", help="files/s with these node counts, e.g. 1,2,3")
    parser.add_argument("--failover", type=int, default=0, help="this many kill -9 failovers")
    parser.add_argument("--files", type=int, default=5000, help="files of a burst")
    parser.add_argument("--rounds", type=int, default=1, help="--cpu, --nodes: how often the runs take turns")
    parser.add_argument("--rate", type=float, default=4.0, help="--failover: the light load's files/s")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if not (args.cpu or args.nodes or args.failover):
        parser.error("say what to measure: --cpu, --nodes 1,2,3 or --failover N")
    base = Path(tempfile.mkdtemp(prefix="cluster-", dir=REPO.parent))
    server = start_server()
    try:
        if args.cpu:
            print(f"CPU a file: {args.files:,} files over {CODES} mailboxes, SQLite vs one PostgreSQL node")
            report = cpu_run(base, server, args.files, args.rounds, args.timeout)
            save_result(f"cluster-cpu-{args.files}", report)
        if args.nodes:
            counts = [int(n) for n in args.nodes.split(",")]
            print(f"files/s: {args.files:,} files over {CODES} mailboxes, {counts} nodes on one spool")
            report = nodes_run(base, server, args.files, counts, args.rounds, args.timeout)
            save_result(f"cluster-nodes-{args.files}", report)
        if args.failover:
            report = failover_run(base, server, args.failover, args.rate, args.timeout)
            save_result(f"cluster-failover-{args.failover}", report)
    finally:
        server.remove()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
