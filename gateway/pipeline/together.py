"""A claimed batch as the unit: in a burst, the files the detector claimed together take each step
together, so that a step costs one thread job, one history append, one ledger transaction and one sync
for the batch rather than one of each for every file (the per-file hand-offs were the gateway's cost).

The steps are the one-file way's (``flow.Pipeline``), in the same order, each made durable before the
next acknowledges anything: received; the gateway's own copy, read once and synced with the others'
(``spool.private.take_small``); validated on the loop and routed; decided in one transaction; copied to a
directory core in two thread jobs and one sync; recorded (``Recorder.forwarded_together``).

A file leaves the batch as soon as it needs something the others do not, and goes on the one-file way
from where it is: a ZIP, a file that is not regular or too large to read whole, a TXT or ZIP of a pair
(rejected or not: its partner may be waiting), one a reporting window holds, a rejection or a duplicate,
one whose core is not a directory, one a step failed for (the one-file way's forwarding retries and
defers; a file a step's own I/O failed goes to ``on_failure``, as a file alone would). Each step returns
the files that go on and those that leave; the batch's task waits for the files that left it, so the
detector's owner of tasks still sees each file until it is done.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog

from gateway.batch.each import each
from gateway.forward.base import BatchForwarder
from gateway.pipeline import outcome
from gateway.pipeline.flow import Pipeline
from gateway.pipeline.item import Checked, Item
from gateway.pipeline.validate import INLINE_BYTES, validate_bytes
from gateway.store.rules import Decision
from spool.claim import Claimed
from spool.entries import EntryKind
from spool.fsio import publish
from spool.private import Small, take_small
from spool.sync import SYNCFS_FROM

log = structlog.get_logger("gateway.pipeline")

T = TypeVar("T")

TOGETHER_FROM = SYNCFS_FROM
"""Files claimed together from which they go on as one unit: below it each file's syncs are fsyncs of
their own anyway, and a file alone is not held up by a flusher's hand-off (latency at a trickle)."""

_YIELD_EVERY = 64
"""Files validated on the loop between two turns of it: a 1,024-file batch is ~0.1-0.3 s of Python."""


async def take(flow: Pipeline, claims: Sequence[tuple[str, Claimed]], done: Callable[[], None]) -> None:
    """The detector's hand-off (its ``on_claimed``): files it claimed together go on as one unit from
    ``TOGETHER_FROM`` on, else each the one-file way; ``done`` once a file as it is finished with."""
    items = [flow.item_of(station, claimed) for station, claimed in claims]
    if len(items) < TOGETHER_FROM:
        alone = [flow.finish(functools.partial(flow.process, item), item, done) for item in items]
        await (alone[0] if len(alone) == 1 else asyncio.gather(*alone))  # one: no task of its own
        return
    async with asyncio.TaskGroup() as tasks:
        batch = _Batch(flow, done, tasks, {item.file_id: item for item in items})
        try:
            await batch.run(items)
        except Exception as exc:  # a bug: the files still here go to on_failure, as one file's would
            batch.send_off([Leaving(item, exc) for item in batch.here.values()])


@dataclass(frozen=True, slots=True)
class Leaving:
    """A file that leaves the batch: the rest of its way (the one-file way's step from here), or the error
    a step of the batch failed it with (for ``on_failure``)."""

    item: Item
    rest: Callable[[], Awaitable[None]] | Exception


def _failed(step: Sequence[Item], results: Sequence[object]) -> list[Leaving]:
    """The files a thread job's step failed for (``each``: an error in a file's place)."""
    return [Leaving(item, got) for item, got in zip(step, results, strict=True) if isinstance(got, Exception)]


