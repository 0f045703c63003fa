"""What every start of the gateway does before it serves: the spool prepared and locked, the ledger
checked, the clock read. Apart from the service so that the supervisor of several processes, which
serves no file, can do it without importing the daemon (its memory counts for every install)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from gateway.config import DirectoryRoute, GatewayConfig
from gateway.daemon.logs import configure_logging
from gateway.store.ledgercheck import EXIT_LEDGER, LedgerUnusableError, check_ledger
from spool.errors import SpoolError, SpoolLocked
from spool.layout import SpoolLayout
from spool.lock import SpoolLock

log = structlog.get_logger("gateway.service")

EXIT_OK = 0
EXIT_FAILED = 1
CLOCK_VARIABLE = "FDEP_GATEWAY_NOW"


def clock_offset(config: GatewayConfig) -> timedelta:
    """Drills and tests run the daemon at another wall-clock time: ``FDEP_GATEWAY_NOW=<ISO time>`` makes
    the gateway's clock start there and run on (windows, deadlines, file ids, history times)."""
    value = os.environ.get(CLOCK_VARIABLE)
    if not value:
        return timedelta(0)
    start = datetime.fromisoformat(value)
    if start.tzinfo is None:
        start = start.replace(tzinfo=config.zone)
    log.warning("clock.shifted", now=start.isoformat(), note=f"{CLOCK_VARIABLE} is set: not for production")
    return start - datetime.now(config.zone)


def ledger_path(config: GatewayConfig) -> Path:
    return config.spool_root / ".gateway-ledger.sqlite"


def prepare_spool(config: GatewayConfig) -> SpoolLayout:
    """Create the mailboxes of every registered code and refuse a spool split over filesystems."""
    layout = SpoolLayout(config.spool_root)
    config.spool_root.mkdir(parents=True, exist_ok=True)
    for station in config.stations:
        codes = [code for code, entry in config.transfer_codes.items() if station in entry.stations]
        station_layout = layout.station(station)
        station_layout.ensure(codes)
        station_layout.check_same_filesystem()
    for route in config.routes.values():
        if isinstance(route, DirectoryRoute):
            route.path.mkdir(parents=True, exist_ok=True)
    return layout


def run_locked(config: GatewayConfig, main: Callable[[SpoolLayout], int]) -> int:
    """Prepare the spool and run ``main`` holding its lock: one gateway (or supervisor) per spool."""
    configure_logging()
    try:
        layout = prepare_spool(config)
        with SpoolLock(config.spool_root):
            check_ledger(ledger_path(config), layout, config.stations, config.history.dir)
            return main(layout)
    except LedgerUnusableError as exc:
        log.error("ledger.unusable", error=str(exc), exit_code=EXIT_LEDGER)
        return EXIT_LEDGER
    except SpoolLocked as exc:
        log.error("spool.locked", error=str(exc), hint="another fdep-gateway serves this spool")
        return EXIT_FAILED
    except SpoolError as exc:
        log.error("spool.unusable", error=str(exc))
        return EXIT_FAILED
