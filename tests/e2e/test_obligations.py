"""Obligations through the real daemon and the real command line, on a shifted clock around National
Day 2024: what the daemon accepted (a full first report, an empty incremental one, a re-report after a
rejection) is what ``due`` counts as received, and what it rejected is shown with its finding."""

from __future__ import annotations

import json
import os
import shutil

from harness.daemon import ORG, Gateway, drop, wait_for


def d2001(date: str, batch: int = 1, mode: str = "Q") -> str:
    return f"CISP-{ORG}_D2001_V01_1_{date}_{batch:02d}_{mode}.TXT"


def row(date: str) -> bytes:
    return f"{ORG}|SQ1|1|ZH1|000001|022|1000.00||{date}|093000||{date}\n".encode()


def drain_at(gateway: Gateway, now: str) -> None:
    os.environ["FDEP_GATEWAY_NOW"] = now
    try:
        gateway.drain()
    finally:
        del os.environ["FDEP_GATEWAY_NOW"]


def due(gateway: Gateway, *args: str) -> tuple[int, dict[tuple[str, str], dict[str, object]]]:
    result = gateway.command("due", "-c", str(gateway.config_path), "--json", "--station", "k1237", *args)
    assert result.returncode in (0, 1), result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return result.returncode, {(str(r["table"]), str(r["period"])): r for r in rows}


def test_due_counts_what_the_daemon_accepted(gateway: Gateway) -> None:
    gateway.write_config(
        transfer_codes={"TC41210000": {"institution": ORG, "stations": ["k1237"], "owes": ["D2001", "D1001"]}}
    )
    inbox = gateway.inbox()
    # 26 Sep: a full first report; 27 Sep: an empty incremental one (no changes that day); 30 Sep: a
    # report with a BOM (rejected), then its re-report as batch 02
    drop(inbox, d2001("20240926"), row("20240926"))
    drain_at(gateway, "2024-10-08T08:00:00+08:00")  # the first report must be full: it goes first
    drop(inbox, d2001("20240927", mode="Z"), b"")
    drop(inbox, d2001("20240930"), b"\xef\xbb\xbf" + row("20240930"))
    drain_at(gateway, "2024-10-08T09:00:00+08:00")
    code, found = due(gateway, "--date", "2024-09-30", "--now", "2024-10-08T10:00:00+08:00")
    daily = found[("D2001", "20240930")]
    assert (daily["state"], daily["last_finding"], daily["rejected_files"]) == ("rejected", "BOM_PRESENT", 1)
    assert found[("D1001", "202409")]["state"] == "pending"
    assert code == 0  # nothing missing or at risk yet: a timer stays quiet

    drop(inbox, d2001("20240930", batch=2), row("20240930"))
    drain_at(gateway, "2024-10-08T11:00:00+08:00")
    code, found = due(gateway, "--date", "2024-09-30", "--now", "2024-10-08T12:00:00+08:00")
    daily = found[("D2001", "20240930")]
    assert (daily["state"], daily["batch"], daily["forwarded"]) == ("received", "02", True)
    code, found = due(gateway, "--date", "2024-09-27", "--now", "2024-10-08T12:00:00+08:00")
    assert found[("D2001", "20240927")]["state"] == "received"  # the empty Z file counts
    assert code == 0

    # on 15 October at noon the monthly D1001 for September (due 11:30) never came: missing, exit 1
    code, found = due(gateway, "--date", "2024-09-26", "--now", "2024-10-15T12:00:00+08:00")
    assert found[("D2001", "20240926")]["state"] == "late"  # due by the end of 30 Sep, taken on 8 Oct
    assert found[("D1001", "202409")]["state"] == "missing"
    assert code == 1


def test_the_daily_housekeeping_writes_the_reconciliation_report(gateway: Gateway) -> None:
    gateway.write_config(
        transfer_codes={"TC41210000": {"institution": ORG, "stations": ["k1237"], "owes": ["D2001", "D1001"]}}
    )
    drop(gateway.inbox(), d2001("20240930"), row("20240930"))
    drain_at(gateway, "2024-10-08T09:00:00+08:00")
    shutil.rmtree(gateway.root / "reports")  # the drain's housekeeping wrote one too, maybe before the file
    os.environ["FDEP_GATEWAY_NOW"] = "2024-10-08T12:00:00+08:00"
    try:
        gateway.start()
        report = gateway.root / "reports" / "reconciliation-20240930.json"  # the last trading day's
        wait_for(lambda: report.exists(), timeout=30, what="the reconciliation report")
    finally:
        del os.environ["FDEP_GATEWAY_NOW"]
    document = json.loads(report.read_text(encoding="utf-8"))
    states = {(o["table"], o["period"]): o["state"] for o in document["institutions"][ORG]["obligations"]}
    # 30 Sep's D2001 came on 8 Oct (due by the end of the 9th); September's D1001 is due on 15 Oct
    assert states == {("D2001", "20240930"): "received", ("D1001", "202409"): "pending"}
    table = (gateway.root / "reports" / "reconciliation-20240930.csv").read_bytes().decode("utf-8-sig")
    assert table.splitlines()[0].startswith(
        "institution,name,station,transfer_code,table,period,deadline,state"
    )