@dataclass
class _Batch:
    flow: Pipeline
    done: Callable[[], None]
    tasks: asyncio.TaskGroup  # the files gone the one-file way
    here: dict[str, Item]  # by file_id, the files still in the batch

    def send_off(self, leaving: Sequence[Leaving]) -> None:
        """The files that leave: each on the rest of its way in a task of the batch, or to ``on_failure``."""
        for one in leaving:
            item = one.item
            del self.here[item.file_id]
            if isinstance(one.rest, Exception):
                self.flow.on_failure(item, one.rest)
                self.flow.finished(item, self.done)
            else:
                self.tasks.create_task(
                    self.flow.finish(one.rest, item, self.done), name=f"alone {item.file_id}"
                )

    def going_on(self, step: tuple[list[T], list[Leaving]]) -> list[T]:
        """A step's files that go on together; those that leave it are sent off."""
        going, leaving = step
        self.send_off(leaving)
        return going

    async def run(self, items: Sequence[Item]) -> None:
        together = self.going_on(_fitting(self.flow, items))
        self.flow.working(together)
        await self.flow.recorder.received(*together)
        checked = self.going_on(await self._own_and_check(together))
        accepted = self.going_on(await self._decide(self.going_on(_sound(self.flow, checked))))
        sent = self.going_on(await self._forward(accepted))
        recorded = self.going_on(await self._record(sent))
        for one in recorded:
            del self.here[one.item.file_id]
            self.flow.finished(one.item, self.done)

    async def _own_and_check(self, items: list[Item]) -> tuple[list[Checked], list[Leaving]]:
        """The gateway's own copy of each file, synced with the others' before it takes the file's name;
        then each validated on the loop and routed."""
        flow = self.flow
        taken = await asyncio.to_thread(each, functools.partial(_take, limit=INLINE_BYTES), items)
        small = [(item, got) for item, got in zip(items, taken, strict=True) if isinstance(got, Small)]
        leaving = [  # too large, or it failed here: the one-file way takes it (and fails it, if it must)
            Leaving(item, functools.partial(flow.process, item))
            for item, got in zip(items, taken, strict=True)
            if not isinstance(got, Small)
        ]
        try:
            await flow.recorder.syncs.sync(*(got.staged or item.path for item, got in small))
        except BaseException:
            await asyncio.to_thread(each, _discard, small)
            raise
        published = await asyncio.to_thread(each, _publish, small)
        leaving += _failed([item for item, _ in small], published)
        rules, today = flow.settings().rules, flow.now().date()
        checked = []
        for count, ((item, got), publishing) in enumerate(zip(small, published, strict=True), 1):
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the loop's other work (events, leases) between slices
            if isinstance(publishing, Exception):
                continue
            try:
                verdict = validate_bytes(got.data, item.name, rules, today=today, mtime_ns=got.mtime_ns)
                checked.append(flow.route(item, verdict))
            except Exception as exc:
                leaving.append(Leaving(item, exc))
        return checked, leaving

    async def _decide(self, sound: list[Checked]) -> tuple[list[Checked], list[Leaving]]:
        """Every file's decision in one ledger transaction (a piece each); the files accepted, late ones
        flagged, go on, the others leave to be recorded (a duplicate, a stale batch)."""
        flow = self.flow
        works: list[Callable[[], Decision]] = [
            functools.partial(flow.decide_in_ledger, [one], accept=True) for one in sound
        ]
        decisions = await flow.transactions.run_many(works)
        accepted, leaving = [], []
        for one, decision in zip(sound, decisions, strict=True):
            if isinstance(decision, Exception):
                leaving.append(Leaving(one.item, decision))
                continue
            unit, ending = flow.judged([one], decision, None)
            if ending is not None:
                leaving.append(Leaving(one.item, functools.partial(flow.record, unit, ending)))
            else:  # accepted: the report key is taken, the file marked accepted (write-ahead)
                accepted.extend(unit)
        return accepted, leaving

    async def _forward(self, accepted: list[Checked]) -> tuple[list[tuple[Checked, str]], list[Leaving]]:
        """One attempt for all of a directory core's files together; each file of another core, of a
        lapsed lease or that attempt failed for is sent the one-file way (``deliver``: fenced, retried,
        deferred or rejected there). Returns each file sent with where the core took it."""
        flow = self.flow
        by_route: dict[str, list[Checked]] = {}
        for one in accepted:
            by_route.setdefault(one.sound.routed.route, []).append(one)
        sent: list[tuple[Checked, str]] = []
        leaving: list[Leaving] = []
        for route, files in by_route.items():
            forwarder = flow.settings().forwarders[route]
            together = isinstance(forwarder, BatchForwarder)  # not an HTTP core: one request a file anyway
            mine = [
                one for one in files if together and (flow.owns is None or flow.owns(one.item.transfer_code))
            ]
            going = {one.item.file_id for one in mine}
            leaving += [_forwarding(flow, one) for one in files if one.item.file_id not in going]
            if not mine or not isinstance(forwarder, BatchForwarder):
                continue
            results = await forwarder.send_many([flow.outbound(one, together=True) for one in mine])
            refused = [str(result) for result in results if not isinstance(result, str)]
            if refused:
                log.warning(
                    "forward.together_failed",
                    route=route,
                    files=len(refused),
                    of=len(mine),
                    error=refused[0],
                    note="each is sent again on its own, retried and deferred as usual",
                )
            for one, result in zip(mine, results, strict=True):
                if isinstance(result, str):
                    sent.append((one, result))
                else:
                    leaving.append(_forwarding(flow, one))
        return sent, leaving

    async def _record(self, sent: list[tuple[Checked, str]]) -> tuple[list[Checked], list[Leaving]]:
        """The ``Forwarded`` outcome of every file sent, recorded together; a file a step of it failed
        for stays where that step left it, for ``on_failure``."""
        if not sent:
            return [], []
        files = [one for one, _ in sent]
        failed = await self.flow.recorder.forwarded_together(
            files, {one.item.file_id: at for one, at in sent}
        )
        recorded = [one for one in files if one.item.file_id not in failed]
        return recorded, [
            Leaving(one.item, failed[one.item.file_id]) for one in files if one.item.file_id in failed
        ]


