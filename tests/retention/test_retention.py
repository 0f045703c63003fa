"""The retention sweep on real directories: which day folders and history files go, and what never does."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.daemon import retention
from gateway.daemon.retention import next_sweep, sweep
from gateway.store.history import daily_path
from spool.layout import SpoolLayout, State
from spool.tree import remove_tree

TODAY = date(2026, 3, 10)
STATIONS = ["k1237", "k6666"]


def day(age: int) -> str:
    return f"{TODAY - timedelta(days=age):%Y%m%d}"


def put(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def state_file(layout: SpoolLayout, station: str, state: State, age: int, tc: str = "TC41210000") -> Path:
    folder = layout.station(station).state_dir(state, tc, day(age))
    return put(folder / f"{day(age)}-101010-000001-8000.CISP-41210000_D1001_V01_1_20260101_01_Q.TXT", b"abc")


@pytest.fixture
def layout(tmp_path: Path) -> SpoolLayout:
    return SpoolLayout(tmp_path / "spool")


@pytest.fixture
def history_dir(tmp_path: Path) -> Path:
    path = tmp_path / "history"
    path.mkdir()
    return path


def run(layout: SpoolLayout, history_dir: Path, **overrides: int) -> retention.SweepReport:
    days = {"archive_days": 90, "quarantine_days": 180, "history_days": 400} | overrides
    return sweep(
        layout,
        STATIONS,
        today=TODAY,
        archive_days=days["archive_days"],
        quarantine_days=days["quarantine_days"],
        history_dir=history_dir,
        history_days=days["history_days"],
    )


def test_day_folders_older_than_their_retention_go_the_rest_stay(
    layout: SpoolLayout, history_dir: Path
) -> None:
    kept, gone = [], []
    for station in STATIONS:
        for age in (0, 1, 89, 90):
            kept.append(state_file(layout, station, State.ARCHIVE, age))
        for age in (91, 365):
            gone.append(state_file(layout, station, State.ARCHIVE, age))
        for age in (0, 91, 180):
            kept.append(state_file(layout, station, State.QUARANTINE, age))
        gone.append(state_file(layout, station, State.QUARANTINE, 181))
    # A quarantined directory and its reason file go with their day.
    q = layout.station("k1237").state_dir(State.QUARANTINE, "TC41210000", day(181))
    put(q / "20250909-000000-000000-8000.somedir" / "inner" / "deep.txt")
    put(q / "20250909-000000-000000-8000.reason.json", b"{}")
    report = run(layout, history_dir)

    assert all(p.exists() for p in kept)
    assert not any(p.exists() for p in gone)
    archive_root = layout.station("k1237").state_root(State.ARCHIVE)
    assert sorted(p.name for p in archive_root.iterdir()) == sorted(day(a) for a in (0, 1, 89, 90))
    assert report.archive_days == 4  # two old days on each of two stations
    assert report.quarantine_days == 2
    assert report.archive_files == 4
    assert report.quarantine_files == 4  # 2 files + the directory entry + the reason file
    assert report.history_files == 0
    assert report.bytes >= 6 * 3
    assert report.errors == []
    assert len(report.removed) == 6


def test_anything_not_a_day_folder_is_left_alone(
    layout: SpoolLayout, history_dir: Path, tmp_path: Path
) -> None:
    root = layout.station("k1237").state_root(State.ARCHIVE)
    others = [
        put(root / "notes" / "a.txt"),
        put(root / "2020-01-01" / "TC1" / "a"),
        put(root / "20201340" / "TC1" / "a"),  # no 13th month
        put(root / "2020010" / "TC1" / "a"),
        put(root / "202001011" / "TC1" / "a"),
        put(root / "20200101"),  # a file, not a folder
    ]
    outside = put(tmp_path / "elsewhere" / "TC1" / "precious.txt")
    link = root / "20200102"
    link.symlink_to(outside.parent.parent, target_is_directory=True)
    ledger = put(layout.root / ".gateway-ledger.sqlite", b"ledger")
    report = run(layout, history_dir)

    assert all(p.exists() for p in others)
    assert link.is_symlink()
    assert outside.read_text() == "x"
    assert ledger.read_bytes() == b"ledger"
    assert report.nothing_done


def test_today_and_future_days_are_never_touched(layout: SpoolLayout, history_dir: Path) -> None:
    today = state_file(layout, "k1237", State.ARCHIVE, 0)
    yesterday = state_file(layout, "k1237", State.ARCHIVE, 1)
    before = state_file(layout, "k1237", State.ARCHIVE, 2)
    future = state_file(layout, "k1237", State.ARCHIVE, -30)  # a clock set back later
    report = run(layout, history_dir, archive_days=1, quarantine_days=1, history_days=1)
    assert today.exists() and yesterday.exists() and future.exists()
    assert not before.exists()
    assert report.archive_days == 1


@pytest.mark.parametrize("key", ["archive_days", "quarantine_days", "history_days"])
def test_a_retention_below_one_day_is_refused(layout: SpoolLayout, history_dir: Path, key: str) -> None:
    state_file(layout, "k1237", State.ARCHIVE, 0)
    with pytest.raises(ValueError, match=key):
        run(layout, history_dir, **{key: 0})


def test_history_files_older_than_history_days_go(layout: SpoolLayout, history_dir: Path) -> None:
    def hist(age: int) -> Path:
        return put(daily_path(history_dir, TODAY - timedelta(days=age)), b'{"event":"received"}\n')

    kept = [hist(0), hist(1), hist(30)]
    gone = [hist(31), hist(400)]
    foreign = [
        put(history_dir / "history-notes.jsonl"),
        put(history_dir / "history-20261399.jsonl"),
        put(history_dir / "history-20200101.jsonl.bak"),
        put(history_dir / "README.txt"),
    ]
    (history_dir / "history-20200102.jsonl").mkdir()  # named like ours, but a folder
    report = run(layout, history_dir, history_days=30)
    assert all(p.exists() for p in kept + foreign)
    assert not any(p.exists() for p in gone)
    assert (history_dir / "history-20200102.jsonl").is_dir()
    assert report.history_files == 2
    assert set(report.removed) == set(gone)


def test_a_second_sweep_finds_nothing_to_do(layout: SpoolLayout, history_dir: Path) -> None:
    for age in (0, 100, 200):
        state_file(layout, "k1237", State.ARCHIVE, age)
        state_file(layout, "k1237", State.QUARANTINE, age)
        put(daily_path(history_dir, TODAY - timedelta(days=age * 3)))
    first = run(layout, history_dir)
    assert first.archive_days == 2 and first.quarantine_days == 1 and first.history_files == 1
    second = run(layout, history_dir)
    assert second.nothing_done
    assert second.as_log() == {k: 0 for k in second.as_log()}


def test_a_sweep_killed_half_way_is_finished_by_the_next(layout: SpoolLayout, history_dir: Path) -> None:
    """A day folder partly emptied (the state a kill mid-rmtree leaves) is still old and still removed."""
    old = state_file(layout, "k1237", State.ARCHIVE, 120)
    day_dir = old.parent.parent
    put(day_dir / "TC41220000" / "20251110-000000-000000-8000.x")
    old.unlink()  # what a killed sweep had done so far
    report = run(layout, history_dir)
    assert not day_dir.exists()
    assert report.archive_days == 1


def test_missing_state_and_history_dirs_are_fine(tmp_path: Path) -> None:
    report = sweep(
        SpoolLayout(tmp_path / "nothing"),
        STATIONS,
        today=TODAY,
        archive_days=1,
        quarantine_days=1,
        history_dir=tmp_path / "no-history",
        history_days=1,
    )
    assert report.nothing_done


def test_parents_are_fsynced_after_removal_and_only_then(
    layout: SpoolLayout, history_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(retention, "fsync_dir", lambda p: synced.append(Path(p)))
    state_file(layout, "k1237", State.ARCHIVE, 0)
    run(layout, history_dir)
    assert synced == []
    state_file(layout, "k1237", State.ARCHIVE, 100)
    state_file(layout, "k6666", State.QUARANTINE, 200)
    put(daily_path(history_dir, TODAY - timedelta(days=500)))
    run(layout, history_dir)
    assert sorted(synced) == sorted(
        [
            layout.station("k1237").state_root(State.ARCHIVE),
            layout.station("k6666").state_root(State.QUARANTINE),
            history_dir,
        ]
    )


def test_a_folder_that_cannot_be_removed_is_reported_and_the_sweep_goes_on(
    layout: SpoolLayout, history_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = state_file(layout, "k1237", State.ARCHIVE, 100).parent.parent
    other = state_file(layout, "k6666", State.ARCHIVE, 100).parent.parent
    real = remove_tree

    def failing(path: Path) -> None:
        if path == stuck:
            raise OSError(5, "Input/output error", str(path))
        real(path)

    monkeypatch.setattr("gateway.daemon.retention.remove_tree", failing)
    report = run(layout, history_dir)
    assert stuck.exists()
    assert not other.exists()
    assert report.archive_days == 1
    assert len(report.errors) == 1 and str(stuck) in report.errors[0]


def test_read_only_folders_inside_a_day_are_removed(layout: SpoolLayout, history_dir: Path) -> None:
    q = layout.station("k1237").state_dir(State.QUARANTINE, "TC41210000", day(200))
    ro = q / "20250820-000000-000000-8000.dropped-dir"
    put(ro / "a.txt")
    put(ro / "sub" / "b.txt")
    (ro / "sub").chmod(0o500)
    ro.chmod(0o500)
    closed = q / "20250820-000000-000000-8001.closed-dir"
    put(closed / "c.txt")
    closed.chmod(0)
    report = run(layout, history_dir)
    assert not q.parent.exists()
    assert report.quarantine_days == 1 and report.errors == []


def test_a_tree_deeper_than_the_recursion_limit_is_removed_and_the_sweep_goes_on(
    layout: SpoolLayout, history_dir: Path
) -> None:
    """A sender's directory nested 1,500 levels deep, quarantined: shutil.rmtree raised RecursionError
    (not an OSError), which ended the sweep before any other station or the history was swept."""
    q = layout.station("k1237").state_dir(State.QUARANTINE, "TC41210000", day(200))
    deep = q / "20250820-000000-000000-8000.DEEP"
    deep.mkdir(parents=True)
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(1500):  # by descriptor: the whole path is far beyond PATH_MAX
        os.mkdir("d", dir_fd=fd)
        if level % 100 == 0:
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    other = state_file(layout, "k6666", State.ARCHIVE, 100).parent.parent
    old_history = put(daily_path(history_dir, TODAY - timedelta(days=500)))
    try:
        report = run(layout, history_dir)
        assert report.errors == []
        assert not q.parent.exists() and not other.exists() and not old_history.exists()
    finally:  # pytest's own clean-up of tmp_path recurses too
        if deep.exists():
            remove_tree(deep)


def test_the_tree_walk_fixes_modes_never_follows_and_keeps_descriptors_bounded(tmp_path: Path) -> None:
    """As root the sweep never meets a PermissionError, other users do: exercised directly."""
    outside = put(tmp_path / "outside" / "keep.txt")
    tree = tmp_path / "tree"
    put(tree / "a" / "b" / "c.txt")
    (tree / "a" / "link").symlink_to(outside.parent)
    (tree / "a" / "b").chmod(0o500)
    closed = tree / "closed"
    put(closed / "deep" / "d.txt")
    closed.chmod(0)
    before = sum(1 for _ in Path("/proc/self/fd").iterdir())
    remove_tree(tree)
    assert not tree.exists() and outside.read_bytes() == b"x"
    assert sum(1 for _ in Path("/proc/self/fd").iterdir()) == before


def test_next_sweep_is_today_at_the_hour_or_tomorrow() -> None:
    zone = ZoneInfo("Asia/Shanghai")
    early = datetime(2026, 3, 10, 0, 10, tzinfo=zone)
    assert next_sweep(early) == datetime(2026, 3, 10, 0, 30, tzinfo=zone)
    late = datetime(2026, 3, 10, 0, 30, tzinfo=zone)
    assert next_sweep(late) == datetime(2026, 3, 11, 0, 30, tzinfo=zone)
    month_end = datetime(2026, 2, 28, 23, 0, tzinfo=zone)
    assert next_sweep(month_end) == datetime(2026, 3, 1, 0, 30, tzinfo=zone)


def test_a_tree_left_half_removed_by_a_killed_sweep_is_removed_by_the_next(tmp_path: Path) -> None:
    """A killed sweep leaves directories it hoisted to the top (with their own subdirectories): the next
    one must not collide with those names."""
    top = tmp_path / "day"
    (top / "a" / "b" / "c").mkdir(parents=True)
    put(top / "a" / "b" / "f")
    (top / ".gateway-rm-1" / "x" / "y").mkdir(parents=True)
    (top / ".gateway-rm-2").mkdir()
    remove_tree(top)
    assert not top.exists()
