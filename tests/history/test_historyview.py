"""Reading the history as operators do: filtered queries, follow across midnight, one-line text."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.store.history import HistoryEvent, HistoryWriter, daily_files, daily_path
from gateway.store.historyview import Skipped, follow, format_event, query
from validators import findings

ZONE = ZoneInfo("Asia/Shanghai")
DAY1 = datetime(2026, 11, 24, 9, 0, tzinfo=ZONE)
DAY2 = datetime(2026, 11, 25, 10, 3, 11, 500000, tzinfo=ZONE)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.value = start

    def __call__(self) -> datetime:
        return self.value


def ev(file_id: str, kind: str = "forwarded", **facts: Any) -> HistoryEvent:
    base: dict[str, Any] = {
        "event": kind,
        "file_id": file_id,
        "station": "k6666",
        "transfer_code": "TC41210000",
        "institution": "41210000",
        "table": "D1001",
        "date": "20220401",
        "name": "CISP-41210000_D1001_V01_1_20220401_01_Q.TXT",
        "message": "已转发 / Forwarded",
    }
    base.update(facts)
    return HistoryEvent(**base)


@pytest.fixture
def two_days(tmp_path: Path) -> Path:
    """Day 1: a, b; day 2: c, d, e — with different institutions, tables, dates, events and names."""
    clock = Clock(DAY1)
    writer = HistoryWriter(tmp_path, ZONE, now=clock)
    writer.append(
        [
            ev("a", "received"),
            ev(
                "b",
                institution="41220000",
                table="D2001",
                date="20220402",
                name="CISP-41220000_D2001_V01_1_20220402_01_Z.TXT",
            ),
        ]
    )
    clock.value = DAY2
    d = ev("d", table="D2001", name="CISP-41210000_D2001_V01_1_20220401_02_Q.TXT")
    writer.append([ev("c", "rejected"), d])
    clock.value = DAY2 + timedelta(hours=2)
    writer.append([ev("e", "duplicate", date="20220402")])
    writer.close()
    return tmp_path


def ids(events: Any) -> list[str]:
    return [e["file_id"] for e in events]


def test_query_without_filters_gives_everything_in_time_order(two_days: Path) -> None:
    assert ids(query(two_days)) == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"institution": "41220000"}, ["b"]),
        ({"table": "D2001"}, ["b", "d"]),
        ({"table": "d2001"}, ["b", "d"]),
        ({"date": "20220402"}, ["b", "e"]),
        ({"date": "2022-04-02"}, ["b", "e"]),
        ({"status": "rejected"}, ["c"]),
        ({"name": "_02_Q"}, ["d"]),
        ({"name": "cisp-41220000"}, ["b"]),
        ({"name": "*_Z.TXT"}, ["b"]),
        ({"name": "*D2001*"}, ["b", "d"]),
        ({"since": DAY2}, ["c", "d", "e"]),
        ({"since": DAY2 + timedelta(milliseconds=1)}, ["e"]),
        ({"until": DAY2}, ["a", "b"]),
        ({"since": DAY2, "until": DAY2 + timedelta(hours=1)}, ["c", "d"]),
        ({"table": "D1001", "status": "forwarded"}, []),
    ],
)
def test_query_filters(two_days: Path, filters: dict[str, Any], expected: list[str]) -> None:
    assert ids(query(two_days, **filters)) == expected


def test_query_since_skips_older_files_without_reading_them(two_days: Path) -> None:
    old = daily_path(two_days, DAY1.date() - timedelta(days=3))
    old.write_bytes(b"not json\n")
    skipped = Skipped()
    assert ids(query(two_days, since=DAY2, skipped=skipped)) == ["c", "d", "e"]
    assert skipped.lines == 0
    assert ids(query(two_days, skipped=skipped)) == ["a", "b", "c", "d", "e"]
    assert skipped.lines == 1


def test_since_and_until_in_other_zones_read_the_right_files(tmp_path: Path) -> None:
    """Files are named by the gateway's day; a bound given in another zone has another date."""
    clock = Clock(datetime(2026, 11, 25, 20, 0, tzinfo=ZONE))
    writer = HistoryWriter(tmp_path, ZONE, now=clock)
    writer.append([ev("x")])
    clock.value = datetime(2026, 11, 26, 0, 10, tzinfo=ZONE)
    writer.append([ev("y")])
    clock.value = datetime(2026, 11, 26, 1, 0, tzinfo=ZONE)
    writer.append([ev("z")])
    ahead = datetime(2026, 11, 25, 19, 0, tzinfo=ZONE).astimezone(ZoneInfo("Pacific/Kiritimati"))
    behind = datetime(2026, 11, 26, 0, 30, tzinfo=ZONE).astimezone(ZoneInfo("America/Los_Angeles"))
    assert ahead.day == 26 and behind.day == 25
    assert ids(query(tmp_path, since=ahead)) == ["x", "y", "z"]
    assert ids(query(tmp_path, until=behind)) == ["x", "y"]


