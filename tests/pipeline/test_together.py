"""A claimed batch as the unit (``gateway/pipeline/together.py``) on the real parts: every file of a batch
ends exactly once, with the receipt, history, ledger state and core copy of its outcome, whether it went
on with the batch or left it for the one-file way."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.config import HttpRoute
from gateway.forward import make_forwarder
from gateway.pipeline.item import Checked
from gateway.pipeline.settings import Settings
from gateway.pipeline.together import TOGETHER_FROM, take
from gateway.store.rules import State
from gateway.windows import Calendar
from harness.daemon import ORG, TC, d1001_body, d1001_name, day, drop, yesterday
from spool.claim import Claimed, claim
from spool.ids import new_file_id
from spool.layout import State as Spool
from tests.forward.helpers import Core
from tests.pipeline.parts import Parts

FINAL = ("forwarded", "rejected", "duplicate")


def _claim(parts: Parts, name: str, body: bytes) -> Claimed:
    station = parts.layout.station("k1237")
    drop(station.inbox(TC), name, body)
    taken = claim(station, TC, name, new_file_id(datetime.now(parts.config.zone)))
    assert taken is not None
    return taken


def _sound(parts: Parts, count: int) -> list[Claimed]:
    """``count`` valid files of distinct reports, claimed."""
    return [_claim(parts, d1001_name(day(back)), d1001_body(day(back))) for back in range(1, count + 1)]


def _events(parts: Parts) -> dict[str, list[str]]:
    """Each file_id's history events, in order (the lines written whole so far)."""
    by_file: dict[str, list[str]] = {}
    for path in sorted(parts.config.history.dir.glob("history-*.jsonl")):
        text = path.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines():
            event = json.loads(line)
            by_file.setdefault(event["file_id"], []).append(event["event"])
    return by_file


def _core(parts: Parts) -> Path:
    core = parts.config.routes["core-test"].path  # type: ignore[union-attr]
    assert isinstance(core, Path)
    return core


async def _take(parts: Parts, claims: list[Claimed]) -> int:
    """Hand ``claims`` over as the detector does; how many times ``done`` was called."""
    done = 0

    def one_done() -> None:
        nonlocal done
        done += 1

    await take(parts.pipeline, [("k1237", claimed) for claimed in claims], one_done)
    return done


