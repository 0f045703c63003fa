"""Shared fixtures: a config file for a throwaway spool, built the way a deployment writes one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.config import REPO, base_config

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
