"""Several gateway processes on one spool (``processes`` in the config), each serving a share of the
mailboxes (gateway/daemon/shard.py).

One interpreter runs the gateway's Python on one CPU at a time, and under load its threads mostly
wait for each other. Two gateways sharing out the transfer codes forward about twice as many files
a second on two CPUs as one (``bench/burst.py --kinds gateway,split``).

``fdep-gateway run`` is then their supervisor. It holds the spool lock, cleans up what a crash left,
and starts the processes (``fdep-gateway worker``, gateway/daemon/workers.py). It passes SIGTERM,
SIGINT and SIGHUP on, and it alone speaks to systemd: READY once every process has started, and a
watchdog ping only while every process's main loop beats (a byte on a pipe every 0.5 s), so a hung one
gets the service restarted as a hung single process would. When one of them ends on its own, it stops
the others and fails: systemd restarts the service, and start-up recovery finishes every file. A
worker dies with its supervisor (PR_SET_PDEATHSIG) and holds a shared lock while it lives, so a
restarted supervisor waits for the old workers to be gone before it starts new ones.

The supervisor serves no file, so it imports none of the daemon's file work: its start-up clean-up
runs in a child process of its own (gateway/daemon/apart.py), and the metrics endpoint and obligation
gauges are imported only when ``metrics`` is configured. Idle it holds 41 MB; 62 MB, as much as a
gateway process, when it imported the whole daemon (docs/performance.md, backlog).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from gateway.config import GatewayConfig
from gateway.daemon.apart import run_apart
from gateway.daemon.notify import Heartbeat, Notifier
from gateway.daemon.shard import Shard
from gateway.daemon.start import EXIT_FAILED, EXIT_OK, clock_offset, run_locked
from spool.layout import SpoolLayout
from spool.lock import hold_shared, wait_until_free

if TYPE_CHECKING:
    from gateway.metrics.exporter import SharedEndpoint
    from gateway.obligations.gauges import ObligationGauges

log = structlog.get_logger("gateway.workers")

BEATS_FD = "FDEP_GATEWAY_BEATS_FD"
SUPERVISOR_PID = "FDEP_GATEWAY_SUPERVISOR"
_POLL = 0.2
_SILENT = 5.0
"""Seconds without a beat (a process's main loop beats every 0.5 s) after which the supervisor stops
pinging systemd's watchdog: a process whose loop hangs gets the service restarted."""
METRICS_DIR = ".gateway-metrics"
"""Beside the spool lock: the processes' metric files, emptied at every start of the supervisor."""
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_supervised(config: GatewayConfig, config_path: Path) -> int:
    return run_locked(config, lambda layout: Supervisor(config, config_path, layout).run())


@dataclass
class _Worker:
    shard: Shard
    process: subprocess.Popen[bytes]
    beats: int  # the read end of the pipe it writes a byte to on every beat of its main loop
    last_beat: float | None = None  # monotonic; None until it has started
    ended: bool = False  # its end has been seen (and its live metrics dropped)

    def listen(self, now: float) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.beats, 4096):
                self.last_beat = now


