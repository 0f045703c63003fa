"""The record step: where a file ends (archive or quarantine), its receipt, its history and its ledger row.

Order is what makes a crash harmless: history event, receipt, then the move out of work/, and the
ledger's final state last. Recovery therefore re-runs anything still in work/ (history is de-duplicated,
the receipt replaced) and only has to finish the ledger for a file already moved.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from gateway.batch import offload
from gateway.batch.commit import GroupCommit, GroupSync, GroupTransaction
from gateway.metrics.sink import NULL_METRICS, MetricsSink, claim_age
from gateway.pipeline.item import Item
from gateway.pipeline.receipts import Receipt, publish_receipt, stage_receipt, write_receipt
from gateway.store.history import EVENTS, EventKind, HistoryEvent
from gateway.store.protocol import Store
from gateway.store.rules import Facts
from gateway.store.rules import State as FileState
from gateway.text import visible
from gateway.windows import stamp
from spool.claim import move
from spool.entries import EntryKind
from spool.fsio import makedirs_durable, write_atomic
from spool.layout import SpoolLayout, State
from spool.sync import SYNCFS_FROM
from validators import findings
from validators.findings import Finding, Severity

log = structlog.get_logger("gateway.outcome")


@dataclass
class Recorder:
    layout: SpoolLayout
    ledger: Store
    transactions: GroupTransaction  # the ledger's group commit
    history: GroupCommit[HistoryEvent]
    syncs: GroupSync  # the fsyncs of receipts and moves, shared by the files in flight
    now: Callable[[], datetime]
    logged: set[tuple[str, str]]  # (file_id, event) already in the history: filled by recovery
    metrics: MetricsSink = NULL_METRICS
    active: dict[str, Item] = field(default_factory=dict)  # claimed, no outcome yet: the queue gauges
    working: set[str] = field(default_factory=set)  # file_ids on their way now (not held, deferred or
    # waiting for a partner): how busy the process is

    @property
    def in_burst(self) -> bool:
        """Enough files on their way for their syncs to make batches worth a syncfs (``spool/sync.py``).
        Otherwise each file is synced in its own step: a small batch saves nothing, and every hand-off
        to a group's flusher adds to each file's latency (200 files/s, one process: p50 10 -> 20 ms)."""
        return len(self.working) >= SYNCFS_FROM

    async def event(self, item: Item, kind: EventKind, message: str, **detail: Any) -> None:
        """Append one history event for ``item``, durable when this returns; once per (file, kind)."""
        await self.events([(item, kind, message, detail or None)])

    async def events(self, batch: Sequence[tuple[Item, EventKind, str, dict[str, Any] | None]]) -> None:
        fresh = [
            HistoryEvent(
                event=kind,
                message=message,
                detail=detail,
                findings=[f.to_dict() for f in item.findings] if kind != "received" else None,
                findings_total=item.findings_total if kind != "received" else None,
                **item.facts(),
            )
            for item, kind, message, detail in batch
            if (item.file_id, kind) not in self.logged
        ]
        await self.history.submit(fresh)
        self.logged.update((e.file_id or "", e.event) for e in fresh)  # a retry must not log it twice

    async def move_to(self, item: Item, state: State, day: str | None = None) -> None:
        """Hand the file to another state directory, durably; nothing to do if it already is in it."""
        if not state.dated and item.path.parent.parent.name == state.value:
            return
        source = item.path.parent
        item.path = await offload.to_thread(
            functools.partial(
                move,
                self.layout.station(item.station),
                item.path,
                state,
                item.transfer_code,
                item.file_id,
                item.name,
                day,
                sync_dirs=False,
            )
        )
        await self.syncs.sync(item.path.parent, source)

    async def rejected(self, unit: Sequence[Item]) -> None:
        """Quarantine every file of the unit with its reasons; one BAD receipt for the stem."""
        for item in unit:
            await self.event(item, "rejected", rejection_message(item.findings, item.findings_total))
        await self._receipt(unit, ok=False, status="rejected")
        day = self._day()
        for item in unit:
            await asyncio.to_thread(self._quarantine, item, day)
        await self._final(unit, FileState.REJECTED)

    async def forwarded(self, unit: Sequence[Item], where: Mapping[str, str]) -> None:
        """``where`` says, per file_id, where the core took each file."""
        for item in unit:
            core = where.get(item.file_id, "")
            await self.event(
                item,
                "forwarded",
                f"已转发至报送平台 / Forwarded to the reporting core ({visible(core)})",
                core=core,
            )
        await self._receipt(unit, ok=True, status="forwarded")
        await self._archive(unit, FileState.FORWARDED)

    async def held(self, unit: Sequence[Item], until: datetime) -> None:
        """Validated and accepted, forwarding held by the reporting window: say until when."""
        shown = stamp(until)
        for item in unit:
            if not any(f.code == "HELD_WINDOW" for f in item.extra.items):
                item.extra.add(findings.make("HELD_WINDOW", until=shown))
            await self.event(
                item,
                "held",
                f"已校验通过，按报送时间窗暂缓转发，将于 {shown} 自动转发 / "
                f"Validated; held by the reporting window and forwarded automatically at {shown}",
                until=until.isoformat(),
            )
        await self._receipt(unit, ok=True, status="held")
        for item in unit:
            await self.move_to(item, State.HELD)
        await self.transactions.run(functools.partial(self._set_states, unit, FileState.HELD))

    def _set_states(self, unit: Sequence[Item], state: FileState, *, final: bool = False) -> None:
        for item in unit:  # station and code too: a file rejected before its decision has no row yet
            facts: Facts = {"station": item.station, "transfer_code": item.transfer_code}
            if final:
                facts["outcome"] = state.value
            self.ledger.record(item.file_id, state=state.value, **facts)

    async def duplicate(self, unit: Sequence[Item], of: str) -> None:
        for item in unit:
            item.extra.add(findings.make("DUPLICATE", file_id=of))
            await self.event(
                item,
                "duplicate",
                f"与已接收的文件 {of} 完全相同，未重复转发，无需处理 / "
                f"Identical to {of}, already received; not forwarded again, nothing to do",
                duplicate_of=of,
            )
        await self._receipt(unit, ok=True, status="duplicate")
        await self._archive(unit, FileState.DUPLICATE)

    async def _archive(self, unit: Sequence[Item], state: FileState) -> None:
        day = self._day()
        for item in unit:
            if item.restricted:  # spec 5: owner-only in the archive too, as in quarantine
                await asyncio.to_thread(item.path.chmod, 0o600)
            await self.move_to(item, State.ARCHIVE, day)
        await self._final(unit, state)

    def _quarantine(self, item: Item, day: str) -> None:
        station = self.layout.station(item.station)
        reason = {
            "file_id": item.file_id,
            "name": item.name,
            "station": item.station,
            "transfer_code": item.transfer_code,
            "findings_total": item.findings_total,
            "findings": [f.to_dict() for f in item.findings],
        }
        makedirs_durable(station.state_dir(State.QUARANTINE, item.transfer_code, day))
        # Owner-only: a restricted table's content must not be readable by others (spec 5), and a file
        # whose name did not parse may be one; other reports hold personal data too.
        write_atomic(
            station.reason_path(item.transfer_code, item.file_id, day),
            # a name with undecodable bytes holds lone surrogates: written as JSON \udcXX escapes, which
            # read back to the same name (replay restores it)
            json.dumps(reason, ensure_ascii=False, indent=2).encode("utf-8", "backslashreplace"),
            mode=0o600,
        )
        if item.kind is EntryKind.REGULAR and item.path.lstat().st_nlink == 1:
            # the gateway's own file in work/: no link to follow. One with other names (a linked core
            # took it before its partner failed, or the sender linked it in) keeps its mode: changing
            # it would change the core's or the sender's file as well
            item.path.chmod(0o600)
        item.path = move(
            station, item.path, State.QUARANTINE, item.transfer_code, item.file_id, item.name, day
        )

    async def _final(self, unit: Sequence[Item], state: FileState) -> None:
        """The ledger's last word on the unit; then it is counted and no longer waits anywhere."""
        await self.transactions.run(functools.partial(self._set_states, unit, state, final=True))
        self.logged.difference_update((item.file_id, kind) for item in unit for kind in EVENTS)
        now = self.now()
        for item in unit:
            self.active.pop(item.file_id, None)
            self.metrics.file_done(item.station, state.value, claim_age(item.file_id, now))
            self.metrics.findings(f.code for f in item.findings)
            first = next((f.code for f in item.findings if f.severity is Severity.ERROR), None)
            log.info(
                "file.done",
                outcome=state.value,
                name=item.name,
                file_id=item.file_id,
                station=item.station,
                transfer_code=item.transfer_code,
                records=item.records,
                findings=item.findings_total,
                first_finding=first,
            )

    async def _receipt(self, unit: Sequence[Item], *, ok: bool, status: str) -> None:
        first = unit[0]
        outbox = self.layout.station(first.station).outbox(first.transfer_code)
        found = [f for item in unit for f in item.findings]
        receipt = Receipt(
            name=first.name,
            ok=ok,
            records=sum(item.records for item in unit),
            findings=found,
            findings_total=sum(item.findings_total for item in unit),
            at=self.now(),
            file_id=first.file_id,
            status=status,
            names=tuple(item.name for item in unit[1:]),
        )
        if self.in_burst:
            staged = await offload.to_thread(functools.partial(stage_receipt, outbox, receipt, sync=False))
            try:
                await self.syncs.sync(staged)  # the bytes before the name: many files' in one go
                await offload.to_thread(
                    functools.partial(publish_receipt, outbox, receipt, staged, sync_dir=False)
                )
            except Exception:  # a retry stages its own (if cancelled, the next start removes it)
                await offload.to_thread(staged.unlink, missing_ok=True)
                raise
        else:
            await offload.to_thread(functools.partial(write_receipt, outbox, receipt, sync_dir=False))
        await self.syncs.sync(outbox)

    def _day(self) -> str:
        return self.now().strftime("%Y%m%d")


def rejection_message(found: Sequence[Finding], total: int) -> str:
    """One sentence for operators and institutions: the first error, its hint, and how many more."""
    errors = [f for f in found if f.severity is Severity.ERROR]
    if not errors:
        return "已拒收 / Rejected"
    first = errors[0]
    where = f"第{first.line}行 " if first.line else ""
    where_en = f" (line {first.line})" if first.line else ""
    more = f"（另有 {total - 1} 条）" if total > 1 else ""
    more_en = f" (+{total - 1} more)" if total > 1 else ""
    return (
        f"已拒收：{where}{first.code} {first.message_zh}{more}；{first.hint_zh} / "
        f"Rejected: {first.code}{where_en} {first.message_en}{more_en}; {first.hint_en}"
    )
