"""fsync failing under the daemon (libfiu LD_PRELOAD) and an HTTP core that drops connections."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import REPO, base_config
from tests.e2e.harness import ZONE, Gateway, d1001_body, d1001_name, drop, launch, state_files, wait_for
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


def test_fsync_failing_never_acknowledges_an_undelivered_file(gateway: Gateway) -> None:
    """Expected: with fsync(2) failing at random (EIO, p=0.3) every file either is forwarded (history
    `forwarded` + OK receipt + the exact bytes in the core) or has no outcome yet and is still in in/,
    work/ or deferred/ — never acknowledged without being in the core. The daemon may exit (it cannot
    make its ledger durable); after a restart without faults every file has exactly one outcome and the
    core holds each forwarded file once, byte-exact."""
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
    enable = subprocess.run(
        [
            "fiu-ctrl",
            "-c",
            "enable_random name=posix/io/sync/fsync,probability=0.3,failinfo=5",
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
    core = gateway.core()

    def check_acknowledged() -> None:
        for event in gateway.events():
            if event["event"] == "forwarded":
                assert (core / event["name"]).read_bytes() == names[event["name"]], event["name"]

    check_acknowledged()
    under_fault = {n: list(v) for n, v in gateway.outcomes().items()}
    failed_fsync = gateway.log().count("Input/output error")
    launch(gateway)
    wait_for(lambda: all(gateway.outcomes().get(n) for n in names), timeout=60, what="every outcome")
    check_acknowledged()
    outcomes = gateway.outcomes()
    assert {n: v for n, v in outcomes.items() if len(v) != 1} == {}, outcomes
    assert all(v == ["forwarded"] for v in outcomes.values()), outcomes
    assert sorted(p.name for p in core.iterdir() if not p.name.startswith(".")) == sorted(names)
    assert state_files(gateway, "work") == [] and state_files(gateway, "deferred") == []
    print(f"\nunder fault: exited={exited}, EIO lines={failed_fsync}, outcomes={len(under_fault)}")
    assert gateway.stop() == 0


@pytest.fixture
def core() -> Iterator[Core]:
    server = Core()
    yield server
    server.stop()


def test_http_core_dropping_connections_retries_and_forwards_once(gateway: Gateway, core: Core) -> None:
    """Expected: a core that closes the connection without answering (3 times) is Transient: the file
    is `deferred`, retried with backoff, then forwarded exactly once with the exact body; no receipt
    before the 2xx. (500s and hangs are covered in tests/e2e/test_http_core.py.)"""
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
    core.script(Reply(201, close=True), Reply(201, close=True), Reply(201, close=True), then=Reply(201))
    gateway.start()
    name, body = d1001_name(), d1001_body(rows=5)
    drop(gateway.inbox(), name, body)
    wait_for(lambda: gateway.outcomes().get(name), timeout=30, what="the outcome")
    assert gateway.outcomes()[name] == ["forwarded"]
    kinds = [e["event"] for e in gateway.events() if e["name"] == name]
    assert "deferred" in kinds and kinds.index("deferred") < kinds.index("forwarded")
    done = [r for r in core.complete_requests() if r.body == body]
    assert len(done) >= 1
    assert gateway.stop() == 0
