"""The pipeline: validate -> route -> pair -> decide -> forward -> record, for one claimed file.

``Pipeline.process`` reads like the path a file travels; each step is a call into its own module that
returns a value (a verdict, a route, a decision, where the core took it), and the flow hands on one
``Checked`` value per file; the recorder is called twice, when the file is received and with its outcome.
The detector's claimed batches come in through ``together.take``: in a burst a batch takes these same
steps as one unit and hands a file to ``run`` (or to a later step here) when it needs something the others
do not; recovery re-enters at ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from codes.tables import Frequency
from gateway.batch import offload
from gateway.batch.commit import GroupTransaction
from gateway.batch.tasks import Tasks
from gateway.forward import Cancelled, Forwarder, ForwardError, Outbound, Rejected, RouteBroken, deliver
from gateway.metrics.sink import NULL_METRICS, MetricsSink
from gateway.pipeline import outcome
from gateway.pipeline.item import Checked, Item
from gateway.pipeline.record import Recorder
from gateway.pipeline.route import route
from gateway.pipeline.settings import Settings
from gateway.pipeline.validate import (
    INLINE_BYTES,
    Verdict,
    check_partners,
    partner_missing,
    validate_bytes,
    validate_file,
)
from gateway.store.fencing import FencedError
from gateway.store.protocol import Store
from gateway.store.rules import Accept, Decision, Duplicate, FileRow, FirstNotFull, Stale
from gateway.store.rules import State as FileState
from gateway.windows import deadline_of, stamp, window_hold
from spool.claim import Claimed
from spool.entries import EntryKind
from spool.fsio import datasync_file, publish, read_small
from spool.ids import file_id_time
from spool.layout import SpoolLayout, State
from spool.private import make_private, stage_private
from spool.sync import SYNCFS_FROM
from validators import findings
from validators.findings import Finding
from validators.pair import partner_rejected

log = structlog.get_logger("gateway.pipeline")

_KIND_NAMES = {
    EntryKind.SYMLINK: "符号链接 symlink",
    EntryKind.DIRECTORY: "目录 directory",
    EntryKind.FIFO: "管道 FIFO",
    EntryKind.SOCKET: "套接字 socket",
    EntryKind.DEVICE: "设备文件 device",
}


@dataclass(frozen=True, slots=True)
class ReportKey:
    """Spec 7: the report a file is a (re-)report of; field names are the ledger's keyword arguments."""

    station: str
    institution: str
    table: str
    date: str
    part: int

    def kwargs(self) -> dict[str, Any]:
        """The ledger's keyword arguments (``dataclasses.asdict`` copies deeply; every decision makes two)."""
        return {
            "station": self.station,
            "institution": self.institution,
            "table": self.table,
            "date": self.date,
            "part": self.part,
        }


@dataclass(frozen=True, slots=True)
class PairKey:
    """A TXT or a ZIP waiting for the other half of the same stem in one mailbox."""

    station: str
    transfer_code: str
    name_stem: str
    zipped: bool

    @property
    def stem(self) -> tuple[str, str, str]:
        return (self.station, self.transfer_code, self.name_stem)


