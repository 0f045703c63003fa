from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spool import fsio
from spool.ids import new_file_id
from spool.layout import State, StationLayout
from spool.recovery import StateEntry, inbox_duplicates_after_link, remove_temp_files, scan_states

TC = "TC41210000"
DAY = "20240401"


def fresh_id() -> str:
    return new_file_id(datetime.now(UTC))


def put(station: StationLayout, state: State, name: str, day: str | None = None, tc: str = TC) -> StateEntry:
    fid = fresh_id()
    path = station.state_path(state, tc, fid, name, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return StateEntry(state, tc, fid, name, path, day)


def test_scan_states_finds_every_state_file_oldest_first(
    station: StationLayout, caplog: pytest.LogCaptureFixture
) -> None:
    expected = [
        put(station, State.WORK, "A.TXT"),
        put(station, State.DEFERRED, "B.TXT"),
        put(station, State.HELD, "C.TXT", tc="TC41220000"),
        put(station, State.QUARANTINE, "D.TXT", DAY),
        put(station, State.ARCHIVE, "E.TXT", DAY),
        put(station, State.WORK, "name.with.dots.ZIP"),
    ]
    claimed_dir = put(station, State.WORK, "DIR")
    claimed_dir.path.unlink()
    claimed_dir.path.mkdir()  # a claimed directory is an entry too
    expected.append(claimed_dir)
    reason = station.reason_path(TC, expected[3].file_id, DAY)
    reason.write_text("{}")
    fsio.write_atomic(station.state_dir(State.WORK, TC) / "x", b"")  # complete, so no temp left
    fsio.temp_name(station.state_dir(State.WORK, TC) / "y").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        found = scan_states(station)
    assert found == sorted(expected, key=lambda e: e.file_id)
    assert [r.getMessage() for r in caplog.records] == [
        f"spool recovery: {station.state_dir(State.WORK, TC) / 'x'} is not the gateway's "
        "(not <file_id>.<NAME>); left alone"
    ]


def test_scan_states_reports_junk_and_goes_on(
    station: StationLayout, caplog: pytest.LogCaptureFixture
) -> None:
    entry = put(station, State.ARCHIVE, "A.TXT", DAY)
    work = station.state_dir(State.WORK, TC)
    junk = [
        work / "README",
        work / "20240401-093005-000007-00a1",  # an id without a name
        work / "20240401-093005-000007-00a1.",
        work / "20240431-093005-000007-00a1.A.TXT",  # no such day
        work / "20240401-093005-000007-00a1_A.TXT",
        work / ".hidden",
        work / "20240401-093005-000007-00a1.reason.json",  # a reason outside quarantine
        station.state_root(State.WORK) / "bad tc",
        station.state_root(State.WORK) / "FILE",
        station.state_root(State.ARCHIVE) / "2024-04-01",
        station.state_root(State.ARCHIVE) / DAY / "bad tc",
    ]
    for path in junk:
        if "bad tc" in path.name:
            path.mkdir()
        else:
            path.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert scan_states(station) == [entry]
    logged = {r.args[0] for r in caplog.records if isinstance(r.args, tuple)}
    assert logged == set(junk)


def test_scan_states_of_chosen_states_only(station: StationLayout) -> None:
    work = put(station, State.WORK, "A.TXT")
    put(station, State.ARCHIVE, "B.TXT", DAY)
    assert scan_states(station, [State.WORK, State.DEFERRED]) == [work]


def test_scan_states_of_an_empty_station(station: StationLayout) -> None:
    assert scan_states(station) == []


def test_remove_temp_files_from_state_and_out_dirs(station: StationLayout) -> None:
    leftovers = [
        fsio.temp_name(station.state_dir(State.WORK, TC) / "a"),
        fsio.temp_name(station.reason_path(TC, fresh_id(), DAY)),
        fsio.temp_name(station.outbox(TC) / "X_OK.TXT"),
        fsio.temp_name(station.outbox("TC41220000") / "Y_BAD.TXT"),
    ]
    kept = [
        station.inbox(TC) / fsio.temp_name(Path("Z.TXT")).name,  # in/ belongs to the institutions
        station.outbox(TC) / ".profile",
        station.outbox(TC) / "X_OK.TXT",
        put(station, State.WORK, "B.TXT").path,
    ]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert remove_temp_files(station) == len(leftovers)
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in kept)
    assert remove_temp_files(station) == 0


def test_a_claim_killed_between_link_and_unlink_is_finished(station: StationLayout) -> None:
    inbox = station.inbox(TC)
    (inbox / "A.TXT").write_bytes(b"data")
    (inbox / "B.TXT").write_bytes(b"other")
    work = station.state_path(State.WORK, TC, fresh_id(), "A.TXT")
    os.link(inbox / "A.TXT", work)  # what rename_noreplace's fallback leaves when killed before its unlink

    assert inbox_duplicates_after_link(station) == [inbox / "A.TXT"]
    assert sorted(p.name for p in inbox.iterdir()) == ["B.TXT"]
    assert work.read_bytes() == b"data"
    assert work.stat().st_nlink == 1
    assert inbox_duplicates_after_link(station) == []


def test_only_the_claimed_name_of_an_institutions_hard_links_is_removed(station: StationLayout) -> None:
    inbox = station.inbox(TC)
    (inbox / "A.TXT").write_bytes(b"a")
    for name in ("A2.TXT", "Z.TXT"):
        os.link(inbox / "A.TXT", inbox / name)
    os.link(inbox / "A.TXT", station.state_path(State.WORK, TC, fresh_id(), "A.TXT"))
    assert inbox_duplicates_after_link(station) == [inbox / "A.TXT"]
    assert sorted(p.name for p in inbox.iterdir()) == ["A2.TXT", "Z.TXT"]


def test_hard_links_that_are_not_half_claims_are_left_alone(station: StationLayout, tmp_path: Path) -> None:
    inbox = station.inbox(TC)
    (inbox / "A.TXT").write_bytes(b"a")
    os.link(inbox / "A.TXT", inbox / "A2.TXT")  # the institution's own link, twice in in/
    (tmp_path / "outside").write_bytes(b"b")
    os.link(tmp_path / "outside", inbox / "B.TXT")
    put(station, State.WORK, "A.TXT")  # same name in work/, another inode
    assert inbox_duplicates_after_link(station) == []
    assert sorted(p.name for p in inbox.iterdir()) == ["A.TXT", "A2.TXT", "B.TXT"]
