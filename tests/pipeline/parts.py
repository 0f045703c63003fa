"""The daemon's composition by hand, for the in-process pipeline tests: a real spool in a temp dir, a real
store, a real directory core; no daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from gateway.batch.commit import GroupCommit, GroupSync, GroupTransaction
from gateway.config import GatewayConfig, load_config
from gateway.daemon.start import prepare_spool
from gateway.detect.detector import Detector, OnClaimed
from gateway.forward import make_forwarder
from gateway.pipeline.flow import Pipeline
from gateway.pipeline.item import Item
from gateway.pipeline.record import Recorder
from gateway.pipeline.settings import Settings
from gateway.store.history import HistoryEvent, HistoryWriter
from gateway.store.ledger import Ledger
from gateway.store.memory import MemoryStore
from gateway.store.protocol import Store
from gateway.windows import Calendar
from harness.config import base_config
from harness.daemon import TC, drop
from spool.claim import Claimed, claim
from spool.ids import new_file_id
from spool.layout import SpoolLayout


@dataclass
class Parts:
    config: GatewayConfig
    layout: SpoolLayout
    store: Store
    writer: HistoryWriter
    pipeline: Pipeline

    def events(self) -> list[str]:
        lines = [p.read_text() for p in sorted(self.config.history.dir.glob("history-*.jsonl"))]
        return [line for text in lines for line in text.splitlines()]


@asynccontextmanager
async def composed(tmp_path: Path, store_kind: str) -> AsyncIterator[Parts]:
    """The daemon's composition, by hand: both stores (``memory``, ``sqlite``) answer the same."""
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path), allow_unicode=True), encoding="utf-8")
    config = load_config(path)
    layout = prepare_spool(config)
    store: Store = MemoryStore() if store_kind == "memory" else Ledger.open(tmp_path / "ledger.sqlite")
    writer = HistoryWriter(config.history.dir, config.zone)
    history: GroupCommit[HistoryEvent] = GroupCommit(writer.append)
    transactions = GroupTransaction(store.transaction)
    syncs = GroupSync()
    for group in (history, transactions, syncs):
        group.start()

    def now() -> datetime:
        return datetime.now(config.zone)

    recorder = Recorder(layout, store, transactions, history, syncs, now, set())
    forwarders = {name: make_forwarder(route) for name, route in config.routes.items()}
    settings = Settings.of(config, Calendar(config.holidays, config.workdays), forwarders)
    pipeline = Pipeline(
        settings=lambda: settings,
        layout=layout,
        ledger=store,
        transactions=transactions,
        recorder=recorder,
        pool=None,
        now=now,
        stopping=asyncio.Event(),
    )
    try:
        yield Parts(config, layout, store, writer, pipeline)
    finally:
        for group in (history, transactions, syncs):
            await group.stop()
        for forwarder in forwarders.values():
            await forwarder.aclose()
        writer.close()
        store.close()


def detector_of(parts: Parts, on_claimed: OnClaimed) -> Detector:
    """A detector over the k1237 inboxes of ``parts`` that hands each claimed file to ``on_claimed``."""
    return Detector(
        parts.layout,
        lambda: ["k1237"],
        settle_seconds=0.1,
        rescan_seconds=60,
        max_in_flight=10,
        now_id=lambda: new_file_id(datetime.now(parts.config.zone)),
        on_claimed=on_claimed,
    )


def claimed(parts: Parts, name: str, body: bytes) -> Item:
    """A file dropped in the k1237 inbox of TC and claimed, as the detector claims it."""
    station = parts.layout.station("k1237")
    drop(station.inbox(TC), name, body)
    taken = claim(station, TC, name, new_file_id(datetime.now(parts.config.zone)))
    assert taken is not None
    return item_of(taken)


def item_of(taken: Claimed) -> Item:
    return Item("k1237", TC, taken.file_id, taken.name, taken.path, taken.kind, institution="41210000")
