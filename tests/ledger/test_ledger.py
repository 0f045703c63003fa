"""The ledger on real SQLite files: spec 7 decisions, write-ahead accept, durability, transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.store.ledger import (
    Accept,
    Duplicate,
    FirstNotFull,
    KeyTakenError,
    Ledger,
    LedgerError,
    Stale,
    State,
)
from gateway.store.memory import MemoryStore
from gateway.store.postgres import PostgresStore
from gateway.store.protocol import Store

KEY: dict[str, Any] = {
    "station": "k6666", "institution": "41210000", "table": "D1001", "date": "20220401", "part": 1,
}


def name(batch: int, mode: str = "Q", table: str = "D1001", date: str = "20220401") -> str:
    return f"CISP-41210000_{table}_V01_1_{date}_{batch:02d}_{mode}.TXT"


@pytest.fixture(params=["sqlite", "memory", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every implementation of the store protocol answers every contract test the same way."""
    store: Store
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "postgresql":
        store = PostgresStore.open(request.getfixturevalue("postgres_dsn"))
    else:
        store = Ledger.open(tmp_path / "state" / "ledger.db")
    yield store
    store.close()


def arrive(ledger: Store, file_id: str, batch: int, sha: str, *, mode: str = "Q", incremental: bool = False,
           **key: Any) -> Any:
    """Record a claimed file and decide it; accept it when the decision says so (the daemon's flow)."""
    k = {**KEY, **key}
    fname = name(batch, mode, k["table"], k["date"])
    with ledger.transaction():
        ledger.record(file_id, station=k["station"], name=fname, sha256=sha, mode=mode)
        decision = ledger.decide(**k, batch=batch, mode=mode, sha256=sha, name=fname, incremental=incremental)
        if isinstance(decision, Accept):
            ledger.accept(file_id, **k, batch=batch, sha256=sha)
    return decision


def test_same_name_and_content_is_a_duplicate_of_the_first(ledger: Store) -> None:
    assert arrive(ledger, "f1", 1, "aa") == Accept()
    ledger.set_state("f1", State.FORWARDED)
    assert arrive(ledger, "f2", 1, "aa") == Duplicate(of="f1")
    ledger.set_state("f2", State.DUPLICATE)
    assert arrive(ledger, "f3", 1, "aa") == Duplicate(of="f1")


@pytest.mark.parametrize("state", [State.ACCEPTED, State.HELD, State.DEFERRED, State.FORWARDED])
def test_a_file_in_flight_counts_for_duplicates(ledger: Store, state: State) -> None:
    arrive(ledger, "f1", 1, "aa")
    ledger.set_state("f1", state)
    assert arrive(ledger, "f2", 1, "aa") == Duplicate(of="f1")


def test_a_rejected_file_sent_again_is_decided_again(ledger: Store) -> None:
    ledger.record("f1", station="k6666", name=name(1), sha256="aa")
    ledger.set_state("f1", State.REJECTED, outcome="BOM_PRESENT")
    assert arrive(ledger, "f2", 1, "aa") == Accept()


def test_same_name_with_other_content_is_stale(ledger: Store) -> None:
    arrive(ledger, "f1", 1, "aa")
    assert arrive(ledger, "f2", 1, "bb") == Stale(accepted=1)


def test_lower_batch_after_a_higher_one_is_stale(ledger: Store) -> None:
    assert arrive(ledger, "f1", 2, "aa") == Accept()
    assert arrive(ledger, "f2", 1, "bb") == Stale(accepted=2)
    assert ledger.get("f2") is not None
    assert ledger.get("f2").state is State.CLAIMED  # type: ignore[union-attr]


def test_higher_batch_is_a_re_report(ledger: Store) -> None:
    assert arrive(ledger, "f1", 1, "aa") == Accept()
    ledger.set_state("f1", State.FORWARDED)
    assert arrive(ledger, "f2", 2, "bb") == Accept()
    assert arrive(ledger, "f3", 2, "cc") == Stale(accepted=2)
    assert arrive(ledger, "f4", 1, "aa") == Duplicate(of="f1")  # the old batch again: said so, not stale


