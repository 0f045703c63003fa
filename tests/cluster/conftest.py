"""Nodes of one cluster on a shared spool in a temp dir and a fresh database of the suite's server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.postgres import PostgresServer
from tests.conftest import private_server


@pytest.fixture
def cluster(tmp_path: Path, postgres_dsn: str) -> Iterator[Cluster]:
    made = Cluster(tmp_path, postgres_dsn, codes=16)
    yield made
    made.stop_all()


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, for a test that stops and restarts it (the suite's is shared)."""
    yield from private_server()


@pytest.fixture
def own_cluster(tmp_path: Path, own_server: PostgresServer) -> Iterator[Cluster]:
    made = Cluster(tmp_path, own_server.dsn, codes=16)
    yield made
    made.stop_all()
