"""Tell systemd how the daemon is doing: the service notification protocol of sd_notify(3).

A ``Type=notify`` unit hands the daemon ``NOTIFY_SOCKET`` (a unix datagram socket: a path, or an abstract
name written ``@name``) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and maybe ``WATCHDOG_PID``). The
daemon sends newline-separated ``KEY=VALUE`` datagrams: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``,
``RELOADING=1``, ``STOPPING=1``. Without ``NOTIFY_SOCKET`` (a terminal, tests, ``drain``) every call is a
no-op, and a failed send is logged once and never raised: losing a notification must not stop the
daemon (a lost READY/WATCHDOG shows up in systemd as a start timeout or a watchdog restart instead).

Why our own ~50 lines and not a library: the protocol is one ``sendto`` of a short datagram, and the
candidates fit worse than that. ``systemd-python`` (``systemd.daemon.notify``) and ``cysystemd`` are C
extensions that build against libsystemd (its headers and a compiler on every machine that installs us)
for one call. ``sdnotify`` is pure Python but unmaintained since 2017, parses neither ``WATCHDOG_USEC``
nor ``WATCHDOG_PID``, and swallows errors silently (or raises, in debug mode) rather than reporting the
first one. What we need beyond the send (the watchdog interval, log-once, ``RELOADING`` with
``MONOTONIC_USEC``) would be ours to write anyway; tests/systemd/test_notify.py drives it against real
path and abstract sockets.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, MutableMapping

import structlog

log = structlog.get_logger("gateway.notify")

_SEND_TIMEOUT = 1.0  # seconds: systemd drains its queue at once; never hang the event loop for long


def _address(value: str) -> bytes | None:
    """``NOTIFY_SOCKET`` as a socket address: ``/path``, or ``@name`` for the abstract namespace."""
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


def _printable(address: bytes) -> str:
    """The address the way ``NOTIFY_SOCKET`` writes it."""
    return "@" + os.fsdecode(address[1:]) if address.startswith(b"\0") else os.fsdecode(address)


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else 0
    except ValueError:
        return None
    return number if number > 0 else None


class Notifier:
    """Sends sd_notify messages to ``address`` (None: every call is a no-op returning False)."""

    def __init__(self, address: bytes | None = None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if address is not None else None
        self._failed = False

    @classmethod
    def from_env(
        cls,
        environ: MutableMapping[str, str] | None = None,
        *,
        pid: int | None = None,
        unset_environment: bool = False,
    ) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (defaults: os.environ, our pid).

        The watchdog applies only when ``WATCHDOG_PID`` is absent or names this process (as
        sd_watchdog_enabled(3)). ``unset_environment`` removes the three variables so that child
        processes do not inherit them.
        """
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = _address(raw) if raw else None
        if raw and address is None:
            log.warning("notify.unsupported_socket", notify_socket=raw, note="systemd is not notified")
        watchdog_usec = _positive_int(env.get("WATCHDOG_USEC"))
        watchdog_pid = env.get("WATCHDOG_PID")
        if watchdog_pid is not None and _positive_int(watchdog_pid) != (os.getpid() if pid is None else pid):
            watchdog_usec = None
        if unset_environment:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(key, None)
        return cls(address, watchdog_usec=watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``watchdog()`` calls: half the unit's ``WatchdogSec=``; None: no watchdog."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def ready(self, status: str | None = None) -> bool:
        return self.send(("READY", "1"), *_status(status))

    def status(self, text: str) -> bool:
        return self.send(*_status(text))

    def watchdog(self) -> bool:
        return self.send(("WATCHDOG", "1"))

    def reloading(self, status: str | None = None) -> bool:
        """Before a reload; follow it with ``ready()`` whatever the reload's outcome."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(("RELOADING", "1"), ("MONOTONIC_USEC", str(now_usec)), *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send(("STOPPING", "1"), *_status(status))

    def send(self, *fields: tuple[str, str]) -> bool:
        """One datagram of ``KEY=VALUE`` lines; True if sent. Never raises: the first failure is logged."""
        if self.address is None or not fields:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(_SEND_TIMEOUT)
                sock.sendto(message, self.address)
        except (OSError, ValueError) as exc:
            if not self._failed:
                self._failed = True
                log.warning(
                    "notify.failed",
                    notify_socket=_printable(self.address),
                    error=str(exc),
                    note="systemd misses this and may miss later notifications; logged once",
                )
            return False
        return True


def _status(text: str | None) -> tuple[tuple[str, str], ...]:
    """``STATUS=`` is one line: a newline would start a new key."""
    if text is None:
        return ()
    return (("STATUS", text.replace("\r", " ").replace("\n", " ")),)


class Heartbeat:
    """What the main loop tells systemd: READY once started, WATCHDOG at half the interval, and a
    STATUS line every few seconds when it changed."""

    STATUS_EVERY = 5.0

    def __init__(self, notifier: Notifier, status: Callable[[], str]) -> None:
        self._notifier = notifier
        self._status = status
        self._interval = notifier.watchdog_interval
        self._ready = False
        self._next_ping = self._next_status = 0.0
        self._last = ""

    def beat(self, *, started: bool) -> None:
        now = time.monotonic()
        if self._interval is not None and now >= self._next_ping:
            self._notifier.watchdog()
            self._next_ping = now + self._interval
        if not self._ready and started:
            self.ready()
        elif self._ready and now >= self._next_status:
            text = self._status()
            if text != self._last:
                self._notifier.status(text)
                self._last = text
            self._next_status = now + self.STATUS_EVERY

    def ready(self) -> None:
        self._ready = True
        self._last = self._status()
        self._notifier.ready(self._last)
        self._next_status = time.monotonic() + self.STATUS_EVERY
