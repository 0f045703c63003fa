"""A real spool in tmp_path: one station with two mailboxes, created the way the daemon creates it."""

from __future__ import annotations

from pathlib import Path

import pytest

from spool.layout import SpoolLayout, StationLayout

TCS = ("TC41210000", "TC41220000")


@pytest.fixture
def spool(tmp_path: Path) -> SpoolLayout:
    return SpoolLayout(tmp_path / "spool")


@pytest.fixture
def station(spool: SpoolLayout) -> StationLayout:
    st = spool.station("k1237")
    st.ensure(TCS)
    return st
