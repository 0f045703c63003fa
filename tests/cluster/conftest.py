"""Nodes of one cluster on a shared spool in a temp dir and a fresh database of the suite's server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path, postgres_dsn: str) -> Iterator[Cluster]:
    made = Cluster(tmp_path, postgres_dsn, codes=16)
    yield made
    made.stop_all()
