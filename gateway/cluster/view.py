"""``fdep-gateway nodes``: the nodes of a cluster as the database sees them, and whose mailboxes are whose.

Read-only, from any host that reaches the database: a node is live while it beats (seen within a lease),
a lease is valid until its expiry by the server's clock; an operator sees at once which node serves an
institution's mailbox, since when (acquired), at which epoch, and how fresh its renewal is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from gateway.store.fencing import lease_group


@dataclass
class NodeView:
    node_id: str
    host: str
    pid: int
    started_at: str
    seen_seconds_ago: float
    live: bool
    leaving: bool
    groups: list[int] = field(default_factory=list)
    mailboxes: list[str] = field(default_factory=list)  # registered transfer codes in its groups
    epochs: list[int] = field(default_factory=list)  # lowest and highest epoch it holds
    oldest_renewal_seconds: float | None = None


@dataclass
class ClusterView:
    nodes: list[NodeView]
    groups: int
    unserved_groups: list[int]  # no valid lease: their mailboxes wait until a node takes them
    unserved_mailboxes: list[str]


def cluster_view(conn: psycopg.Connection[Any], lease_seconds: float, codes: Iterable[str]) -> ClusterView:
    nodes = {
        row[0]: NodeView(row[0], row[1], row[2], _iso(row[3]), round(row[4], 1), row[5], row[6])
        for row in conn.execute(
            "SELECT node_id, host, pid, started_at, extract(epoch FROM now() - seen_at)::float8, "
            "seen_at > now() - make_interval(secs => %s) AND NOT leaving, leaving "
            "FROM nodes ORDER BY node_id",
            (lease_seconds,),
        )
    }
    leases = conn.execute(
        "SELECT grp, node_id, epoch, expires_at > now(), extract(epoch FROM now() - renewed_at)::float8 "
        "FROM leases ORDER BY grp"
    ).fetchall()
    by_group: dict[int, str] = {}
    unserved: list[int] = []
    for group, holder, epoch, valid, renewed in leases:
        node = nodes.get(holder) if holder and valid else None
        if node is None:
            unserved.append(group)
            continue
        by_group[group] = node.node_id
        node.groups.append(group)
        node.epochs = [min([epoch, *node.epochs]), max([epoch, *node.epochs])]
        ages = [renewed, node.oldest_renewal_seconds or 0.0]
        node.oldest_renewal_seconds = round(max(ages), 1)
    count = len(leases)
    unserved_boxes: list[str] = []
    for code in sorted(codes):
        holder = by_group.get(lease_group(code, count)) if count else None
        if holder is None:
            unserved_boxes.append(code)
        else:
            nodes[holder].mailboxes.append(code)
    return ClusterView(list(nodes.values()), count, unserved, unserved_boxes)


def render(view: ClusterView, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(asdict(view), ensure_ascii=False, indent=2)
    lines = [
        f"{'node':<20} {'host':<16} {'state':<8} {'seen':>6} {'groups':>6} {'mailboxes':>9} "
        f"{'epochs':>9} {'renewed':>8}"
    ]
    for n in view.nodes:
        state = "leaving" if n.leaving else "live" if n.live else "silent"
        epochs = "-".join(str(e) for e in sorted(set(n.epochs))) or "-"
        renewed = f"{n.oldest_renewal_seconds:.1f}s" if n.oldest_renewal_seconds is not None else "-"
        lines.append(
            f"{n.node_id:<20} {n.host:<16} {state:<8} {n.seen_seconds_ago:>5.1f}s {len(n.groups):>6} "
            f"{len(n.mailboxes):>9} {epochs:>9} {renewed:>8}"
        )
    waiting = view.unserved_mailboxes
    named = f" ({', '.join(waiting[:10])}{' ...' if len(waiting) > 10 else ''})" if waiting else ""
    lines.append(
        f"{view.groups} lease groups; not served now: {len(view.unserved_groups)} groups, "
        f"{len(waiting)} mailboxes{named}"
    )
    return "\n".join(lines)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
