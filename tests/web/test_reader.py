"""The console's history index: read on from where it stopped, scoped by transfer code, newest first."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.store.history import HistoryEvent, HistoryWriter, daily_path
from gateway.web.reader import FileFilter, HistoryIndex

ZONE = ZoneInfo("Asia/Shanghai")
EVERYTHING = FileFilter()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 9, 0, tzinfo=ZONE)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def event(kind: str, n: int, code: str = "TC1", table: str = "D1001", **extra: object) -> HistoryEvent:
    return HistoryEvent(
        event=kind,  # type: ignore[arg-type]
        file_id=f"20261125-090000-{n:06d}-0000",
        station="k1237",
        transfer_code=code,
        institution=code[2:],
        table=table,
        date="20261124",
        name=f"CISP-{code}_{table}_{n}.TXT",
        message=kind,
        **extra,  # type: ignore[arg-type]
    )


def test_reads_on_from_where_it_stopped(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "history", ZONE, now=Clock())
    index = HistoryIndex(tmp_path / "history", tmp_path / "index.sqlite")
    writer.append([event("received", 1), event("rejected", 1, findings_total=2)])
    assert index.refresh() == 2
    assert index.refresh() == 0
    writer.append([event("received", 2)])
    assert index.refresh() == 1
    assert [e["event"] for e in index.events(event("received", 1).file_id or "")] == ["received", "rejected"]
    index.close()
    again = HistoryIndex(tmp_path / "history", tmp_path / "index.sqlite")
    assert again.refresh() == 0  # the offsets survive a restart: nothing is indexed twice
    assert len(again.files(None, EVERYTHING, limit=10)) == 2


def test_a_torn_last_line_waits_until_it_is_whole(tmp_path: Path) -> None:
    clock = Clock()
    writer = HistoryWriter(tmp_path / "history", ZONE, now=clock)
    writer.append([event("received", 1)])
    path = daily_path(tmp_path / "history", clock.now.date())
    line = replace(event("forwarded", 1), ts=clock()).to_json_line()
    with path.open("ab") as f:
        f.write(line.encode()[:20])  # a write in progress
    index = HistoryIndex(tmp_path / "history", tmp_path / "index.sqlite")
    assert index.refresh() == 1
    with path.open("ab") as f:
        f.write(line.encode()[20:] + b"\n")
    assert index.refresh() == 1
    assert index.files(None, EVERYTHING, limit=10)[0].state == "forwarded"


def test_scoped_newest_first_filtered_and_paged(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "history", ZONE, now=Clock())
    for n in range(1, 7):
        code = "TC1" if n % 2 else "TC2"
        writer.append([event("received", n, code), event("forwarded" if n != 5 else "rejected", n, code)])
    writer.append([event("feedback", 3)])  # adds to the story, does not change the state
    index = HistoryIndex(tmp_path / "history", tmp_path / "index.sqlite")
    mine = index.files({"TC1"}, EVERYTHING, limit=10)
    assert [r.file_id[-11:-5] for r in mine] == ["000003", "000005", "000001"]  # by last event
    assert mine[0].state == "forwarded"
    assert index.files({"TC1"}, FileFilter(state="rejected"), limit=10)[0].name == "CISP-TC1_D1001_5.TXT"
    assert index.files({"TC1"}, FileFilter(name="tc1_d1001_1"), limit=10)[0].file_id.endswith("000001-0000")
    assert index.files({"TC1"}, FileFilter(table="d1001", date="2026-11-24"), limit=10) == mine
    assert index.files({"TC1"}, FileFilter(table="D1005"), limit=10) == []
    assert (
        index.files({"TC1", "TC2"}, EVERYTHING, limit=2, offset=2)
        == index.files(None, EVERYTHING, limit=4)[2:]
    )
    other = event("received", 2, "TC2").file_id or ""
    assert index.file({"TC1"}, other) is None
    assert index.file({"TC2"}, other) is not None
    assert index.file(None, other) is not None


def test_files_whose_history_retention_removed_are_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    writer = HistoryWriter(tmp_path / "history", ZONE, now=clock)
    writer.append([event("received", 1), event("rejected", 1)])
    old_day = clock.now.date()
    clock.now += timedelta(days=1)
    writer.append([event("received", 2), event("forwarded", 2)])
    writer.close()
    index = HistoryIndex(tmp_path / "history", tmp_path / "index.sqlite")
    assert len(index.files(None, EVERYTHING, limit=10)) == 2
    daily_path(tmp_path / "history", old_day).unlink()  # what retention does
    left = index.files(None, EVERYTHING, limit=10)
    assert [r.file_id for r in left] == [event("received", 2).file_id]
    assert index.events(event("received", 1).file_id or "") == []
    assert index.refresh() == 0  # the remaining day is not read again
