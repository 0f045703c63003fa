"""Group commit: many callers, one flush; each caller gets its own result or its own error."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from gateway.batch.commit import GroupCommit, GroupSync, GroupTransaction, StoppedError
from gateway.store.ledger import Accept, Ledger


async def test_callers_queued_during_a_flush_share_the_next_one() -> None:
    flushed: list[list[int]] = []

    def flush(items: Sequence[int]) -> None:
        flushed.append(list(items))

    group: GroupCommit[int] = GroupCommit(flush)
    group.start()
    try:
        await asyncio.gather(*(group.submit([n]) for n in range(200)))
    finally:
        await group.stop()
    assert sorted(n for batch in flushed for n in batch) == list(range(200))
    assert len(flushed) < 200  # they were grouped, not flushed one by one


async def test_stop_finishes_the_batch_in_flush_and_a_cancelled_stop_fails_it() -> None:
    """A stop while a flush runs waits for it; cancelled (a flush that hangs), the callers of that
    batch get StoppedError instead of waiting for ever."""
    started, release = threading.Event(), threading.Event()

    def flush(items: Sequence[int]) -> None:
        started.set()
        release.wait(10)

    for cancel in (False, True):
        started.clear()
        release.clear()
        group: GroupCommit[int] = GroupCommit(flush)
        group.start()
        caller = asyncio.create_task(group.submit([1]))
        assert await asyncio.to_thread(started.wait, 10)
        stopping = asyncio.create_task(group.stop())
        await asyncio.sleep(0.05)
        assert not caller.done() and not stopping.done()
        if cancel:
            stopping.cancel()
            with pytest.raises(StoppedError):
                await asyncio.wait_for(caller, timeout=5)
            release.set()
        else:
            release.set()
            await asyncio.wait_for(stopping, timeout=5)
            assert caller.done() and caller.exception() is None
        group.start()  # stopped for good: later callers flush inline
        await asyncio.wait_for(group.submit([2]), timeout=5)


async def test_a_failed_flush_fails_every_caller_in_it_and_only_them() -> None:
    def flush(items: Sequence[int]) -> None:
        if 13 in items:
            raise OSError("disk on fire")

    group: GroupCommit[int] = GroupCommit(flush, max_batch=1)
    group.start()
    try:
        results = await asyncio.gather(*(group.submit([n]) for n in range(20)), return_exceptions=True)
    finally:
        await group.stop()
    assert [n for n, r in enumerate(results) if isinstance(r, OSError)] == [13]


async def test_group_sync_fails_only_the_callers_of_a_failing_path(tmp_path: Path) -> None:
    good = [tmp_path / f"d{n}" for n in range(40)]
    for directory in good:
        directory.mkdir()
    gone = tmp_path / "gone"  # fsync of a directory that is not there fails
    syncs = GroupSync()
    syncs.start()
    try:
        results = await asyncio.gather(
            *(syncs.sync(directory, good[0]) for directory in good),
            syncs.sync(good[1], gone),
            return_exceptions=True,
        )
    finally:
        await syncs.stop()
    assert results[:-1] == [None] * len(good)
    assert isinstance(results[-1], FileNotFoundError)


async def test_group_sync_works_without_its_flusher_task(tmp_path: Path) -> None:
    """A forwarder used on its own (tools, tests) flushes inline."""
    (tmp_path / "a").mkdir()
    syncs = GroupSync()
    await syncs.sync(tmp_path / "a", tmp_path)
    with pytest.raises(FileNotFoundError):
        await syncs.sync(tmp_path / "missing", tmp_path)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None, check_same_thread=False)
    connection.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    yield connection
    connection.close()


def transaction_of(conn: sqlite3.Connection) -> Callable[[], AbstractContextManager[None]]:
    """BEGIN/COMMIT outside, savepoints inside: the shape of ``Ledger.transaction``."""
    depth = [0]

    @contextmanager
    def transaction() -> Iterator[None]:
        level = depth[0]
        conn.execute("BEGIN" if level == 0 else f"SAVEPOINT s{level}")
        depth[0] += 1
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK" if level == 0 else f"ROLLBACK TO s{level}")
            if level:
                conn.execute(f"RELEASE s{level}")
            raise
        finally:
            depth[0] = level
        conn.execute("COMMIT" if level == 0 else f"RELEASE s{level}")

    return transaction


async def test_a_failing_piece_is_undone_alone_and_later_pieces_see_earlier_ones(
    conn: sqlite3.Connection,
) -> None:
    group = GroupTransaction(transaction_of(conn))
    group.start()

    def insert(n: int) -> int:
        conn.execute("INSERT INTO t VALUES (?)", (n,))
        if n == 3:
            raise ValueError("piece 3 fails after its insert")
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])

    try:
        results = await asyncio.gather(
            *(group.run(lambda n=n: insert(n)) for n in range(6)), return_exceptions=True
        )
    finally:
        await group.stop()
    assert isinstance(results[3], ValueError)
    assert [r for n, r in enumerate(results) if n != 3] == [1, 2, 3, 4, 5]  # counts as each piece saw them
    assert [row[0] for row in conn.execute("SELECT n FROM t ORDER BY n")] == [0, 1, 2, 4, 5]


async def test_a_batch_without_failures_takes_no_savepoints(conn: sqlite3.Connection) -> None:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    group = GroupTransaction(transaction_of(conn))
    group.start()

    def insert(n: int) -> None:
        conn.execute("INSERT INTO t VALUES (?)", (n,))

    try:
        await asyncio.gather(*(group.run(lambda n=n: insert(n)) for n in range(6)))
    finally:
        await group.stop()
    assert [row[0] for row in conn.execute("SELECT n FROM t ORDER BY n")] == list(range(6))
    assert statements and not [s for s in statements if "SAVEPOINT" in s]


async def test_a_failed_commit_fails_the_batch_without_running_it_again(conn: sqlite3.Connection) -> None:
    runs: list[int] = []

    @contextmanager
    def failing_commit() -> Iterator[None]:
        yield
        raise OSError("fsync failed")

    group = GroupTransaction(failing_commit)
    group.start()
    try:
        results = await asyncio.gather(
            *(group.run(lambda n=n: runs.append(n)) for n in range(3)), return_exceptions=True
        )
    finally:
        await group.stop()
    assert all(isinstance(r, OSError) for r in results)
    assert sorted(runs) == [0, 1, 2]  # each piece ran once


async def test_ledger_steps_inside_a_piece_are_undone_with_it(tmp_path: Path) -> None:
    """Ledger methods take no savepoint of their own inside a piece: the piece's savepoint undoes them."""
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    group = GroupTransaction(ledger.transaction)
    group.start()
    key = {"station": "k6666", "institution": "41210000", "table": "D1001", "date": "20240101", "part": 1}

    def arrive(file_id: str, batch: int, fail: bool) -> None:
        ledger.record(file_id, station="k6666", name=f"n{batch}", sha256=f"{batch:064x}")
        ledger.accept(file_id, **key, batch=batch, sha256=f"{batch:064x}")
        if fail:
            raise RuntimeError("after the accept")

    try:
        results = await asyncio.gather(
            group.run(lambda: arrive("a", 1, fail=False)),
            group.run(lambda: arrive("b", 2, fail=True)),
            return_exceptions=True,
        )
    finally:
        await group.stop()
    assert results[0] is None and isinstance(results[1], RuntimeError)
    assert ledger.get("b") is None  # its record and its accept are both gone
    row = ledger.get("a")
    assert row is not None and row.state.value == "accepted"
    assert ledger.decide(**key, batch=2, mode="Q", sha256="f" * 64, name="n2", incremental=False) == Accept()
    ledger.close()


async def test_a_batch_that_sqlite_rolled_back_whole_commits_none_of_its_pieces(tmp_path: Path) -> None:
    """An interrupted (or disk-full) statement can make SQLite roll back the whole transaction: later
    pieces of the batch must fail, not write outside any transaction while their callers hear of an
    error."""
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    group = GroupTransaction(ledger.transaction)
    group.start()

    def interrupted() -> None:
        ledger._conn.set_progress_handler(lambda: 1, 1)  # the next statement is interrupted
        try:
            ledger.record("f2", station="k6666")
        finally:
            ledger._conn.set_progress_handler(None, 1)

    try:
        results = await asyncio.gather(
            group.run(lambda: ledger.record("f1", station="k6666")),
            group.run(interrupted),
            group.run(lambda: ledger.record("f3", station="k6666")),
            return_exceptions=True,
        )
    finally:
        await group.stop()
    assert all(isinstance(r, Exception) for r in results)
    assert [ledger.get(f) for f in ("f1", "f2", "f3")] == [None, None, None]
    ledger.close()
