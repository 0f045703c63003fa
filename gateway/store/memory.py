"""A ``Store`` in memory: the unit tests' ledger, and the proof that the store is a seam.

It applies ``gateway.store.rules`` to dictionaries; a transaction keeps a copy to go back to. Nothing
survives the process: never the daemon's store.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Unpack

from gateway.store.protocol import Store
from gateway.store.rules import (
    FACTS,
    TAKEN,
    Decision,
    Facts,
    FileRow,
    KeyTakenError,
    LedgerError,
    State,
    decide,
    heir,
    takes_key,
)

Key = tuple[str, str, str, str, int]
"""A report key: station, institution, table, data date, part."""


class MemoryStore:
    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._files: dict[str, FileRow] = {}
        self._reports: dict[Key, tuple[int, str]] = {}  # key -> (batch, file_id) holding it

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            saved = copy.copy(self._files), copy.copy(self._reports)
            try:
                yield
            except BaseException:
                self._files, self._reports = saved
                raise

    @contextmanager
    def atomic(self) -> Iterator[None]:
        with self.transaction():
            yield

    def record(self, file_id: str, *, state: str | None = None, **facts: Unpack[Facts]) -> None:
        unknown = facts.keys() - FACTS
        if unknown:
            raise TypeError(f"not ledger facts: {sorted(unknown)}")
        for key in ("claimed_at", "next_attempt_at"):
            value: Any = facts.get(key)
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError(f"{key} must be an aware datetime")
        with self.atomic():
            row = self._files.get(file_id) or _new_row(file_id, self._now())
            changes: dict[str, Any] = {k: _utc(v) for k, v in facts.items()}
            changes["updated_at"] = _utc(self._now())
            if state is not None:
                changes["state"] = State(state)
            self._files[file_id] = replace(row, **changes)
            if state is not None and State(state) not in TAKEN:
                self._release(file_id)

    def set_state(self, file_id: str, state: str, **facts: Unpack[Facts]) -> None:
        self.record(file_id, state=state, **facts)

    def get(self, file_id: str) -> FileRow | None:
        with self._lock:
            return self._files.get(file_id)

    def by_state(self, state: str, station: str | None = None) -> list[FileRow]:
        with self._lock:
            return sorted(
                (r for r in self._files.values() if _in(r, State(state), station)), key=lambda r: r.file_id
            )

    def counts_by_state(self, station: str) -> dict[str, int]:
        counts = dict.fromkeys((s.value for s in State), 0)
        with self._lock:
            for row in self._files.values():
                if row.station == station:
                    counts[row.state.value] += 1
        return counts

    def oldest(self, state: str, station: str | None = None) -> FileRow | None:
        with self._lock:
            rows = [r for r in self._files.values() if _in(r, State(state), station)]
        return min(rows, key=lambda r: (r.claimed_at or r.updated_at, r.file_id), default=None)

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
    ) -> Decision:
        with self._lock:
            same = sorted(
                r.file_id
                for r in self._files.values()
                if r.station == station and r.name == name and r.sha256 == sha256 and r.state in TAKEN
            )
            held = self._reports.get((station, institution, table, date, part))
            reported = any(k[:3] == (station, institution, table) for k in self._reports)
        return decide(
            duplicate_of=same[0] if same else None,
            held_batch=held[0] if held else None,
            table_reported=reported,
            batch=batch,
            mode=mode,
            incremental=incremental,
        )

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
    ) -> None:
        key: Key = (station, institution, table, date, part)
        with self.atomic():
            if file_id not in self._files:
                raise LedgerError(f"accept: file {file_id} was never recorded")
            held = self._reports.get(key)
            if held is not None and not takes_key(held, file_id=file_id, batch=batch):
                raise KeyTakenError(held[0])
            self._reports[key] = (batch, file_id)
            self.record(
                file_id,
                state=State.ACCEPTED,
                station=station,
                institution=institution,
                table_code=table,
                data_date=date,
                part=part,
                batch=batch,
                sha256=sha256,
            )

    def close(self) -> None:
        pass

    def _release(self, file_id: str) -> None:
        """Give back the key ``file_id`` held: to the highest batch still taken, or to nobody."""
        for key, (_, holder) in list(self._reports.items()):
            if holder != file_id:
                continue
            taken = (
                (r.batch, r.file_id)
                for r in self._files.values()
                if r.state in TAKEN
                and r.batch is not None
                and (r.station, r.institution, r.table_code, r.data_date, r.part) == key
            )
            successor = heir(taken)
            if successor is None:
                del self._reports[key]
            else:
                self._reports[key] = successor


def _utc(value: object) -> object:
    """Moments come back in UTC, as the SQLite ledger gives them."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _in(row: FileRow, state: State, station: str | None) -> bool:
    return row.state is state and (station is None or row.station == station)


def _new_row(file_id: str, now: datetime) -> FileRow:
    return FileRow(
        file_id=file_id, station=None, transfer_code=None, name=None, sha256=None, size=None,
        state=State.CLAIMED, table_code=None, institution=None, data_date=None, part=None, batch=None,
        mode=None, claimed_at=None, updated_at=now.astimezone(UTC), attempts=0, next_attempt_at=None,
        outcome=None,
    )


def _is_a_store(store: MemoryStore) -> Store:
    """mypy's proof that a MemoryStore meets the protocol (as the daemon's use of ``Ledger`` is its)."""
    return store
