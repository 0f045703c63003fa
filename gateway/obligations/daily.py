"""What the daemon does about obligations: the daily reconciliation report, and refreshing the gauges.

Both run in threads off the event loop; a failure is logged by the caller and tried again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog

from gateway.config import GatewayConfig
from gateway.obligations import report
from gateway.obligations.assess import assess, calendar_of, ledger_facts, reports_dir
from gateway.obligations.gauges import ObligationGauges
from gateway.obligations.gauges import register as register_gauges
from gateway.obligations.rules import previous_trading_day
from gateway.windows import PLATFORM_ZONE

__all__ = ["reconcile", "refresh_gauges", "register_gauges"]

log = structlog.get_logger("gateway.obligations")


def reconcile(config: GatewayConfig, now: datetime) -> tuple[Path, Path]:
    """Write the reconciliation report of the last trading day's data date (and its month)."""
    day = previous_trading_day(now.astimezone(PLATFORM_ZONE).date(), calendar_of(config))
    found = assess(config, ledger_facts(config), day=day, now=now)
    return report.write(reports_dir(config), found, day=day, now=now)


async def refresh_gauges(
    gauges: ObligationGauges, now: Callable[[], datetime], stopping: asyncio.Event
) -> None:
    """Recompute the gauges every ``obligations.gauges_seconds`` until ``stopping``."""
    while not stopping.is_set():
        try:
            await asyncio.to_thread(gauges.refresh, now())
        except Exception:
            log.exception("obligations.gauges_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=gauges.config.obligations.gauges_seconds)
