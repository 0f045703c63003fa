"""Fixtures of the forwarder tests: a spool-like directory and scriptable HTTP cores on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.forward.helpers import Core


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[[bytes], Path]:
    """Write bytes to a spool-like file outside the core directory."""
    spool = tmp_path / "spool"
    spool.mkdir()
    counter = iter(range(1_000_000))

    def make(data: bytes) -> Path:
        path = spool / f"file-{next(counter)}"
        path.write_bytes(data)
        return path

    return make


@pytest.fixture
def core() -> Iterator[Core]:
    server = Core()
    yield server
    server.stop()


@pytest.fixture
def start_core() -> Iterator[Callable[[int], Core]]:
    """Start a core later in a test (e.g. on a port that refused connections until then)."""
    started: list[Core] = []

    def start(port: int) -> Core:
        server = Core(port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
