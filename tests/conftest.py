"""Shared fixtures: a config file for a throwaway spool, built the way a deployment writes one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def base_config(tmp: Path) -> dict[str, Any]:
    return {
        "spool_root": str(tmp / "spool"),
        "settle_seconds": 0.5,
        "rescan_seconds": 2,
        "pair_timeout_seconds": 5,
        "stations": {
            "k1237": {"environment": "test", "route": "core-test"},
            "k6666": {"environment": "production", "route": "core-prod"},
        },
        "routes": {
            "core-test": {"type": "directory", "path": str(tmp / "core" / "k1237")},
            "core-prod": {"type": "directory", "path": str(tmp / "core" / "k6666")},
        },
        "transfer_codes": {
            "TC41210000": {
                "institution": "41210000",
                "name": "示例基金销售有限公司",
                "stations": ["k1237", "k6666"],
            },
            "TC41220000": {"institution": "41220000", "stations": ["k1237"], "tables": ["D1001"]},
        },
        "history": {"dir": str(tmp / "history")},
    }


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
