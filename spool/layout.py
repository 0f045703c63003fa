"""Where everything of a spool lives: mailboxes, the gateway's state dirs, and the names of state files."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from spool.errors import SpoolError
from spool.fsio import makedirs_durable
from spool.ids import FILE_ID_LENGTH, is_file_id

STATION = re.compile(r"k[0-9]{4}")
TRANSFER_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")
GATEWAY_DIR = ".gateway"
REASON_SUFFIX = "reason.json"
NAME_MAX = 255
# A file literally named reason.json would collide with its own <file_id>.reason.json in quarantine.
_ESCAPED_REASON = "_reason.json"
_DIRS_KEPT = 16_384
"""A station's directory paths kept built and checked (mailboxes, state dirs by day): every file asks for
several, and building a Path and checking its parts cost more than the rest of a step."""


class State(StrEnum):
    WORK = "work"
    DEFERRED = "deferred"
    HELD = "held"
    QUARANTINE = "quarantine"
    ARCHIVE = "archive"

    @property
    def dated(self) -> bool:
        """Terminal states grow forever, so they are split by day."""
        return self in (State.QUARANTINE, State.ARCHIVE)


class StateName(NamedTuple):
    """A state file's name; ``truncated`` when it does not carry the original name verbatim."""

    name: str
    truncated: bool


def check_transfer_code(tc: str) -> str:
    if TRANSFER_CODE.fullmatch(tc) is None:
        raise ValueError(f"not a transfer code (expected [A-Za-z0-9_-]{{1,32}}): {tc!r}")
    return tc


def check_day(day: str) -> str:
    if re.fullmatch(r"[0-9]{8}", day):
        with contextlib.suppress(ValueError):
            datetime.strptime(day, "%Y%m%d")
            return day
    raise ValueError(f"not a day (expected yyyymmdd): {day!r}")


def state_name(file_id: str, name: str) -> StateName:
    """``<file_id>.<NAME>``, NAME cut at a UTF-8 boundary if the whole would exceed 255 bytes.

    ``reason.json`` is stored as ``_reason.json``: it would be the name of its own quarantine reason.
    """
    if not is_file_id(file_id):
        raise ValueError(f"not a file id: {file_id!r}")
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a file name: {name!r}")
    if name == REASON_SUFFIX:
        return StateName(f"{file_id}.{_ESCAPED_REASON}", truncated=True)
    raw = os.fsencode(name)
    room = NAME_MAX - FILE_ID_LENGTH - 1
    if len(raw) <= room:
        return StateName(f"{file_id}.{name}", truncated=False)
    cut = room
    # Back off while the first byte left out continues a character (at most 3: UTF-8 has 4-byte ones).
    while cut > room - 3 and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    return StateName(f"{file_id}.{os.fsdecode(raw[:cut])}", truncated=True)


