"""Which live node should serve each lease group: rendezvous (highest random weight) hashing.

Every node computes the same answer from the same list of live nodes, with no coordination; when a node
joins or leaves, only the groups it wins or held move (about 1/n of them), never a reshuffle of all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection


def weight(node_id: str, group: int) -> int:
    digest = hashlib.blake2b(f"{node_id}/{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(group: int, nodes: Collection[str]) -> str | None:
    """The node that should hold ``group``; None when no node is live."""
    return max(nodes, key=lambda node: (weight(node, group), node), default=None)


def share(node_id: str, groups: int, nodes: Collection[str]) -> frozenset[int]:
    """The groups ``node_id`` should hold when ``nodes`` are the live ones."""
    return frozenset(g for g in range(groups) if owner(g, nodes) == node_id)
