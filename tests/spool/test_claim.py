from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spool import claim as claim_module
from spool import fsio
from spool.claim import Move, claim, claim_many, move, move_many
from spool.entries import EntryKind
from spool.errors import BatchError
from spool.ids import new_file_id
from spool.layout import State, StationLayout

TC = "TC41210000"
NAME = "CISP-41210000_D1001_V01_1_20240401_01_Q.TXT"


def fresh_id() -> str:
    return new_file_id(datetime.now(UTC))


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories claim.py fsyncs, in order (the real fsync still runs)."""
    seen: list[Path] = []

    def spy(path: Path) -> None:
        seen.append(path)
        fsio.fsync_dir(path)

    monkeypatch.setattr(claim_module, "fsync_dir", spy)
    return seen


@pytest.fixture(params=["renameat2", "link+unlink"])
def both_renames(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with RENAME_NOREPLACE and with the link + unlink fallback of filesystems without it."""
    if request.param == "link+unlink":
        monkeypatch.setattr(fsio, "_renameat2", None)
    elif fsio._renameat2 is None:
        pytest.skip("no renameat2 in this libc")
    return str(request.param)


def test_claim_a_regular_file(station: StationLayout, both_renames: str) -> None:
    src = station.inbox(TC) / NAME
    src.write_bytes(b"data")
    ino = src.stat().st_ino
    fid = fresh_id()
    claimed = claim(station, TC, NAME, fid)
    assert claimed is not None
    assert claimed.path == station.state_dir(State.WORK, TC) / f"{fid}.{NAME}"
    assert (claimed.file_id, claimed.tc, claimed.name, claimed.kind, claimed.truncated) == (
        fid, TC, NAME, EntryKind.REGULAR, False,
    )
    assert not src.exists()
    assert claimed.path.read_bytes() == b"data"
    assert claimed.path.stat().st_ino == ino
    assert claimed.path.stat().st_nlink == 1


def test_claim_moves_a_symlink_as_is_and_leaves_its_target_alone(
    station: StationLayout, tmp_path: Path
) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"not for the gateway")
    before = target.stat()
    (station.inbox(TC) / NAME).symlink_to(target)
    claimed = claim(station, TC, NAME, fresh_id())
    assert claimed is not None
    assert claimed.kind is EntryKind.SYMLINK
    assert claimed.path.is_symlink()
    assert claimed.path.readlink() == target
    after = target.stat()
    assert target.read_bytes() == b"not for the gateway"
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns, after.st_nlink) == (
        before.st_ino, before.st_mtime_ns, before.st_ctime_ns, before.st_nlink,
    )


