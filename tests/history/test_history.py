"""The history writer on real files: line format, group commit, torn-line repair, rollover, recovery."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.store.history import HistoryEvent, HistoryWriter, daily_path
from spool import fsio
from validators import findings

ZONE = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 25, 10, 3, 11, 123456, tzinfo=ZONE)
NAME = "CISP-41210000_D1001_V01_1_20220401_01_Q.TXT"
KEYS = [
    "ts",
    "event",
    "file_id",
    "station",
    "transfer_code",
    "institution",
    "table",
    "date",
    "batch",
    "mode",
    "name",
    "size",
    "sha256",
    "records",
    "findings",
    "findings_total",
    "message",
]


class Clock:
    def __init__(self, start: datetime) -> None:
        self.value = start

    def __call__(self) -> datetime:
        return self.value


def event(file_id: str = "20261125-100311-000001-8000", kind: str = "rejected", **facts: Any) -> HistoryEvent:
    bom = findings.make("BOM_PRESENT", line=1).to_dict()
    defaults: dict[str, Any] = {
        "event": kind,
        "file_id": file_id,
        "station": "k6666",
        "transfer_code": "TC41210000",
        "institution": "41210000",
        "table": "D1001",
        "date": "20220401",
        "batch": "01",
        "mode": "Q",
        "name": NAME,
        "size": 1234,
        "sha256": "ab" * 32,
        "records": None,
        "findings": [bom],
        "findings_total": 1,
        "message": "文件以 BOM 开头，已退回，请另存为无 BOM 的 UTF-8 后重新报送 / Rejected: the file starts "
        "with a BOM; save as UTF-8 without BOM and send again",
    }
    defaults.update(facts)
    return HistoryEvent(**defaults)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(raw) for raw in path.read_bytes().splitlines(keepends=False)]


def test_round_trip_keeps_chinese_text_key_order_and_zone(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    first = event(detail={"core": "目录"})
    writer.append([first, event(kind="received", findings=None, findings_total=None)])

    path = daily_path(tmp_path, T0.date())
    raw = path.read_bytes()
    assert "文件以 UTF-8 BOM".encode() in raw  # not \u escapes: readable with tail -f
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2
    got = lines(path)
    assert list(got[0]) == [*KEYS, "detail"]
    assert list(got[1]) == KEYS  # no detail key when there is none
    assert got[0]["ts"] == "2026-11-25T10:03:11.123+08:00"
    assert got[1]["findings"] is None
    assert HistoryEvent.from_dict(got[0]) == replace(first, ts=T0.replace(microsecond=123000))


def test_ts_is_stamped_in_the_gateway_zone_whatever_the_clock_zone(tmp_path: Path) -> None:
    utc_clock = Clock(datetime(2026, 11, 25, 16, 30, tzinfo=ZoneInfo("UTC")))  # 00:30 next day in Shanghai
    HistoryWriter(tmp_path, ZONE, now=utc_clock).append([event()])
    [line] = lines(daily_path(tmp_path, T0.date() + timedelta(days=1)))
    assert line["ts"] == "2026-11-26T00:30:00.000+08:00"


def test_unsafe_characters_are_escaped_and_round_trip(tmp_path: Path) -> None:
    name = "A\x85B\u2028C\udcffD\x1b[31m.TXT"  # C1 control, line separator, undecodable byte, ESC
    HistoryWriter(tmp_path, ZONE, now=Clock(T0)).append([event(name=name)])
    raw = daily_path(tmp_path, T0.date()).read_bytes()
    assert raw.count(b"\n") == 1
    for bad in (b"\xc2\x85", "\u2028".encode(), b"\x1b"):
        assert bad not in raw
    raw.decode("utf-8")  # strictly valid UTF-8
    assert json.loads(raw)["name"] == name


def test_unknown_event_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown history event"):
        event(kind="lost")


def test_lines_are_visible_to_another_process_when_append_returns(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    writer.append([event(file_id=f"20261125-100311-00000{i}-8000") for i in range(3)])
    path = daily_path(tmp_path, T0.date())
    out = subprocess.run(
        [sys.executable, "-c", "import sys; print(len(open(sys.argv[1], 'rb').read().splitlines()))", path],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "3"


def test_one_append_is_one_write_and_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    writer.append([event()])  # opens the file
    calls: list[str] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, data: bytes) -> int:
        calls.append("write")
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    writer.append([event(), event(), event()])
    assert calls == ["write", "fsync"]
    assert len(lines(daily_path(tmp_path, T0.date()))) == 4


def test_torn_last_line_is_cut_when_the_writer_opens(tmp_path: Path) -> None:
    HistoryWriter(tmp_path, ZONE, now=Clock(T0)).append([event()])
    path = daily_path(tmp_path, T0.date())
    whole = path.read_bytes()
    with path.open("ab") as f:  # a crash in the middle of a write
        f.write(replace(event(), ts=T0).to_json_line()[:40].encode())

    writer = HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    assert path.read_bytes() == whole
    writer.append([event(kind="recovered", findings=None)])
    assert [line["event"] for line in lines(path)] == ["rejected", "recovered"]


def test_torn_line_in_yesterdays_file_is_cut_at_start(tmp_path: Path) -> None:
    yesterday = Clock(T0 - timedelta(days=1))
    HistoryWriter(tmp_path, ZONE, now=yesterday).append([event()])
    old = daily_path(tmp_path, yesterday.value.date())
    with old.open("ab") as f:
        f.write(b'{"ts":"2026-11-24T23:59:59.9')
    HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    assert old.read_bytes().endswith(b"\n")
    assert len(lines(old)) == 1


def test_torn_line_left_by_another_writer_is_cut_before_appending(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    writer.append([event()])
    path = daily_path(tmp_path, T0.date())
    with path.open("ab") as f:  # another process (replay) died mid-line while we keep running
        f.write(b'{"ts":"2026-11-25T10:')
    writer.append([event(kind="forwarded", findings=None)])
    assert [line["event"] for line in lines(path)] == ["rejected", "forwarded"]


def test_failed_fsync_raises_and_leaves_no_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    writer.append([event()])
    path = daily_path(tmp_path, T0.date())
    before = path.read_bytes()
    real_fsync = os.fsync
    failed: list[int] = []

    def fsync(fd: int) -> None:
        if not failed:
            failed.append(fd)
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="I/O error"):
        writer.append([event(kind="forwarded"), event(kind="forwarded")])
    assert path.read_bytes() == before
    writer.append([event(kind="duplicate")])  # a fresh fd; the writer carries on
    assert [line["event"] for line in lines(path)] == ["rejected", "duplicate"]


def test_partial_write_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    writer.append([event()])
    path = daily_path(tmp_path, T0.date())
    before = path.read_bytes()
    real_write = os.write

    def write(fd: int, data: memoryview) -> int:
        if len(data) > 10:
            real_write(fd, data[: len(data) // 2])
            return len(data) // 2
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError, match="No space"):
        writer.append([event(kind="forwarded")])
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_event_that_cannot_be_serialized_writes_nothing(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    writer.append([event()])
    path = daily_path(tmp_path, T0.date())
    before = path.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        writer.append([event(kind="forwarded"), event(detail={"bad": float("nan")})])
    assert path.read_bytes() == before


def test_rollover_at_midnight_creates_and_fsyncs_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []

    def sync(path: Path) -> None:
        synced.append(path)
        fsio.fsync_dir(path)

    monkeypatch.setattr("gateway.store.history.fsync_dir", sync)
    clock = Clock(datetime(2026, 11, 25, 23, 59, 59, 900000, tzinfo=ZONE))
    writer = HistoryWriter(tmp_path, ZONE, now=clock)
    writer.append([event(file_id="a")])
    writer.append([event(file_id="b")])
    clock.value = datetime(2026, 11, 26, 0, 0, 0, 100000, tzinfo=ZONE)
    writer.append([event(file_id="c")])

    day1 = daily_path(tmp_path, clock.value.date() - timedelta(days=1))
    day2 = daily_path(tmp_path, clock.value.date())
    assert [line["file_id"] for line in lines(day1)] == ["a", "b"]
    assert [line["file_id"] for line in lines(day2)] == ["c"]
    assert lines(day2)[0]["ts"] == "2026-11-26T00:00:00.100+08:00"
    assert synced == [tmp_path, tmp_path]  # once per file opened, not per append


def test_logged_finds_events_across_two_days_for_the_asked_files(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 25, 23, 59, tzinfo=ZONE))
    writer = HistoryWriter(tmp_path, ZONE, now=clock)
    a, b, other = "20261125-235900-000001-8000", "20261125-235901-000001-8000", "20261125-235902-000001-8000"
    writer.append([event(file_id=a, kind="received"), event(file_id=b, kind="received")])
    writer.append([event(file_id=other, kind="received")])
    clock.value += timedelta(minutes=2)
    writer.append([event(file_id=a, kind="forwarded"), event(file_id=other, kind="rejected")])

    reopened = HistoryWriter(tmp_path, ZONE, now=clock)
    assert reopened.logged([a, b]).events == {(a, "received"), (b, "received"), (a, "forwarded")}
    assert reopened.logged([]).events == set()


def test_logged_does_not_scan_days_before_the_oldest_file_id(tmp_path: Path) -> None:
    fid = "20261125-100000-000001-8000"
    HistoryWriter(tmp_path, ZONE, now=Clock(T0 - timedelta(days=5))).append([event(file_id=fid)])
    writer = HistoryWriter(tmp_path, ZONE, now=Clock(T0))
    writer.append([event(file_id=fid, kind="received")])
    assert writer.logged([fid]).events == {(fid, "received")}


def test_logged_allows_a_file_id_dated_in_another_zone(tmp_path: Path) -> None:
    new_york = ZoneInfo("America/New_York")
    written = datetime(2026, 11, 25, 21, 0, tzinfo=new_york)  # 2026-11-26 02:00 UTC
    fid = "20261126-020000-000001-8000"  # an id formatted in UTC: a day later than the history file
    writer = HistoryWriter(tmp_path, new_york, now=Clock(written))
    writer.append([event(file_id=fid, kind="received")])
    assert writer.logged([fid]).events == {(fid, "received")}


def test_concurrent_appends_from_threads_give_whole_lines(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, ZONE, now=lambda: datetime.now(ZONE).replace(2026, 11, 25))

    def work(n: int) -> None:
        for i in range(40):
            writer.append([event(file_id=f"t{n}-{i}-{j}") for j in range(3)])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    got = lines(daily_path(tmp_path, T0.date()))
    assert len(got) == 6 * 40 * 3
    assert len({line["file_id"] for line in got}) == len(got)
