from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.daemon import Gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(root=tmp_path, config_path=tmp_path / "gateway.yaml")
    gw.write_config()
    yield gw
    if gw.process is not None and gw.process.poll() is None:
        gw.kill()
