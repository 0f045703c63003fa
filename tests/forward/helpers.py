"""Helpers of the forwarder tests: outbound items for real files, RSS readings, a scriptable HTTP core."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gateway.forward import Outbound

NAME = "CISP-41210000_D1001_V01_1_20220401_01_Q.TXT"


def outbound(path: Path, **overrides: Any) -> Outbound:
    """An Outbound for ``path`` with the sha256 and size of its current content."""
    with path.open("rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    fields: dict[str, Any] = {
        "file_id": "01J0000000000000000000TEST",
        "path": path,
        "name": NAME,
        "sha256": sha256,
        "size": path.stat().st_size,
        "station": "k1237",
        "transfer_code": "TC41210000",
        "institution": "41210000",
        "table": "D1001",
        "data_date": "20220401",
        "batch": "01",
        "mode": "Q",
    }
    fields.update(overrides)
    return Outbound(**fields)


def free_port() -> int:
    """A port nobody listens on (connections to it are refused until a server binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def peak_rss_since_reset() -> Callable[[], int]:
    """Reset the process's peak RSS (Linux clear_refs 5); the returned callable reads the new peak."""
    Path("/proc/self/clear_refs").write_text("5")

    def peak() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/self/status")

    return peak


def write_big_file(path: Path, mebibytes: int) -> Path:
    """A file of distinct 1 MiB blocks, written without ever holding more than one block."""
    with path.open("wb") as f:
        for i in range(mebibytes):
            f.write(i.to_bytes(4, "big") * (256 * 1024))
    return path


def current_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass
class Reply:
    """What the core answers to one request."""

    status: int = 201
    body: bytes | str | dict[str, Any] = b""
    delay: float = 0.0  # hang this long before answering (released at teardown)
    close: bool = False  # drop the connection without any answer
    partial: bool = False  # send the status line, headers and half the body, then drop the connection
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes  # empty when the core only hashes (big bodies)
    sha256: str
    size: int
    complete: bool
    at: float  # time.monotonic() when the body was in


class Core:
    """A scripted HTTP core: answers ``replies`` in order, then ``default``; records every request.

    It keeps the contract of ``docs/http-core.md``: a complete PUT answered (or about to be answered)
    with a 2xx is held, whether or not the answer reaches the gateway (a ``close`` reply drops the
    request unstored); a repeated PUT of a held file id
    answers 200 ``ALREADY_HELD`` (422 ``FILE_ID_CONFLICT`` for other bytes) without taking a scripted
    reply. ``contract=False`` is a core that breaks it: a repeat gets a bare 409, as one core did."""

    def __init__(self, port: int = 0, *, contract: bool = True) -> None:
        self.contract = contract
        self.held: dict[str, str] = {}  # path -> sha256 of what the core stored
        self.replies: list[Reply] = []
        self.default = Reply()
        self.requests: list[Request] = []
        self.keep_bodies = True
        self.on_request: Callable[[Request], None] | None = None
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply, then: Reply | None = None) -> None:
        with self._lock:
            self.replies = list(replies)
            if then is not None:
                self.default = then

    def complete_requests(self) -> list[Request]:
        return [r for r in self.requests if r.complete]

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self.on_request is not None:
                self.on_request(request)
            held = self.held.get(request.path)
            if held is not None and request.complete:
                if not self.contract:
                    return Reply(409, {"message": "conflict"})
                if held == request.sha256:
                    return Reply(200, {"code": "ALREADY_HELD", "message": "file id already held"})
                return Reply(422, {"code": "FILE_ID_CONFLICT", "message": "file id held with other bytes"})
            reply = self.replies.pop(0) if self.replies else self.default
            if request.complete and 200 <= reply.status < 300 and not reply.close:
                self.held[request.path] = request.sha256  # stored, whether the answer arrives or not
            return reply

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _handler(core: Core) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            digest = hashlib.sha256()
            kept = bytearray()
            size = 0
            while size < length:
                chunk = self.rfile.read(min(length - size, 1024 * 1024))
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                if core.keep_bodies:
                    kept += chunk
            request = Request(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=bytes(kept),
                sha256=digest.hexdigest(),
                size=size,
                complete=size == length,
                at=time.monotonic(),
            )
            reply = core._next(request)
            if not request.complete or reply.close:
                self.close_connection = True
                return
            if reply.delay:
                core.released.wait(reply.delay)
            body = reply.body
            if isinstance(body, dict):
                body = json.dumps(body).encode()
            elif isinstance(body, str):
                body = body.encode()
            try:
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if reply.partial:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)
            except OSError:
                self.close_connection = True  # the client gave up (timeout): nothing to answer

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test asserts on ``core.requests``."""

    return Handler
