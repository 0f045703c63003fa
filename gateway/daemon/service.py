"""Lifecycle of the daemon: start-up (lock, recovery, first scan) -> main loop -> graceful shutdown.

Signal handlers only set flags: SIGTERM/SIGINT stop taking new files and give in-flight ones
``shutdown_timeout_seconds`` to finish (anything cut short stays in work/ or deferred/ and is recovered at
the next start); SIGHUP reloads the config and registry, keeping the old one if the new one is bad.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import psycopg_pool
import structlog

from gateway.batch.commit import GroupCommit, GroupSync, GroupTransaction
from gateway.batch.tasks import Role, Tasks
from gateway.cluster.leases import ClusterConfigError, LeaseKeeper, LeaseLostError, LeaseTerms
from gateway.config import ConfigError, GatewayConfig, PostgresStore, load_config
from gateway.daemon import heap
from gateway.daemon.logs import configure_logging
from gateway.daemon.notify import Heartbeat, Notifier
from gateway.daemon.pool import LazyPool
from gateway.daemon.recovery import Mailboxes, Recovered, clean_up_cores, recover
from gateway.daemon.retention import next_sweep, sweep
from gateway.daemon.shard import WHOLE, Shard
from gateway.daemon.signals import on_signals
from gateway.daemon.start import EXIT_FAILED, EXIT_OK, clock_offset, ledger_path, prepare_spool, run_locked
from gateway.detect.detector import Detector, tracked_share
from gateway.detect.fstype import uses_inotify
from gateway.forward import Forwarder, make_forwarder
from gateway.metrics.exporter import metrics_for
from gateway.metrics.sink import QueueDepth, queue_depths
from gateway.obligations import daily as obligations
from gateway.pipeline.feedback import deliver_all, feedback_sources
from gateway.pipeline.flow import Pipeline
from gateway.pipeline.item import Item
from gateway.pipeline.record import Recorder
from gateway.pipeline.settings import Settings
from gateway.pipeline.together import take
from gateway.store.fencing import FencedError
from gateway.store.history import HistoryEvent, HistoryWriter, Logged
from gateway.store.ledger import Ledger
from gateway.store.postgres import PostgresStore as PostgresLedger
from gateway.store.postgres_history import PostgresHistory
from gateway.store.protocol import HistorySink, Store
from gateway.store.rules import LedgerError
from gateway.windows import Calendar
from spool.errors import SpoolError
from spool.ids import next_file_id
from spool.layout import SpoolLayout, State

log = structlog.get_logger("gateway.service")

EXIT_LEASE_LOST = 75
"""EX_TEMPFAIL: a lease was taken over while this node could not renew it; systemd starts it afresh."""
_MAX_IN_FLIGHT = 2048
_IO_THREADS = 64
"""Threads for blocking file-system steps (asyncio.to_thread, gateway/batch/offload.py). The disk takes
several fsyncs at once (here one thread makes ~3,400 small durable files a second, eight ~10,800); the
rest is headroom for steps that block long, each on a thread of its own: a large file's copy or
fdatasync, a slow core directory (12 or 16 threads measured no faster in bursts)."""
_DRAIN_POLL = 0.2
_RESUMABLE = {State.WORK.value, State.DEFERRED.value, State.HELD.value}


def _freeze_startup_objects() -> None:
    """Leave what start-up built (config, registry, tables, compiled rules: most of the heap) out of
    the garbage collector's full passes. At 200 files/s a full pass ran every ~6 s and held everything
    up for 20-30 ms; with the start-up objects frozen it takes 2-5 ms (bench/latency.py)."""
    gc.collect()
    gc.freeze()


def run_node(config: GatewayConfig, main: Callable[[SpoolLayout], int]) -> int:
    """One node of several on a shared spool: no spool lock (the leases say who serves which mailbox)."""
    configure_logging()
    try:
        return main(prepare_spool(config))
    except SpoolError as exc:
        log.error("spool.unusable", error=str(exc))
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        log.error("store.unreachable", error=str(exc), hint="check store.dsn, the password and the server")
    except (ClusterConfigError, LedgerError) as exc:
        log.error("store.unusable", error=str(exc))
    return EXIT_FAILED


def run_service(config: GatewayConfig, *, config_path: Path, drain: bool) -> int:
    heap.limit_arenas()
    run = run_node if isinstance(config.store, PostgresStore) else run_locked
    return run(config, lambda layout: asyncio.run(Service(config, config_path, layout).serve(drain=drain)))


def _served(keeper: LeaseKeeper, groups: frozenset[int], transfer_code: str) -> bool:
    return keeper.group_of(transfer_code) in groups and keeper.owns(transfer_code)


class Service:
    def __init__(
        self, config: GatewayConfig, config_path: Path, layout: SpoolLayout, shard: Shard = WHOLE
    ) -> None:
        self.config = config
        self.shard = shard  # the mailboxes this process serves
        self.config_path = config_path
        self.layout = layout
        self.stopping = asyncio.Event()
        self.reload_requested = False
        self.notifier = Notifier.from_env(unset_environment=True)  # no-op unless systemd runs us
        self.failed = False
        self.exit_code = 0
        self.stranded: dict[str, Item] = {}  # failed on an I/O error, waiting to be tried again
        self._on_stop: list[Callable[[], None]] = []  # what must hear of a stop at once
        self.on_beat: Callable[[], None] = lambda: None  # every main-loop beat: a supervisor listens
        self.clock_offset = clock_offset(config)
        self.keeper: LeaseKeeper | None = None  # with PostgreSQL: this node's mailbox leases
        self.leases_end = asyncio.Event()  # renewed until the files in flight are done at a stop
        self.tasks = Tasks()  # every task of this process: the stop drains them here

    def calendar_of(self, config: GatewayConfig) -> Calendar:
        """The calendar of ``config``. Warned of only when today's year itself is unknown (working days
        are guesses now); how far it reaches and what to do before then is what ``config-check`` says."""
        calendar = Calendar(config.holidays, config.workdays)
        today = self.now().date()
        if not calendar.covers(today) and not calendar.listed_for(today.year):
            log.warning("calendar.year_unknown", year=today.year, hint=calendar.coverage(today))
        return calendar

    def now(self) -> datetime:
        return datetime.now(self.config.zone) + self.clock_offset

    def new_id(self) -> str:
        return next_file_id(self.now)

    async def serve(self, *, drain: bool) -> int:
        self._install_signals()  # a stop during a long recovery is a clean stop, not a kill
        try:
            return await self._serve(drain=drain)
        finally:  # also after a failed start: no handler may outlive the loop it calls
            self._restore_signals()

    async def _serve(self, *, drain: bool) -> int:
        config = self.config
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=_IO_THREADS, thread_name_prefix="gateway-io")
        )
        self.ledger, self.writer, served = await self._open_store(config)
        self.history: GroupCommit[HistoryEvent] = GroupCommit(served.append)
        self.history.start()
        self.transactions = GroupTransaction(self.ledger.transaction)
        self.transactions.start()
        self.syncs = GroupSync()
        self.syncs.start()
        self.settings = Settings.of(config, self.calendar_of(config), self._forwarders(config))
        if self.shard.whole and self.keeper is None:  # else the supervisor did, or other nodes are busy
            await clean_up_cores(self.settings.forwarders.values())
        self.pool = LazyPool(config.workers or None)
        stations = list(config.stations)
        if self.keeper is None:
            recovered = await asyncio.to_thread(
                functools.partial(recover, self.layout, stations, self.ledger, self.writer, shard=self.shard)
            )
        else:  # each lease group is recovered when it is taken over
            recovered = Recovered(items=[], logged=Logged(set(), {}), finished=0)
        self.metrics = metrics_for(
            config.metrics,
            stations=config.stations,
            routes=config.routes,
            depths=self._depths,
            shared=not self.shard.whole,
        )
        self.recorder = Recorder(
            self.layout,
            self.ledger,
            self.transactions,
            self.history,
            self.syncs,
            self.now,
            recovered.logged.events,
            metrics=self.metrics,
        )
        self.pipeline = Pipeline(
            settings=lambda: self.settings,
            layout=self.layout,
            ledger=self.ledger,
            transactions=self.transactions,
            recorder=self.recorder,
            pool=self.pool,
            now=self.now,
            stopping=self.stopping,
            metrics=self.metrics,
            rejections=recovered.logged.rejections,
            on_failure=self._strand,
            owns=self.keeper.owns if self.keeper else None,
            tasks=self.tasks,
        )
        self.detector = Detector(
            self.layout,
            lambda: self.settings.stations,
            settle_seconds=config.settle_seconds,
            rescan_seconds=config.rescan_seconds,
            max_in_flight=_MAX_IN_FLIGHT,
            max_tracked=tracked_share(self.shard.count, _MAX_IN_FLIGHT),
            now_id=self.new_id,
            on_claimed=functools.partial(take, self.pipeline),
            metrics=self.metrics,
            owns=self.keeper.claims if self.keeper else self.shard.owns,
            spawn=lambda work, name: self.tasks.spawn(work, name=name, role="claimed"),
            awaited=self.pipeline.awaited_partners,
        )
        self._on_stop.append(self.detector.wake)
        self.obligation_gauges = (  # the obligations read the embedded store's files: not in a cluster yet
            None if self.keeper else obligations.register_gauges(self.metrics, config)
        )
        await self.metrics.start()
        for item in recovered.items:
            resumed = self.pipeline.run(self._with_institution(item))
            self.tasks.spawn(resumed, name=f"resume {item.file_id}", role="recovered")
        if self.keeper is not None:
            await self.keeper.start()  # takes its share of the lease groups; each is recovered, then claimed
            self.leasing = self.tasks.spawn(self.keeper.run(self.leases_end), name="leases", role="lease")
            self.tasks.spawn(self._adopt_orphans(self.keeper), name="orphans", role="service")
        self.watching = uses_inotify(config.detection, config.spool_root)
        if self.watching:
            self.detector.start_watching()
        await self.detector.scan()  # arms every inbox's watch: nothing renamed in after "started" is missed
        _freeze_startup_objects()
        log.info(
            "gateway.started",
            process=str(self.shard),
            stations=stations,
            resumed=len(recovered.items),
            drain=drain,
            spool=str(config.spool_root),
            detection="inotify and scans" if self.watching else "scans only",
            node=self.keeper.node_id if self.keeper else None,
        )
        self.tasks.spawn(self._retry_stranded(), name="stranded", role="service")
        if self.shard.first:  # spool-wide jobs: one process does them (of several nodes, see _leads)
            self.tasks.spawn(self._every_day(self._sweep), name="retention", role="service")
            self.tasks.spawn(self._feedback_loop(), name="feedback", role="service")
            if self.keeper is None:
                self.tasks.spawn(self._every_day(self._reconcile), name="reconcile", role="service")
        if self.obligation_gauges is not None:
            refresh = obligations.refresh_gauges(self.obligation_gauges, self.now, self.stopping)
            self.tasks.spawn(refresh, name="obligation gauges", role="service")
        self.detecting = self.tasks.spawn(self.detector.run(self.stopping), name="detect", role="service")
        try:
            if drain:
                await self._drain_until_idle()
            else:
                await self._main_loop()
        finally:
            await self._shutdown()
        return (self.exit_code or EXIT_FAILED) if self.failed else EXIT_OK

    async def _open_store(self, config: GatewayConfig) -> tuple[Store, HistorySink, HistorySink]:
        """The embedded SQLite ledger and JSON Lines history, or PostgreSQL with this node's leases; and
        the history the files served here are told in (with leases: fenced by them, as the ledger is)."""
        if not isinstance(config.store, PostgresStore):
            ledger = await asyncio.to_thread(Ledger.open, ledger_path(config))
            writer = HistoryWriter(config.history.dir, config.zone, now=self.now)
            return ledger, writer, writer
        store = config.store
        terms = LeaseTerms(store.node_id, store.groups, store.lease_seconds, store.renew_seconds)
        password = store.password()
        keeper = LeaseKeeper(store.dsn, terms, password=password, busy=self._group_busy)
        keeper.on_acquired = functools.partial(self._on_acquired, keeper)
        self.keeper = keeper
        pg = await asyncio.to_thread(
            functools.partial(
                PostgresLedger.open,
                store.dsn,
                password=password,
                fence=keeper,
                idle_in_transaction=terms.idle_in_transaction,
            )
        )
        history = PostgresHistory(pg.pool, store.node_id, self.now)
        return pg, history, history.fenced(keeper)

    def _group_busy(self, group: int) -> bool:
        """Whether a file of this lease group is on its way here (its hand-over waits for it)."""
        keeper = self.keeper
        return keeper is not None and any(
            keeper.group_of(item.transfer_code) == group for item in self.recorder.active.values()
        )

    def _on_acquired(self, keeper: LeaseKeeper, groups: frozenset[int]) -> None:
        self.pipeline.spawn(self._take_over(keeper, groups), name=f"take over {len(groups)} groups")

    async def _take_over(self, keeper: LeaseKeeper, groups: frozenset[int]) -> None:
        """Finish or redo what the previous holder left in these mailboxes, as start-up recovery does,
        then let the detector claim from them. Tried again until it succeeds or the leases are gone."""
        while not self.stopping.is_set() and groups & keeper.held.keys():
            try:
                await self._recover(Mailboxes(functools.partial(_served, keeper, groups)))
            except Exception as exc:
                log.error("takeover.failed", groups=sorted(groups), error=str(exc), note="tried again")
                await self._sleep_unless_stopping(keeper.terms.renew_seconds)
                continue
            keeper.recovered(groups)
            self.detector.rescan()
            return

    async def _recover(self, share: Mailboxes) -> int:
        """Run recovery over ``share`` beside the files in flight here; resume what it finds."""
        known = set(self.recorder.active) | set(self.stranded)
        recovered = await asyncio.to_thread(
            functools.partial(
                recover,
                self.layout,
                list(self.config.stations),
                self.ledger,
                self.writer,
                shard=share,
                known=known,
                before=share.before,
            )
        )
        self.recorder.logged |= recovered.logged.events
        self.pipeline.rejections.update(recovered.logged.rejections)
        for item in recovered.items:
            if item.file_id in self.recorder.active:
                continue  # claimed here meanwhile
            resumed = self.pipeline.run(self._with_institution(item))
            self.pipeline.spawn(resumed, name=f"resume {item.file_id}")
        return len(recovered.items)

    async def _adopt_orphans(self, keeper: LeaseKeeper) -> None:
        """A file a paused node claimed as its lease ran out sits in work/ of a mailbox now served here:
        every rescan interval, files in work/, deferred/ or held/ of the mailboxes held here that nobody
        here is working on are resumed (a claim is only made under a valid lease, so one older than a
        lease has no other owner)."""
        while not self.stopping.is_set():
            await self._sleep_unless_stopping(max(self.config.rescan_seconds, keeper.terms.lease_seconds))
            if self.stopping.is_set() or not keeper.valid():
                continue
            claimed_before = self.now() - timedelta(seconds=keeper.terms.lease_seconds)
            try:
                resumed = await self._recover(
                    Mailboxes(
                        functools.partial(_served, keeper, frozenset(keeper.ready)),
                        cleans=False,
                        before=claimed_before.strftime("%Y%m%d-%H%M%S"),
                    )
                )
            except Exception as exc:  # the store lost its connection (a server restart): the next sweep
                log.error("orphans.failed", error=str(exc), note="tried again at the next sweep")
                continue
            if resumed:
                log.warning("recovery.orphans", resumed=resumed, note="left by a node that lost its lease")

    def _leads(self) -> bool:
        """Spool-wide jobs run in one place: the only process, the first of several, or of several
        nodes the holder of lease group 0."""
        if self.keeper is None:
            return self.shard.first
        return 0 in self.keeper.held and self.keeper.valid()

    def _depths(self) -> dict[str, QueueDepth]:
        """Queue gauges, published at each beat (on the loop): from memory only, no I/O."""
        return queue_depths(
            self.config.stations,
            self.detector.unclaimed(time.monotonic()),
            ((item.station, item.path.parent.parent.name) for item in self.recorder.active.values()),
        )

    def _detecting_failed(self) -> bool:
        """Detection is the daemon's heartbeat: if it died, stop (systemd restarts us) rather than idle."""
        if self.stopping.is_set():
            return False
        if self.keeper is not None and self.leasing.done():
            error = self.leasing.exception()
            log.error("lease.lost", error=str(error), note="exiting: restarted fresh, the new owner redoes")
            self.failed, self.exit_code = True, EXIT_LEASE_LOST if isinstance(error, LeaseLostError) else 1
        elif self.watching and not self.detector.watcher_alive:
            log.error("watcher.dead", note="inotify reader stopped; exiting so the service restarts")
            self.failed = True
        elif self.detecting.done():
            log.error("gateway.failed", error=repr(self.detecting.exception()), note="detection stopped")
            self.failed = True
        return self.failed

    def _with_institution(self, item: Item) -> Item:
        """A recovered file with its mailbox's institution (recovery reads the spool, not the config)."""
        entry = self.config.transfer_codes.get(item.transfer_code)
        return replace(item, institution=entry.institution if entry else None)

    def _strand(self, item: Item, exc: Exception) -> None:
        """The pipeline's ``on_failure``: one file's failure (a full disk, a failed fsync) never takes the
        daemon down; the file stays where its last durable step left it and is tried again later
        (``_retry_stranded``)."""
        self.stranded[item.file_id] = item
        if isinstance(exc, FencedError):  # the lease lapsed: tried again here if it is renewed, else
            # left to the node that takes the mailbox over
            log.warning("file.fenced", name=item.name, file_id=item.file_id, error=str(exc))
            return
        log.error(
            "file.failed",
            name=item.name,
            file_id=item.file_id,
            error=str(exc),
            note=f"left in place; tried again in {self.config.rescan_seconds:g} s and at the next start",
            exc_info=exc,
        )

    async def _retry_stranded(self) -> None:
        """Files whose processing failed on an I/O error go through the pipeline again, from the state
        directory they are in (as start-up recovery would), once per rescan interval."""
        while not self.stopping.is_set():
            await self._sleep_unless_stopping(self.config.rescan_seconds)
            for file_id, item in list(self.stranded.items()):
                if self.stopping.is_set():
                    return
                if item.path.parent.parent.name not in _RESUMABLE or not item.path.exists():
                    continue  # already moved on (or half-moved): the next start finishes it
                if self.keeper is not None and not self.keeper.owns(item.transfer_code):
                    continue  # its lease lapsed: here again once renewed
                del self.stranded[file_id]
                self.pipeline.spawn(self.pipeline.run(item.fresh()), name=f"retry {file_id}")

    async def _main_loop(self) -> None:
        heartbeat = Heartbeat(self.notifier, self._status_text)
        while not self.stopping.is_set() and not self._detecting_failed():
            heartbeat.beat(started=self.detector.scans > 0)  # READY once recovery and a scan are done
            self.on_beat()
            if self.keeper is not None:
                self.metrics.leases(*self.keeper.gauges())
            self.metrics.publish()
            await asyncio.sleep(0.5)
            if self.reload_requested:
                self.reload_requested = False
                self.notifier.reloading("reloading the configuration")
                try:
                    await self._reload()
                finally:  # READY=1 again whether the new config was taken or rejected
                    heartbeat.ready()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, seconds))

    async def _every_day(self, job: Callable[[], None]) -> None:
        """Run ``job`` in a thread at start and then daily (00:30, gateway time) until stopping."""
        while not self.stopping.is_set():
            try:
                if self._leads():
                    await asyncio.to_thread(job)
            except Exception:
                log.exception("housekeeping.failed", job=job.__name__)
            await self._sleep_unless_stopping((next_sweep(self.now()) - self.now()).total_seconds())

    def _sweep(self) -> None:
        """Retention: archive, quarantine and history days past their keep time (the ledger stays)."""
        config = self.config
        report = sweep(
            self.layout,
            list(config.stations),
            today=self.now().date(),
            archive_days=config.retention.archive_days,
            quarantine_days=config.retention.quarantine_days,
            history_dir=config.history.dir,
            history_days=config.history.retention_days,
        )
        log.info("retention.swept", **report.as_log())

    def _reconcile(self) -> None:
        """The daily reconciliation report (spec 18): what was due, what arrived, what was rejected."""
        written = obligations.reconcile(self.config, self.now())
        log.info("obligations.reported", paths=[str(p) for p in written])

    async def _feedback_loop(self) -> None:
        """Deliver the cores' OK/BAD feedback files to the mailboxes they name."""
        while not self.stopping.is_set():
            for source in feedback_sources(self.config) if self._leads() else ():
                try:
                    await asyncio.to_thread(
                        deliver_all,
                        source,
                        config=self.config,
                        layout=self.layout,
                        now=self.now,
                        record=self.writer.append,
                    )
                except Exception:
                    log.exception("feedback.failed", source=str(source))
            await self._sleep_unless_stopping(min(self.config.rescan_seconds, 5.0))

    def _status_text(self) -> str:
        """systemctl status shows this line: what the daemon holds right now."""
        return (
            f"{len(self.settings.stations)} stations; in flight {self.detector.in_flight}, "
            f"awaiting partner {len(self.pipeline.waiting)}, deferred {len(self.pipeline.retrying)}; "
            f"last scan saw {self.detector.last_scan_found} inbox files"
        )

    async def _drain_until_idle(self) -> None:
        """``drain``: stop once nothing is ready, settling, in flight or waiting for its partner."""
        quiet = 0
        while not self.stopping.is_set() and not self._detecting_failed():
            await asyncio.sleep(_DRAIN_POLL)
            self.metrics.publish()
            busy = (
                self.tasks.running("recovered")
                or not self.detector.settled
                or self.pipeline.busy
                or self.detector.in_flight > len(self.pipeline.retrying)
            )
            if busy:
                quiet = 0
                continue
            if quiet == 0:
                await self.detector.scan()
            quiet += 1
            if quiet >= 2:
                return

    async def _shutdown(self) -> None:
        """Stop taking (detection, loops), give the files in flight their time, cancel the rest; then
        the group commits, the cores, the leases (held until here) and the store."""
        self.notifier.stopping(f"stopping: finishing {self.detector.in_flight} in-flight files")
        self._stop()
        self.detector.stop_watching()
        await self.metrics.stop()
        in_flight: tuple[Role, ...] = ("service", "claimed", "recovered", "pipeline", "held")
        cut = await self.tasks.finish(in_flight, self.config.shutdown_timeout_seconds)
        if cut:
            log.warning("shutdown.cut_short", tasks=cut, note="their files are recovered at the next start")
        await self.history.stop()
        await self.transactions.stop()
        await self.syncs.stop()
        for forwarder in self.settings.forwarders.values():
            with contextlib.suppress(TimeoutError):  # a core that hangs: its files' syncs fail
                await asyncio.wait_for(forwarder.aclose(), self.config.shutdown_timeout_seconds)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.keeper is not None:  # the files are done: their leases go back at once
            self.leases_end.set()
            await self.tasks.finish(("lease",), self.keeper.terms.renew_seconds * 2)
            if self.exit_code == EXIT_LEASE_LOST:
                await self.keeper.close()
            else:
                await self.keeper.release_all()
        self.ledger.close()
        self.writer.close()
        log.info("gateway.stopped")

    def _install_signals(self) -> None:
        self._restore_signals: Callable[[], None] = on_signals(
            asyncio.get_running_loop(),
            {signal.SIGTERM: self._stop, signal.SIGINT: self._stop, signal.SIGHUP: self._request_reload},
        )

    def _stop(self) -> None:
        self.stopping.set()
        for wake in self._on_stop:
            wake()

    def _request_reload(self) -> None:
        self.reload_requested = True

    async def _reload(self) -> None:
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
            await asyncio.to_thread(prepare_spool, config)
        except (ConfigError, SpoolError, OSError) as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            log.error("config.reload_rejected", problems=problems, note="keeping the running config")
            return
        if (config.spool_root, config.history.dir, config.processes, config.store) != (
            self.config.spool_root,
            self.config.history.dir,
            self.config.processes,
            self.config.store,
        ):
            log.error(
                "config.reload_rejected",
                problems=["spool_root, history.dir, processes and store need a restart"],
            )
            return
        old = self.settings.forwarders
        self.config = config
        self.settings = Settings.of(config, self.calendar_of(config), self._forwarders(config))
        self.metrics.prepare(config.stations, config.routes)
        log.info("config.reloaded", transfer_codes=len(config.transfer_codes), stations=list(config.stations))
        for forwarder in old.values():
            self._retire(forwarder)

    def _forwarders(self, config: GatewayConfig) -> dict[str, Forwarder]:
        return {name: make_forwarder(route) for name, route in config.routes.items()}

    def _retire(self, forwarder: Forwarder) -> None:
        """Close a replaced forwarder once files already using it are done (they hold a reference)."""
        asyncio.get_running_loop().call_later(
            self.config.shutdown_timeout_seconds, lambda: asyncio.ensure_future(forwarder.aclose())
        )