def test_naive_since_is_refused(two_days: Path) -> None:
    with pytest.raises(ValueError, match="timezone"):
        list(query(two_days, since=datetime(2026, 11, 25)))


def test_garbage_and_torn_lines_are_skipped_and_counted(two_days: Path) -> None:
    day1 = daily_path(two_days, DAY1.date())
    day2 = daily_path(two_days, DAY2.date())
    with day1.open("ab") as f:
        f.write(b'\xff\xfe garbage\n[1, 2]\n{"event": "received"}\n')
        f.write(b'{"ts": "2026-11-24T09:00:00+08:00", "ev')
    with day2.open("ab") as f:
        f.write(b'{"ts": "2026-11-25T13:00')  # a write in progress in the newest file: not an error
    skipped = Skipped()
    assert ids(query(two_days, skipped=skipped)) == ["a", "b", "c", "d", "e"]
    assert skipped.lines == 4  # three garbage lines and the torn tail of a finished day


def _collect(it: Any, n: int, out: list[dict[str, Any]]) -> threading.Thread:
    thread = threading.Thread(target=lambda: out.extend(islice(it, n)), daemon=True)
    thread.start()
    return thread


def test_follow_picks_up_new_lines_and_survives_midnight(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 25, 23, 59, 58, tzinfo=ZONE))
    writer = HistoryWriter(tmp_path, ZONE, now=clock)
    writer.append([ev("old")])
    got: list[dict[str, Any]] = []
    thread = _collect(follow(tmp_path, poll_seconds=0.02), 3, got)  # starts at the end: not "old"

    writer.append([ev("x1")])
    clock.value += timedelta(seconds=1)
    writer.append([ev("x2", "held")])
    clock.value += timedelta(seconds=2)  # past midnight: a new file
    writer.append([ev("x3", "forwarded")])
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert ids(got) == ["x1", "x2", "x3"]
    assert daily_path(tmp_path, clock.value.date()).exists()


def test_follow_first_gives_the_last_events_as_tail_does(two_days: Path) -> None:
    got: list[dict[str, Any]] = []
    thread = _collect(follow(two_days, last=4, poll_seconds=0.02), 5, got)  # c, d, e of day 2; b of day 1
    writer = HistoryWriter(two_days, ZONE, now=Clock(DAY2 + timedelta(hours=1)))
    writer.append([ev("new")])
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert ids(got) == ["b", "c", "d", "e", "new"]


def test_follow_gives_the_last_matching_events_only(two_days: Path) -> None:
    got: list[dict[str, Any]] = []
    thread = _collect(follow(two_days, table="D2001", last=10, poll_seconds=0.02), 2, got)
    thread.join(timeout=10)
    assert ids(got) == ["b", "d"]


def test_table_filter_finds_a_file_whose_name_did_not_parse(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(DAY2))
    unparsed = "cisp-41210000_d2001_v01_1_20220401_01_q.txt"
    writer.append([ev("bad", "rejected", table=None, name=unparsed), ev("other", table=None, name="x.TXT")])
    assert ids(query(tmp_path, table="D2001")) == ["bad"]


def test_follow_with_filters_and_since_gives_the_past_then_the_new(two_days: Path) -> None:
    with daily_path(two_days, DAY1.date()).open("ab") as f:
        f.write(b'garbage\n{"ts": "2026-11-24T23:59')  # a garbage line and a torn tail in a finished day
    got: list[dict[str, Any]] = []
    skipped = Skipped()
    thread = _collect(follow(two_days, table="D2001", since=DAY1, poll_seconds=0.02, skipped=skipped), 3, got)
    writer = HistoryWriter(two_days, ZONE, now=Clock(DAY2 + timedelta(days=1)))
    writer.append([ev("f"), ev("g", table="D2001")])
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert ids(got) == ["b", "d", "g"]
    assert skipped.lines == 2


def test_follow_waits_for_the_rest_of_a_line_being_written(tmp_path: Path) -> None:
    path = daily_path(tmp_path, DAY2.date())
    data = (replace(ev("late"), ts=DAY2).to_json_line() + "\n").encode()
    path.write_bytes(b"")
    got: list[dict[str, Any]] = []
    thread = _collect(follow(tmp_path, poll_seconds=0.02), 1, got)
    with path.open("ab", buffering=0) as f:
        f.write(data[:25])
        thread.join(timeout=0.2)
        assert got == []
        f.write(data[25:])
    thread.join(timeout=10)
    assert ids(got) == ["late"]


