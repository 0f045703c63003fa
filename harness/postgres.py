"""A private PostgreSQL server for the tests and the benchmarks: initdb in a temp dir, a free port.

Debian's server binaries (``postgresql`` package) are found on PATH or under /usr/lib/postgresql. As root
(CI) initdb and postgres refuse to run, so they run as the ``postgres`` user through ``runuser``; the data
directory is made theirs. ``restart``, ``kill`` and ``stop`` are the fault tests' handles.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg


class PostgresUnavailableError(RuntimeError):
    """No server binaries here (or no way to run them): tests that need one skip with this reason."""


def server_bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
    )
    if versions:
        return versions[-1].parent
    raise PostgresUnavailableError("no PostgreSQL server binaries (pg_ctl) on PATH or in /usr/lib/postgresql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """One private cluster. ``dsn`` reaches it over TCP on 127.0.0.1 (a proxy can stand in between)."""

    root: Path
    port: int = 0

    def __post_init__(self) -> None:
        self.bindir = server_bindir()
        self.data = self.root / "data"
        self.port = self.port or free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresUnavailableError("running as root without runuser: initdb refuses root")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=5"

    def dsn_at(self, port: int) -> str:
        return f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5"

    def init(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n"
            )
        return self

    def start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self.wait_ready()

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """kill -9 of the postmaster: the crash PostgreSQL recovers from at the next start."""
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def fresh_database(self, name: str) -> str:
        """An empty database of its own for one test: the DSN to reach it."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn.replace("dbname=postgres", f"dbname={name}")

    def _run(self, *argv: str, check: bool = True) -> None:
        done = subprocess.run(
            [*self._as_user, *argv], capture_output=True, text=True, cwd=self.root, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            )


def start_server() -> PostgresServer:
    """Init and start a private cluster in a new temp dir; ``PostgresUnavailableError`` says why it cannot be
    had. Not under pytest's own temp dir: that one is private to root, and the server runs as postgres."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="fdep-pg-"))).init()
    server.start()
    return server