def _fitting(flow: Pipeline, items: Sequence[Item]) -> tuple[list[Item], list[Leaving]]:
    """The files to take together: a plain file not known before and not a ZIP (a ZIP may expand to many
    MB: it is inspected in a thread of its own); the others go the one-file way from the start."""
    fitting: list[Item] = []
    leaving: list[Leaving] = []
    for item in items:
        if item.kind is EntryKind.REGULAR and not item.resumed and not item.name.upper().endswith(".ZIP"):
            fitting.append(item)
        else:
            leaving.append(Leaving(item, functools.partial(flow.process, item)))
    return fitting, leaving


def _sound(flow: Pipeline, checked: list[Checked]) -> tuple[list[Checked], list[Leaving]]:
    """The files to decide together; the others leave: a file of a pair (its partner may be waiting, or be
    told its partner was rejected), a rejection to be recorded, a file a reporting window holds."""
    sound, leaving = [], []
    for one in checked:
        if one.verdict is not None and one.verdict.needs_partner:
            leaving.append(Leaving(one.item, functools.partial(flow.pair_and_decide, one)))
        elif one.rejected:
            leaving.append(Leaving(one.item, functools.partial(flow.record, [one], outcome.Rejected())))
        elif flow.window(one) is not None:
            leaving.append(Leaving(one.item, functools.partial(flow.decide, [one])))
        else:
            sound.append(one)
    return sound, leaving


def _forwarding(flow: Pipeline, one: Checked) -> Leaving:
    return Leaving(one.item, functools.partial(flow.forward, [one]))


def _take(item: Item, *, limit: int) -> Small | None:
    return take_small(item.path, limit)


def _publish(pair: tuple[Item, Small]) -> None:
    item, got = pair
    if got.staged is not None:
        publish(got.staged, item.path)


def _discard(pair: tuple[Item, Small]) -> None:
    _, got = pair
    if got.staged is not None:
        got.staged.unlink(missing_ok=True)
