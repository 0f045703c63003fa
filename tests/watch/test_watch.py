"""InboxWatcher on real directories with real writers: what each way of writing looks like to the daemon."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from watchdog.observers import inotify_c

from gateway.detect.watch import DEFAULT_MAX_PENDING, InboxWatcher, WatchEvent, WatchKind
from tests.watch.helpers import (
    NAME,
    SLOW_WRITER,
    STATION_TC,
    Recorder,
    creating,
    hold_gil_until,
    inotify_watch_count,
    run_python,
)

StartWatcher = Callable[..., InboxWatcher]
OVERFLOW = WatchKind.OVERFLOW
KERNEL_OVERFLOW_LOG = "Inotify queue overflowed"
READER_CATCH_UP_SECONDS = 3.0
"""Far longer than the reader needs to hand over one kernel queue's worth of events (~0.3 s here)."""


def max_queued_events() -> int:
    """The kernel's queue length, read and never lowered: the overflow tests create more files than it."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 262_144:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: overflowing it would take too many files")
    return limit


def is_overflow(event: WatchEvent) -> bool:
    return event.kind is OVERFLOW and event.directory is None


async def test_write_then_rename_gives_renamed_in_and_nothing_else(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    start_watcher(recorder).watch(inbox, STATION_TC)
    subprocess.run(
        ["sh", "-c", f'printf "41210000|x\\n" > .{NAME}.tmp && mv .{NAME}.tmp {NAME}'], cwd=inbox, check=True
    )
    event = await recorder.wait_for(lambda e: e.name == NAME)
    await recorder.barrier(inbox)
    assert event == WatchEvent(WatchKind.RENAMED_IN, inbox, NAME, STATION_TC)
    assert event.key == (*STATION_TC, NAME)
    assert recorder.kinds(NAME) == [WatchKind.RENAMED_IN]
    assert recorder.kinds(f".{NAME}.tmp")[-1] is WatchKind.GONE  # the temp name left: the daemon filters it


async def test_rename_from_outside_the_inbox_gives_renamed_in(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    start_watcher(recorder).watch(inbox, STATION_TC)
    outside = inbox.parent / "staging"
    outside.mkdir()
    (outside / NAME).write_bytes(b"41210000|x\n")
    subprocess.run(["mv", str(outside / NAME), str(inbox / NAME)], check=True)
    await recorder.barrier(inbox)
    assert recorder.kinds(NAME) == [WatchKind.RENAMED_IN]


@pytest.mark.slow
async def test_in_place_writer_gives_written_while_it_writes_and_closed_at_the_end(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    start_watcher(recorder).watch(inbox, STATION_TC)
    writer = run_python(SLOW_WRITER, str(inbox / NAME), "0.5,0.5,0.5,0.5,0.5,0.5")
    closed = await recorder.wait_for(lambda e: e.name == NAME and e.kind is WatchKind.CLOSED)
    stdout, _ = writer.communicate(timeout=10)
    last_write = float(stdout)
    times = {kind: [t for t, e in recorder.timed if e.name == NAME and e.kind is kind] for kind in WatchKind}
    assert closed.directory == inbox
    assert len(times[WatchKind.WRITTEN]) >= 6  # the create and one modify at least per chunk
    assert times[WatchKind.CLOSED][0] - times[WatchKind.WRITTEN][0] >= 2.5  # reported live, not at the end
    assert times[WatchKind.CLOSED] == [max(t for ts in times.values() for t in ts)]  # closed comes last
    assert times[WatchKind.CLOSED][0] >= last_write
    assert recorder.kinds(NAME).count(WatchKind.RENAMED_IN) == 0


async def test_cp_gives_written_then_closed(
    inbox: Path, tmp_path: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    source = tmp_path / "source.txt"
    source.write_bytes(b"41210000|x\n" * 100_000)
    start_watcher(recorder).watch(inbox, STATION_TC)
    subprocess.run(["cp", str(source), str(inbox / NAME)], check=True)
    await recorder.barrier(inbox)
    kinds = recorder.kinds(NAME)
    assert kinds[0] is WatchKind.WRITTEN
    assert kinds[-1] is WatchKind.CLOSED
    assert set(kinds) == {WatchKind.WRITTEN, WatchKind.CLOSED}


async def test_delete_and_move_out_give_gone(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    (inbox / "deleted").write_bytes(b"x")
    (inbox / "claimed").write_bytes(b"x")
    work = inbox.parent.parent / ".gateway" / "work"
    work.mkdir(parents=True)
    start_watcher(recorder).watch(inbox, STATION_TC)
    (inbox / "deleted").unlink()
    (inbox / "claimed").rename(work / "claimed")  # what the claim step does
    await recorder.barrier(inbox)
    assert recorder.kinds("deleted") == [WatchKind.GONE]
    assert recorder.kinds("claimed") == [WatchKind.GONE]


async def test_directory_watched_and_unwatched_at_run_time(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    watcher = start_watcher(recorder)
    watcher.watch(inbox, STATION_TC)
    await recorder.barrier(inbox, "before")
    later = inbox.parent.parent.parent / "k6666" / "TC41220000" / "in"
    later.mkdir(parents=True)
    watcher.watch(later, ("k6666", "TC41220000"))
    (later / "new").touch()
    event = await recorder.wait_for(lambda e: e.name == "new")
    assert (event.directory, event.key) == (later, ("k6666", "TC41220000", "new"))

    (later / "on-its-way").touch()
    time.sleep(0.2)  # the reader thread has handed the events to the (blocked) loop by now
    watcher.unwatch(later)
    watcher.unwatch(later)  # a second time is harmless
    (later / "unwatched").touch()
    await recorder.barrier(inbox, "after")
    assert recorder.kinds("unwatched") == recorder.kinds("on-its-way") == []


async def test_watching_again_updates_the_key_prefix_only(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    watcher = start_watcher(recorder)
    before = inotify_watch_count()
    watcher.watch(inbox, ("k1237", "OLD"))
    watcher.watch(inbox, STATION_TC)
    assert inotify_watch_count() == before + 1
    (inbox / "x").touch()
    event = await recorder.wait_for(lambda e: e.name == "x")
    assert event.key_prefix == STATION_TC


async def test_one_inotify_watch_and_no_thread_per_directory(
    tmp_path: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    inboxes = [tmp_path / "spool" / "k1237" / f"TC{i:04d}" / "in" for i in range(300)]
    for path in inboxes:
        path.mkdir(parents=True)
    watches, threads = inotify_watch_count(), threading.active_count()
    watcher = start_watcher(recorder)
    watcher.watch(inboxes[0], ("k1237", inboxes[0].parent.name))
    (inboxes[0] / "first").touch()  # watchdog 7.1.1 starts its dispatcher thread with the reader
    await recorder.wait_for(lambda e: e.name == "first")
    with_one = threading.active_count()
    assert with_one - threads in (1, 2)  # the reader (7.1.0), or the reader and its dispatcher (7.1.1)
    for path in inboxes[1:]:
        watcher.watch(path, ("k1237", path.parent.name))
    assert inotify_watch_count() == watches + len(inboxes)
    assert threading.active_count() == with_one
    (inboxes[-1] / "x").touch()
    assert (await recorder.wait_for(lambda e: e.name == "x")).key_prefix == ("k1237", "TC0299")
    for path in inboxes:
        watcher.unwatch(path)
    assert inotify_watch_count() == watches


async def test_watch_refuses_what_is_not_a_directory_and_names_it(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    watcher = start_watcher(recorder)
    (inbox.parent / "link").symlink_to(inbox)
    (inbox.parent / "file").touch()
    with pytest.raises(NotADirectoryError, match="link"):
        watcher.watch(inbox.parent / "link", STATION_TC)
    with pytest.raises(NotADirectoryError, match="file"):
        watcher.watch(inbox.parent / "file", STATION_TC)
    with pytest.raises(FileNotFoundError, match="missing"):
        watcher.watch(inbox.parent / "missing", STATION_TC)
    with pytest.raises(RuntimeError, match="not started"):
        InboxWatcher(asyncio.get_running_loop(), recorder).watch(inbox, STATION_TC)


async def test_watch_refuses_a_directory_it_may_not_read(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root reads everything, so inotify_add_watch's EACCES is simulated at watchdog's ctypes binding.
    def denied(fd: int, path: bytes, mask: int) -> int:
        ctypes.set_errno(errno.EACCES)
        return -1

    watcher = start_watcher(recorder)
    monkeypatch.setattr(inotify_c, "inotify_add_watch", denied)
    with pytest.raises(PermissionError, match="in"):
        watcher.watch(inbox, STATION_TC)
    monkeypatch.undo()
    watcher.watch(inbox, STATION_TC)  # nothing of the refused attempt is left behind
    (inbox / "x").touch()
    assert (await recorder.wait_for(lambda e: e.name == "x")).directory == inbox


async def test_names_that_are_not_utf8_round_trip(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    start_watcher(recorder).watch(inbox, STATION_TC)
    raw = "报送.TXT".encode("gbk")  # a Windows client's file name
    fd = os.open(os.fsencode(inbox) + b"/" + raw, os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    event = await recorder.wait_for(lambda e: e.kind is WatchKind.CLOSED)
    assert os.fsencode(event.name) == raw
    assert (inbox / event.name).exists()


async def test_directory_deleted_or_moved_gives_overflow_for_it_and_can_be_watched_again(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    watcher = start_watcher(recorder)
    watcher.watch(inbox, STATION_TC)
    other = inbox.parent.parent / "TC41220000" / "in"
    other.mkdir(parents=True)
    watcher.watch(other, ("k1237", "TC41220000"))

    other.rmdir()
    lost = await recorder.wait_for(lambda e: e.kind is OVERFLOW)
    assert lost == WatchEvent(OVERFLOW, other, "", ("k1237", "TC41220000"))
    other.mkdir()
    watcher.watch(other, ("k1237", "TC41220000"))  # the daemon's rescan re-arms it
    (other / "back").touch()
    await recorder.wait_for(lambda e: e.name == "back" and e.directory == other)

    moved = inbox.parent / "in.moved"
    watches = inotify_watch_count()
    inbox.rename(moved)
    await recorder.wait_for(lambda e: e.kind is OVERFLOW and e.directory == inbox)
    assert inotify_watch_count() == watches - 1  # a moved directory's watch is released
    (moved / "elsewhere").touch()  # the watch followed the directory's inode; it must be gone
    await recorder.barrier(other)
    assert recorder.kinds("elsewhere") == []
    assert [e.directory for e in recorder.events if e.kind is OVERFLOW] == [other, inbox]
    assert watcher.alive


async def test_watch_again_replaces_a_watch_whose_directory_was_replaced(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    watcher = start_watcher(recorder)
    watches = inotify_watch_count()
    watcher.watch(inbox, STATION_TC)
    moved = inbox.parent / "in.old"
    inbox.rename(moved)  # its IN_MOVE_SELF is not run by the loop before the rescan's watch() below,
    inbox.mkdir()  # as if it had been lost in an overflow
    watcher.watch(inbox, STATION_TC)
    (moved / "old").touch()
    (inbox / "new").touch()
    event = await recorder.wait_for(lambda e: e.name == "new")
    await recorder.barrier(inbox)
    assert event.directory == inbox
    assert recorder.kinds("old") == []
    assert inotify_watch_count() == watches + 1


async def test_one_directory_under_two_paths_is_refused(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    alias = inbox.parent.parent.parent.parent / "k6666"
    alias.symlink_to(inbox.parent.parent)  # a station directory that is a symlink to another
    watcher = start_watcher(recorder)
    watcher.watch(inbox, STATION_TC)
    with pytest.raises(ValueError, match="already watched"):
        watcher.watch(alias / STATION_TC[1] / "in", ("k6666", STATION_TC[1]))
    (inbox / "x").touch()
    assert (await recorder.wait_for(lambda e: e.name == "x")).key_prefix == STATION_TC


@pytest.mark.slow
async def test_kernel_queue_overflow_reaches_the_sink(
    inbox: Path,
    tmp_path: Path,
    recorder: Recorder,
    start_watcher: StartWatcher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The hand-off bound is lifted so that only the kernel's own queue can overflow.
    start_watcher(recorder, max_pending=10**9).watch(inbox, STATION_TC)
    limit = max_queued_events()
    with caplog.at_level(logging.WARNING), creating(inbox, limit + 1000, tmp_path / "flag") as done:
        assert hold_gil_until(done, limit=60), "the creator did not finish within 60 s"
    await recorder.wait_for(is_overflow)
    file_events = [e for e in recorder.events if e.name.startswith("F")]
    assert len(file_events) <= limit  # the rest was dropped by the kernel, as the OVERFLOW says
    assert KERNEL_OVERFLOW_LOG in caplog.text  # watchdog saw IN_Q_OVERFLOW: this was the kernel's


@pytest.mark.slow
async def test_overflow_while_the_loop_is_stalled_reaches_the_sink(
    inbox: Path, tmp_path: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    start_watcher(recorder).watch(inbox, STATION_TC)
    limit = max_queued_events()
    with creating(inbox, limit + 1000, tmp_path / "flag") as done:
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)  # the loop's thread is blocked; the reader thread keeps running
        # The reader may still be behind the creator (a loaded machine): stay stalled while it catches
        # up, or the loop would run events as they come and nothing would ever be pending.
        time.sleep(READER_CATCH_UP_SECONDS)
    await recorder.wait_for(is_overflow)
    delivered_before_overflow = recorder.events.index(next(e for e in recorder.events if is_overflow(e)))
    assert delivered_before_overflow <= DEFAULT_MAX_PENDING  # bounded: not 2 x (limit + 1000) events


async def test_handoff_is_bounded_and_reopens_after_the_overflow(
    inbox: Path,
    tmp_path: Path,
    recorder: Recorder,
    start_watcher: StartWatcher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    start_watcher(recorder, max_pending=100).watch(inbox, STATION_TC)
    with caplog.at_level(logging.WARNING), creating(inbox, 300, tmp_path / "flag") as done:
        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the reader has handed over what it read
    await recorder.wait_for(is_overflow)
    assert [is_overflow(e) for e in recorder.events[:101]] == [False] * 100 + [True]
    assert KERNEL_OVERFLOW_LOG not in caplog.text  # 600 events: far below the kernel's queue
    (inbox / "after").touch()
    assert (await recorder.wait_for(lambda e: e.name == "after")).kind is WatchKind.WRITTEN


async def test_reader_thread_death_reaches_the_sink(
    inbox: Path,
    recorder: Recorder,
    start_watcher: StartWatcher,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watcher = start_watcher(recorder)
    watcher.watch(inbox, STATION_TC)
    assert watcher.alive

    def broken(event_buffer: bytes) -> list[tuple[object, ...]]:
        raise OSError(errno.EIO, "injected error reading inotify events")

    # Both watchdog 7.1.0 (on the reader thread) and 7.1.1 (on its dispatcher) parse what they read
    # with this function: the thread that does dies, and so does the reader.
    monkeypatch.setattr(inotify_c.InotifyFD, "_parse_event_buffer", staticmethod(broken))
    (inbox / "wake").touch()
    event = await recorder.wait_for(lambda e: e.kind is OVERFLOW)
    assert event == WatchEvent(OVERFLOW, None)
    async with asyncio.timeout(5):
        while watcher.alive:
            await asyncio.sleep(0.01)
    assert "inotify reader thread died" in caplog.text


async def test_stop_ends_the_thread_and_the_events(
    inbox: Path, recorder: Recorder, start_watcher: StartWatcher
) -> None:
    threads = threading.active_count()
    watcher = start_watcher(recorder)
    watcher.watch(inbox, STATION_TC)
    (inbox / "before").touch()
    watcher.stop()
    (inbox / "after").touch()
    shutil.rmtree(inbox)
    await asyncio.sleep(0.3)
    assert not watcher.alive
    assert threading.active_count() == threads
    assert recorder.events == []  # also what was on its way when stop() was called
    watcher.stop()  # a second time is harmless