def test_follow_does_not_lose_the_last_lines_of_a_day_at_rollover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(datetime(2026, 11, 25, 23, 59, 58, tzinfo=ZONE))
    writer = HistoryWriter(tmp_path, ZONE, now=clock)
    writer.append([ev("before")])
    listings = 0

    def listing(dir: Path) -> list[tuple[Any, Path]]:
        nonlocal listings
        listings += 1
        if listings == 2:  # the reader has just read the day to its end, and now the writer rolls over
            writer.append([ev("last-of-day")])
            clock.value += timedelta(seconds=3)
            writer.append([ev("first-of-next")])
        return daily_files(dir)

    monkeypatch.setattr("gateway.store.historyview.daily_files", listing)
    got: list[dict[str, Any]] = []
    thread = _collect(follow(tmp_path, since=clock.value, poll_seconds=0.01), 3, got)
    thread.join(timeout=5)
    assert ids(got) == ["before", "last-of-day", "first-of-next"]


def test_follow_goes_on_after_the_writer_cuts_a_failed_append_back(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(DAY2))
    writer.append([ev("a")])
    path = daily_path(tmp_path, DAY2.date())
    good = path.stat().st_size
    got: list[dict[str, Any]] = []
    thread = _collect(follow(tmp_path, poll_seconds=0.01), 2, got)
    with path.open("ab") as f:  # written, then its fsync fails: the writer cuts it away again
        f.write(
            (
                replace(HistoryEvent(event="received", file_id="ghost", message="m"), ts=DAY2).to_json_line()
                + "\n"
            ).encode()
        )
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    os.truncate(path, good)
    writer.append([ev("b", name="CISP-41210000_D1001_V01_1_20220401_02_Q.TXT")])  # longer than the ghost
    thread.join(timeout=5)
    assert ids(got) == ["ghost", "b"]


def rejected_line(**facts: Any) -> dict[str, Any]:
    codes = ["BOM_PRESENT", "FIELD_COUNT", "FIELD_ENUM"]
    base: dict[str, Any] = {
        "ts": "2026-11-25T10:03:11.512+08:00",
        "event": "rejected",
        "station": "k6666",
        "transfer_code": "TC41210000",
        "name": "CISP-41210000_D1001_V01_1_20220401_01_Q.TXT",
        "records": None,
        "findings": [
            findings.make(c, line=1, found=3, expected=9, table="D1001", allowed="01,02").to_dict()
            for c in codes
        ],
        "findings_total": 3,
        "message": "退回 / Rejected",
    }
    base.update(facts)
    return base


def test_format_event_for_a_rejected_file() -> None:
    assert format_event(rejected_line()) == (
        "2026-11-25 10:03:11+08:00 rejected  k6666/TC41210000 CISP-41210000_D1001_V01_1_20220401_01_Q.TXT  "
        "BOM_PRESENT 文件以 UTF-8 BOM（EF BB BF）开头 (+2 more)"
    )


def test_format_event_names_the_command_that_shows_every_finding() -> None:
    line = format_event(rejected_line(file_id="20261125-100311-512000-ab12"))
    assert line.endswith("(+2 more: fdep-gateway show 20261125-100311-512000-ab12)")


def test_format_event_counts_findings_beyond_the_listed_ones() -> None:
    line = format_event(rejected_line(findings_total=250, records=120000))
    assert line.endswith("Q.TXT  120,000 records  BOM_PRESENT 文件以 UTF-8 BOM（EF BB BF）开头 (+249 more)")


def test_format_event_without_findings_shows_the_message_and_aligns_the_event() -> None:
    line = format_event(
        {
            "ts": "2026-11-25T15:00:00.000+08:00",
            "event": "held",
            "station": "k6666",
            "transfer_code": "TC41210000",
            "name": "N.TXT",
            "records": 3,
            "findings": None,
            "message": "暂缓转发 / Held",
        }
    )
    assert line == "2026-11-25 15:00:00+08:00 held      k6666/TC41210000 N.TXT  3 records  暂缓转发 / Held"


def test_format_event_escapes_control_characters() -> None:
    name = "EVIL\x1b[2J\r\nX\u202e\u2028\x00\\.TXT"
    line = format_event(rejected_line(name=name, transfer_code="T\tC"))
    assert line.isprintable()
    assert "EVIL\\x1b[2J\\x0d\\x0aX\\u202e\\u2028\\x00\\\\.TXT" in line
    assert "k6666/T\\x09C" in line


def test_format_event_tolerates_missing_facts() -> None:
    assert format_event({"ts": "garbage\x07", "event": "vanished"}) == "garbage\\x07 vanished  -/- -"
