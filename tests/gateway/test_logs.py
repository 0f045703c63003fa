"""The daemon's log lines: exceptions are structured, without their frames' local variables."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from gateway.daemon.logs import configure_logging


class Costly:
    """Stands for the service in a frame: its repr would walk everything in flight."""

    reprs = 0

    def __repr__(self) -> str:
        Costly.reprs += 1
        return "everything in flight"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


RECORD = "41210000|" + "".join(reversed("elbat detcirtser"))
"""A record of a restricted table, built at run time: a traceback's source lines must not show it."""


def fail(service: Costly, record: str) -> None:
    raise ValueError("database is locked")


def test_an_exception_is_logged_without_the_locals_of_its_frames(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_output=True)
    try:
        fail(Costly(), RECORD)
    except ValueError as exc:
        structlog.get_logger("test").error("file.failed", error=str(exc), exc_info=exc)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "file.failed"
    (exception,) = line["exception"]
    assert exception["exc_type"] == "ValueError"
    assert [frame["name"] for frame in exception["frames"]][-1] == "fail"  # where it happened is kept
    assert Costly.reprs == 0
    assert "restricted table" not in json.dumps(line)


def test_on_a_terminal_too_an_exception_is_logged_without_locals(capsys: pytest.CaptureFixture[str]) -> None:
    Costly.reprs = 0
    configure_logging(json_output=False)
    try:
        fail(Costly(), RECORD)
    except ValueError as exc:
        structlog.get_logger("test").error("file.failed", exc_info=exc)
    err = capsys.readouterr().err
    assert "ValueError: database is locked" in err and "in fail" in err
    assert Costly.reprs == 0
    assert "restricted table" not in err
