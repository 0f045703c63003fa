"""Start-up recovery, Postfix-style: finish or redo whatever a crash left in flight, without forwarding twice.

The pipeline writes the ledger's final state last, after the file has left work/. So:
- a file still in work/, deferred/ or held/ simply goes through the pipeline again (validation is
  deterministic; a file the ledger already accepted skips the decision and is re-sent idempotently);
- a file already in archive/ or quarantine/ whose ledger row is not final only needs that row finished;
- history events already written are not written again (``HistoryWriter.logged``).
Every step is idempotent, so being killed during recovery is harmless: the next start does it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog

from gateway.config import DirectoryRoute, GatewayConfig
from gateway.daemon.shard import WHOLE
from gateway.daemon.start import ledger_path
from gateway.forward import DirectoryForwarder, Forwarder
from gateway.pipeline.item import Item
from gateway.store.history import Logged
from gateway.store.ledger import Ledger
from gateway.store.protocol import HistorySink, Store
from gateway.store.rules import FileRow
from gateway.store.rules import State as FileState
from spool.entries import classify
from spool.layout import SpoolLayout, State
from spool.recovery import inbox_duplicates_after_link, remove_temp_files, scan_states

log = structlog.get_logger("gateway.recovery")

_OPEN = (FileState.CLAIMED, FileState.ACCEPTED, FileState.DEFERRED, FileState.HELD)


class Share(Protocol):
    """The mailboxes a recovery covers: a process's shard, or the lease groups a node just took over."""

    @property
    def cleans(self) -> bool:
        """Whether this recovery also removes crash leftovers (temp files, inbox links) of its mailboxes."""
        ...

    def owns(self, transfer_code: str) -> bool: ...


@dataclass(frozen=True)
class Mailboxes:
    """The transfer codes ``owns`` accepts (the lease groups a node took over): cleaned up and recovered."""

    owns: Callable[[str], bool]
    cleans: bool = True
    before: str = "~"  # only files whose id sorts before this (ids start with their claim time)


@dataclass
class Recovered:
    items: list[Item]  # to run through the pipeline again
    logged: Logged  # what the history already says of them
    finished: int  # ledger rows completed for files that had already reached their outcome


def clean_up(
    layout: SpoolLayout, stations: list[str], owns: Callable[[str], bool] = lambda tc: True
) -> None:
    """What a crash left in the spool: temp files, and inbox names of files already claimed by link.
    Spool-wide: with several processes, their supervisor does it before any of them starts."""
    for name in stations:
        station = layout.station(name)
        removed = remove_temp_files(station, owns)
        duplicates = inbox_duplicates_after_link(station, owns)
        if removed or duplicates:
            log.info("recovery.cleaned", station=name, temp_files=removed, inbox_links=len(duplicates))


def clean_up_spool(config: GatewayConfig, layout: SpoolLayout) -> None:
    """With several processes, what their supervisor has done before any of them starts: the spool-wide
    clean-up, the core directories' temp copies (a process's clean-up could remove another's copy in
    progress), and the ledger made (or checked) once: two processes creating it at once would find it
    locked."""
    Ledger.open(ledger_path(config)).close()
    clean_up(layout, list(config.stations))
    cores = [DirectoryForwarder(r) for r in config.routes.values() if isinstance(r, DirectoryRoute)]
    asyncio.run(clean_up_cores(cores))


async def clean_up_cores(forwarders: Iterable[Forwarder]) -> None:
    """Temp copies a crash left in the core directories."""
    for forwarder in forwarders:
        if isinstance(forwarder, DirectoryForwarder):
            await forwarder.cleanup()


def recover(
    layout: SpoolLayout,
    stations: list[str],
    ledger: Store,
    history: HistorySink,
    *,
    shard: Share = WHOLE,
    known: Collection[str] = (),
    before: str = "~",
) -> Recovered:
    """Blocking: run in a thread before the watcher starts (an inbox duplicate must not be claimed).
    Only the files of ``shard``'s transfer codes (the process's share, or the lease groups just taken
    over), leaving out ``known`` (file ids already in flight here) and files claimed at or after
    ``before`` (a file id prefix); their mailboxes are cleaned up first when ``shard.cleans``."""
    if shard.cleans:
        clean_up(layout, stations, shard.owns)
    items: list[Item] = []
    for name in stations:
        station = layout.station(name)
        for entry in scan_states(station, states=(State.WORK, State.DEFERRED, State.HELD)):
            if not shard.owns(entry.tc) or entry.file_id in known or entry.file_id >= before:
                continue
            row = ledger.get(entry.file_id)
            items.append(
                Item(
                    station=name,
                    transfer_code=entry.tc,
                    file_id=entry.file_id,
                    name=row.name if row is not None and row.name else entry.name,
                    path=entry.path,
                    kind=classify(entry.path),
                    resumed=True,
                )
            )
    in_flight = {item.file_id for item in items}
    open_rows = [
        row
        for state in _OPEN
        for row in ledger.by_state(state.value)
        if row.file_id not in in_flight
        and row.file_id not in known
        and row.file_id < before
        and shard.owns(row.transfer_code or "")
    ]
    ended = _ended(layout, stations, open_rows)
    finished = 0
    for row in open_rows:
        final = _final_state(row, ended.get(row.file_id))
        if final is None:
            log.warning("recovery.unknown_file", file_id=row.file_id, state=row.state.value)
            continue
        ledger.record(row.file_id, state=final.value, outcome=final.value)
        finished += 1
    logged = history.logged(in_flight)
    if items or finished:
        log.info("recovery.done", resumed=len(items), finished=finished)
    return Recovered(items=items, logged=logged, finished=finished)


def _ended(layout: SpoolLayout, stations: list[str], rows: list[FileRow]) -> dict[str, State]:
    """Which of these files already sit in quarantine/ or archive/ (only days they could be in)."""
    if not rows:
        return {}
    first_day = min(row.file_id[:8] for row in rows)
    wanted = {row.file_id for row in rows}
    found: dict[str, State] = {}
    for name in stations:
        station = layout.station(name)
        for state in (State.QUARANTINE, State.ARCHIVE):
            root = station.state_root(state)
            days = sorted(d for d in root.iterdir() if d.name >= first_day) if root.is_dir() else []
            for day in days:
                for folder in day.iterdir():
                    for path in folder.iterdir():
                        file_id = path.name.split(".", 1)[0]
                        if file_id in wanted:
                            found[file_id] = state
    return found


def _final_state(row: FileRow, ended: State | None) -> FileState | None:
    """The file reached its end before the crash: quarantine means rejected; archive means forwarded
    once the ledger had accepted it, and a duplicate when it had not (duplicates are never accepted)."""
    if ended is State.QUARANTINE:
        return FileState.REJECTED
    if ended is State.ARCHIVE:
        return FileState.DUPLICATE if row.state is FileState.CLAIMED else FileState.FORWARDED
    return None
