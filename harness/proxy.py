"""A TCP proxy between one node and PostgreSQL that can cut the node off: the soak's network partition.

While cut, nothing passes either way: bytes already sent wait in the proxy and new connections are
accepted but not carried on, as in a network that drops every packet while TCP keeps retrying. Healed,
everything held goes through, late. So a transaction a node sent during the cut reaches the server
after it, when the node's leases may belong to another node: what the fencing epochs are for.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Proxy:
    """Listens on 127.0.0.1:``port`` (a free one) and carries each connection to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._heal_timer: threading.Timer | None = None
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True, name=f"proxy {self.port}").start()

    @property
    def cut_off(self) -> bool:
        return not self._open.is_set()

    def cut(self, seconds: float | None = None) -> None:
        """Stop carrying bytes; with ``seconds``, heal by itself after that long (not before)."""
        if self._heal_timer is not None:
            self._heal_timer.cancel()
            self._heal_timer = None
        self._open.clear()
        self.cuts += 1
        if seconds is not None:
            self._heal_timer = threading.Timer(seconds, self.heal)
            self._heal_timer.daemon = True
            self._heal_timer.start()

    def heal(self) -> None:
        if self._heal_timer is not None:
            self._heal_timer.cancel()
            self._heal_timer = None
        self._open.set()

    def close(self) -> None:
        self._closed.set()
        self.heal()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def _passable(self) -> bool:
        """Wait until the proxy carries bytes again; False once it is closed."""
        while not self._open.wait(0.2):
            if self._closed.is_set():
                return False
        return not self._closed.is_set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._keep(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _connect(self, client: socket.socket) -> None:
        if not self._passable():
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:  # the server is down (a restart): the client sees its connection end
            self._drop(client)
            return
        server.settimeout(None)
        self._keep(server)
        threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
        self._pipe(client, server)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        """Carry one direction until either side ends; then end both (held back while cut)."""
        try:
            while True:
                data = source.recv(65536)
                if not self._passable() or not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        self._passable()
        self._drop(source)
        self._drop(sink)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
