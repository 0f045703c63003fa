"""Reporting windows and deadlines (spec 8) through the real daemon, on a shifted clock."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.daemon import ORG, TC, Gateway, drop, launch, wait_for

TRADING_DAY_1459 = "2024-10-08T14:59:56+08:00"  # a trading day, four seconds before the window ends


def d2001(date: str = "20241007") -> tuple[str, bytes]:
    name = f"CISP-{ORG}_D2001_V01_1_{date}_01_Q.TXT"
    row = f"{ORG}|SQ1|1|ZH1|000001|022|1000.00||{date}|093000||{date}\n"
    return name, row.encode()


def production(**route: Any) -> dict[str, Any]:
    return {
        "stations": {
            "k1237": {"environment": "test", "route": "core-test"},
            "k6666": {"environment": "production", "route": "core-prod", "windows": True},
        },
        "routes": {
            "core-test": {"type": "directory", "path": "core/k1237"},
            "core-prod": {"type": "directory", "path": "core/k6666", **route},
        },
    }


def test_daily_file_held_in_window_and_forwarded_at_15_even_across_a_restart(gateway: Gateway) -> None:
    gateway.write_config(**production())
    os.environ["FDEP_GATEWAY_NOW"] = TRADING_DAY_1459
    try:
        gateway.start()
        name, body = d2001()
        drop(gateway.inbox("k6666"), name, body)
        wait_for(lambda: any(e["event"] == "held" for e in gateway.events()), what="the hold")
        # the event comes first, then the receipt, then the move to held/: wait for the last step
        wait_for(lambda: len(held_files(gateway)) == 1, timeout=10, what="the file in held/")
        receipt = gateway.receipt(name, ok=True, station="k6666").splitlines()
        assert receipt[0].split("|")[6] == "held"
        assert "HELD_WINDOW" in receipt[1] and "2024-10-08 15:00" in receipt[1]
        held = list((gateway.spool / "k6666" / ".gateway" / "held" / TC).iterdir())
        assert len(held) == 1 and not (gateway.core("k6666") / name).exists()
        gateway.kill()
        os.environ["FDEP_GATEWAY_NOW"] = "2024-10-08T15:00:02+08:00"
        gateway.start()
        wait_for(lambda: name in gateway.outcomes(), timeout=30, what="the release")
    finally:
        del os.environ["FDEP_GATEWAY_NOW"]
    assert gateway.outcomes()[name] == ["forwarded"]
    assert (gateway.core("k6666") / name).read_bytes() == body
    kinds = [e["event"] for e in gateway.events() if e["name"] == name]
    assert kinds == ["received", "held", "forwarded"]


def test_route_that_rejects_in_window(gateway: Gateway) -> None:
    gateway.write_config(**production(on_window="reject"))
    os.environ["FDEP_GATEWAY_NOW"] = "2024-10-08T12:00:00+08:00"
    try:
        name, body = d2001()
        drop(gateway.inbox("k6666"), name, body)
        gateway.drain()
    finally:
        del os.environ["FDEP_GATEWAY_NOW"]
    (event,) = gateway.outcome_events(name)
    assert event["event"] == "rejected" and event["findings"][0]["code"] == "WINDOW_CLOSED"
    assert "2024-10-08 15:00" in event["findings"][0]["hint_zh"]


def test_test_station_and_make_up_saturday_are_not_held(gateway: Gateway) -> None:
    gateway.write_config(**production())
    os.environ["FDEP_GATEWAY_NOW"] = "2024-10-12T12:00:00+08:00"  # make-up working Saturday: no trading
    try:
        name, body = d2001()
        drop(gateway.inbox("k6666"), name, body)
        gateway.drain()
    finally:
        del os.environ["FDEP_GATEWAY_NOW"]
    assert gateway.outcomes()[name] == ["forwarded"]


def test_monthly_table_after_deadline_is_accepted_and_flagged_late(gateway: Gateway) -> None:
    os.environ["FDEP_GATEWAY_NOW"] = "2024-10-15T11:31:00+08:00"  # 7th working day of Oct 2024, 11:31
    try:
        name = f"CISP-{ORG}_D1001_V01_1_20240930_01_Q.TXT"
        drop(gateway.inbox(), name, f"{ORG}|机构|91110000100000000X|01|||||20240930\n".encode())
        gateway.drain()
    finally:
        del os.environ["FDEP_GATEWAY_NOW"]
    (event,) = gateway.outcome_events(name)
    assert event["event"] == "forwarded"
    assert [f["code"] for f in event["findings"]] == ["LATE"]
    assert "2024-10-15 11:30" in event["findings"][0]["message_zh"]
    assert "LATE" in gateway.receipt(name, ok=True)


# -- the running daemon releases at 15:00; a restart inside the window keeps the hold (issue 6) ---------

WINDOW_END = datetime.fromisoformat("2024-10-08T15:00:00+08:00")


def held_files(gateway: Gateway) -> list[Path]:
    held = gateway.spool / "k6666" / ".gateway" / "held" / TC
    return sorted(held.iterdir()) if held.is_dir() else []


def event_time(gateway: Gateway, name: str, kind: str) -> datetime:
    (event,) = [e for e in gateway.events() if e["name"] == name and e["event"] == kind]
    return datetime.fromisoformat(event["ts"])


def assert_held_until_15(gateway: Gateway, name: str) -> None:
    """Held: the receipt (OK, status held) says until 15:00; the file waits in held/, not at the core."""
    wait_for(lambda: len(held_files(gateway)) == 1, timeout=10, what="the file in held/")
    receipt = gateway.receipt(name, ok=True, station="k6666").splitlines()
    assert receipt[0].split("|")[6] == "held", receipt
    assert "HELD_WINDOW" in receipt[1] and "2024-10-08 15:00" in receipt[1], receipt
    assert held_files(gateway)[0].name.endswith(f".{name}")
    assert not (gateway.core("k6666") / name).exists()
    assert name not in gateway.outcomes()


def assert_released_by_the_running_daemon(gateway: Gateway, name: str, body: bytes, offset: int) -> None:
    """Forwarded at 15:00 (gateway clock) by the run whose log starts at ``offset``, without a restart."""
    process = gateway.process
    assert process is not None
    wait_for(lambda: name in gateway.outcomes(), timeout=20, what="the release at 15:00")
    # the event comes first, then the receipt, then the move out of held/: wait for the last step
    wait_for(lambda: held_files(gateway) == [], timeout=10, what="the file to leave held/")
    assert process.poll() is None, "the daemon exited instead of releasing the file"
    assert gateway.log()[offset:].count("gateway.started") == 1  # the same run, no restart
    forwarded_at = event_time(gateway, name, "forwarded")
    assert WINDOW_END <= forwarded_at < WINDOW_END + timedelta(seconds=5), forwarded_at
    assert gateway.outcomes()[name] == ["forwarded"]
    assert (gateway.core("k6666") / name).read_bytes() == body
    receipt = gateway.receipt(name, ok=True, station="k6666").splitlines()
    assert receipt[0].split("|")[6] == "forwarded", receipt  # the held receipt was replaced
    kinds = [e["event"] for e in gateway.events() if e["name"] == name]
    assert kinds == ["received", "held", "forwarded"]
    assert gateway.stop() == 0


@pytest.mark.slow
def test_running_daemon_releases_the_held_file_at_15_without_a_restart(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway.write_config(**production())
    monkeypatch.setenv("FDEP_GATEWAY_NOW", "2024-10-08T14:59:55+08:00")  # a trading day, 5 s to go
    offset = launch(gateway)
    name, body = d2001()
    drop(gateway.inbox("k6666"), name, body)
    wait_for(lambda: any(e["event"] == "held" for e in gateway.events()), timeout=10, what="the hold")
    assert event_time(gateway, name, "held") < WINDOW_END
    assert_held_until_15(gateway, name)
    assert_released_by_the_running_daemon(gateway, name, body, offset)


@pytest.mark.slow
def test_restart_inside_the_window_keeps_the_file_held_then_releases_it(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway.write_config(**production())
    monkeypatch.setenv("FDEP_GATEWAY_NOW", "2024-10-08T12:00:00+08:00")
    launch(gateway)
    name, body = d2001()
    drop(gateway.inbox("k6666"), name, body)
    wait_for(lambda: any(e["event"] == "held" for e in gateway.events()), timeout=10, what="the hold")
    assert_held_until_15(gateway, name)
    assert gateway.stop() == 0
    assert held_files(gateway) != []  # a stop leaves it held, for the next run

    # restarted at 14:00, still inside the window: recovery takes the file up and holds it again
    monkeypatch.setenv("FDEP_GATEWAY_NOW", "2024-10-08T14:00:00+08:00")
    offset = launch(gateway)
    assert '"resumed": 1' in gateway.log()[offset:]
    time.sleep(3)  # recovery decided long since; a wrong release would show within this (> a rescan)
    assert gateway.process is not None and gateway.process.poll() is None
    assert_held_until_15(gateway, name)
    assert [e["event"] for e in gateway.events() if e["name"] == name] == ["received", "held"]
    assert gateway.stop() == 0

    # and restarted once more shortly before 15:00: the running daemon releases it at 15:00
    monkeypatch.setenv("FDEP_GATEWAY_NOW", "2024-10-08T14:59:55+08:00")
    offset = launch(gateway)
    assert_held_until_15(gateway, name)
    assert_released_by_the_running_daemon(gateway, name, body, offset)


@pytest.mark.parametrize(
    ("now", "late"),
    [
        ("2024-10-09T23:59:00+08:00", False),  # T+2 trading days after 30 Sep, across National Day
        ("2024-10-10T00:00:30+08:00", True),
    ],
)
def test_daily_table_after_its_t_plus_2_deadline_is_flagged_late(
    gateway: Gateway, now: str, late: bool
) -> None:
    os.environ["FDEP_GATEWAY_NOW"] = now
    try:
        name, body = d2001("20240930")
        drop(gateway.inbox(), name, body)
        gateway.drain()
    finally:
        del os.environ["FDEP_GATEWAY_NOW"]
    (event,) = gateway.outcome_events(name)
    assert event["event"] == "forwarded"
    codes = [f["code"] for f in event["findings"]]
    receipt = gateway.receipt(name, ok=True)
    if not late:
        assert codes == [] and "LATE" not in receipt
        return
    assert codes == ["LATE"]
    assert "2024-10-10 00:00" in event["findings"][0]["message_zh"]
    assert "补报" in event["findings"][0]["hint_zh"]  # apply for a late or supplementary report
    assert "LATE" in receipt and "迟报" in receipt
