"""A real NOTIFY_SOCKET: a unix datagram socket a test binds, reading what a notifier sends to it."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Message:
    fields: dict[str, str]
    pid: int | None  # the sender's pid, as the kernel reports it (what systemd's NotifyAccess= checks)
    raw: bytes


@dataclass
class NotifySocket:
    sock: socket.socket
    env_value: str  # what NOTIFY_SOCKET says: a path, or @name for an abstract socket
    received: list[Message] = field(default_factory=list)

    def receive(self, timeout: float = 5.0) -> Message:
        self.sock.settimeout(timeout)
        data, ancdata, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(_UCRED.size))
        pid = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[: _UCRED.size])[0]
        text = data.decode("utf-8")
        fields = dict(line.split("=", 1) for line in text.split("\n") if line)
        message = Message(fields, pid, data)
        self.received.append(message)
        return message

    def wait_for(self, condition: Callable[[Message], bool], *, timeout: float, what: str) -> Message:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.receive(timeout=left)
            except TimeoutError:
                break
            if condition(message):
                return message
        raise AssertionError(f"no {what} within {timeout}s; received {[m.fields for m in self.received]}")

    def nothing_pending(self) -> bool:
        try:
            self.receive(timeout=0.2)
        except TimeoutError:
            return True
        return False


def bind(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(address)
    return sock
