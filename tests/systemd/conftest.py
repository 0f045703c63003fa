"""Fixtures: a real NOTIFY_SOCKET (path or abstract) and a short temporary directory for sockets."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.listener import NotifySocket, bind


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket path has at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="fdep-notify-") as name:
        yield Path(name)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, short_dir: Path) -> Iterator[NotifySocket]:
    """A listening notify socket, once at a file-system path and once in the abstract namespace."""
    if request.param == "path":
        path = short_dir / "notify.sock"
        sock, value = bind(str(path)), str(path)
    else:
        name = f"fdep-gateway-test-{uuid.uuid4().hex}"
        sock, value = bind(b"\0" + name.encode()), f"@{name}"
    with sock:
        yield NotifySocket(sock, value)
