"""gateway.daemon.notify on real unix datagram sockets: what systemd would receive, and what it never sees."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

import gateway.daemon.notify as notify
from gateway.daemon.notify import Notifier
from tests.systemd.listener import NotifySocket


class FakeLog:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.warnings.append((event, kw))


@pytest.fixture
def fake_log(monkeypatch: pytest.MonkeyPatch) -> FakeLog:
    fake = FakeLog()
    monkeypatch.setattr(notify, "log", fake)
    return fake


def test_without_notify_socket_every_call_is_a_noop() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.ready("ready")
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.reloading()
    assert not notifier.stopping()


def test_ready_carries_status_from_this_process(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.env_value})
    assert notifier.enabled
    assert notifier.ready("2 stations, 0 in flight")
    message = notify_socket.receive()
    assert message.raw == b"READY=1\nSTATUS=2 stations, 0 in flight"
    assert message.pid == os.getpid()


def test_every_message_kind_arrives(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.env_value})
    assert notifier.status("已接收 3 files")
    assert notifier.watchdog()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading("reloading the config")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.ready()
    assert notifier.stopping("stopping: 1 file in flight")
    got = [notify_socket.receive().fields for _ in range(5)]
    assert got[0] == {"STATUS": "已接收 3 files"}
    assert got[1] == {"WATCHDOG": "1"}
    assert got[2]["RELOADING"] == "1" and got[2]["STATUS"] == "reloading the config"
    assert before <= int(got[2]["MONOTONIC_USEC"]) <= after  # what Type=notify-reload (systemd 253+) wants
    assert got[3] == {"READY": "1"}
    assert got[4] == {"STOPPING": "1", "STATUS": "stopping: 1 file in flight"}
    assert notify_socket.nothing_pending()


def test_status_stays_one_line(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.env_value})
    notifier.status("two\nlines\r\nREADY=1")
    assert notify_socket.receive().raw == b"STATUS=two lines  READY=1"


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], interval: float | None) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/x.sock", **env}, pid=4242)
    assert notifier.watchdog_interval == interval


def test_watchdog_pid_defaults_to_this_process() -> None:
    env = {"NOTIFY_SOCKET": "/run/x.sock", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(env).watchdog_interval == 2.0


def test_from_env_reads_os_environ_and_can_unset_it(
    monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    kept = Notifier.from_env()
    assert kept.watchdog_interval == 1.0 and os.environ["NOTIFY_SOCKET"] == notify_socket.env_value
    unset = Notifier.from_env(unset_environment=True)
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    assert unset.watchdog_interval == 1.0
    assert unset.watchdog()
    assert notify_socket.receive().fields == {"WATCHDOG": "1"}


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/notify.sock", "@"])
def test_unsupported_socket_is_reported_and_disables(value: str, fake_log: FakeLog) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert not notifier.ready()
    assert [event for event, _ in fake_log.warnings] == ["notify.unsupported_socket"]


def test_send_error_is_logged_once_never_raised_and_sending_goes_on(
    short_dir: Path, fake_log: FakeLog
) -> None:
    path = short_dir / "later.sock"
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    assert not notifier.ready("nobody listens")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert len(fake_log.warnings) == 1
    event, detail = fake_log.warnings[0]
    assert event == "notify.failed" and detail["notify_socket"] == str(path) and detail["error"]
    # the socket comes (back): notifications reach it again
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notifier.watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
    assert len(fake_log.warnings) == 1


def test_abstract_address_is_logged_the_way_notify_socket_writes_it(fake_log: FakeLog) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "@fdep-gateway-nobody-listens-here"})
    assert notifier.address == b"\0fdep-gateway-nobody-listens-here"
    assert not notifier.ready()
    assert fake_log.warnings[0][1]["notify_socket"] == "@fdep-gateway-nobody-listens-here"


def test_an_oversized_message_is_a_logged_failure_not_an_exception(
    notify_socket: NotifySocket, fake_log: FakeLog
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.env_value})
    assert not notifier.status("x" * 1_000_000)  # above the datagram limit: EMSGSIZE
    assert [event for event, _ in fake_log.warnings] == ["notify.failed"]
    assert notifier.ready()
    assert notify_socket.receive().fields == {"READY": "1"}
