"""Mailbox leases: which node serves which group of transfer codes, renewed on a beat, fenced by epoch.

Kubernetes-style leases in a PostgreSQL table (``leases``: group, holder, epoch, expiry by the server's
clock). Every ``renew_seconds`` one transaction does the whole beat: the node's heartbeat, the renewal of
what it holds (only at the epoch it holds: a group someone else took is lost), the list of live nodes,
and the acquisition of free or expired groups the spread gives it (each acquisition raises the epoch).

The node's own belief is kept safe by its monotonic clock: a beat sent at ``t`` makes the leases valid
here until ``t + lease_seconds - renew_seconds``, which ends before the server's expiry (set after ``t``),
so a node that cannot renew (paused, cut off, the server down) stops claiming and forwarding before
anyone else may take over. The database checks the epochs again at every file write (``fdep_fence``).

A group the spread gives to another node is handed over: no longer claimed here, released once no file
of it is in flight here. A lease lost against this node's will (taken over after it missed its renewals)
raises :class:`LeaseLostError`: the daemon exits and is restarted fresh, rather than reason about what
its in-flight files did meanwhile (the new owner redoes them).

The database itself down: beats fail and are tried again. Back before any node could look gone to the
others (seen less than a lease ago; surely so within ``lease_seconds - 2 * renew_seconds``), every node
renews its leases, expired or not, as nobody took them: nothing moves. Down for longer, every node looks
gone to the others: the first one back takes every group, and the others, finding theirs taken, exit and
are restarted (``tests/cluster/test_partitions.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from gateway.cluster.spread import share
from gateway.store.fencing import lease_group
from gateway.store.postgres import client_liveness, session_options

log = structlog.get_logger("gateway.cluster")


class LeaseLostError(RuntimeError):
    """A lease this node held was taken over: its view of its mailboxes is no longer true."""


class ClusterConfigError(RuntimeError):
    """The cluster's lease table disagrees with this node's configuration (``groups``)."""


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    node_id: str
    groups: int
    lease_seconds: float
    renew_seconds: float

    @property
    def idle_in_transaction(self) -> float:
        """How long the server keeps a session of this node left idle inside a transaction (cut off in
        the middle of one): half the time between the lapse of a node's last renewal here and the
        earliest moment another node may take its leases over (``gateway.store.postgres.session_options``)."""
        return (self.lease_seconds - self.renew_seconds) / 2


class LeaseKeeper:
    """One node's leases. ``claims`` and ``owns`` are cheap reads for the loop's hot path."""

    def __init__(
        self,
        dsn: str,
        terms: LeaseTerms,
        *,
        password: str | None = None,
        busy: Callable[[int], bool] = lambda group: False,
    ) -> None:
        self._dsn = dsn
        self._password = password
        self.terms = terms
        self._busy = busy  # whether a file of this group is in flight here (a hand-over waits for it)
        self.on_acquired: Callable[[frozenset[int]], None] = lambda groups: None  # takes them over
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.held: dict[int, int] = {}  # group -> epoch; replaced whole, as threads read it
        self.ready: set[int] = set()  # held groups whose takeover recovery is done: claimable
        self.leaving: set[int] = set()  # held groups handed over to another node: finish, then release
        self.valid_until = 0.0  # monotonic
        self.live: tuple[str, ...] = ()
        self.beats = 0

    # -- the hot path -------------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.terms.node_id

    @property
    def groups(self) -> int:
        return self.terms.groups

    def valid(self) -> bool:
        return time.monotonic() < self.valid_until

    def group_of(self, transfer_code: str) -> int:
        return lease_group(transfer_code, self.terms.groups)

    def owns(self, transfer_code: str) -> bool:
        """May this node write and forward files of this mailbox right now?"""
        return self.group_of(transfer_code) in self.held and self.valid()

    def claims(self, transfer_code: str) -> bool:
        """May this node take new files from this mailbox (owned, recovered, not being handed over)?"""
        group = self.group_of(transfer_code)
        return group in self.ready and group not in self.leaving and self.valid()

    def epochs(self) -> Mapping[int, int]:
        """What every transaction carries (``gateway.store.fencing.Fence``); nothing once not valid."""
        return dict(self.held) if self.valid() else {}

    def gauges(self) -> tuple[int, int, float, int]:
        """Groups held, highest epoch, seconds of validity left, live nodes: the metrics of the leases."""
        held = self.epochs()
        left = max(0.0, self.valid_until - time.monotonic())
        return len(held), max(held.values(), default=0), left, len(self.live)

    def recovered(self, groups: frozenset[int]) -> None:
        """The daemon finished the takeover of these groups: their inboxes may be claimed from."""
        self.ready |= groups & self.held.keys()

    # -- the beat -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, check the lease table, wait out an earlier run of this node id, and beat once."""
        await self._connect()
        conn = self._connection()
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO leases (grp) SELECT generate_series(0, %s - 1) "
                "WHERE NOT EXISTS (SELECT 1 FROM leases) ON CONFLICT DO NOTHING",
                (self.terms.groups,),
            )
            row = await (await conn.execute("SELECT count(*), max(grp) FROM leases")).fetchone()
        if row is None or row[0] != self.terms.groups or row[1] != self.terms.groups - 1:
            await self._disconnect()
            raise ClusterConfigError(
                f"the lease table has {row[0] if row else 0} groups, this node is configured for "
                f"{self.terms.groups}: every node must use the same store.groups"
            )
        await self._wait_for_earlier_run()
        await conn.execute(
            "INSERT INTO nodes (node_id, host, pid, started_at, seen_at) VALUES (%s, %s, %s, now(), now()) "
            "ON CONFLICT (node_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
            "started_at = now(), seen_at = now(), leaving = false",
            (self.node_id, socket.gethostname(), os.getpid()),
        )
        await self.beat()

    async def _wait_for_earlier_run(self) -> None:
        """Two live processes with one node id would each think they hold its leases: wait until an
        earlier one is gone (dead on this host, or silent for a lease)."""
        conn = self._connection()
        while True:
            row = await (
                await conn.execute(
                    "SELECT host, pid, seen_at > now() - make_interval(secs => %s), leaving "
                    "FROM nodes WHERE node_id = %s",
                    (self.terms.lease_seconds, self.node_id),
                )
            ).fetchone()
            if row is None or not row[2] or row[3]:
                return
            host, pid = row[0], row[1]
            if host == socket.gethostname() and (pid == os.getpid() or not _alive(pid)):
                return
            log.warning("node.id_in_use", node=self.node_id, host=host, pid=pid, note="waiting for it to end")
            await asyncio.sleep(self.terms.renew_seconds)

    async def run(self, stopping: asyncio.Event) -> None:
        """Beat every ``renew_seconds`` until stopping; a failed beat is logged and tried again (the
        leases lapse here on their own). Raises ``LeaseLostError``."""
        while not stopping.is_set():
            started = time.monotonic()
            try:
                await asyncio.wait_for(self.beat(), timeout=self.terms.renew_seconds)
            except LeaseLostError:
                raise
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._disconnect()
                log.warning(
                    "lease.beat_failed",
                    error=str(exc) or type(exc).__name__,
                    valid_for=round(max(0.0, self.valid_until - time.monotonic()), 1),
                )
            pause = self.terms.renew_seconds - (time.monotonic() - started)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=pause)

    async def beat(self) -> None:
        """One renewal, heartbeat, look at the cluster and acquisition, in one transaction."""
        sent = time.monotonic()
        conn = await self._connect()
        lease = self.terms.lease_seconds
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO nodes (node_id, host, pid, started_at, seen_at) "
                "VALUES (%s, %s, %s, now(), now()) ON CONFLICT (node_id) DO UPDATE SET seen_at = now()",
                (self.node_id, socket.gethostname(), os.getpid()),
            )
            held = sorted(self.held.items())
            renewed = await (
                await conn.execute(
                    "UPDATE leases AS l SET expires_at = now() + make_interval(secs => %s), "
                    "renewed_at = now() FROM unnest(%s::int[], %s::bigint[]) AS h(grp, epoch) "
                    "WHERE l.grp = h.grp AND l.epoch = h.epoch AND l.node_id = %s RETURNING l.grp",
                    (lease, [g for g, _ in held], [e for _, e in held], self.node_id),
                )
            ).fetchall()
            lost = self.held.keys() - {g for (g,) in renewed}
            if lost:
                self.valid_until = 0.0
                raise LeaseLostError(f"node {self.node_id} lost the leases of groups {sorted(lost)}")
            live = [
                n
                for (n,) in await (
                    await conn.execute(
                        "SELECT node_id FROM nodes WHERE NOT leaving "
                        "AND seen_at > now() - make_interval(secs => %s) ORDER BY node_id",
                        (lease,),
                    )
                ).fetchall()
            ]
            mine = share(self.node_id, self.terms.groups, live)
            self.leaving = self.held.keys() - mine
            await self._release_quiet(conn)
            wanted = sorted(mine - self.held.keys())
            free = [  # locked FOR UPDATE: waits for the last holder's writes in flight (fdep_fence)
                g
                for (g,) in await (
                    await conn.execute(
                        "SELECT grp FROM leases WHERE grp = ANY(%s) "
                        "AND (node_id IS NULL OR node_id = %s OR expires_at <= now()) "
                        "ORDER BY grp FOR UPDATE",
                        (wanted, self.node_id),
                    )
                ).fetchall()
            ]
            taken = await (
                await conn.execute(
                    "UPDATE leases SET node_id = %s, epoch = epoch + 1, acquired_at = now(), "
                    "renewed_at = now(), expires_at = now() + make_interval(secs => %s) "
                    "WHERE grp = ANY(%s) RETURNING grp, epoch",
                    (self.node_id, lease, free),
                )
            ).fetchall()
        self.valid_until = sent + lease - self.terms.renew_seconds
        self.live = tuple(live)
        self.beats += 1
        acquired = frozenset(g for g, _ in taken)
        self.held = {**self.held, **dict(taken)}
        if acquired:
            log.info("lease.acquired", node=self.node_id, groups=len(acquired), epochs=dict(taken))
            self.on_acquired(acquired)

    async def _release_quiet(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Hand over the groups another node should hold once nothing of theirs is in flight here."""
        quiet = sorted(g for g in self.leaving if not self._busy(g))
        if not quiet:
            return
        await conn.execute(
            "UPDATE leases AS l SET node_id = NULL, expires_at = now() "
            "FROM unnest(%s::int[], %s::bigint[]) AS h(grp, epoch) "
            "WHERE l.grp = h.grp AND l.epoch = h.epoch AND l.node_id = %s",
            (quiet, [self.held[g] for g in quiet], self.node_id),
        )
        self.held = {g: e for g, e in self.held.items() if g not in quiet}
        self.ready -= set(quiet)
        self.leaving -= set(quiet)
        log.info("lease.handed_over", node=self.node_id, groups=quiet)

    async def release_all(self) -> None:
        """A graceful stop: give every lease back at once and say this node is leaving."""
        self.valid_until = 0.0
        held = sorted(self.held.items())
        try:
            conn = await self._connect()
            async with conn.transaction():
                await conn.execute(
                    "UPDATE leases AS l SET node_id = NULL, expires_at = now() "
                    "FROM unnest(%s::int[], %s::bigint[]) AS h(grp, epoch) "
                    "WHERE l.grp = h.grp AND l.epoch = h.epoch AND l.node_id = %s",
                    ([g for g, _ in held], [e for _, e in held], self.node_id),
                )
                await conn.execute("UPDATE nodes SET leaving = true WHERE node_id = %s", (self.node_id,))
        except (psycopg.Error, OSError) as exc:
            log.warning("lease.release_failed", error=str(exc), note="they expire on their own")
        self.held = {}
        self.ready = set()
        await self._disconnect()

    async def close(self) -> None:
        """Drop the connection without giving anything back (the leases were lost, or expire)."""
        self.valid_until = 0.0
        await self._disconnect()

    # -- the connection -----------------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            timeout = max(1, int(self.terms.renew_seconds))
            kwargs: dict[str, Any] = {
                "autocommit": True,
                "connect_timeout": timeout,
                "options": session_options(self._dsn, idle_in_transaction=self.terms.idle_in_transaction),
                **client_liveness(self.terms.idle_in_transaction * 2),
            }
            if self._password is not None:
                kwargs["password"] = self._password
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, **kwargs)
        return self._conn

    def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("not connected")
        return self._conn

    async def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
                await asyncio.wait_for(conn.close(), timeout=1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
