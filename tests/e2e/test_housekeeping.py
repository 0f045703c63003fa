"""Feedback delivery and retention through the running daemon."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from harness.daemon import ORG, TC, ZONE, Gateway, wait_for
from spool.tree import remove_tree


def test_core_feedback_reaches_the_institutions_outbox(gateway: Gateway) -> None:
    feedback = gateway.root / "feedback"
    feedback.mkdir()
    routes = {
        "core-test": {"type": "directory", "path": "core/k1237", "feedback": "feedback"},
        "core-prod": {"type": "directory", "path": "core/k6666"},
    }
    gateway.write_config(routes=routes)
    gateway.start()
    name = f"CISP-{ORG}_D1001_V01_1_20241031_01_Q_BAD.TXT"
    (feedback / name).write_bytes("平台校验未通过\n".encode())
    (feedback / "garbage.TXT").write_bytes(b"?")
    wait_for(lambda: (gateway.outbox() / name).exists(), timeout=30, what="the feedback in out/")
    assert (gateway.outbox() / name).read_text(encoding="utf-8") == "平台校验未通过\n"
    wait_for(lambda: not any(feedback.iterdir()), timeout=30, what="the feedback dir to empty")
    events = [e for e in gateway.events() if e["event"] == "feedback"]
    assert {e["transfer_code"] for e in events} == {TC, None}
    assert list((gateway.spool / "k1237" / ".gateway" / "quarantine").rglob("*garbage.TXT"))


def test_old_archive_days_are_swept_at_start(gateway: Gateway) -> None:
    gateway.drain()  # the spool's first run makes its ledger (a ledger missing later is refused)
    old = (datetime.now(ZONE) - timedelta(days=400)).strftime("%Y%m%d")
    kept = (datetime.now(ZONE) - timedelta(days=3)).strftime("%Y%m%d")
    for day in (old, kept):
        folder = gateway.spool / "k1237" / ".gateway" / "archive" / day / TC
        folder.mkdir(parents=True)
        (folder / f"{day}-000000-000000-0000.X.TXT").write_bytes(b"x")
    gateway.drain()
    archive = gateway.spool / "k1237" / ".gateway" / "archive"
    assert sorted(p.name for p in archive.iterdir()) == [kept]


def test_a_deep_tree_in_quarantine_does_not_stop_the_sweep(gateway: Gateway) -> None:
    """Issue 19: a directory nested 1,500 levels, quarantined, ended every sweep with RecursionError:
    nothing else was removed, on any station, and no old history file either."""
    gateway.drain()
    old = (datetime.now(ZONE) - timedelta(days=500)).strftime("%Y%m%d")
    deep = gateway.spool / "k1237" / ".gateway" / "quarantine" / old / TC / f"{old}-000000-000000-0000.DEEP"
    deep.mkdir(parents=True)
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    other = gateway.spool / "k6666" / ".gateway" / "archive" / old / TC
    other.mkdir(parents=True)
    (other / f"{old}-000000-000000-0001.X.TXT").write_bytes(b"x")
    history = gateway.root / "history" / f"history-{old}.jsonl"
    history.write_bytes(b"")
    try:
        gateway.drain()
        assert not deep.exists() and not other.exists() and not history.exists()
        assert "RecursionError" not in gateway.log()
    finally:
        if deep.exists():
            remove_tree(deep)
