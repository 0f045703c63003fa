"""Several real gateway processes as nodes on one shared spool and one PostgreSQL: start, kill, pause,
and read what they did from the database (the history and the ledger live there)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
import yaml

from gateway.store.fencing import lease_group
from harness.config import REPO, base_config
from harness.daemon import day, wait_for

OUTCOMES = ("forwarded", "rejected", "duplicate")


def org(n: int) -> str:
    return f"5{n:07d}"


def tc(n: int) -> str:
    return f"TC{org(n)}"


def cluster_config(root: Path, dsn: str, node_id: str, codes: int, **store: Any) -> dict[str, Any]:
    """``codes`` registered mailboxes on the test station, a directory core, the store in PostgreSQL."""
    data = base_config(root)
    data["stations"] = {"k1237": {"environment": "test", "route": "core-test"}}
    data["routes"] = {"core-test": {"type": "directory", "path": str(root / "core" / "k1237")}}
    data["transfer_codes"] = {tc(n): {"institution": org(n), "stations": ["k1237"]} for n in range(codes)}
    data["store"] = {"kind": "postgresql", "dsn": dsn, "node_id": node_id, **store}
    return data


def report_name(n: int, serial: int) -> str:
    """Institution ``n``'s D1001 for the day ``serial`` days back: each serial its own report, so files
    sent together never make each other stale."""
    return f"CISP-{org(n)}_D1001_V01_1_{day(serial)}_01_Q.TXT"


def report_body(n: int, serial: int) -> bytes:
    return f"{org(n)}|基金{serial}|91110000100000000X|01|北京市||||{day(serial)}\n".encode()


def drop(spool: Path, n: int, serial: int) -> str:
    """Put one report into mailbox ``n``'s inbox the way a sender does (write aside, rename in)."""
    inbox = spool / "k1237" / tc(n) / "in"
    inbox.mkdir(parents=True, exist_ok=True)
    name = report_name(n, serial)
    temp = inbox.parent / f".{name}.part"
    temp.write_bytes(report_body(n, serial))
    temp.rename(inbox / name)
    return name


