"""Directory core: durable copy under the original name, idempotent by name and sha256."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import DirectoryRoute
from gateway.forward import (
    DirectoryForwarder,
    ForwardError,
    Outbound,
    Rejected,
    RetryPolicy,
    Transient,
    deliver,
    make_forwarder,
)
from spool.fsio import temp_name
from tests.forward.helpers import NAME, current_rss, outbound, peak_rss_since_reset, write_big_file

MakeFile = Callable[[bytes], Path]
FAST = RetryPolicy(
    backoff_initial=0.02, backoff_max=0.05, task_retry_seconds=0.05, task_retry_total_seconds=0.2
)


def route(path: Path) -> DirectoryRoute:
    return DirectoryRoute(type="directory", path=path)


@pytest.fixture
def core_dir(tmp_path: Path) -> Path:
    path = tmp_path / "core"
    path.mkdir()
    return path


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def test_make_forwarder_builds_a_directory_forwarder(core_dir: Path) -> None:
    assert isinstance(make_forwarder(route(core_dir)), DirectoryForwarder)


async def test_copies_byte_identical_under_the_original_name(core_dir: Path, make_file: MakeFile) -> None:
    data = b"41210000|name|913100000000000000|01||||20220401\r\n" * 1000
    item = outbound(make_file(data))
    where = await DirectoryForwarder(route(core_dir)).send(item)
    assert listing(core_dir) == [NAME]  # no temp file left beside it
    assert (core_dir / NAME).read_bytes() == data
    assert item.path.read_bytes() == data  # a copy: the spool keeps its file
    assert str(core_dir / NAME) in where


async def test_empty_file_is_delivered(core_dir: Path, make_file: MakeFile) -> None:
    item = outbound(make_file(b""))
    await DirectoryForwarder(route(core_dir)).send(item)
    assert (core_dir / NAME).read_bytes() == b""


async def test_resend_is_idempotent(core_dir: Path, make_file: MakeFile) -> None:
    item = outbound(make_file(b"a|b\n"))
    forwarder = DirectoryForwarder(route(core_dir))
    await forwarder.send(item)
    inode = (core_dir / NAME).stat().st_ino
    where = await forwarder.send(item)
    assert "already" in where
    assert listing(core_dir) == [NAME]
    assert (core_dir / NAME).stat().st_ino == inode  # not copied again


async def test_copy_left_by_a_crash_before_bookkeeping_counts_as_delivered(
    core_dir: Path, make_file: MakeFile
) -> None:
    item = outbound(make_file(b"a|b\n"))
    (core_dir / NAME).write_bytes(b"a|b\n")  # what the attempt before the crash had renamed in
    leftover = temp_name(core_dir / NAME)
    leftover.write_bytes(b"a|")  # and a half copy from an even earlier attempt
    where = await DirectoryForwarder(route(core_dir)).send(item)
    assert "already" in where
    assert listing(core_dir) == sorted([NAME, leftover.name])  # nothing new; cleanup() removes the temp


@pytest.mark.parametrize("other", [b"x|y|z\n", b"a|c\n"], ids=["other-size", "same-size"])
async def test_other_content_under_the_name_is_rejected(
    core_dir: Path, make_file: MakeFile, other: bytes
) -> None:
    item = outbound(make_file(b"a|b\n"))
    (core_dir / NAME).write_bytes(other)
    with pytest.raises(Rejected) as caught:
        await DirectoryForwarder(route(core_dir)).send(item)
    assert caught.value.code == "CORE_REJECTED"
    assert NAME in caught.value.core_message
    assert caught.value.finding().code == "CORE_REJECTED"
    assert NAME in caught.value.finding().message_en
    assert (core_dir / NAME).read_bytes() == other  # the core's file is never replaced
    assert listing(core_dir) == [NAME]


async def test_missing_core_directory_is_transient_and_says_so(tmp_path: Path, make_file: MakeFile) -> None:
    item = outbound(make_file(b"a|b\n"))
    missing = tmp_path / "no-such-core"
    with pytest.raises(Transient, match="does not exist"):
        await DirectoryForwarder(route(missing)).send(item)
    assert not missing.exists()


async def test_core_path_that_is_a_file_is_transient_and_says_so(tmp_path: Path, make_file: MakeFile) -> None:
    item = outbound(make_file(b"a|b\n"))
    not_a_dir = tmp_path / "core-file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(Transient, match="is not a directory"):
        await DirectoryForwarder(route(not_a_dir)).send(item)


@pytest.mark.parametrize("change", ["content", "length"])
async def test_file_changed_since_validation_is_not_delivered(
    core_dir: Path, make_file: MakeFile, change: str
) -> None:
    path = make_file(b"a|b\n")
    item = outbound(path)
    path.write_bytes(b"a|c\n" if change == "content" else b"a|b\nc|d\n")
    with pytest.raises(ForwardError, match="no longer matches") as caught:
        await DirectoryForwarder(route(core_dir)).send(item)
    assert not isinstance(caught.value, Transient | Rejected)  # neither retried nor the core's fault
    assert listing(core_dir) == []


@pytest.mark.parametrize("hand_off", ["copy", "link"])
async def test_missing_spool_file_is_not_blamed_on_the_core(
    core_dir: Path, tmp_path: Path, hand_off: str
) -> None:
    path = tmp_path / "gone"
    path.write_bytes(b"x")
    item = outbound(path, mtime_ns=path.stat().st_mtime_ns)
    path.unlink()
    with pytest.raises(FileNotFoundError):
        await DirectoryForwarder(DirectoryRoute(type="directory", path=core_dir, hand_off=hand_off)).send(
            item
        )
    assert listing(core_dir) == []


@pytest.mark.parametrize("name", ["../escape.TXT", "sub/dir.TXT", ".hidden.TXT", ".."])
async def test_name_that_is_not_a_plain_file_name_is_refused(
    core_dir: Path, make_file: MakeFile, name: str
) -> None:
    with pytest.raises(ForwardError, match="not a plain file name"):
        await DirectoryForwarder(route(core_dir)).send(outbound(make_file(b"x"), name=name))
    assert listing(core_dir) == []
    assert listing(core_dir.parent) == ["core", "spool"]


async def test_cleanup_removes_only_leftover_temp_files(core_dir: Path) -> None:
    leftovers = [temp_name(core_dir / NAME), temp_name(core_dir / "OTHER.TXT")]
    for path in leftovers:
        path.write_bytes(b"partial")
    keep = [NAME, ".hidden-of-the-core", "notes.tmp", ".x.tmp"]
    for name in keep:
        (core_dir / name).write_bytes(b"keep")
    (core_dir / ".dir.0123abcd.tmp").mkdir()  # not a file: left alone
    removed = await DirectoryForwarder(route(core_dir)).cleanup()
    assert sorted(removed) == sorted(leftovers)
    assert listing(core_dir) == sorted([*keep, ".dir.0123abcd.tmp"])


async def test_cleanup_of_a_missing_core_directory_finds_nothing(tmp_path: Path) -> None:
    assert await DirectoryForwarder(route(tmp_path / "absent")).cleanup() == []


async def test_concurrent_sends_of_one_file_deliver_it_once(core_dir: Path, make_file: MakeFile) -> None:
    data = os.urandom(8 * 1024 * 1024)
    item = outbound(make_file(data))
    forwarder = DirectoryForwarder(route(core_dir))
    results = await asyncio.gather(*(forwarder.send(item) for _ in range(4)))
    assert len(results) == 4
    assert listing(core_dir) == [NAME]
    assert (core_dir / NAME).read_bytes() == data


async def test_deliver_waits_for_a_missing_core_directory(tmp_path: Path, make_file: MakeFile) -> None:
    item = outbound(make_file(b"a|b\n"))
    target = tmp_path / "core-mounted-later"
    reasons: list[str] = []

    async def on_deferred(reason: str) -> None:
        reasons.append(reason)
        target.mkdir()  # the operator mounts the core

    where = await deliver(
        DirectoryForwarder(route(target)), item, route(target), on_deferred=on_deferred, policy=FAST
    )
    assert len(reasons) == 1
    assert "does not exist" in reasons[0]
    assert "copied" in where
    assert (target / NAME).read_bytes() == b"a|b\n"


async def test_100_mb_file_is_streamed_in_bounded_memory(core_dir: Path, tmp_path: Path) -> None:
    path = write_big_file(tmp_path / "big", 100)
    item = outbound(path)
    baseline = current_rss()
    peak = peak_rss_since_reset()
    await DirectoryForwarder(route(core_dir)).send(item)
    grown = peak() - baseline
    assert grown < 30 * 2**20, f"peak RSS grew by {grown / 2**20:.0f} MiB while copying 100 MiB"
    with (core_dir / NAME).open("rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == item.sha256


def link_route(path: Path) -> DirectoryRoute:
    return DirectoryRoute(type="directory", path=path, hand_off="link")


def validated(path: Path, **overrides: Any) -> Outbound:
    """An Outbound as the pipeline makes it: with the mtime the file had when it was validated."""
    return outbound(path, **{"mtime_ns": path.stat().st_mtime_ns, **overrides})


async def test_link_hands_over_the_spool_file_itself(core_dir: Path, make_file: MakeFile) -> None:
    data = b"41210000|name|913100000000000000|01||||20220401\r\n" * 1000
    item = validated(make_file(data))
    where = await DirectoryForwarder(link_route(core_dir)).send(item)
    assert where.startswith("linked to")
    assert listing(core_dir) == [NAME]  # no temp link left beside it
    assert (core_dir / NAME).stat().st_ino == item.path.stat().st_ino  # no byte copied
    assert item.path.stat().st_nlink == 2
    assert (core_dir / NAME).read_bytes() == data


async def test_link_resend_is_idempotent(core_dir: Path, make_file: MakeFile) -> None:
    item = validated(make_file(b"a|b\n"))
    forwarder = DirectoryForwarder(link_route(core_dir))
    await forwarder.send(item)
    assert "already" in await forwarder.send(item)
    assert listing(core_dir) == [NAME]
    assert item.path.stat().st_nlink == 2


async def test_link_of_a_file_written_since_validation_is_copied_and_refused(
    core_dir: Path, make_file: MakeFile
) -> None:
    path = make_file(b"a|b\n")
    item = validated(path)
    path.write_bytes(b"a|c\n")
    os.utime(path, ns=(item.mtime_ns + 10**9, item.mtime_ns + 10**9))  # a later write, clock ticks apart
    with pytest.raises(ForwardError, match="no longer matches"):
        await DirectoryForwarder(link_route(core_dir)).send(item)
    assert listing(core_dir) == []
    assert path.stat().st_nlink == 1  # the link made for the check is gone again


@pytest.mark.parametrize(
    "overrides", [{"private": True}, {"mtime_ns": 0}], ids=["restricted", "mtime-unknown"]
)
async def test_link_copies_what_it_must_not_share(
    core_dir: Path, make_file: MakeFile, overrides: dict[str, Any]
) -> None:
    path = make_file(b"a|b\n")
    item = validated(path, **overrides)
    where = await DirectoryForwarder(link_route(core_dir)).send(item)
    assert where.startswith("copied to")
    assert (core_dir / NAME).stat().st_ino != path.stat().st_ino
    assert (core_dir / NAME).read_bytes() == b"a|b\n"


async def test_link_to_another_filesystem_copies(make_file: MakeFile) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == make_file(b"").stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's temp dir")
    core = Path(tempfile.mkdtemp(dir=shm))
    try:
        item = validated(make_file(b"a|b\n"))
        where = await DirectoryForwarder(link_route(core)).send(item)
        assert where.startswith("copied to")
        assert (core / NAME).read_bytes() == b"a|b\n"
    finally:
        shutil.rmtree(core)


async def test_link_resend_recognises_the_linked_file_without_reading_it(
    core_dir: Path, make_file: MakeFile
) -> None:
    item = validated(make_file(b"a|b\n"))
    forwarder = DirectoryForwarder(link_route(core_dir))
    await forwarder.send(item)
    unread = dataclasses.replace(item, sha256="0" * 64)  # a read would find this does not match
    assert "already" in await forwarder.send(unread)


async def test_cleanup_drops_a_temp_link_left_by_a_crash(core_dir: Path, make_file: MakeFile) -> None:
    path = make_file(b"a|b\n")
    leftover = temp_name(core_dir / NAME)
    os.link(path, leftover)  # killed between the link and the rename
    assert await DirectoryForwarder(link_route(core_dir)).cleanup() == [leftover]
    assert listing(core_dir) == []
    assert path.stat().st_nlink == 1


@pytest.mark.parametrize("together", [False, True], ids=["synced-alone", "synced-together"])
async def test_small_files_of_a_burst_are_delivered_either_way(
    core_dir: Path, make_file: MakeFile, together: bool
) -> None:
    forwarder = DirectoryForwarder(route(core_dir))
    items = [
        dataclasses.replace(
            outbound(make_file(f"{n}|x\n".encode())), name=f"F{n:03d}.TXT", sync_together=together
        )
        for n in range(40)
    ]
    try:
        await asyncio.gather(*(forwarder.send(item) for item in items))
    finally:
        await forwarder.aclose()
    assert listing(core_dir) == [f"F{n:03d}.TXT" for n in range(40)]
    assert (core_dir / "F007.TXT").read_bytes() == b"7|x\n"


async def test_a_send_after_close_still_delivers(core_dir: Path, make_file: MakeFile) -> None:
    """A file still on its way through a forwarder replaced by a reload: its syncs run inline."""
    forwarder = DirectoryForwarder(route(core_dir))
    await forwarder.aclose()
    item = dataclasses.replace(outbound(make_file(b"late|x\n")), sync_together=True)
    await asyncio.wait_for(forwarder.send(item), timeout=10)
    assert listing(core_dir) == [NAME]
