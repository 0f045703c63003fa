"""``fdep-gateway run`` as systemd runs it: a real NOTIFY_SOCKET, and the messages the unit relies on.

Type=notify waits for READY=1 (after recovery and the first scan), WatchdogSec= for WATCHDOG=1, a
reload for RELOADING=1 then READY=1, a stop for STOPPING=1; NotifyAccess=main accepts them only from the
main process, so every message must come from the daemon's own pid, never from a validation worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, base_config
from tests.systemd.listener import Message, NotifySocket


def _has(key: str, value: str = "1") -> Callable[[Message], bool]:
    return lambda message: message.fields.get(key) == value


class Daemon:
    def __init__(
        self, root: Path, notify_socket: NotifySocket, watchdog_usec: int | None, **config: Any
    ) -> None:
        self.root = root
        self.config = root / "gateway.yaml"
        data = {**base_config(root), **config}
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        self.notify = notify_socket
        env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
        env.update(PYTHONPATH=str(REPO), NOTIFY_SOCKET=notify_socket.env_value)
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log = (root / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config)],
            cwd=REPO,
            stdout=self.log,
            stderr=self.log,
            env=env,
        )

    def wait(self, key: str, value: str = "1", timeout: float = 30) -> Message:
        try:
            message = self.notify.wait_for(_has(key, value), timeout=timeout, what=f"{key}={value}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log:\n{self.log_text()[-3000:]}") from None
        assert message.pid == self.process.pid, "NotifyAccess=main: only the main process may notify"
        return message

    def log_text(self) -> str:
        return (self.root / "daemon.log").read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def start(tmp_path: Path, notify_socket: NotifySocket) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(watchdog_usec: int | None, **config: Any) -> Daemon:
        daemon = Daemon(tmp_path, notify_socket, watchdog_usec, **config)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.close()


def test_ready_watchdog_reload_and_stopping_reach_systemd(start: Callable[[int | None], Daemon]) -> None:
    daemon = start(1_000_000)  # WatchdogSec=1: a ping about every 0.5 s
    ready = daemon.wait("READY", timeout=60)
    assert "gateway.started" in daemon.log_text()  # recovery is done before READY=1
    assert ready.fields.get("STATUS"), "READY=1 carries a STATUS= with the daemon's counts"
    daemon.wait("WATCHDOG", timeout=5)
    daemon.wait("WATCHDOG", timeout=5)  # and again: it comes from the loop, not once

    daemon.process.send_signal(signal.SIGHUP)  # what ExecReload= does
    daemon.wait("RELOADING", timeout=10)
    daemon.wait("READY", timeout=10)
    assert "config.reloaded" in daemon.log_text()

    daemon.config.write_text("stations: [not, a, mapping\n", encoding="utf-8")
    daemon.process.send_signal(signal.SIGHUP)  # a bad config is rejected: still READY afterwards
    daemon.wait("RELOADING", timeout=10)
    daemon.wait("READY", timeout=10)
    assert "config.reload_rejected" in daemon.log_text()
    daemon.wait("WATCHDOG", timeout=5)

    daemon.process.send_signal(signal.SIGTERM)  # systemctl stop
    daemon.wait("STOPPING", timeout=10)
    assert daemon.process.wait(timeout=60) == 0
    assert all(m.pid == daemon.process.pid for m in daemon.notify.received)


def test_no_watchdog_pings_when_the_unit_has_no_watchdog(start: Callable[[int | None], Daemon]) -> None:
    daemon = start(None)
    daemon.wait("READY", timeout=60)
    deadline = time.monotonic() + 2  # a 1 s watchdog would have pinged several times by now
    while (left := deadline - time.monotonic()) > 0:
        try:
            daemon.notify.receive(timeout=left)
        except TimeoutError:
            break
    assert not any("WATCHDOG" in m.fields for m in daemon.notify.received)
    daemon.process.send_signal(signal.SIGTERM)
    daemon.wait("STOPPING", timeout=10)
    assert daemon.process.wait(timeout=60) == 0


def test_with_two_processes_the_supervisor_speaks_for_both(start: Callable[..., Daemon]) -> None:
    """processes: 2: READY once both have started, watchdog pings, reload and stop, all from the
    supervisor (the unit's main process); the processes themselves never notify."""
    daemon = start(1_000_000, processes=2)
    daemon.wait("READY", timeout=60)
    assert daemon.log_text().count('"gateway.started"') == 2
    daemon.wait("WATCHDOG", timeout=5)

    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait("RELOADING", timeout=10)
    daemon.wait("READY", timeout=10)
    deadline = time.monotonic() + 10
    while daemon.log_text().count('"config.reloaded"') < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.log_text().count('"config.reloaded"') == 2  # the SIGHUP reached both

    daemon.process.send_signal(signal.SIGTERM)
    daemon.wait("STOPPING", timeout=10)
    assert daemon.process.wait(timeout=60) == 0
    assert all(m.pid == daemon.process.pid for m in daemon.notify.received)


def test_a_hung_process_stops_the_watchdog_pings(start: Callable[..., Daemon]) -> None:
    """A process whose loop hangs (SIGSTOP here) stops beating: the supervisor stops pinging, so
    systemd's watchdog restarts the service, as it would restart a hung single process."""
    daemon = start(1_000_000, processes=2)
    daemon.wait("READY", timeout=60)
    daemon.wait("WATCHDOG", timeout=5)
    worker = next(
        int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == daemon.process.pid
    )
    os.kill(worker, signal.SIGSTOP)
    try:
        time.sleep(6)  # the supervisor's 5 s of patience
        while not daemon.notify.nothing_pending():
            pass  # what was sent before it ran out
        daemon.notify.received.clear()
        time.sleep(2)  # a 1 s watchdog would have been pinged about four times by now
        while not daemon.notify.nothing_pending():
            pass
        assert not any("WATCHDOG" in m.fields for m in daemon.notify.received)
    finally:
        os.kill(worker, signal.SIGCONT)
    daemon.wait("WATCHDOG", timeout=5)  # beating again: pinging again
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=60) == 0


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
