"""fsync failing under the daemon (libfiu LD_PRELOAD) and an HTTP core that drops connections."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from harness.daemon import (
    ZONE,
    Gateway,
    d1001_body,
    d1001_name,
    drop,
    launch,
    receipt_head,
    state_files,
    wait_for,
)
from tests.conftest import REPO, base_config
from tests.forward.helpers import Core, Reply


def days_ago(n: int) -> str:
    return (datetime.now(ZONE) - timedelta(days=n)).strftime("%Y%m%d")


FIU_PRELOAD = "/usr/lib/fiu/fiu_posix_preload.so"


def run_under_fiu(gateway: Gateway) -> None:
    """Start ``run`` under fiu-run (the POSIX preload, faults off until ``fiu-ctrl`` turns them on)."""
    gateway._log = (gateway.root / "daemon.log").open("ab")
    gateway.process = subprocess.Popen(
        ["fiu-run", "-x", sys.executable, "-m", "gateway", "run", "-c", str(gateway.config_path)],
        cwd=REPO,
        stdout=gateway._log,
        stderr=gateway._log,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def stored(gateway: Gateway, state: str) -> dict[str, Path]:
    """``<file_id>.<name>`` -> path of every file in a state directory (reason.json files left out)."""
    return {p.name: p for p in state_files(gateway, state) if not p.name.endswith(".reason.json")}


def check_acknowledged(gateway: Gateway, names: dict[str, bytes], *, settled: bool) -> dict[str, int]:
    """Every acknowledgement the daemon gave (outcome events, receipts) matches what it holds.

    - `forwarded`: the exact bytes are at the core under the name;
    - `rejected`: the file is not at the core, and it is in quarantine with its reason.json, byte-exact
      (or, before ``settled``, still in work/: the event is written before the move, which recovery
      finishes);
    - a receipt in out/: OK|forwarded or BAD|rejected, naming a file_id whose history has that outcome;
    - a dropped file without an outcome is still in in/, work/ or deferred/ (nothing lost).
    Returns how many of each were checked.
    """
    core = gateway.core()
    events = [e for e in gateway.events() if e["event"] in ("forwarded", "rejected", "duplicate")]
    assert {e["name"] for e in events} <= set(names), "an outcome for a file never dropped"
    assert all(e["event"] != "duplicate" for e in events), "no two dropped files are identical"
    quarantine, work = stored(gateway, "quarantine"), stored(gateway, "work")
    reasons = {p.name for p in state_files(gateway, "quarantine") if p.name.endswith(".reason.json")}
    outcome_of = {e["file_id"]: e["event"] for e in events}
    for event in events:
        name, file_id = event["name"], event["file_id"]
        if event["event"] == "forwarded":
            assert (core / name).read_bytes() == names[name], f"forwarded but not at the core: {name}"
        else:
            assert not (core / name).exists(), f"rejected but at the core: {name}"
            key = f"{file_id}.{name}"
            if key in quarantine:
                assert quarantine[key].read_bytes() == names[name], f"quarantined, not byte-exact: {name}"
                assert f"{file_id}.reason.json" in reasons, f"quarantined without its reason: {name}"
            else:
                assert not settled and key in work, f"rejected, in neither quarantine nor work/: {name}"
    receipts = sorted(p for p in gateway.outbox().iterdir() if not p.name.startswith("."))
    for path in receipts:
        head = receipt_head(path)
        assert (head[1], head[6]) in (("OK", "forwarded"), ("BAD", "rejected")), (path.name, head)
        assert outcome_of.get(head[5]) == head[6], f"{path.name} acknowledges {head[5]}: not in the history"
    outcome_names = {e["name"] for e in events}
    waiting = {p.name for state in ("work", "deferred") for p in state_files(gateway, state)}
    inbox = {p.name for p in gateway.inbox().iterdir()}
    for name in set(names) - outcome_names:
        assert name in inbox or any(w.endswith(f".{name}") for w in waiting), f"lost: {name}"
    return {
        "forwarded": sum(e["event"] == "forwarded" for e in events),
        "rejected": sum(e["event"] == "rejected" for e in events),
        "receipts": len(receipts),
    }


def test_fsync_failing_never_acknowledges_an_undelivered_file(gateway: Gateway) -> None:
    """Expected: with fsync(2) and fdatasync(2) failing at random (EIO, p=0.3) every file either is
    forwarded (history `forwarded` + OK receipt + the exact bytes in the core) or has no outcome yet
    and is still in in/, work/ or deferred/ — never acknowledged (event or receipt) without being in
    the core, or in quarantine for a rejection. The daemon may exit (it cannot make its ledger
    durable); after a restart without faults every file has exactly one outcome, `forwarded`, one OK
    receipt naming its file_id, and the core holds each file once, byte-exact."""
    if shutil.which("fiu-run") is None or not Path(FIU_PRELOAD).exists():
        pytest.skip("libfiu is not installed: apt-get install -y fiu-utils libfiu0")
    names = {
        d1001_name(date=day, part=part): d1001_body(date=day, rows=part)
        for day in (days_ago(1), days_ago(2))
        for part in range(1, 10)
    }
    run_under_fiu(gateway)
    wait_for(lambda: "gateway.started" in gateway.log(), timeout=30, what="the daemon to start")
    assert gateway.process is not None
    before = gateway.log().count("Input/output error")
    enable = subprocess.run(
        [
            "fiu-ctrl",
            "-c",
            "enable_random name=posix/io/sync/*,probability=0.3,failinfo=5",  # fsync and fdatasync
            str(gateway.process.pid),
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert enable.returncode == 0, enable.stderr
    for name, body in names.items():
        drop(gateway.inbox(), name, body)
    time.sleep(8)
    exited = gateway.process is not None and gateway.process.poll() is not None
    gateway.kill()
    failed_fsync = gateway.log().count("Input/output error") - before
    assert before == 0, "EIO before the faults were turned on"
    assert failed_fsync > 0, "no fsync failed: the faults were not injected, the test proves nothing"
    under_fault = check_acknowledged(gateway, names, settled=False)

    launch(gateway)
    wait_for(lambda: all(gateway.outcomes().get(n) for n in names), timeout=60, what="every outcome")
    # the outcome event comes first, then the receipt and the move out of work/: wait for the rest
    wait_for(
        lambda: state_files(gateway, "work") == [] and state_files(gateway, "deferred") == [],
        timeout=30,
        what="work/ and deferred/ to empty",
    )
    outcomes = gateway.outcomes()
    assert {n: v for n, v in outcomes.items() if len(v) != 1} == {}, outcomes
    assert all(v == ["forwarded"] for v in outcomes.values()), outcomes
    settled = check_acknowledged(gateway, names, settled=True)
    assert settled == {"forwarded": len(names), "rejected": 0, "receipts": len(names)}, settled
    core = gateway.core()
    assert sorted(p.name for p in core.iterdir()) == sorted(names), "a temp file or a stray in the core"
    for name in names:
        [event] = gateway.outcome_events(name)
        assert receipt_head(gateway.outbox() / f"{name[:-4]}_OK.TXT")[5:] == [event["file_id"], "forwarded"]
    print(f"\nunder fault: exited={exited}, EIO lines={failed_fsync}, acknowledged={under_fault}")
    assert gateway.stop() == 0


@pytest.fixture
def core() -> Iterator[Core]:
    server = Core()
    yield server
    server.stop()


def test_http_core_dropping_connections_retries_and_forwards_once(gateway: Gateway, core: Core) -> None:
    """Expected: a core that closes the connection without answering (3 times) is Transient: the file
    is `deferred`, retried with backoff, then forwarded exactly once with the exact body: 4 PUTs in all,
    every one to the same `/files/{file_id}` (the idempotent retry), only the last answered (201), none
    after it; no receipt before the 2xx."""
    routes = base_config(gateway.root)["routes"]
    routes["core-test"] = {
        "type": "http",
        "url": core.url,
        "timeout_seconds": 2,
        "task_retry_seconds": 0.2,
        "task_retry_total_seconds": 30,
        "max_backoff_seconds": 0.2,
    }
    gateway.write_config(routes=routes)
    dropped = 3
    core.script(*[Reply(201, close=True)] * dropped, then=Reply(201))
    name, body = d1001_name(), d1001_body(rows=5)
    receipt = gateway.outbox() / f"{name[:-4]}_OK.TXT"
    receipt_seen: list[bool] = []  # whether the OK receipt was in out/ as each request came in
    core.on_request = lambda _: receipt_seen.append(receipt.exists())
    gateway.start()
    drop(gateway.inbox(), name, body)
    wait_for(lambda: gateway.outcomes().get(name), timeout=30, what="the outcome")
    wait_for(lambda: receipt.exists(), timeout=10, what="the receipt")
    assert gateway.outcomes()[name] == ["forwarded"]
    kinds = [e["event"] for e in gateway.events() if e["name"] == name]
    assert "deferred" in kinds and kinds.index("deferred") < kinds.index("forwarded")
    [forwarded] = gateway.outcome_events(name)
    file_id = forwarded["file_id"]
    time.sleep(0.5)  # a stray retry after the 201 would show up here
    requests = core.requests
    # the first `dropped` got no answer, the next one the 201: exactly one completed at the core
    assert len(requests) == dropped + 1, [r.path for r in requests]
    assert [(r.method, r.path, r.complete, r.body) for r in requests] == [
        ("PUT", f"/files/{file_id}", True, body)
    ] * (dropped + 1), "every retry must be the same request: same file_id, same body"
    assert {r.headers["x-sha256"] for r in requests} == {hashlib.sha256(body).hexdigest()}
    assert f"/files/{file_id}" in forwarded["detail"]["core"] and "201" in forwarded["detail"]["core"]
    assert receipt_seen == [False] * (dropped + 1), "a receipt before the core's 2xx"
    assert receipt_head(receipt)[5:] == [file_id, "forwarded"]
    wait_for(
        lambda: state_files(gateway, "deferred") == [] and state_files(gateway, "work") == [],
        timeout=10,
        what="deferred/ and work/ to empty",
    )
    assert [p.name for p in state_files(gateway, "archive")] == [f"{file_id}.{name}"]
    assert gateway.stop() == 0