def test_the_key_includes_station_date_and_part(ledger: Store) -> None:
    arrive(ledger, "f1", 2, "aa")
    assert arrive(ledger, "f2", 1, "bb", station="k1237") == Accept()
    assert arrive(ledger, "f3", 1, "cc", date="20220402") == Accept()
    assert arrive(ledger, "f4", 1, "dd", part=2) == Accept()


def test_incremental_table_must_start_full(ledger: Store) -> None:
    d2001: dict[str, Any] = {"table": "D2001", "incremental": True}
    assert arrive(ledger, "z1", 1, "aa", mode="Z", **d2001) == FirstNotFull()
    assert arrive(ledger, "q1", 1, "bb", mode="Q", **d2001) == Accept()
    assert arrive(ledger, "z2", 1, "cc", mode="Z", date="20220402", **d2001) == Accept()
    # per (station, institution, table): the test station has no full report yet
    test_station = arrive(ledger, "z3", 1, "dd", mode="Z", station="k1237", date="20220402", **d2001)
    assert test_station == FirstNotFull()
    # a full table is never asked for a first Q (its mode rules are the validators' business)
    assert arrive(ledger, "z4", 1, "ee", mode="Z", table="D1005") == Accept()


def test_a_core_rejection_gives_the_key_back(ledger: Store) -> None:
    arrive(ledger, "f1", 1, "aa")
    ledger.set_state("f1", State.FORWARDED)
    arrive(ledger, "f2", 2, "bb")
    ledger.set_state("f2", State.FORWARDED)
    arrive(ledger, "f3", 3, "cc")
    ledger.set_state("f3", State.REJECTED, outcome="CORE_REJECTED")
    assert arrive(ledger, "f4", 2, "dd") == Stale(accepted=2)  # the key fell back to 02, not 01
    assert arrive(ledger, "f5", 3, "ee") == Accept()  # 03 again, fixed: not stale
    for fid in ("f5", "f2", "f1"):
        ledger.set_state(fid, State.REJECTED)  # nothing taken any more
    assert arrive(ledger, "f4", 1, "dd", table="D2001", mode="Z", incremental=True) == FirstNotFull()


def test_accept_is_write_ahead_and_refuses_a_lost_race(ledger: Store) -> None:
    for fid in ("f1", "f2"):
        ledger.record(fid, station="k6666", name=name(1), sha256=fid)
    # both decided Accept before either accepted: the second accept must lose
    for fid in ("f1", "f2"):
        decision = ledger.decide(**KEY, batch=1, mode="Q", sha256=fid, name=name(1), incremental=False)
        assert decision == Accept()
    ledger.accept("f1", **KEY, batch=1, sha256="f1")
    with pytest.raises(KeyTakenError) as lost:
        ledger.accept("f2", **KEY, batch=1, sha256="f2")
    assert lost.value.accepted == 1
    ledger.accept("f1", **KEY, batch=1, sha256="f1")  # idempotent for the holder (recovery)
    row = ledger.get("f1")
    assert row is not None and row.state is State.ACCEPTED and row.batch == 1 and row.table_code == "D1001"
    with pytest.raises(LedgerError, match="never recorded"):
        ledger.accept("nope", **KEY, batch=3, sha256="x")
    with pytest.raises(LedgerError, match="never recorded"):  # not KeyTakenError: the key is held higher
        ledger.accept("nope", **KEY, batch=1, sha256="x")


def test_rows_and_decisions_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    claimed = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    with Ledger.open(path) as first:
        arrive(first, "f1", 1, "aa")
        first.set_state("f1", State.DEFERRED, attempts=3, next_attempt_at=claimed + timedelta(minutes=1),
                        claimed_at=claimed, size=10, transfer_code="TC41210000")
    with Ledger.open(path) as again:
        row = again.get("f1")
        assert row is not None
        assert (row.state, row.attempts, row.size, row.transfer_code) == (State.DEFERRED, 3, 10, "TC41210000")
        assert row.claimed_at == claimed and row.next_attempt_at == claimed + timedelta(minutes=1)
        assert arrive(again, "f2", 1, "bb") == Stale(accepted=1)
        assert again.integrity_ok()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _scribble_over_a_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[5 * page : 6 * page] = b"\xa5" * page  # a whole b-tree page (not page 1: the file still opens)
    path.write_bytes(bytes(data))


