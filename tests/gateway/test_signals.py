"""Signals reach the loop even when its self-pipe is full (a burst of finished thread jobs)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from gateway.daemon.signals import on_signals


async def test_a_signal_is_not_lost_when_the_self_pipe_is_full() -> None:
    loop = asyncio.get_running_loop()
    heard: list[str] = []
    restore = on_signals(loop, {signal.SIGHUP: lambda: heard.append("hup")})

    def flood_then_signal() -> None:
        """Block the loop while a thread fills its self-pipe with wake-ups, then send the signal."""
        flood = threading.Thread(target=lambda: [loop.call_soon_threadsafe(int) for _ in range(20_000)])
        flood.start()
        flood.join()
        os.kill(os.getpid(), signal.SIGHUP)

    try:
        loop.call_soon(flood_then_signal)
        for _ in range(50):
            await asyncio.sleep(0.01)
            if heard:
                break
    finally:
        restore()
    assert heard == ["hup"]


async def test_restore_puts_the_previous_handler_back() -> None:
    before = signal.getsignal(signal.SIGHUP)
    restore = on_signals(asyncio.get_running_loop(), {signal.SIGHUP: lambda: None})
    assert signal.getsignal(signal.SIGHUP) is not before
    restore()
    assert signal.getsignal(signal.SIGHUP) is before
