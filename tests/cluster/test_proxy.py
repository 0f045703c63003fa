"""The soak's partition proxy carries bytes both ways, holds them while cut and delivers them once healed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from harness.proxy import Proxy


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """A server that sends back what it receives, a connection at a time."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: _echo(c), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)


def answer(sock: socket.socket, timeout: float) -> bytes | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(1024)
    except TimeoutError:
        return None


def test_bytes_pass_are_held_while_cut_and_arrive_when_healed(echo: tuple[str, int]) -> None:
    proxy = Proxy(echo)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as client:
            client.sendall(b"before")
            assert answer(client, 5) == b"before"
            proxy.cut()
            client.sendall(b"during")
            assert answer(client, 0.5) is None
            with socket.create_connection(("127.0.0.1", proxy.port)) as late:  # accepted, not carried on
                late.sendall(b"late")
                assert answer(late, 0.5) is None
                proxy.heal()
                assert answer(client, 5) == b"during"
                assert answer(late, 5) == b"late"
    finally:
        proxy.close()


def test_a_timed_cut_heals_by_itself(echo: tuple[str, int]) -> None:
    proxy = Proxy(echo)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as client:
            proxy.cut(seconds=0.5)
            client.sendall(b"x")
            assert proxy.cut_off
            assert answer(client, 5) == b"x"
            assert not proxy.cut_off
    finally:
        proxy.close()
