"""``processes: 2``: a supervisor and two gateway processes, each serving its share of the mailboxes.

Asserted from outside: the processes (their parent, their inotify watches), the history, the receipts,
the core directory, and what a SIGTERM, a killed supervisor and a killed worker leave behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from gateway.daemon.shard import Shard
from harness.daemon import (
    Gateway,
    children,
    d1001_body,
    d1001_name,
    day,
    drop,
    kill_when,
    launch,
    outcome_count,
    wait_for,
)

ORGS = {"TC41210000": "41210000", "TC41220000": "41220000"}  # base_config's codes: one a process
MAILBOXES = {("k1237", "TC41210000"), ("k6666", "TC41210000"), ("k1237", "TC41220000")}


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def inotify_watches(pid: int) -> int:
    """How many inotify watches ``pid`` holds (every inotify fd's ``inotify wd:`` lines)."""
    count = 0
    for fdinfo in (Path("/proc") / str(pid) / "fdinfo").iterdir():
        try:
            count += fdinfo.read_text().count("inotify wd:")
        except OSError:
            continue
    return count


def start_processes(gateway: Gateway, processes: int = 2) -> set[int]:
    gateway.write_config(processes=processes)
    offset = launch(gateway)
    assert gateway.process is not None
    wait_for(
        lambda: gateway.log()[offset:].count('"gateway.started"') == processes, what="every process to start"
    )
    workers = children(gateway.process.pid)
    assert len(workers) == processes
    return workers


def drop_files(gateway: Gateway, per_code: int) -> list[str]:
    names = []
    for tc, org in ORGS.items():
        for back in range(1, per_code + 1):
            name = d1001_name(day(back), org=org)
            drop(gateway.inbox("k1237", tc), name, d1001_body(day(back), org=org))
            names.append(name)
    return names


def receipts(gateway: Gateway, tc: str) -> int:
    return len(list(gateway.outbox("k1237", tc).glob("*_OK.TXT")))


def wait_for_receipts(gateway: Gateway, per_code: int) -> None:
    """A receipt follows its forwarded event (history first, then the receipt, then the move)."""
    wait_for(lambda: all(receipts(gateway, tc) >= per_code for tc in ORGS), what="every receipt")


def assert_forwarded_once(gateway: Gateway, names: list[str]) -> None:
    wait_for(lambda: all(n in gateway.outcomes() for n in names), timeout=60, what="every outcome")
    outcomes = gateway.outcomes()
    assert {n: outcomes[n] for n in names} == {n: ["forwarded"] for n in names}
    for name in names:
        assert (gateway.core("k1237") / name).is_file()


def test_two_processes_share_the_mailboxes_and_stop_together(gateway: Gateway) -> None:
    workers = start_processes(gateway)
    log = gateway.log()
    assert '"process": "1/2"' in log and '"process": "2/2"' in log
    # each watches exactly its own inboxes: together every mailbox, none twice
    owned = [sum(Shard(i, 2).owns(tc) for _, tc in MAILBOXES) for i in range(2)]
    assert sorted(inotify_watches(pid) for pid in workers) == sorted(owned)
    assert sorted(owned) == [1, 2]

    names = drop_files(gateway, per_code=5)
    assert_forwarded_once(gateway, names)
    wait_for_receipts(gateway, 5)
    for tc in ORGS:
        assert receipts(gateway, tc) == 5

    assert gateway.stop() == 0
    assert not any(alive(pid) for pid in workers)
    assert '"exit_codes": [0, 0]' in gateway.log()


def test_more_processes_than_mailboxes(gateway: Gateway) -> None:
    """The burst benchmark does best with four processes a CPU; with only three mailboxes five or more
    of them serve none and idle, and every file still goes through its own mailbox's process once."""
    workers = start_processes(gateway, processes=8)
    owned = [sum(Shard(i, 8).owns(tc) for _, tc in MAILBOXES) for i in range(8)]
    assert sum(owned) == len(MAILBOXES) and owned.count(0) >= 8 - len(MAILBOXES)  # each owned once
    assert sorted(inotify_watches(pid) for pid in workers) == sorted(owned)
    names = drop_files(gateway, per_code=5)
    assert_forwarded_once(gateway, names)
    wait_for_receipts(gateway, 5)
    assert gateway.stop() == 0
    assert not any(alive(pid) for pid in workers)
    assert '"exit_codes": [0, 0, 0, 0, 0, 0, 0, 0]' in gateway.log()


def test_a_killed_supervisor_takes_its_processes_with_it(gateway: Gateway) -> None:
    workers = start_processes(gateway)
    gateway.kill(signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=5, what="the workers to die")

    names = drop_files(gateway, per_code=3)
    start_processes(gateway)  # the next start serves the files dropped meanwhile
    assert_forwarded_once(gateway, names)
    assert gateway.stop() == 0


def test_a_supervisor_killed_mid_burst_loses_nothing_and_forwards_nothing_twice(gateway: Gateway) -> None:
    start_processes(gateway)
    names = drop_files(gateway, per_code=30)
    kill_when(gateway, lambda: outcome_count(gateway) >= 15)
    assert outcome_count(gateway) < len(names)  # killed with files in flight
    start_processes(gateway)
    assert_forwarded_once(gateway, names)  # one forwarded event each, and a copy at the core
    assert sorted(p.name for p in gateway.core("k1237").iterdir() if not p.name.startswith(".")) == sorted(
        names
    )
    wait_for_receipts(gateway, 30)
    for tc in ORGS:
        assert receipts(gateway, tc) == 30
    assert gateway.stop() == 0


def test_a_process_that_dies_stops_the_gateway(gateway: Gateway) -> None:
    workers = start_processes(gateway)
    victim, other = sorted(workers)
    os.kill(victim, signal.SIGKILL)
    assert gateway.process is not None
    gateway.process.wait(timeout=60)
    assert gateway.kill() == 1  # (already ended) systemd restarts the whole service
    assert not alive(other)
    assert '"worker.ended"' in gateway.log()


def test_a_process_started_by_hand_refuses_to_serve(gateway: Gateway) -> None:
    """Only the supervisor holds the spool lock: a worker run by hand beside it would serve mailboxes a
    supervised process serves too."""
    gateway.write_config(processes=2)
    result = gateway.command("worker", "-c", str(gateway.config_path), "--shard", "1/2", timeout=30)
    assert result.returncode == 1
    assert "worker.unsupervised" in result.stdout + result.stderr
    assert not (gateway.spool / ".gateway-workers.lock").exists()  # it took nothing


def test_the_supervisor_cleans_up_what_a_crash_left_before_its_processes_start(gateway: Gateway) -> None:
    """A receipt half written in out/ and a copy half made in the core: removed by the supervisor's
    clean-up (done in a child process it waits for), the core's finished files left alone."""
    outbox, core = gateway.outbox("k1237", "TC41210000"), gateway.core("k1237")
    for directory in (outbox, core):
        directory.mkdir(parents=True)
    half_receipt = outbox / ".D1001_OK.txt.0123abcd.tmp"
    half_copy = core / ".D1001.txt.89abcdef.tmp"
    finished = core / "D1001.txt"
    for path in (half_receipt, half_copy, finished):
        path.write_bytes(b"left by a crash")
    start_processes(gateway)
    assert not half_receipt.exists() and not half_copy.exists()
    assert finished.read_bytes() == b"left by a crash"
    assert gateway.stop() == 0
    assert '"workers.clean_up.failed"' not in gateway.log()


def test_the_supervisor_imports_none_of_the_file_work() -> None:
    """It serves no file: the daemon's modules would cost it ~20 MB for as long as it runs."""
    code = "import sys, gateway.cli, gateway.daemon.supervisor; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy = (
        "gateway.daemon.service", "gateway.daemon.recovery", "gateway.daemon.workers", "gateway.pipeline",
        "gateway.forward", "gateway.detect", "gateway.metrics", "gateway.obligations", "httpx", "psycopg",
        "prometheus_client",
    )
    assert [module for module in loaded.split() if module.startswith(heavy)] == []