def _spy(parts: Parts, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many files each ``forwarded_together`` call recorded: the batch went on as one unit."""
    sizes: list[int] = []
    recorder = parts.pipeline.recorder
    real = recorder.forwarded_together

    def counted(files: Sequence[Checked], where: Mapping[str, str]) -> Awaitable[dict[str, Exception]]:
        sizes.append(len(files))
        return real(files, where)

    monkeypatch.setattr(recorder, "forwarded_together", counted)
    return sizes


async def test_a_claimed_batch_goes_on_together_and_each_file_ends_once(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    sound = _sound(parts, TOGETHER_FROM)
    bom = _claim(parts, d1001_name(day(60)), b"\xef\xbb\xbf" + d1001_body(day(60)))
    again = _claim(parts, sound[0].name, d1001_body(day(1)))  # the same file again, claimed with it
    large = _claim(parts, d1001_name(day(61)), d1001_body(day(61), rows=2000))  # > 64 KiB: the one-file way
    sizes = _spy(parts, monkeypatch)

    assert await _take(parts, [*sound, bom, again, large]) == len(sound) + 3

    assert sizes == [len(sound)]
    ends = {file_id: [e for e in events if e in FINAL] for file_id, events in _events(parts).items()}
    for file in [*sound, large]:
        assert ends[file.file_id] == ["forwarded"]
        assert (_core(parts) / file.name).is_file()
        row = parts.store.get(file.file_id)
        assert row is not None and row.state is State.FORWARDED
    assert ends[bom.file_id] == ["rejected"] and ends[again.file_id] == ["duplicate"]
    outbox = parts.layout.station("k1237").outbox(TC)
    assert (outbox / bom.name.replace(".TXT", "_BAD.TXT")).read_text().startswith(f"{bom.name}|BAD|")
    assert len(list(outbox.glob("*_OK.TXT"))) == len(sound) + 1  # the duplicate's receipt is its original's
    work = parts.layout.station("k1237").state_dir(Spool.WORK, TC)
    assert not [p for p in work.iterdir() if p.is_file()]


async def test_a_file_the_core_refuses_leaves_the_batch_and_is_rejected_alone(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = _sound(parts, TOGETHER_FROM + 1)
    taken = claims[5]
    _core(parts).mkdir(parents=True, exist_ok=True)
    (_core(parts) / taken.name).write_bytes(b"another file under this name\n")
    sizes = _spy(parts, monkeypatch)

    assert await _take(parts, claims) == len(claims)

    assert sizes == [len(claims) - 1]
    events = _events(parts)
    assert [e for e in events[taken.file_id] if e in FINAL] == ["rejected"]
    bad = parts.layout.station("k1237").outbox(TC) / taken.name.replace(".TXT", "_BAD.TXT")
    assert "CORE_REJECTED" in bad.read_text()
    assert Counter(e for one in events.values() for e in one if e in FINAL) == {
        "forwarded": len(claims) - 1,
        "rejected": 1,
    }


async def test_a_batch_whose_core_is_gone_is_deferred_and_sent_once_it_is_back(parts: Parts) -> None:
    claims = _sound(parts, TOGETHER_FROM)
    core = _core(parts)
    away = core.with_name("away")
    if core.exists():
        core.rename(away)
    going = asyncio.create_task(_take(parts, claims))

    await _until(lambda: all("deferred" in _events(parts).get(c.file_id, []) for c in claims), "deferred")
    if away.exists():
        away.rename(core)
    else:
        core.mkdir(parents=True)
    assert await asyncio.wait_for(going, timeout=30) == len(claims)

    for file in claims:
        ends = [e for e in _events(parts)[file.file_id] if e in (*FINAL, "deferred")]
        assert ends == ["deferred", "forwarded"]
        assert (core / file.name).is_file()


def _d2001_row(date: str) -> bytes:
    return f"{ORG}|SQ0000000001|0|ZH00000001|000001|020|1.00||{date}|101010||{date}\n".encode()


def _d3006_zip(parts: Parts, *, broken: bool) -> tuple[Claimed, str, bytes]:
    """A D3006 ZIP, claimed, and the TXT that goes with it (with a broken row if ``broken``)."""
    date = yesterday()
    stem = f"CISP-{ORG}_D3006_V01_1_{date}_01_Q"
    content = b"%PDF-1.4 tiny"
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("report.pdf", content)
    digest = hashlib.sha256(content).hexdigest()
    row = f"{ORG}|FJ001|A|01|report.pdf|{len(content)}|{digest}|{date}\n" + ("broken\n" if broken else "")
    return _claim(parts, f"{stem}.ZIP", packed.getvalue()), stem, row.encode()


@pytest.mark.parametrize("broken", [False, True], ids=["sound", "rejected"])
async def test_a_txt_whose_zip_waits_is_paired_with_it_from_a_batch(parts: Parts, broken: bool) -> None:
    zipped, stem, txt = _d3006_zip(parts, broken=broken)
    assert await _take(parts, [zipped]) == 1
    assert parts.pipeline.waiting  # the ZIP waits for its TXT
    lead = _claim(parts, f"{stem}.TXT", txt)

    assert await _take(parts, [lead, *_sound(parts, TOGETHER_FROM - 1)]) == TOGETHER_FROM

    assert not parts.pipeline.waiting
    ends = {one.file_id: [e for e in _events(parts)[one.file_id] if e in FINAL] for one in (zipped, lead)}
    assert ends == {one.file_id: ["rejected" if broken else "forwarded"] for one in (zipped, lead)}
    outbox = parts.layout.station("k1237").outbox(TC)
    assert sorted(p.name for p in outbox.glob(f"{stem}*")) == [f"{stem}_{'BAD' if broken else 'OK'}.TXT"]


async def test_files_a_window_holds_leave_the_batch_and_are_held(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    stations = dict(parts.config.stations)
    stations["k1237"] = stations["k1237"].model_copy(update={"environment": "production", "windows": True})
    config = parts.config.model_copy(update={"stations": stations})
    calendar = Calendar(config.holidays, config.workdays)
    settings = Settings.of(config, calendar, parts.pipeline.settings().forwarders)
    monkeypatch.setattr(parts.pipeline, "settings", lambda: settings)
    noon = datetime(2026, 12, 7, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai"))  # a Monday, in the midday window
    assert calendar.is_trading_day(noon.date())
    monkeypatch.setattr(parts.pipeline, "now", lambda: noon)
    daily = [  # D2001 is a daily table: held in the window
        _claim(parts, f"CISP-{ORG}_D2001_V01_1_{day(back)}_01_Q.TXT", _d2001_row(day(back)))
        for back in range(1, TOGETHER_FROM + 1)
    ]
    sizes = _spy(parts, monkeypatch)

    assert await _take(parts, daily) == len(daily)

    assert sizes == []
    for file in daily:
        assert [e for e in _events(parts)[file.file_id] if e in (*FINAL, "held")] == ["held"]
        assert not (_core(parts) / file.name).exists()
        row = parts.store.get(file.file_id)
        assert row is not None and row.state is State.HELD
    parts.pipeline.stopping.set()  # the held files' release tasks end


async def test_a_batch_for_an_http_core_is_sent_file_by_file(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = Core()
    try:
        route = HttpRoute(type="http", url=f"{core.url}/files")
        config = parts.config.model_copy(update={"routes": {"core-test": route}})
        forwarders = {"core-test": make_forwarder(route)}
        settings = Settings.of(config, Calendar(config.holidays, config.workdays), forwarders)
        monkeypatch.setattr(parts.pipeline, "settings", lambda: settings)
        claims = _sound(parts, TOGETHER_FROM)
        sizes = _spy(parts, monkeypatch)

        assert await _take(parts, claims) == len(claims)

        assert sizes == []  # every file left the batch for its own request
        assert len(core.complete_requests()) == len(claims)
        for file in claims:
            assert [e for e in _events(parts)[file.file_id] if e in FINAL] == ["forwarded"]
        await forwarders["core-test"].aclose()
    finally:
        core.stop()


async def _until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"no {what} after {timeout} s"
        await asyncio.sleep(0.05)
