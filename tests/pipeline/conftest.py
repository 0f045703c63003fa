"""The pipeline tests' fixture: the daemon's parts composed in-process (``tests/pipeline/parts.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.pipeline.parts import Parts, composed


@pytest.fixture(params=["memory", "sqlite"])
async def parts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Parts]:
    """Every test runs on both stores: they answer the same."""
    async with composed(tmp_path, request.param) as composition:
        yield composition
