"""The daemon as a real process on a real spool: writers, outcomes, receipts, history, lock, config."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from harness.daemon import (
    ORG,
    TC,
    Gateway,
    d1001_body,
    d1001_name,
    drop,
    state_files,
    wait_for,
    yesterday,
)


def test_renamed_in_file_is_forwarded_with_receipt_and_history(gateway: Gateway) -> None:
    name, body = d1001_name(), d1001_body(rows=3)
    drop(gateway.inbox(), name, body)
    gateway.drain()
    assert (gateway.core() / name).read_bytes() == body
    assert not (gateway.inbox() / name).exists()
    head = gateway.receipt(name, ok=True).splitlines()[0].split("|")
    assert head[:4] == [name, "OK", "3", "0"] and head[6] == "forwarded"
    kinds = [e["event"] for e in gateway.events() if e["name"] == name]
    assert kinds == ["received", "forwarded"]
    forwarded = gateway.outcome_events(name)[0]
    assert forwarded["sha256"] == hashlib.sha256(body).hexdigest()
    assert forwarded["institution"] == ORG and forwarded["records"] == 3
    assert list((gateway.spool / "k1237" / ".gateway" / "archive").rglob(f"*.{name}"))


def test_bom_file_is_quarantined_with_reason_and_bad_receipt(gateway: Gateway) -> None:
    name = d1001_name()
    drop(gateway.inbox(), name, b"\xef\xbb\xbf" + d1001_body().replace(b"\n", b"\r\n"))
    gateway.drain()
    assert not (gateway.core() / name).exists()
    receipt = gateway.receipt(name, ok=False).splitlines()
    assert receipt[0].split("|")[1] == "BAD"
    assert receipt[1].split("|")[3] == "BOM_PRESENT"
    (event,) = gateway.outcome_events(name)
    assert event["event"] == "rejected" and event["findings"][0]["code"] == "BOM_PRESENT"
    assert "BOM" in event["message"] and "记事本" in event["message"]
    reasons = list((gateway.spool / "k1237" / ".gateway" / "quarantine").rglob("*.reason.json"))
    assert len(reasons) == 1 and "BOM_PRESENT" in reasons[0].read_text(encoding="utf-8")


def test_same_file_twice_is_a_duplicate_not_forwarded_again(gateway: Gateway) -> None:
    name, body = d1001_name(), d1001_body()
    drop(gateway.inbox(), name, body)
    gateway.drain()
    drop(gateway.inbox(), name, body)
    gateway.drain()
    assert gateway.outcomes()[name] == ["forwarded", "duplicate"]
    head, finding = gateway.receipt(name, ok=True).splitlines()
    assert head.split("|")[6] == "duplicate"
    assert finding.split("|")[3] == "DUPLICATE"  # spec 7: the receipt says so, with the first file's id
    assert sorted(p.name for p in gateway.core().iterdir()) == [name]


def test_lower_batch_after_higher_is_stale_and_higher_is_a_rereport(gateway: Gateway) -> None:
    second, first = d1001_name(batch=2), d1001_name(batch=1)
    drop(gateway.inbox(), second, d1001_body(name="第二批"))
    gateway.drain()
    drop(gateway.inbox(), first, d1001_body(name="第一批"))
    gateway.drain()
    third = d1001_name(batch=3)
    drop(gateway.inbox(), third, d1001_body(name="第三批"))
    gateway.drain()
    outcomes = gateway.outcomes()
    assert outcomes[second] == ["forwarded"]
    assert outcomes[first] == ["rejected"]
    assert outcomes[third] == ["forwarded"]
    (event,) = gateway.outcome_events(first)
    assert event["findings"][0]["code"] == "BATCH_STALE"


def test_transfer_code_cannot_send_another_institutions_file(gateway: Gateway) -> None:
    name = d1001_name(org="41220000")
    drop(gateway.inbox(), name, d1001_body(org="41220000"))
    gateway.drain()
    (event,) = gateway.outcome_events(name)
    assert event["event"] == "rejected"
    assert [f["code"] for f in event["findings"]] == ["ORG_MISMATCH"]
    assert not gateway.core().exists() or not any(gateway.core().iterdir())


def test_unregistered_mailbox_is_reported_and_quarantined(gateway: Gateway) -> None:
    name = d1001_name()
    drop(gateway.inbox(tc="TCNOBODY"), name, d1001_body())
    gateway.drain()
    (event,) = gateway.outcome_events(name)
    assert event["findings"][0]["code"] == "UNKNOWN_TRANSFER_CODE"


def test_symlink_and_fifo_are_moved_aside_unread(gateway: Gateway, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    inbox = gateway.inbox()
    (inbox / "LINK.TXT").symlink_to(secret)
    os.mkfifo(inbox / "PIPE.TXT")
    gateway.drain(timeout=60)
    outcomes = gateway.outcomes()
    assert outcomes["LINK.TXT"] == ["rejected"] and outcomes["PIPE.TXT"] == ["rejected"]
    for name in ("LINK.TXT", "PIPE.TXT"):
        (event,) = gateway.outcome_events(name)
        assert event["findings"][0]["code"] == "NOT_REGULAR_FILE"
    assert secret.read_text() == "do not read"
    assert not any(inbox.iterdir())


def test_in_place_writers_cp_and_rsync(gateway: Gateway, tmp_path: Path) -> None:
    gateway.start()
    sources = []
    for part in (1, 2):
        name = d1001_name(part=part)
        source = tmp_path / name
        source.write_bytes(d1001_body(rows=50))
        sources.append(source)
    subprocess.run(["cp", str(sources[0]), str(gateway.inbox())], check=True)
    if shutil.which("rsync"):
        subprocess.run(["rsync", "--inplace", str(sources[1]), str(gateway.inbox())], check=True)
    else:
        pytest.skip("rsync is not installed (CI installs it)")
    wait_for(lambda: len(gateway.outcomes()) == 2, timeout=30, what="both files")
    for source in sources:
        assert gateway.outcomes()[source.name] == ["forwarded"]
        assert (gateway.core() / source.name).read_bytes() == source.read_bytes()


def test_slow_in_place_writer_is_not_taken_early(gateway: Gateway) -> None:
    gateway.start()
    name = d1001_name()
    rows = d1001_body(rows=8).splitlines(keepends=True)
    with (gateway.inbox() / name).open("wb") as out:
        for row in rows:  # ~4 s of writing, longer than settle_seconds between the first bytes and the end
            out.write(row)
            out.flush()
            time.sleep(0.5)
    wait_for(lambda: name in gateway.outcomes(), timeout=30, what="the slow file")
    assert gateway.outcomes()[name] == ["forwarded"]
    assert (gateway.core() / name).read_bytes() == b"".join(rows)


def test_attachment_txt_without_zip_times_out(gateway: Gateway) -> None:
    gateway.write_config(pair_timeout_seconds=2)
    gateway.start()
    date = yesterday()
    name = f"CISP-{ORG}_D3006_V01_1_{date}_01_Q.TXT"
    row = f"{ORG}|FJ001|A|01|report.pdf|3||{date}\n"
    drop(gateway.inbox(), name, row.encode())
    wait_for(lambda: name in gateway.outcomes(), timeout=30, what="the pair timeout")
    (event,) = gateway.outcome_events(name)
    assert event["event"] == "rejected" and event["findings"][-1]["code"] == "ATTACHMENT_MISSING"


def test_attachment_pair_is_forwarded_together(gateway: Gateway, tmp_path: Path) -> None:
    import zipfile

    date = yesterday()
    stem = f"CISP-{ORG}_D3006_V01_1_{date}_01_Q"
    content = b"%PDF-1.4 tiny"
    digest = hashlib.sha256(content).hexdigest()
    archive = tmp_path / f"{stem}.ZIP"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("report.pdf", content)
    row = f"{ORG}|FJ001|A|01|report.pdf|{len(content)}|{digest}|{date}\n"
    drop(gateway.inbox(), f"{stem}.TXT", row.encode())
    drop(gateway.inbox(), f"{stem}.ZIP", archive.read_bytes())
    gateway.drain()
    outcomes = gateway.outcomes()
    assert outcomes[f"{stem}.TXT"] == ["forwarded"] and outcomes[f"{stem}.ZIP"] == ["forwarded"]
    assert (gateway.core() / f"{stem}.ZIP").read_bytes() == archive.read_bytes()
    for name in (f"{stem}.TXT", f"{stem}.ZIP"):  # each event names the file's own place at the core
        [event] = gateway.outcome_events(name)
        assert event["detail"]["core"].endswith(f"/{name}"), event["detail"]


def test_second_instance_refuses_the_same_spool(gateway: Gateway) -> None:
    gateway.start()
    second = gateway.command("run", "-c", str(gateway.config_path), timeout=30)
    assert second.returncode == 1
    assert "locked" in second.stderr or "another fdep-gateway" in second.stderr


def test_bad_config_exits_78_with_the_key_path(gateway: Gateway) -> None:
    gateway.write_config(settle_seconds="soon", bogus=1)
    result = gateway.command("run", "-c", str(gateway.config_path), timeout=30)
    assert result.returncode == 78
    assert "settle_seconds" in result.stderr and "bogus" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_exits_cleanly_and_sighup_reloads(gateway: Gateway) -> None:
    gateway.start()
    assert gateway.process is not None
    gateway.overrides["transfer_codes"] = {
        TC: {"institution": ORG, "stations": ["k1237", "k6666"]},
        "TCNEW": {"institution": "41230000", "stations": ["k1237"]},
    }
    gateway.write_config()
    gateway.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "config.reloaded" in gateway.log(), timeout=15, what="the reload")
    name = d1001_name(org="41230000")
    drop(gateway.inbox(tc="TCNEW"), name, d1001_body(org="41230000"))
    wait_for(lambda: name in gateway.outcomes(), timeout=30, what="a file on the new code")
    assert gateway.outcomes()[name] == ["forwarded"]
    gateway.config_path.write_text("stations: [\n")
    gateway.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "config.reload_rejected" in gateway.log(), timeout=15, what="the rejected reload")
    assert gateway.process.poll() is None
    assert gateway.stop() == 0


def test_two_txts_of_one_stem_and_one_zip_nothing_is_lost(gateway: Gateway, tmp_path: Path) -> None:
    import zipfile

    gateway.write_config(pair_timeout_seconds=3)
    gateway.start()
    date = yesterday()
    stem = f"CISP-{ORG}_D3006_V01_1_{date}_01_Q"
    row = f"{ORG}|FJ001|A|01|a.pdf|1||{date}\n".encode()
    drop(gateway.inbox(), f"{stem}.TXT", row)
    wait_for(lambda: "pair.waiting" in gateway.log(), what="the first TXT to wait")
    drop(gateway.inbox(), f"{stem}.TXT", row)
    wait_for(lambda: gateway.log().count("pair.waiting") == 2, what="the second TXT to wait")
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.pdf", b"x")
    drop(gateway.inbox(), f"{stem}.ZIP", archive.read_bytes())
    wait_for(lambda: len(gateway.outcome_events(f"{stem}.TXT")) == 2, timeout=30, what="both TXT outcomes")
    assert sorted(gateway.outcomes()[f"{stem}.TXT"]) == ["forwarded", "rejected"]
    assert gateway.outcomes()[f"{stem}.ZIP"] == ["forwarded"]
    rejected = next(e for e in gateway.outcome_events(f"{stem}.TXT") if e["event"] == "rejected")
    assert rejected["findings"][-1]["code"] == "ATTACHMENT_MISSING"


def test_link_core_gets_the_spool_file_and_quarantine_leaves_its_mode(
    gateway: Gateway, tmp_path: Path
) -> None:
    """hand_off: link; the ZIP of a pair is linked into the core first, then the core refuses the TXT
    (another file holds its name there): the pair is quarantined, and making the quarantined ZIP
    owner-only must not make the core's linked ZIP unreadable to the core."""
    import zipfile

    core = tmp_path / "core" / "k1237"
    routes = {
        "core-test": {"type": "directory", "path": str(core), "hand_off": "link"},
        "core-prod": {"type": "directory", "path": str(tmp_path / "core" / "k6666")},
    }
    gateway.write_config(routes=routes)
    date = yesterday()
    stem = f"CISP-{ORG}_D3006_V01_1_{date}_01_Q"
    content = b"%PDF-1.4 tiny"
    archive = tmp_path / f"{stem}.ZIP"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("report.pdf", content)
    row = f"{ORG}|FJ001|A|01|report.pdf|{len(content)}|{hashlib.sha256(content).hexdigest()}|{date}\n"
    core.mkdir(parents=True)
    (core / f"{stem}.TXT").write_bytes(b"another file under this name\n")
    zipped = drop(gateway.inbox(), f"{stem}.ZIP", archive.read_bytes())
    drop(gateway.inbox(), f"{stem}.TXT", row.encode())
    mode = stat.S_IMODE(zipped.stat().st_mode)
    gateway.drain()
    outcomes = gateway.outcomes()
    assert outcomes[f"{stem}.TXT"] == ["rejected"] and outcomes[f"{stem}.ZIP"] == ["rejected"]
    [quarantined] = [p for p in state_files(gateway, "quarantine") if p.name.endswith(f"{stem}.ZIP")]
    linked = core / f"{stem}.ZIP"
    assert linked.stat().st_ino == quarantined.stat().st_ino  # linked, not copied
    assert stat.S_IMODE(linked.stat().st_mode) == mode
