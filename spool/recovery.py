"""Start-up recovery of the spool's own state: read what is there, clear half-done steps.

Every function is idempotent: killed at any point, it can simply be run again. Run it before watching
the inboxes, so that nothing is claimed twice.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from spool.entries import is_temp_name
from spool.fsio import fsync_dir
from spool.ids import FILE_ID_LENGTH, is_file_id
from spool.layout import REASON_SUFFIX, TRANSFER_CODE, State, StationLayout, check_day, state_name

_log = logging.getLogger(__name__)
_WRITE_ATOMIC_TEMP = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # fsio.temp_name
_Junk = list[tuple[Path, str]]


@dataclass(frozen=True, slots=True)
class StateEntry:
    """A file in a state dir; ``name`` as stored, maybe truncated (the ledger has the full one)."""

    state: State
    tc: str
    file_id: str
    name: str
    path: Path
    day: str | None


def scan_states(station: StationLayout, states: Iterable[State] = tuple(State)) -> list[StateEntry]:
    """Every ``<file_id>.<NAME>`` in the given state dirs, oldest first; anything else is logged as junk.

    Entries can be of any kind: a claimed symlink, FIFO or directory is an entry too.
    """
    found: list[StateEntry] = []
    junk: _Junk = []
    for state, day, tc, directory in _leaf_dirs(station, states, junk):
        for entry in _scandir(directory):
            fname = entry.name
            if _WRITE_ATOMIC_TEMP.fullmatch(fname):
                continue  # remove_temp_files' business
            file_id, name = fname[:FILE_ID_LENGTH], fname[FILE_ID_LENGTH + 1 :]
            if fname[FILE_ID_LENGTH : FILE_ID_LENGTH + 1] != "." or not name or not is_file_id(file_id):
                junk.append((Path(entry.path), "not <file_id>.<NAME>"))
            elif name != REASON_SUFFIX:
                found.append(StateEntry(state, tc, file_id, name, Path(entry.path), day))
            elif state is not State.QUARANTINE:
                junk.append((Path(entry.path), "a quarantine reason outside quarantine"))
    for path, why in junk:
        _log.warning("spool recovery: %s is not the gateway's (%s); left alone", path, why)
    found.sort(key=lambda e: (e.file_id, e.state))
    return found


def remove_temp_files(station: StationLayout, owns: Callable[[str], bool] = lambda tc: True) -> int:
    """Remove write_atomic leftovers (``.<name>.<hex>.tmp``) from the state dirs and the out/ dirs (of
    the mailboxes ``owns`` accepts: another node may be writing in the others)."""
    dirs = [station.outbox(tc) for tc in station.mailboxes() if owns(tc)]
    dirs += [leaf for _, _, tc, leaf in _leaf_dirs(station, State, []) if owns(tc)]
    removed = 0
    for directory in dirs:
        for entry in _scandir(directory):
            if _WRITE_ATOMIC_TEMP.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


def inbox_duplicates_after_link(
    station: StationLayout, owns: Callable[[str], bool] = lambda tc: True
) -> list[Path]:
    """Unlink inbox names that are also in work/ (same inode): a claim killed between link and unlink.

    rename_noreplace falls back to link + unlink where RENAME_NOREPLACE is missing; the work/ name is
    complete, so the claim is finished by removing the inbox name. Returns the inbox paths removed.
    """
    removed: list[Path] = []
    for tc in filter(owns, station.mailboxes()):
        inbox = station.inbox(tc)
        linked: dict[int, list[tuple[int, str]]] = {}  # ino -> [(dev, name)] of inbox names with nlink > 1
        for entry in _scandir(inbox):
            if is_temp_name(entry.name) or entry.is_dir(follow_symlinks=False):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_nlink > 1:
                linked.setdefault(st.st_ino, []).append((st.st_dev, entry.name))
        if not linked:
            continue
        done = 0
        for entry in _scandir(station.state_dir(State.WORK, tc)):
            for dev, name in linked.get(entry.inode(), []):
                if _is_claim_of(entry.name, name) and entry.stat(follow_symlinks=False).st_dev == dev:
                    (inbox / name).unlink(missing_ok=True)
                    removed.append(inbox / name)
                    done += 1
        if done:
            fsync_dir(inbox)
    return removed


def _is_claim_of(work_name: str, inbox_name: str) -> bool:
    """Whether ``work_name`` is what claiming ``inbox_name`` makes (the institution may link names too)."""
    file_id = work_name[:FILE_ID_LENGTH]
    return is_file_id(file_id) and state_name(file_id, inbox_name).name == work_name


def _leaf_dirs(
    station: StationLayout, states: Iterable[State], junk: _Junk
) -> Iterator[tuple[State, str | None, str, Path]]:
    """``(state, day, tc, dir)`` of every state dir holding files; misplaced entries go to ``junk``."""
    for state in states:
        root = station.state_root(state)
        if not state.dated:
            for tc, directory in _subdirs(root, _is_transfer_code, junk):
                yield state, None, tc, directory
            continue
        for day, day_dir in _subdirs(root, _is_day, junk):
            for tc, directory in _subdirs(day_dir, _is_transfer_code, junk):
                yield state, day, tc, directory


def _subdirs(path: Path, valid: Callable[[str], bool], junk: _Junk) -> Iterator[tuple[str, Path]]:
    for entry in _scandir(path):
        if entry.is_dir() and valid(entry.name):
            yield entry.name, Path(entry.path)
        else:
            junk.append((Path(entry.path), "unexpected in this directory level"))


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _is_transfer_code(name: str) -> bool:
    return TRANSFER_CODE.fullmatch(name) is not None


def _is_day(name: str) -> bool:
    try:
        check_day(name)
    except ValueError:
        return False
    return True