def _mismatch_an_index(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema = ON")  # the index now claims an order its pages do not have
    conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX files_by_content ON files (sha256, name)' "
                 "WHERE name = 'files_by_content'")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("damage", [_scribble_over_a_page, _mismatch_an_index])
def test_integrity_check_reports_a_damaged_file(tmp_path: Path, damage: Any) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        with ledger.transaction():
            for i in range(2000):
                ledger.record(f"f{i:05d}", station="k6666", name=f"N{i}.TXT", sha256=f"{i:064x}")
        assert ledger.integrity_ok()
    damage(path)
    with Ledger.open(path) as damaged:
        assert not damaged.integrity_ok()


def test_a_transaction_is_rolled_back_on_exception(ledger: Store) -> None:
    ledger.record("f1", station="k6666")
    with pytest.raises(RuntimeError), ledger.transaction():
        ledger.set_state("f1", State.FORWARDED)
        ledger.record("f2", station="k6666")
        raise RuntimeError("crash before the commit")
    assert ledger.get("f1").state is State.CLAIMED  # type: ignore[union-attr]
    assert ledger.get("f2") is None


def test_a_nested_transaction_undoes_only_its_own_updates(ledger: Store) -> None:
    with ledger.transaction():
        ledger.record("f1", station="k6666")
        with pytest.raises(RuntimeError), ledger.transaction():
            ledger.record("f2", station="k6666")
            raise RuntimeError("inner")
        ledger.record("f3", station="k6666")
    assert [r.file_id for r in ledger.by_state(State.CLAIMED)] == ["f1", "f3"]


def test_a_failed_update_changes_nothing(ledger: Store) -> None:
    with pytest.raises(TypeError, match="not ledger facts"):
        ledger.record("f1", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="not a valid State"):
        ledger.set_state("f1", "lost")
    assert ledger.get("f1") is None


def test_two_threads_are_serialized(ledger: Store) -> None:
    ledger.record("f1", station="k6666")
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(200):
                with ledger.transaction():
                    row = ledger.get("f1")
                    assert row is not None
                    ledger.record("f1", attempts=row.attempts + 1)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert ledger.get("f1").attempts == 400  # type: ignore[union-attr]


def test_status_counts_and_oldest(ledger: Store) -> None:
    base = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    ledger.record("f1", station="k6666", claimed_at=base + timedelta(minutes=5))
    ledger.record("f2", station="k6666", claimed_at=base)
    ledger.record("f3", station="k1237", claimed_at=base - timedelta(hours=1))
    ledger.set_state("f1", State.DEFERRED)
    ledger.set_state("f2", State.DEFERRED)
    ledger.set_state("f3", State.DEFERRED)
    counts = ledger.counts_by_state("k6666")
    assert counts["deferred"] == 2 and counts["claimed"] == 0 and set(counts) == {s.value for s in State}
    assert ledger.oldest(State.DEFERRED, "k6666").file_id == "f2"  # type: ignore[union-attr]
    assert ledger.oldest(State.DEFERRED).file_id == "f3"  # type: ignore[union-attr]
    assert ledger.oldest(State.HELD) is None
    assert [r.file_id for r in ledger.by_state(State.DEFERRED, "k6666")] == ["f1", "f2"]


def test_a_ledger_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(LedgerError, match="schema 99"):
        Ledger.open(path)


def test_moments_come_back_in_utc(ledger: Store) -> None:
    claimed = datetime(2026, 11, 25, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    ledger.record("f1", station="k6666", claimed_at=claimed)
    row = ledger.get("f1")
    assert row is not None and row.claimed_at == claimed and row.claimed_at.utcoffset() == timedelta(0)
    assert row.updated_at.utcoffset() == timedelta(0)
