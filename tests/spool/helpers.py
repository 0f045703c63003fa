"""Real special files for the tests: nothing here is mocked."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def make_socket(path: Path) -> None:
    """A unix socket file at ``path`` (bound via a relative name: socket paths are limited to 107 bytes)."""
    cwd = Path.cwd()
    os.chdir(path.parent)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path.name)
    finally:
        os.chdir(cwd)