@dataclass
class Supervisor:
    config: GatewayConfig
    config_path: Path
    layout: SpoolLayout
    workers: list[_Worker] = field(default_factory=list)
    signals: list[int] = field(default_factory=list)  # received, not passed on yet
    stopping: bool = False
    failed: bool = False
    metrics: SharedEndpoint | None = None
    environment: dict[str, str] = field(default_factory=dict)  # what every worker starts with
    ended: threading.Event = field(default_factory=threading.Event)  # the supervisor's threads stop

    def run(self) -> int:
        notifier = Notifier.from_env(unset_environment=True)  # the workers must not speak to systemd
        grace = self.config.shutdown_timeout_seconds + 10
        if not wait_until_free(self.config.spool_root, grace):
            log.error("workers.still_running", note="processes of an earlier gateway hold the spool")
            return EXIT_FAILED
        if not run_apart(functools.partial(_clean_up_spool, self.config, self.layout), "workers.clean_up"):
            return EXIT_FAILED
        if self.config.metrics is not None:
            self._serve_metrics(self.config.metrics.listen)
        previous = {sig: signal.signal(sig, self._received) for sig in _FORWARDED}
        try:
            for index in range(self.config.processes):
                self.workers.append(self._start(Shard(index, self.config.processes)))
            log.info(
                "workers.started", processes=len(self.workers), pids=[w.process.pid for w in self.workers]
            )
            heartbeat = Heartbeat(notifier, self._status)
            reloading = False
            while not self._all_ended():
                now = time.monotonic()
                for worker in self.workers:
                    worker.listen(now)
                self._check()
                for signum in self._take_signals():
                    self._pass_on(signum)
                    if signum == signal.SIGHUP:  # each reloads on its own; a bad config is kept by each
                        notifier.reloading("the gateway processes reload the configuration")
                        reloading = True
                    else:
                        notifier.stopping("stopping: the gateway processes finish their files")
                if self._all_beating(now):  # a hung process gets no watchdog ping: systemd restarts us
                    heartbeat.beat(started=True)
                    if reloading:
                        heartbeat.ready()
                        reloading = False
                time.sleep(_POLL)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for worker in self.workers:
                os.close(worker.beats)
            self.ended.set()
            if self.metrics is not None:
                self.metrics.close()
        codes = [w.process.returncode for w in self.workers]
        log.info("workers.stopped", exit_codes=codes)
        stopped = (0, -signal.SIGTERM, -signal.SIGINT) if self.stopping else (0,)  # stopped before serving
        return EXIT_FAILED if self.failed or any(c not in stopped for c in codes) else EXIT_OK

    def _serve_metrics(self, listen: str) -> None:
        """One endpoint for every process, with the obligation gauges computed here once for all."""
        from gateway.metrics.exporter import SharedEndpoint
        from gateway.obligations.gauges import ObligationGauges

        self.metrics = SharedEndpoint(listen, self.config.spool_root / METRICS_DIR)
        self.environment.update(self.metrics.open())
        gauges = ObligationGauges(self.config)
        self.metrics.serve(gauges)
        threading.Thread(target=self._refresh, args=(gauges,), daemon=True).start()

    def _refresh(self, gauges: ObligationGauges) -> None:
        """The obligation gauges, computed here once for all the processes, until the supervisor ends."""
        offset = clock_offset(self.config)
        while not self.ended.is_set():
            try:
                gauges.refresh(datetime.now(self.config.zone) + offset)
            except Exception:
                log.exception("obligations.gauges_failed")
            self.ended.wait(self.config.obligations.gauges_seconds)

    def _start(self, shard: Shard) -> _Worker:
        beats, beats_write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(beats, False)
        command = [
            sys.executable,
            "-m",
            "gateway",
            "worker",
            "-c",
            str(self.config_path),
            "--shard",
            str(shard),
        ]
        env = {**os.environ, **self.environment, BEATS_FD: str(beats_write), SUPERVISOR_PID: str(os.getpid())}
        try:
            process = subprocess.Popen(command, pass_fds=(beats_write,), env=env)  # noqa: S603 - our own interpreter and arguments
        finally:
            os.close(beats_write)
        return _Worker(shard, process, beats)

    def _received(self, signum: int, _frame: FrameType | None) -> None:
        """A signal handler only takes note; the loop passes the signal on (Popen is not reentrant)."""
        self.signals.append(signum)

    def _take_signals(self) -> list[int]:
        taken = []
        while self.signals:  # one pop at a time: a signal may land between any two bytecodes
            taken.append(self.signals.pop(0))
        return taken

    def _pass_on(self, signum: int) -> None:
        if signum != signal.SIGHUP:
            self.stopping = True
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signum)

    def _check(self) -> None:
        for worker in self.workers:
            code = worker.process.poll()
            if code is not None and not worker.ended:
                worker.ended = True
                if self.metrics is not None:
                    self.metrics.process_ended(worker.process.pid)
            if code is not None and not self.stopping:
                log.error(
                    "worker.ended", process=str(worker.shard), exit_code=code, note="stopping the others"
                )
                self.failed = True
                self._pass_on(signal.SIGTERM)

    def _all_beating(self, now: float) -> bool:
        """Every process has started and its main loop beat lately."""
        return all(w.last_beat is not None and now - w.last_beat < _SILENT for w in self.workers)

    def _all_ended(self) -> bool:
        return all(w.process.poll() is not None for w in self.workers)

    def _status(self) -> str:
        running = sum(w.process.poll() is None for w in self.workers)
        return f"{running} of {len(self.workers)} gateway processes running"




def _clean_up_spool(config: GatewayConfig, layout: SpoolLayout) -> None:
    """In the child of ``run_apart``: it imports the pipeline and the cores, not the supervisor. It holds
    the workers' lock too, so that a supervisor started after this one was killed waits for it."""
    from gateway.daemon.recovery import clean_up_spool

    hold_shared(config.spool_root)
    clean_up_spool(config, layout)
