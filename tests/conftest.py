"""Shared fixtures: a config file for a throwaway spool, built the way a deployment writes one."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.config import REPO, base_config
from harness.postgres import PostgresServer, PostgresUnavailableError, start_server

__all__ = ["REPO", "base_config", "write_config"]


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config YAML (the base one, updated by the caller's keys) and return its path."""

    def write(**overrides: Any) -> Path:
        data = base_config(tmp_path)
        data.update(overrides)
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return path

    return write


def private_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster (initdb in a temp dir, as the postgres user when run as root), removed
    after. Skips only where no server can be had here, and says why."""
    try:
        server = start_server()
    except PostgresUnavailableError as exc:
        pytest.skip(f"PostgreSQL server not available: {exc}")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL cluster for the session."""
    yield from private_server()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of this test's own on the session's server."""
    digest = hashlib.blake2b(request.node.nodeid.encode(), digest_size=6).hexdigest()
    return postgres_server.fresh_database(f"t_{digest}")
