"""A claimed batch as the unit: in a burst, the files the detector claimed together take each step
together, so that a step costs one thread job, one history append, one ledger transaction and one sync
for the batch rather than one of each for every file (the per-file hand-offs were the gateway's cost).

The steps are the one-file way's (``flow.Pipeline``), in the same order, each made durable before the
next acknowledges anything: received; the gateway's own copy, read once and synced with the others'
(``spool.private.take_small``); validated on the loop and routed; decided in one transaction; copied to a
directory core in two thread jobs and one sync; recorded (``Recorder.forwarded_together``).

A file leaves the batch as soon as it needs something the others do not, and goes on the one-file way
from where it is: a ZIP, a file that is not regular or too large to read whole, a TXT that waits for its
partner, one a reporting window holds, a rejection or a duplicate, one whose core is not a directory, one
a step failed for (the one-file way's forwarding retries and defers). The batch's task waits for the
files that left it, so the detector's owner of tasks still sees each file until it is done.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

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
        alone = [flow.finish(flow.run(item), item, done) for item in items]
        await (alone[0] if len(alone) == 1 else asyncio.gather(*alone))  # one: no task of its own
        return
    async with asyncio.TaskGroup() as leaving:
        batch = _Batch(flow, done, leaving, {item.file_id: item for item in items})
        try:
            await batch.run(items)
        except Exception as exc:  # a bug: the files still here go to on_failure, as one file's would
            for item in list(batch.here.values()):
                batch.fail(item, exc)


@dataclass
class _Batch:
    flow: Pipeline
    done: Callable[[], None]
    leaving: asyncio.TaskGroup  # the files gone the one-file way
    here: dict[str, Item]  # by file_id, the files still in the batch

    def leave(self, item: Item, work: Awaitable[None]) -> None:
        del self.here[item.file_id]
        self.leaving.create_task(self.flow.finish(work, item, self.done), name=f"alone {item.file_id}")

    def fail(self, item: Item, exc: Exception) -> None:
        self.leave(item, _raise(exc))

    async def run(self, items: Sequence[Item]) -> None:
        together: list[Item] = []
        for item in items:
            if item.kind is EntryKind.REGULAR and not item.resumed and not item.name.upper().endswith(".ZIP"):
                together.append(item)
            else:
                self.leave(item, self.flow.run(item))
        self.flow.working(together)
        await self.flow.recorder.received(*together)
        checked = await self._own_and_check(together)
        sent = await self._forward(await self._decide(self._sound(checked)))
        await self._record(*sent)

    async def _own_and_check(self, items: list[Item]) -> list[Checked]:
        """The gateway's own copy of each file, synced with the others' before it takes the file's name;
        then each validated on the loop and routed."""
        rules = self.flow.settings().rules
        taken = await asyncio.to_thread(each, functools.partial(_take, limit=INLINE_BYTES), items)
        small: list[tuple[Item, Small]] = []
        for item, got in zip(items, taken, strict=True):
            if isinstance(got, Small):
                small.append((item, got))
            else:  # too large, or it failed here: the one-file way takes it (and fails it, if it must)
                self.leave(item, self.flow.run(item))
        try:
            await self.flow.recorder.syncs.sync(*(got.staged or item.path for item, got in small))
        except BaseException:
            await asyncio.to_thread(each, _discard, small)
            raise
        published = await asyncio.to_thread(each, _publish, small)
        today = self.flow.now().date()
        checked = []
        for count, ((item, got), publishing) in enumerate(zip(small, published, strict=True), 1):
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the loop's other work (events, leases) between slices
            if isinstance(publishing, Exception):
                self.fail(item, publishing)
                continue
            try:
                verdict = validate_bytes(got.data, item.name, rules, today=today, mtime_ns=got.mtime_ns)
                checked.append(self.flow.route(item, verdict))
            except Exception as exc:
                self.fail(item, exc)
        return checked

    def _sound(self, checked: list[Checked]) -> list[Checked]:
        """The files to decide together: the others leave (a rejection to be recorded, a TXT that waits
        for its ZIP, a file a reporting window holds)."""
        sound = []
        for one in checked:
            if one.rejected:
                self.leave(one.item, self.flow.record([one], outcome.Rejected()))
            elif one.verdict is not None and one.verdict.needs_partner:
                self.leave(one.item, self.flow.pair_and_decide(one))
            elif self.flow.window(one) is not None:
                self.leave(one.item, self.flow.decide([one]))
            else:
                sound.append(one)
        return sound

    async def _decide(self, sound: list[Checked]) -> list[Checked]:
        """Every file's decision in one ledger transaction; those accepted, late ones flagged, go on."""
        decide = self.flow.decide_in_ledger
        works: list[Callable[[], Decision]] = [functools.partial(decide, [one], accept=True) for one in sound]
        decisions = await self.flow.transactions.run_many(works)
        accepted = []
        for one, decision in zip(sound, decisions, strict=True):
            if isinstance(decision, Exception):
                self.fail(one.item, decision)
                continue
            unit, ending = self.flow.judged([one], decision, None)
            if ending is not None:
                self.leave(one.item, self.flow.record(unit, ending))
            else:  # accepted: the report key is taken, the file marked accepted (write-ahead)
                accepted.append(unit[0])
        return accepted

    async def _forward(self, accepted: list[Checked]) -> tuple[list[Checked], dict[str, str]]:
        """One attempt for all of a directory core's files together; the rest, and any file that attempt
        failed for, are sent the one-file way (``deliver``: retries, deferral, rejection)."""
        by_route: dict[str, list[Checked]] = {}
        for one in accepted:
            by_route.setdefault(one.sound.routed.route, []).append(one)
        sent: list[Checked] = []
        where: dict[str, str] = {}
        for route, files in by_route.items():
            forwarder = self.flow.settings().forwarders[route]
            if not isinstance(forwarder, BatchForwarder):  # an HTTP core: one request a file anyway
                for one in files:
                    self.leave(one.item, self.flow.forward([one]))
                continue
            owns = self.flow.owns
            mine = []
            for one in files:
                if owns is None or owns(one.item.transfer_code):
                    mine.append(one)
                else:  # its lease lapsed: the one-file way fences it
                    self.leave(one.item, self.flow.forward([one]))
            if not mine:
                continue
            results = await forwarder.send_many([self.flow.outbound(one, together=True) for one in mine])
            for one, result in zip(mine, results, strict=True):
                if isinstance(result, str):
                    sent.append(one)
                    where[one.item.file_id] = result
                else:
                    self.leave(one.item, self.flow.forward([one]))
        return sent, where

    async def _record(self, files: list[Checked], where: dict[str, str]) -> None:
        if not files:
            return
        failed = await self.flow.recorder.forwarded_together(files, where)
        for one in files:
            item = one.item
            if item.file_id in failed:
                self.fail(item, failed[item.file_id])
            else:
                del self.here[item.file_id]
                self.flow.finished(item, self.done)


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


async def _raise(exc: Exception) -> None:
    raise exc
