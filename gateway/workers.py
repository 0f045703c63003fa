"""Several gateway processes on one spool (``processes`` in the config), each serving a share of the
mailboxes (gateway/shard.py).

One interpreter runs the gateway's Python on one CPU at a time, and under load its threads mostly
wait for each other. Two gateways sharing out the transfer codes forward about twice as many files
a second on two CPUs as one (``bench/burst.py --kinds gateway,split``).

``fdep-gateway run`` is then their supervisor. It holds the spool lock, cleans up what a crash left,
and starts the processes (``fdep-gateway worker``). It tells systemd when all of them are ready and
passes SIGTERM, SIGINT and SIGHUP on. When one of them ends on its own, it stops the others and
fails: systemd restarts the service, and start-up recovery finishes every file. A worker dies with
its supervisor (PR_SET_PDEATHSIG) and holds a shared lock while it lives, so a restarted supervisor
waits for the old workers to be gone before it starts new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import structlog

from gateway.config import DirectoryRoute, GatewayConfig
from gateway.forward import DirectoryForwarder
from gateway.ledger import Ledger
from gateway.logs import configure_logging
from gateway.notify import Heartbeat, Notifier
from gateway.recovery import clean_up
from gateway.service import EXIT_FAILED, EXIT_OK, Service, clean_up_cores, ledger_path, run_locked
from gateway.shard import Shard
from spool.ids import share_suffixes
from spool.layout import SpoolLayout
from spool.lock import hold_shared, wait_until_free

log = structlog.get_logger("gateway.workers")

READY_FD = "FDEP_GATEWAY_READY_FD"
SUPERVISOR_PID = "FDEP_GATEWAY_SUPERVISOR"
_POLL = 0.2
_PR_SET_PDEATHSIG = 1
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_supervised(config: GatewayConfig, config_path: Path) -> int:
    return run_locked(config, lambda layout: Supervisor(config, config_path, layout).run())


@dataclass
class _Worker:
    shard: Shard
    process: subprocess.Popen[bytes]
    ready_fd: int
    ready: bool = False


@dataclass
class Supervisor:
    config: GatewayConfig
    config_path: Path
    layout: SpoolLayout
    workers: list[_Worker] = field(default_factory=list)
    stopping: bool = False
    reloading: bool = False  # a SIGHUP was passed on: tell systemd
    failed: bool = False

    def run(self) -> int:
        notifier = Notifier.from_env(unset_environment=True)  # the workers must not speak to systemd
        grace = self.config.shutdown_timeout_seconds + 10
        if not wait_until_free(self.config.spool_root, grace):
            log.error("workers.still_running", note="processes of an earlier gateway hold the spool")
            return EXIT_FAILED
        self._clean_up()
        previous = {sig: signal.signal(sig, self._forward) for sig in _FORWARDED}
        try:
            for index in range(self.config.processes):
                self.workers.append(self._start(Shard(index, self.config.processes)))
            if self.stopping:  # a SIGTERM while they were starting reached only some of them
                self._forward(signal.SIGTERM, None)
            log.info(
                "workers.started", processes=len(self.workers), pids=[w.process.pid for w in self.workers]
            )
            heartbeat = Heartbeat(notifier, self._status)
            announced = False
            while not self._all_ended():
                self._check()
                heartbeat.beat(started=all(w.ready for w in self.workers))
                if self.reloading:  # each process reloads on its own; a rejected config is kept by each
                    self.reloading = False
                    notifier.reloading("the gateway processes reload the configuration")
                    heartbeat.ready()
                if self.stopping and not announced:
                    notifier.stopping("stopping: the gateway processes finish their files")
                    announced = True
                time.sleep(_POLL)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for worker in self.workers:
                os.close(worker.ready_fd)
        codes = [w.process.returncode for w in self.workers]
        log.info("workers.stopped", exit_codes=codes)
        return EXIT_FAILED if self.failed or any(codes) else EXIT_OK

    def _clean_up(self) -> None:
        """The spool-wide clean-up a lone gateway does at start, before any worker takes a file; and the
        ledger made (or checked) once: two processes creating it at once would find it locked."""
        Ledger.open(ledger_path(self.config)).close()
        stations = list(self.config.stations)
        clean_up(self.layout, stations)
        cores = [DirectoryForwarder(r) for r in self.config.routes.values() if isinstance(r, DirectoryRoute)]
        asyncio.run(clean_up_cores(cores))

    def _start(self, shard: Shard) -> _Worker:
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(ready_read, False)
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
        env = {**os.environ, READY_FD: str(ready_write), SUPERVISOR_PID: str(os.getpid())}
        try:
            process = subprocess.Popen(command, pass_fds=(ready_write,), env=env)  # noqa: S603 - our own interpreter and arguments
        finally:
            os.close(ready_write)
        return _Worker(shard, process, ready_read)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reloading = True
        else:
            self.stopping = True
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signum)

    def _check(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(BlockingIOError):
                worker.ready = worker.ready or bool(os.read(worker.ready_fd, 1))
            code = worker.process.poll()
            if code is not None and not self.stopping:
                log.error(
                    "worker.ended", process=str(worker.shard), exit_code=code, note="stopping the others"
                )
                self.failed = True
                self._forward(signal.SIGTERM, None)

    def _all_ended(self) -> bool:
        return all(w.process.poll() is not None for w in self.workers)

    def _status(self) -> str:
        running = sum(w.process.poll() is None for w in self.workers)
        return f"{running} of {len(self.workers)} gateway processes running"


def run_worker(config: GatewayConfig, config_path: Path, shard: Shard) -> int:
    """One of a supervisor's processes: its share of the mailboxes, until SIGTERM or its supervisor dies."""
    configure_logging()
    _die_with_supervisor()
    hold_shared(config.spool_root)
    share_suffixes(shard.index, shard.count)
    service = Service(config, config_path, SpoolLayout(config.spool_root), shard)
    ready = os.environ.pop(READY_FD, None)
    if ready is not None:
        service.on_started = lambda: _say_ready(int(ready))
    return asyncio.run(service.serve(drain=False))


def _die_with_supervisor() -> None:
    """SIGKILL when the supervisor dies, however it dies; exit at once if it is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    expected = os.environ.pop(SUPERVISOR_PID, None)
    if expected is not None and os.getppid() != int(expected):
        os._exit(EXIT_FAILED)


def _say_ready(fd: int) -> None:
    os.write(fd, b"r")
    os.close(fd)