@dataclass
class Pipeline:
    settings: Callable[[], Settings]  # the current config, rules, calendar and forwarders (swapped on reload)
    layout: SpoolLayout
    ledger: Store
    transactions: GroupTransaction  # the ledger's group commit
    recorder: Recorder
    pool: Executor | None
    now: Callable[[], datetime]
    stopping: asyncio.Event
    waiting: dict[PairKey, list[Checked]] = field(default_factory=dict)  # oldest first, per stem and kind
    rejections: dict[str, tuple[list[Finding], int]] = field(default_factory=dict)  # logged before a crash
    on_failure: Callable[[Item, Exception], None] = field(default=lambda item, exc: None)
    retrying: set[str] = field(default_factory=set)  # file_ids waiting in deferred/ for the core
    metrics: MetricsSink = NULL_METRICS
    owns: Callable[[str], bool] | None = None  # with leases: may this node still send this mailbox's files
    _timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)  # by file_id
    _lost_partners: set[tuple[str, str, str]] = field(default_factory=set)
    tasks: Tasks = field(default_factory=Tasks)  # the daemon's one owner of tasks
    _working: set[str] = field(default_factory=set)  # file_ids on their way now (not held, deferred or
    # waiting for a partner): how busy the process is

    @property
    def in_burst(self) -> bool:
        """Enough files on their way for their syncs to make batches worth a syncfs (``spool/sync.py``).
        Otherwise each file is synced in its own step: a small batch saves nothing, and every hand-off
        to a group's flusher adds to each file's latency (200 files/s, one process: p50 10 -> 20 ms)."""
        return len(self._working) >= SYNCFS_FROM

    def item_of(self, station: str, claimed: Claimed) -> Item:
        """A file the detector claimed, with its mailbox's institution."""
        entry = self.settings().config.transfer_codes.get(claimed.tc)
        institution = entry.institution if entry else None
        return Item(
            station, claimed.tc, claimed.file_id, claimed.name, claimed.path, claimed.kind, institution
        )

    async def finish(self, rest: Callable[[], Awaitable[None]], item: Item, done: Callable[[], None]) -> None:
        """Take ``item`` the rest of its way (``rest``, started here: a task cancelled before it began
        leaves no coroutine behind; if it fails, to ``on_failure``), then call ``done``."""
        try:
            await rest()
        except Exception as exc:
            self.on_failure(item, exc)
        finally:
            self.finished(item, done)

    def finished(self, item: Item, done: Callable[[], None]) -> None:
        """``item`` has reached its outcome (or its wait, for its partner, window or core)."""
        self._working.discard(item.file_id)
        done()

    def working(self, items: Sequence[Item]) -> None:
        """``items`` are on their way now (``finish`` ends that)."""
        self._working.update(item.file_id for item in items)

    async def run(self, item: Item) -> None:
        """``process``, guarded: one file's failure (a full disk, a failed fsync, a lapsed lease) never takes
        the daemon down; the file stays where its last durable step left it and goes to ``on_failure``."""
        try:
            await self.process(item)
        except Exception as exc:
            self.on_failure(item, exc)

    async def process(self, item: Item) -> None:
        """Take one claimed file to its outcome (or to the wait for its partner, its window or its core)."""
        self._working.add(item.file_id)
        try:
            await self._process(item)
        finally:
            self._working.discard(item.file_id)

    async def _process(self, item: Item) -> None:
        await self.recorder.received(item)
        logged = self.rejections.get(item.file_id)
        if logged is not None:  # rejected before a crash: finish that outcome, never decide it again
            await self.record([Checked(item).absorbing(*logged)], outcome.Rejected())
            del self.rejections[item.file_id]
            return
        if item.kind is not EntryKind.REGULAR:
            found = findings.make("NOT_REGULAR_FILE", kind=_KIND_NAMES.get(item.kind, item.kind))
            await self.record([Checked(item).adding(found)], outcome.Rejected())
            return
        row = await asyncio.to_thread(self.ledger.get, item.file_id) if item.resumed else None
        checked = self.route(item, await self.validate(item))
        if row is not None and row.state in (FileState.ACCEPTED, FileState.HELD, FileState.DEFERRED):
            await self._resume(checked, row)
            return
        await self.pair_and_decide(checked)

    async def pair_and_decide(self, checked: Checked) -> None:
        unit = self.pair(checked)
        if unit is not None:
            await self.decide(unit)

    async def _resume(self, checked: Checked, row: FileRow) -> None:
        """Recovery: decided before the crash; the file must still be exactly what was accepted."""
        if not checked.rejected and checked.sound.verdict.sha256 != row.sha256:
            checked = checked.adding(findings.make("FILE_CHANGED"))
        if checked.rejected:
            await self.record([checked], outcome.Rejected())
            return
        if not checked.is_zip:  # as a unit is flagged by its lead, the TXT: the same as before the crash
            checked = self.flag_late(checked)
        if row.state is FileState.DEFERRED:
            await self.forward([checked])  # forwarding is idempotent
        else:
            await self.release_or_hold([checked])

    async def validate(self, item: Item) -> Verdict:
        """The sender's bytes are made durable before any outcome is acknowledged for them; a small TXT
        is validated on the loop, anything else in a thread."""
        today = self.now().date()
        together = self.in_burst
        await self.make_private(item, together=together)
        if not item.name.upper().endswith(".ZIP"):
            small = await offload.to_thread(read_small, item.path, INLINE_BYTES, datasync=not together)
            if small is not None:
                if together:
                    await self.recorder.syncs.sync(item.path)  # with the other files in flight
                return validate_bytes(
                    small.data, item.name, self.settings().rules, today=today, mtime_ns=small.mtime_ns
                )
        await asyncio.to_thread(datasync_file, item.path)
        return await asyncio.to_thread(
            functools.partial(
                validate_file, item.path, item.name, self.settings().rules, today=today, pool=self.pool
            )
        )

    async def make_private(self, item: Item, *, together: bool) -> None:
        """The gateway's own inode from here on (``spool/private.py``): what is validated is what is
        kept and forwarded, whatever links or handles the sender kept. In a burst the copy is made
        durable with the other files' syncs."""
        if not together:
            await asyncio.to_thread(make_private, item.path, self.settings().rules.max_file_bytes)
            return
        limit = self.settings().rules.max_file_bytes
        staged = await asyncio.to_thread(functools.partial(stage_private, item.path, limit, sync=False))
        if staged is None:
            return
        try:
            await self.recorder.syncs.sync(staged)  # the bytes before the name
        except BaseException:
            await asyncio.to_thread(staged.unlink, missing_ok=True)
            raise
        await offload.to_thread(publish, staged, item.path)  # a rename in the spool: a short shared step

    def route(self, item: Item, verdict: Verdict) -> Checked:
        """The route step's answer beside the verdict: the one value the later steps hand on."""
        routed, problems = route(self.settings().config, item.station, item.transfer_code, verdict.parsed)
        return Checked(item, verdict, routed, tuple(problems))

    def pair(self, checked: Checked) -> list[Checked] | None:
        """A file that needs its TXT/ZIP partner waits for it; both are then decided as one unit."""
        item, verdict = checked.item, checked.verdict
        if verdict is None or verdict.parsed is None or not verdict.needs_partner:
            return [checked]
        stem = (item.station, item.transfer_code, verdict.parsed.stem)
        if stem in self._lost_partners:  # the partner was already rejected: do not make this one wait
            return [checked.adding(partner_missing(verdict, self.settings().rules))]
        partners = self.waiting.get(PairKey(*stem, zipped=not checked.is_zip))
        if not partners:
            if checked.rejected:  # no point waiting: reject now, and tell the partner at once when it comes
                self._partner_lost(stem)
                return [checked]
            self.waiting.setdefault(PairKey(*stem, zipped=checked.is_zip), []).append(checked)
            delay = self._pair_deadline(item)
            loop = asyncio.get_running_loop()
            self._timers[item.file_id] = loop.call_later(delay, self._pair_timeout, checked)
            log.info("pair.waiting", name=item.name, file_id=item.file_id, seconds=round(delay))
            return None
        partner = partners.pop(0)
        if not partners:
            del self.waiting[PairKey(*stem, zipped=partner.is_zip)]
        self._timers.pop(partner.item.file_id).cancel()
        txt, zipped = (partner, checked) if checked.is_zip else (checked, partner)
        if txt.verdict and zipped.verdict:
            txt = txt.adding(*check_partners(txt.verdict, zipped.verdict))
        if zipped.rejected and not txt.rejected:  # its own history and receipt line say why
            txt = txt.adding(partner_rejected(zipped.item.name))
        if txt.rejected and not zipped.rejected:
            zipped = zipped.adding(partner_rejected(txt.item.name))
        return [txt, zipped]

    def awaited_partners(self) -> list[tuple[str, str, str]]:
        """(station, transfer code, name) of the partner each waiting TXT or ZIP waits for: the detector
        tracks these beyond its bound, so a long queue in in/ never parts a pair."""
        return [
            (key.station, key.transfer_code, f"{key.name_stem}.{'TXT' if key.zipped else 'ZIP'}")
            for key in self.waiting
        ]

    def _pair_deadline(self, item: Item) -> float:
        claimed = file_id_time(item.file_id, self.settings().config.zone)
        waited = (self.now() - claimed).total_seconds()
        return max(0.0, self.settings().config.pair_timeout_seconds - waited)

    def _pair_timeout(self, checked: Checked) -> None:
        item = checked.item
        self._timers.pop(item.file_id, None)
        verdict = checked.verdict
        if verdict is None or verdict.parsed is None:
            return
        key = PairKey(item.station, item.transfer_code, verdict.parsed.stem, zipped=checked.is_zip)
        queue = self.waiting.get(key, [])
        if checked not in queue:
            return
        if self._partner_claimed(checked):  # e.g. both recovered after a restart: it is on its way
            self._timers[item.file_id] = asyncio.get_running_loop().call_later(
                max(1.0, self.settings().config.settle_seconds), self._pair_timeout, checked
            )
            return
        queue.remove(checked)
        if not queue:
            del self.waiting[key]
        self._partner_lost(key.stem)
        lost = checked.adding(partner_missing(verdict, self.settings().rules))
        self.spawn(self.record([lost], outcome.Rejected()), name=f"timeout {item.file_id}", unit=[item])

    def _partner_claimed(self, checked: Checked) -> bool:
        """The partner is in work/ already (claimed, not yet paired): one directory listing."""
        item = checked.item
        parsed = checked.verdict.parsed if checked.verdict else None
        if parsed is None:
            return False
        work = self.layout.station(item.station).state_dir(State.WORK, item.transfer_code)
        suffix = "." + parsed.partner
        try:
            with os.scandir(work) as entries:
                return any(entry.name.endswith(suffix) for entry in entries)
        except OSError:
            return False

    def _partner_lost(self, stem: tuple[str, str, str]) -> None:
        """For pair_timeout_seconds, a late partner of a rejected file is rejected at once."""
        self._lost_partners.add(stem)
        asyncio.get_running_loop().call_later(
            self.settings().config.pair_timeout_seconds, self._lost_partners.discard, stem
        )

    def spawn(self, work: Coroutine[None, None, None], *, name: str, unit: Sequence[Item] = ()) -> None:
        """Run ``work`` as a task the pipeline holds on to (the loop keeps only weak references); if it
        fails, every file of ``unit`` goes to ``on_failure`` (tried again later, never left behind)."""
        self.tasks.spawn(self._guarded(work, unit), name=name, role="pipeline")

    async def _guarded(self, work: Coroutine[None, None, None], unit: Sequence[Item]) -> None:
        try:
            await work
        except Exception as exc:
            for item in unit:
                self.on_failure(item, exc)
            if not unit:
                raise

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.tasks.running("pipeline"))

    async def decide(self, unit: list[Checked]) -> None:
        """Spec 7 on the unit's report: duplicate, stale batch, first report full; then forward or hold."""
        if any(one.rejected for one in unit):
            await self.record(unit, outcome.Rejected())
            return
        lead = unit[0]
        until = self.window(lead)
        route = self.settings().config.routes[lead.sound.routed.route]
        window_rejects = until is not None and route.on_window == "reject"
        decision = await self.transactions.run(
            functools.partial(self.decide_in_ledger, unit, accept=not window_rejects)
        )
        unit, ending = self.judged(unit, decision, until if window_rejects else None)
        if ending is not None:
            await self.record(unit, ending)
        else:
            await self._send_or_hold(unit, until)

    def judged(
        self, unit: list[Checked], decision: Decision, closed: datetime | None
    ) -> tuple[list[Checked], outcome.Duplicate | outcome.Rejected | None]:
        """The unit as the ledger's decision leaves it, and how it ends (None: to send or hold, late
        flagged). ``closed``: the reporting window that rejects it, if one does."""
        lead, rest = unit[0], unit[1:]
        sound = lead.sound
        if isinstance(decision, Duplicate):
            same = findings.make("DUPLICATE", file_id=decision.of)
            return [one.adding(same) for one in unit], outcome.Duplicate(decision.of)
        if isinstance(decision, Stale):
            lead = lead.adding(stale(sound.name.batch, decision.accepted))
        elif isinstance(decision, FirstNotFull):
            lead = lead.adding(findings.make("FIRST_REPORT_NOT_FULL", table=sound.name.table))
        elif closed is not None:
            lead = lead.adding(findings.make("WINDOW_CLOSED", until=stamp(closed)))
        if lead.rejected:
            return [lead, *rest], outcome.Rejected()
        return [self.flag_late(lead), *rest], None

    def decide_in_ledger(self, unit: Sequence[Checked], *, accept: bool) -> Decision:
        """Decide and take the report key in one transaction, so that identical files in flight at the
        same time see each other: the second is a duplicate of the first, never a stale batch."""
        lead = unit[0].sound
        key = ReportKey(
            unit[0].item.station, lead.routed.institution, lead.name.table, lead.name.date, lead.name.part
        )
        with self.ledger.atomic():
            for one in unit:
                item, sound = one.item, one.sound
                self.ledger.record(
                    item.file_id,
                    station=item.station,
                    transfer_code=item.transfer_code,
                    name=item.name,
                    sha256=sound.verdict.sha256,
                    size=sound.verdict.size,
                    institution=key.institution,
                    table_code=sound.name.table,
                    data_date=sound.name.date,
                    part=sound.name.part,
                    batch=sound.name.batch,
                    mode=sound.name.mode,
                )
            decision = self.ledger.decide(
                **key.kwargs(),
                batch=lead.name.batch,
                mode=lead.name.mode,
                sha256=lead.verdict.sha256,
                name=unit[0].item.name,
                incremental=lead.table.incremental,
            )
            if isinstance(decision, Accept) and accept:
                self._accept(unit, key)
        return decision

    def window(self, checked: Checked) -> datetime | None:
        """Spec 8: until when a production daily table must wait, or None to forward now."""
        station = self.settings().config.stations[checked.item.station]
        return window_hold(
            self.now(),
            production=station.environment == "production",
            windows_enabled=station.windows,
            daily=checked.sound.table.frequency is Frequency.DAILY,
            calendar=self.settings().calendar,
        )

    def flag_late(self, checked: Checked) -> Checked:
        """Spec 8: a daily or monthly table after its deadline is accepted and flagged (by its arrival)."""
        sound = checked.sound
        arrived = file_id_time(checked.item.file_id, self.settings().config.zone)
        data_date = datetime.strptime(sound.name.date, "%Y%m%d").date()
        deadline = deadline_of(sound.table, data_date, self.settings().calendar)
        if arrived > deadline:
            return checked.adding(findings.make("LATE", deadline=stamp(deadline)))
        return checked

    async def release_or_hold(self, unit: list[Checked]) -> None:
        """Forward now, or hold in held/ until the window closes (a restart re-evaluates the same way)."""
        await self._send_or_hold(unit, self.window(unit[0]))

    async def _send_or_hold(self, unit: list[Checked], until: datetime | None) -> None:
        if until is None:
            await self.forward(unit)
            return
        held = findings.make("HELD_WINDOW", until=stamp(until))
        unit = [one if any(f.code == held.code for f in one.found) else one.adding(held) for one in unit]
        await self.record(unit, outcome.Held(until))
        self.tasks.spawn(
            self._guarded(self._release_at(unit, until), [one.item for one in unit]),
            name=f"held {unit[0].item.file_id}",
            role="held",
        )

    async def _release_at(self, unit: list[Checked], until: datetime) -> None:
        while (wait := (until - self.now()).total_seconds()) > 0 and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=wait)
        if not self.stopping.is_set():
            await self.release_or_hold(unit)

    def _accept(self, unit: Sequence[Checked], key: ReportKey) -> None:
        """Write-ahead: the report key is taken and every file marked accepted before anything is sent
        (in ``_decide``'s transaction)."""
        lead = unit[0].sound
        self.ledger.accept(
            unit[0].item.file_id,
            **key.kwargs(),
            batch=lead.name.batch,
            sha256=lead.verdict.sha256,
        )
        for one in unit[1:]:
            self.ledger.set_state(one.item.file_id, FileState.ACCEPTED.value)

    async def forward(self, unit: list[Checked]) -> None:
        """Deliver every file of the unit (attachments first), then record the outcome."""
        ordered = sorted(unit, key=lambda one: not one.is_zip)
        where: dict[str, str] = {}
        for one in ordered:
            item, route = one.item, one.sound.routed.route
            try:
                where[item.file_id] = await deliver(
                    self._forwarder(route),
                    self.outbound(one),
                    self.settings().config.routes[route],
                    on_deferred=functools.partial(self._deferred, one),
                    on_retry=functools.partial(self.metrics.forward_retry, route),
                    stop_event=self.stopping,
                )
            except Rejected as exc:
                await self.record(_adding(unit, one, exc.finding()), outcome.Rejected())
                return
            except ForwardError:  # the spool copy no longer matches what was validated
                await self.record(_adding(unit, one, findings.make("FILE_CHANGED")), outcome.Rejected())
                return
            except Cancelled:
                log.info("forward.interrupted", name=item.name, file_id=item.file_id)
                return
            except RouteBroken as exc:  # a configuration error: the file waits in deferred/ for the fix
                self.metrics.route_broken(route)
                log.error(
                    "forward.route_misconfigured",
                    route=route,
                    name=item.name,
                    file_id=item.file_id,
                    error=str(exc),
                    hint="fix the route's url, then restart the gateway: deferred files are sent at start",
                )
                return
            finally:
                self.retrying.discard(item.file_id)
        await self.record(ordered, outcome.Forwarded(where))

    def _forwarder(self, route: str) -> Forwarder:
        forwarder = self.settings().forwarders[route]
        return forwarder if self.owns is None else _Fenced(forwarder, self.owns)

    def outbound(self, checked: Checked, *, together: bool = False) -> Outbound:
        """What the forwarder is given; ``together``: a claimed batch's, synced with the others."""
        item, sound = checked.item, checked.sound
        return Outbound(
            file_id=item.file_id,
            path=item.path,
            name=item.name,
            sha256=sound.verdict.sha256,
            size=sound.verdict.size,
            station=item.station,
            transfer_code=item.transfer_code,
            institution=sound.routed.institution,
            table=sound.name.table,
            data_date=sound.name.date,
            batch=f"{sound.name.batch:02d}",
            mode=sound.name.mode,
            mtime_ns=sound.verdict.mtime_ns,
            private=checked.restricted,
            # a larger copy is fsynced in its own thread: a batch must not wait for a 2 GB write-back
            sync_together=(together or self.in_burst) and sound.verdict.size <= INLINE_BYTES,
        )

    async def _deferred(self, checked: Checked, reason: str) -> Outbound:
        """The core cannot take the file now: the recorder keeps it in deferred/ and says so; it waits
        for its core, retried at its pace."""
        item = checked.item
        await self.record([checked], outcome.Deferred(reason))
        self._working.discard(item.file_id)
        self.retrying.add(item.file_id)
        self.metrics.deferred(item.station, checked.sound.routed.route)
        return self.outbound(checked)

    async def record(self, unit: Sequence[Checked], what: outcome.Outcome) -> None:
        await self.recorder.record(unit, what, together=self.in_burst)


def _adding(unit: Sequence[Checked], one: Checked, found: Finding) -> list[Checked]:
    """The unit with ``found`` added to its file ``one``."""
    return [other.adding(found) if other is one else other for other in unit]


class _Fenced:
    """A forwarder that sends nothing once this node's lease of the mailbox has lapsed, at every attempt
    (a retry may come long after the first): the file stays where it is for whoever owns it now."""

    def __init__(self, inner: Forwarder, owns: Callable[[str], bool]) -> None:
        self._inner = inner
        self._owns = owns

    async def send(self, item: Outbound) -> str:
        if not self._owns(item.transfer_code):
            raise FencedError(f"{item.file_id}: not sent, this node no longer holds the lease of its mailbox")
        return await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()


def stale(batch: int, accepted: int) -> findings.Finding:
    return findings.make(
        "BATCH_STALE",
        batch=f"{batch:02d}",
        accepted=f"{accepted:02d}",
        next_batch=f"{min(accepted + 1, 99):02d}",
    )
