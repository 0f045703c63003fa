"""Which mailboxes a gateway process serves: all of them, or its share when ``processes`` > 1.

A transfer code always belongs to the same process (a hash of the code, stable across restarts and
reloads), so a TXT and its ZIP, and
every file of one inbox, meet in one process; the ledger, shared by all, decides duplicates and report
keys across them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}")

    @property
    def whole(self) -> bool:
        """The only process: it also does the spool-wide work (clean-up, retention, feedback)."""
        return self.count == 1

    @property
    def cleans(self) -> bool:
        """Recovery removes crash leftovers only as the only process (else the supervisor did)."""
        return self.whole

    @property
    def first(self) -> bool:
        return self.index == 0

    def owns(self, transfer_code: str) -> bool:
        if self.whole:
            return True
        digest = hashlib.blake2b(transfer_code.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


WHOLE = Shard()
