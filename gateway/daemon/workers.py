"""One of a supervisor's gateway processes (``fdep-gateway worker --shard K/N``): the whole daemon on
its share of the mailboxes. The supervisor, which imports none of this, is gateway/daemon/supervisor.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import structlog

from gateway.config import GatewayConfig
from gateway.daemon import heap
from gateway.daemon.apart import die_with_parent
from gateway.daemon.logs import configure_logging
from gateway.daemon.service import Service
from gateway.daemon.shard import Shard
from gateway.daemon.start import EXIT_FAILED
from gateway.daemon.supervisor import BEATS_FD, SUPERVISOR_PID
from spool.ids import share_suffixes
from spool.layout import SpoolLayout
from spool.lock import hold_shared

log = structlog.get_logger("gateway.workers")


def run_worker(config: GatewayConfig, config_path: Path, shard: Shard) -> int:
    """One of a supervisor's processes: its share of the mailboxes, until SIGTERM or its supervisor dies."""
    configure_logging()
    heap.limit_arenas()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before the service listens: it just read it
    if not _die_with_supervisor():
        log.error(
            "worker.unsupervised",
            hint="start the gateway with 'fdep-gateway run': with processes > 1 it starts its processes",
            note="a process run by hand would serve mailboxes that a supervised one serves too",
        )
        return EXIT_FAILED
    hold_shared(config.spool_root)
    share_suffixes(shard.index, shard.count)
    service = Service(config, config_path, SpoolLayout(config.spool_root), shard)
    beats = os.environ.pop(BEATS_FD, None)
    if beats is not None:
        fd = int(beats)
        os.set_blocking(fd, False)
        service.on_beat = lambda: _beat(fd)
    return asyncio.run(service.serve(drain=False))


def _die_with_supervisor() -> bool:
    """SIGKILL when the supervisor dies, however it dies; exit at once if it is already gone. False
    when no supervisor started this process (the spool lock is the supervisor's: nothing else would
    keep two processes off the same mailboxes)."""
    expected = os.environ.pop(SUPERVISOR_PID, None)
    if expected is None:
        return False
    die_with_parent(int(expected))
    return True


def _beat(fd: int) -> None:
    """One byte a beat; a full pipe means the supervisor has beats enough to read."""
    with contextlib.suppress(BlockingIOError):
        os.write(fd, b".")
