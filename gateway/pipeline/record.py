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
from pathlib import Path
from typing import Any

import structlog

from gateway.batch import offload
from gateway.batch.commit import GroupCommit, GroupSync, GroupTransaction
from gateway.batch.each import each
from gateway.metrics.sink import NULL_METRICS, MetricsSink, claim_age
from gateway.pipeline.item import Checked, Item
from gateway.pipeline.outcome import Duplicate, Forwarded, Held, Outcome, Rejected
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
from validators.findings import Finding, Severity

log = structlog.get_logger("gateway.outcome")

_RECEIVED = "已接收，正在校验 / Received, being validated"


@dataclass
class Recorder:
    """Records what the flow hands it: a file received, then one call per outcome (``record``), each doing
    all that outcome asks (history events, receipt, move, ledger state) in the order above."""

    layout: SpoolLayout
    ledger: Store
    transactions: GroupTransaction  # the ledger's group commit
    history: GroupCommit[HistoryEvent]
    syncs: GroupSync  # the fsyncs of receipts and moves, shared by the files in flight
    now: Callable[[], datetime]
    logged: set[tuple[str, str]]  # (file_id, event) already in the history: filled by recovery
    metrics: MetricsSink = NULL_METRICS
    active: dict[str, Item] = field(default_factory=dict)  # received, no final outcome yet: the queue gauges

    async def received(self, *items: Item) -> None:
        """The files' first event; each counts as on its way (``active``) until its final outcome."""
        for item in items:
            self.active[item.file_id] = item
        await self._events([(Checked(item), "received", _RECEIVED, None) for item in items])

    async def record(self, unit: Sequence[Checked], outcome: Outcome, *, together: bool = False) -> None:
        """Everything ``outcome`` asks for the unit. ``together``: enough files are in flight for their
        receipts' syncs to share a syncfs (``spool/sync.py``)."""
        if isinstance(outcome, Forwarded):
            await self._forwarded(unit, outcome.where, together=together)
        elif isinstance(outcome, Rejected):
            await self._rejected(unit, together=together)
        elif isinstance(outcome, Duplicate):
            await self._duplicate(unit, outcome.of, together=together)
        elif isinstance(outcome, Held):
            await self._held(unit, outcome.until, together=together)
        else:
            await self._deferred(unit, outcome.reason)

    async def _events(self, batch: Sequence[tuple[Checked, EventKind, str, dict[str, Any] | None]]) -> None:
        """Append history events, durable when this returns; once per (file, kind)."""
        fresh = [
            HistoryEvent(
                event=kind,
                message=message,
                detail=detail,
                findings=[f.to_dict() for f in one.findings] if kind != "received" else None,
                findings_total=one.findings_total if kind != "received" else None,
                **one.facts,
            )
            for one, kind, message, detail in batch
            if (one.item.file_id, kind) not in self.logged
        ]
        await self.history.submit(fresh)
        self.logged.update((e.file_id or "", e.event) for e in fresh)  # a retry must not log it twice

    async def _move(self, item: Item, state: State, day: str | None = None) -> None:
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

    async def _rejected(self, unit: Sequence[Checked], *, together: bool) -> None:
        """Quarantine every file of the unit with its reasons; one BAD receipt for the stem."""
        await self._events(
            [(one, "rejected", rejection_message(one.findings, one.findings_total), None) for one in unit]
        )
        await self._receipt(unit, ok=False, status="rejected", together=together)
        day = self._day()
        for one in unit:
            await asyncio.to_thread(self._quarantine, one, day)
        await self._final(unit, FileState.REJECTED)

    async def _forwarded(self, unit: Sequence[Checked], where: Mapping[str, str], *, together: bool) -> None:
        """``where`` says, per file_id, where the core took each file."""
        await self._events([_forwarded(one, where) for one in unit])
        await self._receipt(unit, ok=True, status="forwarded", together=together)
        await self._archive(unit, FileState.FORWARDED)

    async def forwarded_together(
        self, files: Sequence[Checked], where: Mapping[str, str]
    ) -> dict[str, Exception]:
        """``record(Forwarded)`` for a claimed batch's files that went on as one unit (each one file), each
        step once for all and in the same order: one history append, the receipts staged, synced and
        published in two thread jobs, the archive renames in one, the final states in one transaction (a
        piece a file). Returns, by file_id, the error of each file a step failed for, left where that step
        found it (the caller hands it to ``on_failure``); a failed sync fails them all (it raises)."""
        await self._events([_forwarded(one, where) for one in files])
        receipts = [self._receipt_of([one], ok=True, status="forwarded") for one in files]
        staged = await asyncio.to_thread(each, _stage_unsynced, receipts)
        temps = [path for path in staged if isinstance(path, Path)]
        try:
            await self.syncs.sync(*temps)  # the bytes before the names
        except BaseException:
            await asyncio.to_thread(each, _unlink, temps)
            raise
        published = await asyncio.to_thread(each, _publish_staged, list(zip(receipts, staged, strict=True)))
        await self.syncs.sync(*dict.fromkeys(outbox for outbox, _ in receipts))
        answered, failed = _sorted_out(files, published)
        moved = await asyncio.to_thread(each, functools.partial(self._archived, day=self._day()), answered)
        archived, unmoved = _sorted_out(answered, moved)
        await self.syncs.sync(*dict.fromkeys(d for dirs in moved if isinstance(dirs, tuple) for d in dirs))
        final = functools.partial(self._set_states, state=FileState.FORWARDED, final=True)
        states = await self.transactions.run_many([functools.partial(final, [one]) for one in archived])
        done, unstated = _sorted_out(archived, states)
        self._counted(done, FileState.FORWARDED)
        return failed | unmoved | unstated

    def _archived(self, one: Checked, *, day: str) -> tuple[Path, Path]:
        """The move into archive/, its directories left to the caller's sync: (the directory it left, the
        one it is in now)."""
        item = one.item
        if one.restricted:  # spec 5: owner-only in the archive too, as in quarantine
            item.path.chmod(0o600)
        source = item.path.parent
        item.path = move(
            self.layout.station(item.station),
            item.path,
            State.ARCHIVE,
            item.transfer_code,
            item.file_id,
            item.name,
            day,
            sync_dirs=False,
        )
        return source, item.path.parent

    async def _held(self, unit: Sequence[Checked], until: datetime, *, together: bool) -> None:
        """Validated and accepted, forwarding held by the reporting window: say until when."""
        shown = stamp(until)
        message = (
            f"已校验通过，按报送时间窗暂缓转发，将于 {shown} 自动转发 / "
            f"Validated; held by the reporting window and forwarded automatically at {shown}"
        )
        await self._events([(one, "held", message, {"until": until.isoformat()}) for one in unit])
        await self._receipt(unit, ok=True, status="held", together=together)
        for one in unit:
            await self._move(one.item, State.HELD)
        await self.transactions.run(functools.partial(self._set_states, unit, FileState.HELD))

    async def _deferred(self, unit: Sequence[Checked], reason: str) -> None:
        """The core cannot take the files now: keep them in deferred/ (durably) and say so."""
        message = (
            f"报送平台暂时无法接收，文件已保留并将自动重试，无需重发 / The core cannot take the file now "
            f"({reason}); it is kept and retried automatically, do not resend"
        )
        for one in unit:
            await self._move(one.item, State.DEFERRED)
            await asyncio.to_thread(self.ledger.set_state, one.item.file_id, FileState.DEFERRED.value)
            await self._events([(one, "deferred", message, {"reason": reason})])

    def _set_states(self, unit: Sequence[Checked], state: FileState, *, final: bool = False) -> None:
        for one in unit:  # station and code too: a file rejected before its decision has no row yet
            item = one.item
            facts: Facts = {"station": item.station, "transfer_code": item.transfer_code}
            if final:
                facts["outcome"] = state.value
            self.ledger.record(item.file_id, state=state.value, **facts)

    async def _duplicate(self, unit: Sequence[Checked], of: str, *, together: bool) -> None:
        message = (
            f"与已接收的文件 {of} 完全相同，未重复转发，无需处理 / "
            f"Identical to {of}, already received; not forwarded again, nothing to do"
        )
        await self._events([(one, "duplicate", message, {"duplicate_of": of}) for one in unit])
        await self._receipt(unit, ok=True, status="duplicate", together=together)
        await self._archive(unit, FileState.DUPLICATE)

    async def _archive(self, unit: Sequence[Checked], state: FileState) -> None:
        day = self._day()
        for one in unit:
            await self.syncs.sync(*await offload.to_thread(functools.partial(self._archived, one, day=day)))
        await self._final(unit, state)

    def _quarantine(self, one: Checked, day: str) -> None:
        item = one.item
        station = self.layout.station(item.station)
        reason = {
            "file_id": item.file_id,
            "name": item.name,
            "station": item.station,
            "transfer_code": item.transfer_code,
            "findings_total": one.findings_total,
            "findings": [f.to_dict() for f in one.findings],
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

    async def _final(self, unit: Sequence[Checked], state: FileState) -> None:
        """The ledger's last word on the unit; then it is counted and no longer waits anywhere."""
        await self.transactions.run(functools.partial(self._set_states, unit, state, final=True))
        self._counted(unit, state)

    def _counted(self, unit: Sequence[Checked], state: FileState) -> None:
        """Files with their final state: out of the queue gauges, counted, logged."""
        self.logged.difference_update((one.item.file_id, kind) for one in unit for kind in EVENTS)
        now = self.now()
        for one in unit:
            item, found = one.item, one.findings
            self.active.pop(item.file_id, None)
            self.metrics.file_done(item.station, state.value, claim_age(item.file_id, now))
            self.metrics.findings(f.code for f in found)
            first = next((f.code for f in found if f.severity is Severity.ERROR), None)
            log.info(
                "file.done",
                outcome=state.value,
                name=item.name,
                file_id=item.file_id,
                station=item.station,
                transfer_code=item.transfer_code,
                records=one.records,
                findings=one.findings_total,
                first_finding=first,
            )

    async def _receipt(self, unit: Sequence[Checked], *, ok: bool, status: str, together: bool) -> None:
        outbox, receipt = self._receipt_of(unit, ok=ok, status=status)
        if together:
            staged = await offload.to_thread(_stage_unsynced, (outbox, receipt))
            try:
                await self.syncs.sync(staged)  # the bytes before the name: many files' in one go
            except Exception:  # a retry stages its own (if cancelled, the next start removes it)
                await offload.to_thread(_unlink, staged)
                raise
            await offload.to_thread(_publish_staged, ((outbox, receipt), staged))  # (removed if it fails)
        else:
            await offload.to_thread(functools.partial(write_receipt, outbox, receipt, sync_dir=False))
        await self.syncs.sync(outbox)

    def _receipt_of(self, unit: Sequence[Checked], *, ok: bool, status: str) -> tuple[Path, Receipt]:
        """The unit's one receipt, and the ``out/`` it goes to."""
        first = unit[0].item
        outbox = self.layout.station(first.station).outbox(first.transfer_code)
        return outbox, Receipt(
            name=first.name,
            ok=ok,
            records=sum(one.records for one in unit),
            findings=[f for one in unit for f in one.findings],
            findings_total=sum(one.findings_total for one in unit),
            at=self.now(),
            file_id=first.file_id,
            status=status,
            names=tuple(one.item.name for one in unit[1:]),
        )

    def _day(self) -> str:
        return self.now().strftime("%Y%m%d")


def _forwarded(one: Checked, where: Mapping[str, str]) -> tuple[Checked, EventKind, str, dict[str, Any]]:
    """The ``forwarded`` event of a file; ``where`` says, per file_id, where the core took it."""
    core = where.get(one.item.file_id, "")
    message = f"已转发至报送平台 / Forwarded to the reporting core ({visible(core)})"
    return one, "forwarded", message, {"core": core}


def _sorted_out(
    files: Sequence[Checked], results: Sequence[object]
) -> tuple[list[Checked], dict[str, Exception]]:
    """The files a thread job's or transaction's step did, and by file_id the errors of those it failed."""
    failed = {
        one.item.file_id: result
        for one, result in zip(files, results, strict=True)
        if isinstance(result, Exception)
    }
    return [one for one in files if one.item.file_id not in failed], failed


def _stage_unsynced(receipt: tuple[Path, Receipt]) -> Path:
    outbox, content = receipt
    return stage_receipt(outbox, content, sync=False)


def _publish_staged(pair: tuple[tuple[Path, Receipt], Path | Exception]) -> Path | None:
    (outbox, receipt), staged = pair
    if isinstance(staged, Exception):
        raise staged
    try:
        return publish_receipt(outbox, receipt, staged, sync_dir=False)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


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
