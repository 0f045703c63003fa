"""Before the daemon starts: a ledger that is missing or cannot be read is never replaced silently.

The ledger is what makes a resend of a forwarded file a DUPLICATE and a lower batch STALE (spec 7). A
new empty one in its place would forward again what the core already holds, so the daemon refuses to
start (``EXIT_LEDGER``, one error line, not restarted by systemd) while the spool shows earlier work:
anything in a state tree (work, deferred, held, archive or quarantine) or a sync history file. Only a
spool that never served anything gets a new ledger, and that is logged. Rebuilding the ledger from the
archive and the history is not attempted: retention removes both after their keep time, while the
ledger keeps every report key for ever, so a rebuilt one could not prove that nothing is forwarded twice.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import structlog

from gateway.store.history import daily_files
from gateway.store.ledger import Ledger, LedgerError
from spool.layout import SpoolLayout, State

log = structlog.get_logger("gateway.ledgercheck")

EXIT_LEDGER = 65
"""The ledger is missing or damaged while the spool shows earlier work (EX_DATAERR): restore it."""


class LedgerUnusableError(Exception):
    """The daemon must not start on this ledger; the message is one line for the operator."""


def check_ledger(path: Path, layout: SpoolLayout, stations: Iterable[str], history_dir: Path) -> None:
    """Raise ``LedgerUnusableError`` unless the ledger at ``path`` can be opened, or is missing (or empty)
    on a spool without earlier work, in which case it is created and that is logged."""
    try:
        missing = path.stat().st_size == 0
    except FileNotFoundError:
        missing = True
    if missing:
        earlier = earlier_work(layout, stations, history_dir)
        if earlier is not None:
            raise LedgerUnusableError(
                f"the ledger {path} is missing or empty, but the spool shows earlier work ({earlier}): "
                "restore the ledger from a backup; a new empty ledger would forward again files the core "
                "already holds"
            )
    try:
        Ledger.open(path).close()
    except (sqlite3.DatabaseError, LedgerError) as exc:
        raise LedgerUnusableError(
            f"the ledger {path} cannot be read ({exc}): restore it from a backup (never delete it while "
            "the spool holds files; the daemon will not start without it)"
        ) from exc
    if missing:
        log.info("ledger.created", path=str(path))


def earlier_work(layout: SpoolLayout, stations: Iterable[str], history_dir: Path) -> str | None:
    """Where the spool shows it served files before (the first place found), or None."""
    for station in stations:
        for state in State:
            root = layout.station(station).state_root(state)
            for entry in _entries(root):
                if state.dated or any(True for _ in _entries(Path(entry.path))):
                    return f"{root / entry.name}"
    for _, path in daily_files(history_dir):
        return str(path)
    return None


def _entries(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
