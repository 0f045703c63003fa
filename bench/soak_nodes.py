"""The crash soak with nodes: 2 or 3 gateways on one spool and one PostgreSQL, killed, cut off and left
without their database at random, restarted the way systemd restarts them.

    python -m bench.soak --nodes 2 --kills 20 --pg-restarts 5 --partitions 5 --seed 42

The load generator, the settling ``drain`` and the outside-in checks are ``bench.soak``'s; the history
and the ledger are read from the database (the ``history`` table's ``line`` is the JSON line the files
would hold). A private server is started for the run (``harness.postgres``). Each node reaches it through
a TCP proxy of its own (``harness.proxy``) so that it can be cut off: a cut holds every byte both ways,
for a few seconds (less than a lease: nothing may change) or for longer than a lease (its mailboxes are
taken over; when it heals, what it sent meanwhile reaches the server late and must be fenced off, and the
node must find its leases lost and exit 75).

The faults (``--kills`` kill -9 of a random running node, ``--pg-restarts`` server restarts, fast and
immediate in turn, each down for 0-12 s, and ``--partitions`` cuts) come in a shuffled order, about
``--gap`` seconds apart. A stand-in for systemd restarts a node that exited, whatever the code but 0, 65
and 78 (``Restart=on-failure``, ``RestartPreventExitStatus``), after 1, 5 (``RestartSec``) or 15 s (past
a lease). At the end every node is stopped, the leases left run out, and ``drain`` runs as a node of its
own. Exits other than the soak's kills, 75 after a lost lease and 1 with the store unreachable count as
failures (``node_exits``).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psycopg

from bench.soak import (
    STATIONS,
    TC_B,
    Figures,
    Generator,
    check,
    parse_event,
    settle,
    soak_config,
    tally,
)
from harness.cluster import Node
from harness.daemon import TC, Gateway, wait_for
from harness.postgres import PostgresServer, start_server
from harness.proxy import TcpProxy

RESTART_PREVENTED = {0, 65, 78}  # success, and the unit's RestartPreventExitStatus
EXPECTED_EXITS = {"-9 killed", "75 lease.lost", "1 store.unreachable"}


@dataclass
class NodeFigures(Figures):
    nodes: int = 0
    pg_restarts_requested: int = 0
    partitions_requested: int = 0
    pg_restarts: int = 0
    pg_outages_s: list[float] = field(default_factory=list)
    partitions: int = 0
    partitions_s: list[float] = field(default_factory=list)
    restarts: int = 0  # by the stand-in for systemd
    exits: dict[str, int] = field(default_factory=dict)  # "<code> <why>" -> how often
    node_exits: int = 0  # exits no fault of the soak explains
    logged_errors: dict[str, int] = field(default_factory=dict)  # error-level log events of the nodes

    FAILURES: ClassVar[tuple[str, ...]] = (*Figures.FAILURES, "node_exits")

    @property
    def ok(self) -> bool:
        restarts = self.pg_restarts >= self.pg_restarts_requested
        return super().ok and restarts and self.partitions >= self.partitions_requested

    def extra_rows(self) -> list[tuple[str, Any]]:
        return [
            ("nodes", self.nodes),
            ("PostgreSQL restarts", f"{self.pg_restarts} (down {self.pg_outages_s} s)"),
            ("partitions", f"{self.partitions} (cut off {self.partitions_s} s)"),
            ("restarts (systemd)", self.restarts),
            ("node exits", self.exits),
            ("error log events", self.logged_errors),
        ]


@dataclass
class DatabaseRecords:
    """The nodes' records: history and ledger in the database, a log file each."""

    dsn: str
    nodes: list[Node]

    def history(self, fig: Figures) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT seq, line, node_id FROM history ORDER BY seq").fetchall()
        events = []
        for seq, line, node in rows:
            event = parse_event(f"history row {seq}", line, fig)
            if event is not None:
                events.append({**event, "node": node})  # who wrote it, for the problems' text
        return events

    def ledger(self, fig: Figures) -> dict[str, str]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return {str(f): str(s) for f, s in conn.execute("SELECT file_id, state FROM files")}

    def log(self) -> str:
        return "".join(node.log() for node in self.nodes)