@pytest.mark.timeout(10)
def test_claim_of_a_symlink_to_a_fifo_does_not_block(station: StationLayout, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (station.inbox(TC) / NAME).symlink_to(tmp_path / "fifo")
    claimed = claim(station, TC, NAME, fresh_id())
    assert claimed is not None
    assert claimed.kind is EntryKind.SYMLINK


@pytest.mark.timeout(10)
def test_claim_a_fifo_without_blocking(station: StationLayout, both_renames: str) -> None:
    os.mkfifo(station.inbox(TC) / NAME)
    claimed = claim(station, TC, NAME, fresh_id())
    assert claimed is not None
    assert claimed.kind is EntryKind.FIFO
    assert not (station.inbox(TC) / NAME).exists()


def test_claim_a_directory_with_its_contents(station: StationLayout) -> None:
    src = station.inbox(TC) / NAME
    src.mkdir()
    (src / "inner").write_bytes(b"x")
    claimed = claim(station, TC, NAME, fresh_id())
    assert claimed is not None
    assert claimed.kind is EntryKind.DIRECTORY
    assert (claimed.path / "inner").read_bytes() == b"x"
    assert not src.exists()


def test_claim_of_a_vanished_file_is_none(station: StationLayout) -> None:
    assert claim(station, TC, NAME, fresh_id()) is None
    assert list(station.state_dir(State.WORK, TC).iterdir()) == []


def test_claim_without_a_work_dir_is_an_error_not_a_vanished_file(station: StationLayout) -> None:
    (station.inbox(TC) / NAME).write_bytes(b"data")
    station.state_dir(State.WORK, TC).rmdir()
    with pytest.raises(FileNotFoundError):
        claim(station, TC, NAME, fresh_id())
    assert (station.inbox(TC) / NAME).read_bytes() == b"data"


def test_claim_truncates_a_long_multibyte_name(station: StationLayout) -> None:
    name = "机构报送数据" * 13 + ".TXT"  # 238 bytes: fits in in/, not behind a file id
    (station.inbox(TC) / name).write_bytes(b"data")
    claimed = claim(station, TC, name, fresh_id())
    assert claimed is not None
    assert claimed.truncated
    assert claimed.name == name
    stored = claimed.path.name
    assert len(stored.encode()) <= 255
    assert name.startswith(stored[28:])
    assert claimed.path.read_bytes() == b"data"


def test_claim_never_overwrites(station: StationLayout, both_renames: str) -> None:
    fid = fresh_id()
    (station.inbox(TC) / NAME).write_bytes(b"new")
    existing = station.state_path(State.WORK, TC, fid, NAME)
    existing.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        claim(station, TC, NAME, fid)
    assert existing.read_bytes() == b"old"
    assert (station.inbox(TC) / NAME).read_bytes() == b"new"


def test_rename_noreplace_refuses_to_overwrite(tmp_path: Path, both_renames: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"src")
    dst.write_bytes(b"dst")
    with pytest.raises(FileExistsError):
        fsio.rename_noreplace(src, dst)
    assert (src.read_bytes(), dst.read_bytes()) == (b"src", b"dst")


def test_claim_many_a_thousand_files_with_one_fsync_per_directory(
    station: StationLayout, fsyncs: list[Path]
) -> None:
    names = [f"CISP-41210000_D1001_V01_1_20240401_{n:04d}.TXT" for n in range(1000)]
    for n, name in enumerate(names):
        (station.inbox(TC) / name).write_bytes(str(n).encode())
    claimed = claim_many(station, TC, names, fresh_id)
    assert [c.name for c in claimed] == names
    assert len({c.file_id for c in claimed}) == 1000
    assert list(station.inbox(TC).iterdir()) == []
    assert sorted(p.name for p in station.state_dir(State.WORK, TC).iterdir()) == sorted(
        c.path.name for c in claimed
    )
    assert all(c.path.read_bytes() == str(n).encode() for n, c in enumerate(claimed))
    assert fsyncs == [station.state_dir(State.WORK, TC), station.inbox(TC)]


def test_claim_many_whose_fsync_fails_puts_the_files_back(
    station: StationLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that cannot be made durable did not happen: nothing may be left in work/ that nobody
    processes until a restart; the next scan claims the files again."""

    def failing(path: Path) -> None:
        raise OSError(errno.EIO, "injected", str(path))

    monkeypatch.setattr(claim_module, "fsync_dir", failing)
    names = [f"F{n}" for n in range(5)]
    for name in names:
        (station.inbox(TC) / name).write_bytes(name.encode())
    with pytest.raises(OSError, match="injected"):
        claim_many(station, TC, names, fresh_id)
    assert list(station.state_dir(State.WORK, TC).iterdir()) == []
    assert sorted(p.name for p in station.inbox(TC).iterdir()) == names
    assert all((station.inbox(TC) / n).read_bytes() == n.encode() for n in names)


def test_claim_many_skips_vanished_names_and_does_not_fsync_for_nothing(
    station: StationLayout, fsyncs: list[Path]
) -> None:
    assert claim_many(station, TC, ["gone-1", "gone-2"], fresh_id) == []
    assert fsyncs == []
    (station.inbox(TC) / "here").write_bytes(b"")
    assert [c.name for c in claim_many(station, TC, ["gone", "here"], fresh_id)] == ["here"]


def test_claim_many_finishes_the_batch_around_a_failing_name(
    station: StationLayout, fsyncs: list[Path]
) -> None:
    for name in ("a", "b", "c"):
        (station.inbox(TC) / name).write_bytes(name.encode())
    ids = [fresh_id() for _ in range(3)]
    station.state_path(State.WORK, TC, ids[1], "b").write_bytes(b"taken")
    with pytest.raises(BatchError) as caught:
        claim_many(station, TC, ["a", "b", "c"], iter(ids).__next__)
    done: list[claim_module.Claimed] = caught.value.done
    assert [c.name for c in done] == ["a", "c"]
    assert list(caught.value.errors) == [station.inbox(TC) / "b"]
    assert isinstance(caught.value.errors[station.inbox(TC) / "b"], FileExistsError)
    assert (station.inbox(TC) / "b").read_bytes() == b"b"
    assert fsyncs == [station.state_dir(State.WORK, TC), station.inbox(TC)]


def test_move_hands_off_durably_and_makes_day_dirs(station: StationLayout) -> None:
    (station.inbox(TC) / NAME).write_bytes(b"data")
    claimed = claim(station, TC, NAME, fresh_id())
    assert claimed is not None
    dst = move(station, claimed.path, State.ARCHIVE, TC, claimed.file_id, NAME, "20240401")
    assert dst == station.state_path(State.ARCHIVE, TC, claimed.file_id, NAME, "20240401")
    assert dst.read_bytes() == b"data"
    assert not claimed.path.exists()


def test_move_never_overwrites(station: StationLayout) -> None:
    fid = fresh_id()
    src = station.state_path(State.WORK, TC, fid, NAME)
    src.write_bytes(b"new")
    dst = station.state_path(State.HELD, TC, fid, NAME)
    dst.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        move(station, src, State.HELD, TC, fid, NAME)
    assert (src.read_bytes(), dst.read_bytes()) == (b"new", b"old")


def _work_files(station: StationLayout, count: int, tc: str = TC) -> list[tuple[str, Path]]:
    files = []
    for n in range(count):
        fid = fresh_id()
        path = station.state_path(State.WORK, tc, fid, f"F{n}.TXT")
        path.write_bytes(b"x")
        files.append((fid, path))
    return files


def test_move_many_fsyncs_each_directory_once(station: StationLayout, fsyncs: list[Path]) -> None:
    other = "TC41220000"
    files = _work_files(station, 50) + _work_files(station, 50, other)
    moves = []
    for n, (fid, path) in enumerate(files):
        state, day = (State.HELD, None) if n % 2 else (State.ARCHIVE, "20240401")
        moves.append(Move(path, state, TC if n < 50 else other, fid, path.name[28:], day))
    moved = move_many(station, moves)
    assert len(moved) == 100
    assert all(p.read_bytes() == b"x" for p in moved)
    assert not any(path.exists() for _, path in files)
    expected_targets = {
        station.state_dir(s, tc, d)
        for tc in (TC, other)
        for s, d in ((State.HELD, None), (State.ARCHIVE, "20240401"))
    }
    assert sorted(fsyncs[:4]) == sorted(expected_targets)
    assert sorted(fsyncs[4:]) == sorted({station.state_dir(State.WORK, tc) for tc in (TC, other)})


def test_move_many_finishes_the_batch_around_a_failing_move(
    station: StationLayout, fsyncs: list[Path]
) -> None:
    files = _work_files(station, 3)
    moves = [Move(path, State.DEFERRED, TC, fid, path.name[28:]) for fid, path in files]
    blocked = station.state_path(State.DEFERRED, TC, files[0][0], "F0.TXT")
    blocked.write_bytes(b"old")
    with pytest.raises(BatchError) as caught:
        move_many(station, moves)
    assert caught.value.done == [station.state_path(State.DEFERRED, TC, m.file_id, m.name) for m in moves[1:]]
    assert list(caught.value.errors) == [files[0][1]]
    assert blocked.read_bytes() == b"old"
    assert files[0][1].exists()
    assert fsyncs == [station.state_dir(State.DEFERRED, TC), station.state_dir(State.WORK, TC)]


def test_new_id_is_called_once_per_name(station: StationLayout) -> None:
    calls: list[str] = []

    def new_id() -> str:
        calls.append(fresh_id())
        return calls[-1]

    for name in ("a", "b"):
        (station.inbox(TC) / name).write_bytes(b"")
    claimed = claim_many(station, TC, ["a", "b"], new_id)
    assert [c.file_id for c in claimed] == calls