class Stream:
    """A sender that keeps dropping reports into ``mailboxes`` at a steady rate, on a thread, until
    stopped: the load a cluster serves on while a test moves its nodes or its database. Mailbox ``n``'s
    files take the serials ``first_serial``, ``first_serial + 1``, ... (see ``report_name``)."""

    def __init__(
        self, spool: Path, mailboxes: Sequence[int], per_second: float, first_serial: int = 1
    ) -> None:
        self.spool = spool
        self.mailboxes = list(mailboxes)
        self.pause = 1 / per_second
        self.first_serial = first_serial
        self.names: list[str] = []  # in the order dropped; appended by the stream's thread only
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        """Stop dropping; every name dropped."""
        self._stopping.set()
        self._thread.join(timeout=10)
        return list(self.names)

    def _run(self) -> None:
        count = 0
        while not self._stopping.is_set():
            n = self.mailboxes[count % len(self.mailboxes)]
            self.names.append(drop(self.spool, n, self.first_serial + count // len(self.mailboxes)))
            count += 1
            self._stopping.wait(self.pause)


@dataclass
class Node:
    """One gateway process of the cluster; its config and log in a directory of its own."""

    node_id: str
    home: Path
    config: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    _log: BinaryIO | None = None
    runs: list[int] = field(default_factory=list)  # log offsets where each run begins

    @property
    def config_path(self) -> Path:
        return self.home / "config.yaml"

    def log(self) -> str:
        path = self.home / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, *, wait: bool = True) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, allow_unicode=True), encoding="utf-8")
        offset = len(self.log())
        self.runs.append(offset)
        self._log = (self.home / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path)],
            cwd=REPO,
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        if wait:
            process = self.process

            def up() -> bool:
                if process.poll() is not None:
                    code = process.returncode
                    raise AssertionError(f"{self.node_id} exited ({code}):\n{self.log()[offset:]}")
                return "gateway.started" in self.log()[offset:]

            wait_for(up, timeout=60, what=f"{self.node_id} to start")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return self.wait()

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout=120)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    root: Path
    dsn: str
    codes: int
    store: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def core(self) -> Path:
        return self.root / "core" / "k1237"

    def node(self, node_id: str, **store: Any) -> Node:
        """Node ``node_id``, its ``store:`` settings overridden by ``store`` (``dsn=`` through a proxy)."""
        settings = {"dsn": self.dsn, **self.store, **store}
        config = cluster_config(self.root, settings.pop("dsn"), node_id, self.codes, **settings)
        node = self.nodes.setdefault(node_id, Node(node_id, self.root / "nodes" / node_id, config))
        node.config = config
        return node

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.running:
                node.kill()

    @contextmanager
    def db(self) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            yield conn

    def history(self) -> list[dict[str, Any]]:
        """Every event, with the node that wrote it (``node``), when (``at``, that node's clock as it
        wrote) and its place in the order of writes (``seq``)."""
        with self.db() as conn:
            rows = conn.execute("SELECT line, node_id, ts, seq FROM history ORDER BY seq").fetchall()
        return [{**json.loads(line), "node": node, "at": ts, "seq": seq} for line, node, ts, seq in rows]

    def last_seq(self) -> int:
        """The ``seq`` of the latest event written: what is written from now on comes after it."""
        with self.db() as conn:
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM history").fetchone()
        return int(row[0]) if row else 0

    def outcomes(self) -> dict[str, list[str]]:
        """file name -> the outcome events it got, in order."""
        found: dict[str, list[str]] = {}
        for event in self.history():
            if event["event"] in OUTCOMES:
                found.setdefault(event["name"], []).append(event["event"])
        return found

    def outcome_count(self) -> int:
        with self.db() as conn:
            query = "SELECT count(*) FROM history WHERE event = ANY(%s)"
            row = conn.execute(query, (list(OUTCOMES),)).fetchone()
        return int(row[0]) if row else 0

    def wait_for_outcomes(self, total: int, timeout: float) -> None:
        wait_for(lambda: self.outcome_count() >= total, timeout=timeout, what=f"{total} outcomes")

    def leases(self) -> dict[int, tuple[str | None, int]]:
        with self.db() as conn:
            rows = conn.execute("SELECT grp, node_id, epoch FROM leases ORDER BY grp").fetchall()
        return {g: (n, e) for g, n, e in rows}

    def holders(self) -> dict[str, int]:
        """node -> how many lease groups it holds now."""
        counts: dict[str, int] = {}
        for holder, _ in self.leases().values():
            if holder is not None:
                counts[holder] = counts.get(holder, 0) + 1
        return counts

    def core_files(self) -> dict[str, int]:
        """original name -> copies of it in the core directory (the core keeps the name)."""
        counts: dict[str, int] = {}
        for path in self.core.rglob("*") if self.core.is_dir() else []:
            if path.is_file() and not path.name.startswith("."):
                counts[path.name] = counts.get(path.name, 0) + 1
        return counts

    def left_in_flight(self) -> list[Path]:
        """Files still in in/, work/, deferred/ or held/ of any mailbox."""
        station = self.spool / "k1237"
        found = [p for p in station.glob("*/in/*") if not p.name.startswith(".")]
        for state in ("work", "deferred", "held"):
            found += [p for p in (station / ".gateway" / state).rglob("*") if p.is_file()]
        return found


def ended_once(cluster: Cluster, names: list[str]) -> None:
    """Every file has exactly one outcome, forwarded, and is in the core exactly once."""
    outcomes = cluster.outcomes()
    assert {n: outcomes.get(n) for n in names} == {n: ["forwarded"] for n in names}
    copies = cluster.core_files()
    assert {n: copies.get(n) for n in names} == dict.fromkeys(names, 1)


def first_forward_after(history: list[dict[str, Any]], moment: datetime, by: str) -> datetime | None:
    """When node ``by`` first forwarded a file after ``moment`` (the server's clock)."""
    times = [e["at"] for e in history if e["event"] == "forwarded" and e["node"] == by and e["at"] > moment]
    return min(times, default=None)


def server_now(cluster: Cluster) -> datetime:
    with cluster.db() as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


def mailboxes_of(cluster: Cluster, node_id: str) -> list[int]:
    """The mailbox numbers whose lease group ``node_id`` holds now."""
    leases = cluster.leases()
    groups = len(leases)
    return [n for n in range(cluster.codes) if leases[lease_group(tc(n), groups)][0] == node_id]