EXIT_EVENTS = ("lease.lost", "store.unreachable", "store.unusable", "spool.unusable", "gateway.failed")
"""What the daemon logs when it gives up (files failing on the way out are logged after it)."""


def exit_reason(text: str) -> str:
    """Why a run whose log is ``text`` ended: its give-up event, else its last error-level event."""
    errors = []
    for line in text.splitlines():
        if '"level": "error"' in line:
            try:
                errors.append(str(json.loads(line).get("event", "")))
            except ValueError:
                continue
    return next((e for e in reversed(errors) if e in EXIT_EVENTS), errors[-1] if errors else "")


def error_events(text: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if '"level": "error"' in line:
            try:
                found[str(json.loads(line).get("event", ""))] += 1
            except ValueError:
                found["(not JSON)"] += 1
    return found


@dataclass
class Systemd:
    """Restarts the nodes as the unit does; every wait of the soak's driver goes through ``wait``."""

    nodes: list[Node]
    rng: random.Random
    fig: NodeFigures
    due: dict[str, float] = field(default_factory=dict)  # node id -> when it is started again

    def delay(self) -> float:
        """RestartSec is 5 s; sometimes at once, sometimes after the node's leases have run out."""
        return self.rng.choice((1.0, 5.0, 5.0, 15.0))

    def tick(self) -> None:
        now = time.monotonic()
        for node in self.nodes:
            if node.process is not None and node.process.poll() is not None:
                self._exited(node, node.wait(), exit_reason(node.log()[node.runs[-1] :]))
            if node.process is None and now >= self.due.get(node.node_id, float("inf")):
                del self.due[node.node_id]
                node.start(wait=False)
                self.fig.restarts += 1

    def _exited(self, node: Node, code: int, why: str) -> None:
        key = f"{code} {why}".strip()
        self.fig.exits[key] = self.fig.exits.get(key, 0) + 1
        if key not in EXPECTED_EXITS:
            self.fig.problem("node_exits", f"{node.node_id} exited {key}")
        if code not in RESTART_PREVENTED:
            self.due[node.node_id] = time.monotonic() + self.delay()

    def kill(self, node: Node) -> None:
        code = node.kill()  # if it exited just before, its own code and why
        self._exited(node, code, "killed" if code == -9 else exit_reason(node.log()[node.runs[-1] :]))
        self.fig.kills += 1

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.tick()
            if time.monotonic() >= deadline:
                return
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def stop_all(self) -> None:
        """A graceful stop of every node (their leases go back); nothing is started again."""
        self.due.clear()
        for node in self.nodes:
            if node.running:
                code = node.stop()
                if code != 0:
                    self.fig.problem("node_exits", f"{node.node_id} stopped with {code}")
            elif node.process is not None:
                self._exited(node, node.wait(), exit_reason(node.log()[node.runs[-1] :]))
        self.due.clear()


def restart_server(server: PostgresServer, systemd: Systemd, rng: random.Random, fig: NodeFigures) -> None:
    """Stop the server (fast or immediate, in turn), leave it down 0-12 s, start it again."""
    mode = ("fast", "immediate")[fig.pg_restarts % 2]
    down = rng.uniform(0, 12)
    started = time.monotonic()
    server.stop(mode)
    systemd.wait(down)
    server.start()
    fig.pg_restarts += 1
    fig.pg_outages_s.append(round(time.monotonic() - started, 1))


def cut_off(proxy: TcpProxy, rng: random.Random, fig: NodeFigures, heals: list[threading.Timer]) -> None:
    """Cut one node off for less than a lease, or for longer, as a lost route does (its open connections
    held, silent); it heals by itself."""
    seconds = rng.uniform(2, 6) if rng.random() < 0.4 else rng.uniform(14, 25)
    proxy.cut("blackhole", close_open=False)
    heal = threading.Timer(seconds, proxy.heal)
    heal.daemon = True
    heal.start()
    heals.append(heal)
    fig.partitions += 1
    fig.partitions_s.append(round(seconds, 1))


def keep_history(dsn: str, path: Path) -> None:
    """The history table beside the spool, one JSON object a row (the server goes with the run)."""
    with psycopg.connect(dsn, autocommit=True) as conn, path.open("w", encoding="utf-8") as out:
        for seq, ts, node, line in conn.execute("SELECT seq, ts, node_id, line FROM history ORDER BY seq"):
            out.write(json.dumps({"seq": seq, "at": ts.isoformat(), "node": node, "line": line}) + "\n")


def leases_free(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = "SELECT count(*) FROM leases WHERE node_id IS NOT NULL AND expires_at > now()"
        row = conn.execute(query).fetchone()
    return row is not None and row[0] == 0


def node_config(root: Path, dsn: str, node_id: str) -> dict[str, Any]:
    """The soak's config with the store in PostgreSQL (default lease settings)."""
    return {**soak_config(root), "store": {"kind": "postgresql", "dsn": dsn, "node_id": node_id}}


def run_node_soak(
    kills: int,
    seed: int,
    root: Path,
    *,
    nodes: int = 2,
    pg_restarts: int = 2,
    partitions: int = 2,
    gap: float = 5.0,
    pause: float = 0.15,
    log: Callable[[str], None] = print,
) -> NodeFigures:
    rng = random.Random(seed)
    fig = NodeFigures(
        seed=seed,
        kills_requested=kills,
        nodes=nodes,
        pg_restarts_requested=pg_restarts,
        partitions_requested=partitions,
    )
    started = time.monotonic()
    server = start_server()
    proxies: list[TcpProxy] = []
    heals: list[threading.Timer] = []
    try:
        dsn = server.dsn  # the server is the soak's own: its default database
        gw = Gateway(root=root, config_path=root / "gateway.yaml")  # the spool, the cores; drain's config
        drain = json.dumps(node_config(root, dsn, "drain"), ensure_ascii=False)
        gw.config_path.write_text(drain, encoding="utf-8")
        proxies = [TcpProxy(server.port).start() for _ in range(nodes)]
        ids = [f"node-{n + 1}" for n in range(nodes)]
        members = [
            Node(i, root / "nodes" / i, node_config(root, server.dsn_at(p.port), i))
            for i, p in zip(ids, proxies, strict=True)
        ]
        for station in STATIONS:
            for tc in (TC, TC_B):
                gw.inbox(station, tc)
        scratch = root / "scratch"
        scratch.mkdir()
        gen = Generator(gw, random.Random(rng.random()), scratch)
        thread = threading.Thread(target=gen.run, args=(pause,), daemon=True)
        systemd = Systemd(members, rng, fig)
        faults = ["kill"] * kills + ["pg"] * pg_restarts + ["cut"] * partitions
        rng.shuffle(faults)
        thread.start()
        try:
            for node in members:
                node.start(wait=False)
            for n, fault in enumerate(faults, 1):
                systemd.wait(rng.uniform(0.5 * gap, 1.5 * gap))
                if gen.error:
                    raise gen.error
                running = [node for node in members if node.running]
                if fault == "kill" and running:
                    systemd.kill(rng.choice(running))
                elif fault == "kill":
                    faults.append(fault)  # none is running right now: later
                elif fault == "pg":
                    restart_server(server, systemd, rng, fig)
                else:
                    cut_off(rng.choice(proxies), rng, fig, heals)
                elapsed = time.monotonic() - started
                log(f"  {n}/{len(faults)} {fault}: {len(gen.dropped)} files dropped, {elapsed:.0f} s")
            systemd.wait(30)  # the last fault plays out: cuts heal, leases lost are found, nodes restart
        finally:
            gen.stop.set()
            thread.join(timeout=60)
            gen.join_writers()
            for heal in heals:
                heal.cancel()
            for proxy in proxies:
                proxy.heal()
            systemd.stop_all()
        if gen.error:
            raise gen.error
        wait_for(lambda: leases_free(dsn), timeout=60, what="the leases of killed nodes to run out")
        settle(gw, gen, fig)
        fig.seconds = round(time.monotonic() - started, 1)
        check(gw, gen.dropped, fig, DatabaseRecords(dsn, members))
        keep_history(dsn, root / "history-table.jsonl")
        tally(fig, gen, gw)
        fig.logged_errors = dict(sorted(sum((error_events(n.log()) for n in members), Counter()).items()))
        return fig
    finally:
        for proxy in proxies:
            proxy.close()
        server.remove()
