"""Fencing: the store's half of the mailbox leases (``gateway/cluster``), so a node that lost a lease can
never write the state of a file another node now owns.

Mailboxes are leased in groups: a transfer code's group is a stable hash, the same on every node and
across restarts (a TXT and its ZIP, every file of one inbox, share one group). The PostgreSQL store
sends the epochs a node believes it holds with every transaction; the database refuses a file's write
whose group is not held by that node at that epoch (``migrations/001_initial.sql``, ``fdep_fence``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

from gateway.store.rules import LedgerError


class FencedError(LedgerError):
    """A write or a step refused because this node no longer holds the lease of the file's mailbox."""


def lease_group(transfer_code: str, groups: int) -> int:
    digest = hashlib.blake2b(transfer_code.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % groups


class Fence(Protocol):
    """What a node believes it holds: written into every transaction, checked by the database."""

    @property
    def node_id(self) -> str: ...

    @property
    def groups(self) -> int: ...

    def epochs(self) -> Mapping[int, int]: ...
