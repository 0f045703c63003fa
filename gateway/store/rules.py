"""What the ledger remembers and the spec-7 rules it decides by, apart from any storage engine.

Every store (the SQLite ``Ledger``, the in-memory ``MemoryStore`` of the unit tests, a database server
later) keeps files in these states and applies these rules: it only fetches the facts a rule needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypedDict


class State(StrEnum):
    CLAIMED = "claimed"  # in work/, not decided yet
    ACCEPTED = "accepted"  # decided, report key taken (write-ahead), being forwarded
    HELD = "held"  # accepted, waiting for the reporting window
    DEFERRED = "deferred"  # accepted, the core failed transiently: retried at next_attempt_at
    FORWARDED = "forwarded"  # outcome
    REJECTED = "rejected"  # outcome
    DUPLICATE = "duplicate"  # outcome


TAKEN = frozenset({State.ACCEPTED, State.HELD, State.DEFERRED, State.FORWARDED})
"""States of a file that holds its report key and counts for duplicates. A rejected file does not: sent
again, it is validated again and gets its findings again, not a DUPLICATE (whose receipt says OK)."""


class LedgerError(Exception):
    """The ledger cannot be used as asked (wrong schema, unknown file)."""


class KeyTakenError(LedgerError):
    """``accept`` lost the report key to another file with a batch at least as high."""

    def __init__(self, accepted: int) -> None:
        self.accepted = accepted
        super().__init__(f"report key already taken by batch {accepted:02d}")


class Facts(TypedDict, total=False):
    """What ``record``/``set_state`` may set on a file besides its state; updated_at is stamped."""

    station: str
    transfer_code: str
    name: str
    sha256: str
    size: int
    table_code: str
    institution: str
    data_date: str  # YYYYMMDD
    part: int
    batch: int
    mode: str
    claimed_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    outcome: str | None


FACTS = frozenset(Facts.__annotations__)
TIMES = frozenset({"claimed_at", "updated_at", "next_attempt_at"})
"""Facts that are moments (aware datetimes)."""


@dataclass(frozen=True, slots=True)
class FileRow:
    file_id: str
    station: str | None
    transfer_code: str | None
    name: str | None
    sha256: str | None
    size: int | None
    state: State
    table_code: str | None
    institution: str | None
    data_date: str | None
    part: int | None
    batch: int | None
    mode: str | None
    claimed_at: datetime | None
    updated_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    outcome: str | None


@dataclass(frozen=True, slots=True)
class Accept:
    """Forward it: ``accept()`` the key first."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    of: str  # file_id of the first accepted file with this name and content


@dataclass(frozen=True, slots=True)
class Stale:
    accepted: int  # the batch that holds the key


@dataclass(frozen=True, slots=True)
class FirstNotFull:
    """An incremental table's first report for the institution came as Z."""


Decision = Accept | Duplicate | Stale | FirstNotFull


def decide(
    *, duplicate_of: str | None, held_batch: int | None, table_reported: bool, batch: int, mode: str,
    incremental: bool,
) -> Decision:
    """Spec 7, in this order: duplicate, stale batch, incremental first report not full, accept.

    ``duplicate_of``: the first file in a TAKEN state with the same name and content; ``held_batch``:
    the batch that holds the report key; ``table_reported``: the institution has any accepted report
    of the table on the station. Any file whose batch is not above the held one is stale, whatever its
    content: a re-report takes the next batch.
    """
    if duplicate_of is not None:
        return Duplicate(of=duplicate_of)
    if held_batch is not None and batch <= held_batch:
        return Stale(accepted=held_batch)
    if incremental and mode == "Z" and not table_reported:
        return FirstNotFull()
    return Accept()


def takes_key(held: tuple[int, str] | None, *, file_id: str, batch: int) -> bool:
    """Whether ``file_id`` at ``batch`` may take a report key ``held`` as (batch, file_id): the key is
    free, already its own (recovery repeats an accept), or held by a lower batch."""
    return held is None or held[1] == file_id or held[0] < batch


def heir(taken: Iterable[tuple[int, str]]) -> tuple[int, str] | None:
    """Who holds a report key once its holder gives it back: the highest (batch, file_id) still taken."""
    return max(taken, default=None)