class SpoolLayout:
    """The spool root: one directory per station."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stations: dict[str, StationLayout] = {}

    def station(self, name: str) -> StationLayout:
        layout = self._stations.get(name)
        if layout is None:
            if STATION.fullmatch(name) is None:
                raise ValueError(f"not a station (expected k and 4 digits): {name!r}")
            layout = self._stations[name] = StationLayout(name, self.root / name)
        return layout

    def stations(self) -> list[str]:
        """Station directories present on disk."""
        return _subdirs(self.root, STATION)


@dataclass(frozen=True)
class StationLayout:
    name: str
    root: Path
    _dirs: dict[tuple[str, ...], Path] = field(default_factory=dict, init=False, repr=False, compare=False)

    def _dir(self, *parts: str) -> Path:
        """``root/<parts>``, built once (the parts are checked by the caller before they first get here)."""
        path = self._dirs.get(parts)
        if path is None:
            if len(self._dirs) >= _DIRS_KEPT:
                self._dirs.clear()
            path = self._dirs[parts] = self.root.joinpath(*parts)
        return path

    @property
    def gateway(self) -> Path:
        return self._dir(GATEWAY_DIR)

    def inbox(self, tc: str) -> Path:
        return self._mailbox(tc, "in")

    def outbox(self, tc: str) -> Path:
        return self._mailbox(tc, "out")

    def _mailbox(self, tc: str, side: str) -> Path:
        path = self._dirs.get((tc, side))
        return path if path is not None else self._dir(check_transfer_code(tc), side)

    def state_root(self, state: State) -> Path:
        return self._dir(GATEWAY_DIR, state.value)

    def state_dir(self, state: State, tc: str, day: str | None = None) -> Path:
        """``.gateway/<state>/<tc>``, or ``.gateway/<state>/<day>/<tc>`` for quarantine and archive."""
        parts = (GATEWAY_DIR, state.value, tc) if day is None else (GATEWAY_DIR, state.value, day, tc)
        path = self._dirs.get(parts)
        if path is not None:
            return path
        check_transfer_code(tc)
        if not state.dated:
            if day is not None:
                raise ValueError(f"{state} is not split by day, got day {day!r}")
        elif day is None:
            raise ValueError(f"{state} needs a day (yyyymmdd)")
        else:
            check_day(day)
        return self._dir(*parts)

    def state_path(self, state: State, tc: str, file_id: str, name: str, day: str | None = None) -> Path:
        return self.state_dir(state, tc, day) / state_name(file_id, name).name

    def reason_path(self, tc: str, file_id: str, day: str) -> Path:
        """The quarantine reason beside the quarantined ``<file_id>.<NAME>``."""
        return self.state_dir(State.QUARANTINE, tc, day) / f"{file_id}.{REASON_SUFFIX}"

    def mailboxes(self) -> list[str]:
        """Transfer-code directories present on disk; ``.gateway`` and other names are not mailboxes."""
        return _subdirs(self.root, TRANSFER_CODE)

    def ensure(self, tcs: Iterable[str]) -> None:
        """Create the mailboxes and state dirs of ``tcs`` (the dated ones get their day dirs on demand)."""
        tcs = [check_transfer_code(tc) for tc in tcs]  # all valid before anything is created
        paths = [p for tc in tcs for p in (self.inbox(tc), self.outbox(tc))]
        for state in State:
            paths += [self.state_root(state)] if state.dated else [self.state_dir(state, tc) for tc in tcs]
        for path in paths:
            makedirs_durable(path)

    def check_same_filesystem(self) -> None:
        """Refuse a state dir or inbox on another filesystem than the station: hand-offs must be renames."""
        device = self.root.stat().st_dev
        for path in self._handoff_dirs():
            other = path.stat().st_dev
            if other != device:
                raise SpoolError(
                    f"{path} is on another filesystem (device {os.major(other)}:{os.minor(other)}) than "
                    f"{self.root} (device {os.major(device)}:{os.minor(device)}); the gateway's state must "
                    "be on the same filesystem as the inboxes so that every hand-off is a rename: "
                    "refusing to start"
                )

    def _handoff_dirs(self) -> Iterator[Path]:
        """Every directory a file is renamed into or out of, as far as it exists."""
        yield from (p for tc in self.mailboxes() if (p := self.inbox(tc)).is_dir())
        if not self.gateway.is_dir():
            return
        yield self.gateway
        for state in State:
            root = self.state_root(state)
            if not root.is_dir():
                continue
            yield root
            for sub in _dir_entries(root):
                yield sub
                if state.dated:
                    yield from _dir_entries(sub)


def _dir_entries(path: Path) -> Iterator[Path]:
    with os.scandir(path) as entries:
        yield from (Path(e.path) for e in entries if e.is_dir())


def _subdirs(path: Path, pattern: re.Pattern[str]) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return sorted(e.name for e in entries if pattern.fullmatch(e.name) and e.is_dir())
    except FileNotFoundError:
        return []
