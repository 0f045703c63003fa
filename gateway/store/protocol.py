"""The store seam: what the pipeline, recovery and the operator tools ask of the ledger and the history.

``gateway.store.ledger.Ledger`` (SQLite) and ``gateway.store.memory.MemoryStore`` (the unit tests)
are both ``Store``s; ``gateway.store.history.HistoryWriter`` (daily JSON Lines) is a ``HistorySink``.
Another engine is one module that meets these protocols, and the line of the composition root
(``gateway/daemon/service.py``) that opens it. The spec-7 rules every store applies are
``gateway.store.rules``; a store only fetches the facts they need.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, Unpack

from gateway.store.history import HistoryEvent, Logged
from gateway.store.rules import Decision, Facts, FileRow


class Store(Protocol):
    """Where every claimed file stands and which batch holds each report key (spec 7).

    Synchronous (the daemon calls in from threads); every method is safe from any thread. A
    ``transaction()`` is durable when it returns and groups what its block does; nested blocks undo only
    their own work when they raise. ``atomic()`` is one method's work: its own transaction when alone,
    part of the caller's inside one.
    """

    def transaction(self) -> AbstractContextManager[None]: ...
    def atomic(self) -> AbstractContextManager[None]: ...
    def record(self, file_id: str, *, state: str | None = None, **facts: Unpack[Facts]) -> None: ...
    def set_state(self, file_id: str, state: str, **facts: Unpack[Facts]) -> None: ...
    def get(self, file_id: str) -> FileRow | None: ...
    def by_state(self, state: str, station: str | None = None) -> list[FileRow]: ...
    def counts_by_state(self, station: str) -> dict[str, int]: ...
    def oldest(self, state: str, station: str | None = None) -> FileRow | None: ...

    def decide(
        self,
        *,
        station: str,
        institution: str,
        table: str,
        date: str,
        part: int,
        batch: int,
        mode: str,
        sha256: str,
        name: str,
        incremental: bool,
    ) -> Decision: ...

    def accept(
        self,
        file_id: str,
        *,
        station: str,
        institution: str,
        table: str,
        date: str,
        part: int,
        batch: int,
        sha256: str,
    ) -> None: ...

    def close(self) -> None: ...


class HistorySink(Protocol):
    """The sync history: events appended durably, in order; what a file already has, for recovery."""

    def append(self, events: Sequence[HistoryEvent]) -> None: ...
    def logged(self, file_ids: Collection[str]) -> Logged: ...
    def close(self) -> None: ...
