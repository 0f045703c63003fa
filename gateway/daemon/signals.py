"""Signals become loop callbacks, and none is lost under load.

asyncio's ``add_signal_handler`` learns of a signal only from a byte that the C-level handler writes
into the loop's self-pipe. Every thread that finishes a job writes into that pipe too, and in a burst
thousands of them fill it. A full pipe drops the byte, and the signal with it (CPython gh-74224): the
daemon never hears its SIGTERM, and systemd has to kill it. A Python-level handler does not depend on
the pipe. CPython keeps a flag per signal and runs the handler on the main thread, which is the
loop's thread. Like ``asyncio.Runner``'s own SIGINT handler, the handler hands its action to the loop
with ``call_soon_threadsafe``. A wake-up pipe of its own still wakes the loop at once when the kernel
hands a signal to another thread; if that pipe is full, the loop is awake already.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from types import FrameType


def on_signals(
    loop: asyncio.AbstractEventLoop, actions: Mapping[signal.Signals, Callable[[], None]]
) -> Callable[[], None]:
    """Run ``actions[sig]`` on ``loop`` when ``sig`` arrives; returns what puts the old handlers back.

    Call it from the main thread, the only one that may set handlers.
    """
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    loop.add_reader(wake_read, _drain, wake_read)
    previous_wakeup = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    previous = {}
    for sig, action in actions.items():

        def handler(_signum: int, _frame: FrameType | None, action: Callable[[], None] = action) -> None:
            loop.call_soon_threadsafe(action)

        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(previous_wakeup)
        loop.remove_reader(wake_read)
        os.close(wake_read)
        os.close(wake_write)

    return restore


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass
