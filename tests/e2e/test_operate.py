"""Operator commands on a real spool: ``status``, ``history`` (filters, --json, --follow) and ``replay``."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.daemon import (
    ORG,
    TC,
    ZONE,
    Gateway,
    d1001_body,
    d1001_name,
    drop,
    launch,
    receipt_head,
    wait_for,
    yesterday,
)
from tests.conftest import REPO, base_config
from tests.forward.helpers import free_port

OTHER_ORG, OTHER_TC = "41220000", "TC41220000"


def enum_body(rows: int = 2) -> bytes:
    """D1001 rows whose JGLX (E(01,02,03)) is 09."""
    return (f"{ORG}|示例基金|91110000100000000X|09|北京市||||{yesterday()}\n" * rows).encode()


def cli(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return gateway.command(*args[:1], "-c", str(gateway.config_path), *args[1:], timeout=60)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# -- status ---------------------------------------------------------------------------------------------


def test_status_counts_waiting_deferred_and_quarantined_per_station(gateway: Gateway) -> None:
    routes = base_config(gateway.root)["routes"]  # k6666's core is down: its file stays deferred
    routes["core-prod"] = {
        "type": "http",
        "url": f"http://127.0.0.1:{free_port()}",
        "max_backoff_seconds": 0.2,
    }
    gateway.write_config(routes=routes)
    launch(gateway)
    good, bad, prod = d1001_name(part=1), d1001_name(part=2), d1001_name(part=3)
    drop(gateway.inbox(), good, d1001_body())
    drop(gateway.inbox(), bad, b"\xef\xbb\xbf" + d1001_body())
    drop(gateway.inbox("k6666"), prod, d1001_body())
    wait_for(lambda: {good, bad} <= gateway.outcomes().keys(), timeout=30, what="the k1237 outcomes")
    wait_for(
        lambda: any(e["event"] == "deferred" and e["name"] == prod for e in gateway.events()),
        timeout=30,
        what="the k6666 deferral",
    )
    assert gateway.stop() == 0  # the deferred file stays in deferred/ for the next start

    waiting = [d1001_name(part=p) for p in (4, 5, 6)]
    for name in waiting:
        drop(gateway.inbox(), name, d1001_body())
    hour_ago = time.time() - 3600
    os.utime(gateway.inbox() / waiting[0], (hour_ago, hour_ago))
    (gateway.inbox() / f".{d1001_name(part=7)}.part").write_bytes(b"being written")  # not waiting yet
    drop(gateway.inbox("k6666"), d1001_name(part=8), d1001_body())

    result = cli(gateway, "status", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["station"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"k1237", "k6666"}
    test, production = rows["k1237"], rows["k6666"]
    assert (test["waiting"], test["work"], test["deferred"], test["held"]) == (3, 0, 0, 0)
    assert test["quarantined_today"] == 1
    assert 3600 <= test["oldest_waiting_seconds"] < 3700
    assert (production["waiting"], production["work"], production["deferred"], production["held"]) == (
        1,
        0,
        1,
        0,
    )
    assert production["quarantined_today"] == 0
    assert 0 <= production["oldest_waiting_seconds"] < 600

    text = cli(gateway, "status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:2] == ["station", "waiting"]
    table = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert table["k1237"][:5] == ["3", "0", "0", "0", "1"] and table["k1237"][5].endswith("s")
    assert table["k6666"][:5] == ["1", "0", "1", "0", "0"]


# -- history --------------------------------------------------------------------------------------------


def drained_spool(gateway: Gateway) -> dict[str, str]:
    """Two institutions on two stations, one file rejected; everything drained. Returns role -> name."""
    names = {
        "ok": d1001_name(part=1),
        "bom": d1001_name(part=2),
        "other": d1001_name(org=OTHER_ORG),
        "prod": d1001_name(part=3),
    }
    drop(gateway.inbox(), names["ok"], d1001_body())
    drop(gateway.inbox(), names["bom"], b"\xef\xbb\xbf" + d1001_body())
    drop(gateway.inbox(tc=OTHER_TC), names["other"], d1001_body(org=OTHER_ORG))
    drop(gateway.inbox("k6666"), names["prod"], d1001_body())
    gateway.drain()
    outcomes = gateway.outcomes()
    assert outcomes == {
        names["ok"]: ["forwarded"],
        names["bom"]: ["rejected"],
        names["other"]: ["forwarded"],
        names["prod"]: ["forwarded"],
    }
    return names


def test_history_filters_and_json(gateway: Gateway) -> None:
    names = drained_spool(gateway)
    everything = gateway.events()

    result = cli(gateway, "history", "--json")
    assert result.returncode == 0, result.stderr
    listed = json_lines(result.stdout)
    assert [(e["file_id"], e["event"]) for e in listed] == [(e["file_id"], e["event"]) for e in everything]

    rejected = json_lines(cli(gateway, "history", "--status", "rejected", "--json").stdout)
    assert [(e["name"], e["event"]) for e in rejected] == [(names["bom"], "rejected")]
    assert rejected[0]["findings"][0]["code"] == "BOM_PRESENT"

    glob = json_lines(cli(gateway, "history", "--name", f"*-{OTHER_ORG}_*", "--json").stdout)
    assert {e["name"] for e in glob} == {names["other"]}
    assert [e["event"] for e in glob] == ["received", "forwarded"]
    substring = json_lines(cli(gateway, "history", "--name", "d1001_v01_2_", "--json").stdout)
    assert {e["name"] for e in substring} == {names["bom"]}  # case-insensitive substring

    other = json_lines(cli(gateway, "history", "--institution", OTHER_ORG, "--json").stdout)
    assert other and {e["institution"] for e in other} == {OTHER_ORG}
    assert (names["other"], "forwarded") in {(e["name"], e["event"]) for e in other}

    both = json_lines(cli(gateway, "history", "--institution", ORG, "--status", "forwarded", "--json").stdout)
    assert sorted((e["station"], e["name"]) for e in both) == sorted(
        [("k1237", names["ok"]), ("k6666", names["prod"])]
    )
    none = cli(gateway, "history", "--institution", "49990000", "--json")
    assert none.returncode == 0 and none.stdout == ""

    text = cli(gateway, "history", "--status", "forwarded")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 3 and all("forwarded" in line for line in lines)
    assert {n for n in names.values() if any(n in line for line in lines)} == {
        names["ok"],
        names["other"],
        names["prod"],
    }


def test_history_by_institution_table_and_date_includes_the_received_event(gateway: Gateway) -> None:
    """Spec 12: every event carries institution, table, date and batch, and history is queryable by them.

    A ``received`` event is a file's only event while it is validated or waits for its ZIP partner (up to
    ``pair_timeout``): an operator asking ``history --institution X`` must see it there too.
    """
    names = drained_spool(gateway)
    name, date = names["other"], yesterday()
    received = [e for e in gateway.events() if e["name"] == name and e["event"] == "received"]
    assert len(received) == 1
    for args in (("--institution", OTHER_ORG), ("--table", "D1001"), ("--date", date)):
        found = json_lines(cli(gateway, "history", *args, "--name", name, "--json").stdout)
        assert [e["event"] for e in found] == ["received", "forwarded"], (args, received[0])
    facts = {k: received[0][k] for k in ("institution", "table", "date", "batch", "mode")}
    assert facts == {"institution": OTHER_ORG, "table": "D1001", "date": date, "batch": "01", "mode": "Q"}


def test_history_follow_prints_new_events_as_they_happen(gateway: Gateway) -> None:
    drained_spool(gateway)
    old = {e["file_id"] for e in gateway.events()}
    launch(gateway)
    errors = (gateway.root / "follow.err").open("w")
    # -n 0: no recent events first (as tail -f -n 0), only what comes after the start
    config = str(gateway.config_path)
    args = ("history", "-c", config, "--follow", "-n", "0", "--json", "--status", "forwarded")
    follower = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for text in follower.stdout or ():
            lines.put(text)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        dropped: list[str] = []
        line = None
        time.sleep(0.5)  # about when the follower has started (the loop copes with a slower start)
        for part in range(4, 10):  # follow starts at the end of the history as it is when it starts:
            name = d1001_name(part=part)  # keep dropping until one file comes after that moment
            drop(gateway.inbox(), name, d1001_body())
            dropped.append(name)
            try:
                line = lines.get(timeout=2)
                break
            except queue.Empty:
                continue
        assert line is not None, "history --follow printed nothing"
        event = json.loads(line)
        assert event["event"] == "forwarded" and event["name"] in dropped
        assert event["file_id"] not in old, "follow must start at the end, not replay old events"
    finally:
        follower.send_signal(signal.SIGINT)  # Ctrl-C ends it cleanly
        code = follower.wait(timeout=15)
        reader.join(5)
        errors.close()
        if follower.stdout is not None:
            follower.stdout.close()
    assert code == 0
    assert "Traceback" not in (gateway.root / "follow.err").read_text()
    assert gateway.stop() == 0


# -- replay ---------------------------------------------------------------------------------------------


def quarantined_path(gateway: Gateway, file_id: str, name: str) -> Path:
    today = datetime.now(ZONE).strftime("%Y%m%d")
    return gateway.spool / "k1237" / ".gateway" / "quarantine" / today / TC / f"{file_id}.{name}"


def test_replay_of_a_file_fixed_in_quarantine_forwards_it(gateway: Gateway) -> None:
    fixed_name, as_is_name = d1001_name(part=1), d1001_name(part=2)
    drop(gateway.inbox(), fixed_name, enum_body())
    drop(gateway.inbox(), as_is_name, enum_body())
    gateway.drain()
    (first,) = gateway.outcome_events(fixed_name)
    (as_is,) = gateway.outcome_events(as_is_name)
    assert first["event"] == as_is["event"] == "rejected"
    assert first["findings"][0]["code"] == "FIELD_ENUM"
    old_id = first["file_id"]
    quarantined = quarantined_path(gateway, old_id, fixed_name)
    assert quarantined.is_file() and quarantined.read_bytes() == enum_body()

    fixed = d1001_body(rows=2)
    quarantined.write_bytes(fixed)  # the operator corrects JGLX in place
    result = cli(gateway, "replay", old_id)
    assert result.returncode == 0, result.stderr
    assert (gateway.inbox() / fixed_name).read_bytes() == fixed and not quarantined.exists()
    replayed = [e for e in gateway.events() if e["event"] == "replayed"]
    assert [(e["file_id"], e["name"]) for e in replayed] == [(old_id, fixed_name)]
    assert cli(gateway, "replay", as_is["file_id"]).returncode == 0  # untouched: rejected again

    gateway.drain()
    assert gateway.outcomes()[fixed_name] == ["rejected", "forwarded"]
    (forwarded,) = [e for e in gateway.outcome_events(fixed_name) if e["event"] == "forwarded"]
    new_id = forwarded["file_id"]
    assert new_id != old_id
    assert [e["event"] for e in gateway.events() if e["file_id"] == old_id] == [
        "received",
        "rejected",
        "replayed",
    ]
    assert [e["event"] for e in gateway.events() if e["file_id"] == new_id] == ["received", "forwarded"]
    assert (gateway.core() / fixed_name).read_bytes() == fixed
    head = receipt_head(gateway.outbox() / f"{fixed_name[:-4]}_OK.TXT")
    assert head[1] == "OK" and head[5:] == [new_id, "forwarded"]

    again = gateway.outcome_events(as_is_name)
    assert [e["event"] for e in again] == ["rejected", "rejected"]
    assert again[1]["file_id"] != as_is["file_id"] and again[1]["findings"][0]["code"] == "FIELD_ENUM"
    assert not (gateway.core() / as_is_name).exists()

    gone = cli(gateway, "replay", old_id)  # no longer in quarantine
    assert gone.returncode == 1 and old_id in gone.stderr
