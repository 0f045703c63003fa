"""A TCP proxy between one node and its database that a test cuts and heals: a network partition of one
node from PostgreSQL only, without root, iptables or a second host.

It listens on 127.0.0.1 (a free port) and forwards every connection to the target port. ``cut`` closes
every open connection and then treats new ones by its mode: ``refuse`` closes them at once (what a
stopped server or a firewall's reject looks like), ``blackhole`` accepts them and forwards nothing, so
the client hangs until its own timeout (what a dropped route looks like: the nastier partition). With
``close_open=False`` a blackhole leaves the open connections open but silent as well: neither end hears
of the cut, as with a real lost route, where the server keeps a session (and its locks) until TCP gives
up on it. ``cut_on(marker)`` makes that silent cut the moment a client's statement that holds ``marker`` has
been passed on: the server runs that statement and nobody hears of it again (a partition in the middle of
a transaction, deterministically). A statement is found by its text also once the client has prepared it
and sends only the prepared name (psycopg does from a statement's fifth run): the proxy reads the
client's side of the PostgreSQL protocol for that. ``heal`` lets everything through again, held and
silenced connections too, as TCP does when a lost route comes back. An asyncio loop on a thread of its
own does the work; the methods are called from the test's thread and return once the proxy is in its
new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

Mode = Literal["refuse", "blackhole"]
_T = TypeVar("_T")
_CHUNK = 64 * 1024
_MAX_MESSAGE = 1 << 30  # PostgreSQL's own limit for a message


class TcpProxy:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0  # connections the proxy took, through or not: a test sees its node used it
        self.held = 0  # new connections a blackhole held
        self._mode: Mode | None = None  # None: connected through
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None  # clear while cut: nothing goes either way
        self._marker: bytes | None = None  # cut_on: armed
        self.was_cut = threading.Event()  # set when a cut_on cut

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cut_off(self) -> bool:
        return self._mode is not None

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self, mode: Mode = "blackhole", *, close_open: bool = True) -> None:
        """From now on ``mode`` says what new connections get; the open ones are closed, or with
        ``close_open=False`` (a blackhole only) kept open and silent."""
        if mode == "refuse" and not close_open:
            raise ValueError("a refusing proxy closes what is open")
        self._call(self._cut(mode, close_open=close_open))

    def cut_on(self, marker: bytes) -> None:
        """Cut silently (``cut("blackhole", close_open=False)``) as soon as client bytes holding ``marker``
        have gone on to the server; ``was_cut`` is set then."""
        self.was_cut.clear()
        self._marker = marker

    def heal(self) -> None:
        """Connect again: new connections go through, and so do those a blackhole held or silenced."""
        self._call(self._heal())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _cut(self, mode: Mode, *, close_open: bool = True) -> None:
        assert self._flowing is not None
        self._mode = mode
        self._flowing.clear()
        if close_open:
            for writer in list(self._open):
                writer.transport.abort()
            self._open.clear()

    async def _heal(self) -> None:
        assert self._flowing is not None
        self._mode = None
        self._flowing.set()

    async def _close(self) -> None:
        """Closed under every connection; their handlers see that and end (none is cancelled)."""
        if self._server is not None:
            self._server.close()
        await self._cut("refuse")
        assert self._flowing is not None
        self._flowing.set()  # held connections wake up closed and end
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _serve(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self.accepted += 1
        if self._mode == "refuse":
            client.transport.abort()
            return
        self._open.add(client)  # a cut closes it, also while it is held
        if self._mode == "blackhole":
            self.held += 1
            await self._flowing.wait()
            if client.transport.is_closing():
                return
        try:
            server_reader, server = await asyncio.open_connection(*self.target)
        except OSError:
            self._open.discard(client)
            client.transport.abort()
            return
        self._open.add(server)
        statements = ClientStatements()
        try:
            await asyncio.gather(
                _pump(client_reader, server, self._flowing, lambda data: self._passed(statements, data)),
                _pump(server_reader, client, self._flowing, lambda data: None),
            )
        finally:
            for writer in (client, server):
                self._open.discard(writer)
                writer.transport.abort()

    def _passed(self, statements: ClientStatements, data: bytes) -> None:
        """Client bytes went on to the server: if they held the armed ``cut_on`` statement, cut now (on the
        loop, nothing else moves meanwhile)."""
        ran = statements.read(data)
        if self._marker is not None and any(self._marker in text for text in ran):
            self._marker = None
            self._mode = "blackhole"
            assert self._flowing is not None
            self._flowing.clear()
            self.was_cut.set()


class ClientStatements:
    """The statements one client connection has sent, read from its side of the protocol (v3): the
    start-up messages carry no type byte; then a simple Query runs its text, a Parse prepares a text under
    a name (empty: the unnamed statement) and a Bind runs a prepared statement by that name only."""

    _REQUESTS = frozenset({80877102, 80877103, 80877104})  # cancel, SSL, GSS encryption: start-up goes on

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self._prepared: dict[bytes, bytes] = {}
        self._lost = False  # what it read was not the plain protocol: it stops reading

    def read(self, data: bytes) -> list[bytes]:
        """The texts of the statements that ``data`` (with what came before it) completed."""
        if self._lost:
            return []
        self._buffer += data
        ran: list[bytes] = []
        while message := self._next():
            kind, body = message
            if kind == b"Q":
                ran.append(body)
            elif kind == b"P":  # prepared only: it runs at its Bind
                name, text = body.split(b"\0", 2)[:2]
                self._prepared[name] = text
            elif kind == b"B":
                name = body.split(b"\0", 2)[1]
                ran.append(self._prepared.get(name, b""))
        return ran

    def _next(self) -> tuple[bytes, bytes] | None:
        start = 1 if self._started else 0
        if len(self._buffer) < start + 4:
            return None
        (length,) = struct.unpack_from("!i", self._buffer, start)
        least = 4 if self._started else 8  # a length counts itself; a start-up message has its code too
        if not least <= length <= _MAX_MESSAGE:  # not the plain protocol (TLS after an SSL request?)
            self._buffer, self._lost = b"", True
            return None
        end = start + length
        if len(self._buffer) < end:
            return None
        kind, body = self._buffer[:start], self._buffer[start + 4 : end]
        self._buffer = self._buffer[end:]
        if not self._started:
            (code,) = struct.unpack_from("!i", body)
            self._started = code not in self._REQUESTS
        return kind, body


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    flowing: asyncio.Event,
    passed: Callable[[bytes], None],
) -> None:
    """Copy one direction until its end, holding what arrives while the proxy is cut; the other side's
    end or a cut that closes ends the pair (the caller)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            await flowing.wait()
            if writer.transport.is_closing():
                return
            writer.write(data)
            await writer.drain()
            passed(data)
        await flowing.wait()  # a close is news too: it does not cross a cut either
        if writer.can_write_eof() and not writer.transport.is_closing():
            writer.write_eof()
