"""Taking files out of inboxes and handing them between state dirs: renames that never overwrite.

A claimed file is only durable after the directory fsyncs; ``claim`` leaves them to its caller so that a
batch pays for them once (``claim_many``). Nothing is acknowledged before that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from spool.entries import EntryKind, classify
from spool.errors import BatchError
from spool.fsio import fsync_dir, makedirs_durable, move_durable, rename_noreplace
from spool.layout import State, StationLayout, state_name


@dataclass(frozen=True, slots=True)
class Claimed:
    """A file now in ``work/``; ``name`` is the full inbox name even when ``path`` carries it truncated.

    ``kind`` is what was renamed: anything but REGULAR was never opened and is for quarantine.
    """

    file_id: str
    tc: str
    name: str
    path: Path
    kind: EntryKind
    truncated: bool


class Move(NamedTuple):
    src: Path
    state: State
    tc: str
    file_id: str
    name: str
    day: str | None = None


def claim(station: StationLayout, tc: str, name: str, file_id: str) -> Claimed | None:
    """Rename ``in/NAME`` to ``work/<tc>/<file_id>.<NAME>``; None if it is gone. Not yet durable."""
    src = station.inbox(tc) / name
    stored = state_name(file_id, name)
    dst = station.state_dir(State.WORK, tc) / stored.name
    try:
        rename_noreplace(src, dst)
    except FileNotFoundError:
        if classify(src) is EntryKind.VANISHED:
            return None
        raise  # the work dir is missing: a setup error, not a vanished file
    return Claimed(file_id, tc, name, dst, classify(dst), stored.truncated)


def claim_many(
    station: StationLayout, tc: str, names: Iterable[str], new_id: Callable[[], str]
) -> list[Claimed]:
    """Claim a batch, then fsync the work dir and the inbox once for all of it.

    A name that fails is left in the inbox; the others still go through and are made durable, then
    BatchError carries both. If the fsyncs fail the claims did not happen: the files are renamed back
    into the inbox (to be claimed again by a later scan) and the OSError is raised.
    """
    inbox = station.inbox(tc)
    claimed: list[Claimed] = []
    errors: dict[Path, OSError] = {}
    for name in names:
        try:
            taken = claim(station, tc, name, new_id())
        except OSError as exc:
            errors[inbox / name] = exc
            continue
        if taken is not None:
            claimed.append(taken)
    if claimed:
        try:
            fsync_dir(station.state_dir(State.WORK, tc))
            fsync_dir(inbox)
        except OSError:
            _unclaim(inbox, claimed)
            raise
    if errors:
        raise BatchError(claimed, errors)
    return claimed


def _unclaim(inbox: Path, claimed: list[Claimed]) -> None:
    """Undo claims that could not be made durable; one whose name was taken again meanwhile stays in
    work/ (a complete file there is found by the next start's recovery)."""
    for item in claimed:
        with contextlib.suppress(OSError):
            rename_noreplace(item.path, inbox / item.name)


def move(
    station: StationLayout,
    src: Path,
    state: State,
    tc: str,
    file_id: str,
    name: str,
    day: str | None = None,
    *,
    sync_dirs: bool = True,
) -> Path:
    """Hand a file to another state dir, durably (both dirs fsynced); returns its new path.

    With ``sync_dirs=False`` only the rename is done: the caller fsyncs ``src.parent`` and the new
    path's parent (for many files at once) before it acknowledges the move."""
    dst = station.state_path(state, tc, file_id, name, day)
    makedirs_durable(dst.parent)
    if sync_dirs:
        move_durable(src, dst)
    else:
        rename_noreplace(src, dst)
    return dst


def move_many(station: StationLayout, moves: Iterable[Move]) -> list[Path]:
    """``move`` for a batch with one fsync per directory; failures as in ``claim_many``."""
    moved: list[Path] = []
    errors: dict[Path, OSError] = {}
    targets: dict[Path, None] = {}  # ordered sets
    sources: dict[Path, None] = {}
    for m in moves:
        dst = station.state_path(m.state, m.tc, m.file_id, m.name, m.day)
        try:
            if dst.parent not in targets:
                makedirs_durable(dst.parent)
            rename_noreplace(m.src, dst)
        except OSError as exc:
            errors[m.src] = exc
            continue
        moved.append(dst)
        targets[dst.parent] = None
        sources[m.src.parent] = None
    for directory in [*targets, *(d for d in sources if d not in targets)]:
        fsync_dir(directory)
    if errors:
        raise BatchError(moved, errors)
    return moved
