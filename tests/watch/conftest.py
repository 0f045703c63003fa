"""Fixtures of the watcher tests: a real inbox directory and watchers that are always stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.detect.watch import InboxWatcher
from tests.watch.helpers import STATION_TC, Recorder


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "spool" / STATION_TC[0] / STATION_TC[1] / "in"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def start_watcher() -> AsyncIterator[Callable[..., InboxWatcher]]:
    """Start an InboxWatcher on the running loop; stopped at the end of the test."""
    started: list[InboxWatcher] = []

    def start(sink: Callable[..., None], **options: Any) -> InboxWatcher:
        watcher = InboxWatcher(asyncio.get_running_loop(), sink, **options)
        watcher.start()
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()
