"""Run a Python module with every thread's function calls counted, then write the counts as JSON.

    python -m bench.profiled OUT.json -m MODULE [ARG...]

``python -m cProfile`` profiles the main thread only, and the gateway makes its durable steps on
threads. Here each thread the module starts gets a cProfile profiler of its own
(``threading.setprofile``; the thread's first call, before its profiler is on, is not counted), and at
exit OUT holds the calls of the main thread, of all the other threads, and of every function (all
threads) with the CPU seconds spent in its own code (cProfile's tottime on each thread's CPU clock,
``time.thread_time``: a thread waiting for the GIL, a lock or the disk is not charged for the wait).
Processes the module starts are not counted.
"""

from __future__ import annotations

import cProfile
import json
import runpy
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

_threads: list[cProfile.Profile] = []
_lock = threading.Lock()


def _profile_this_thread(_frame: FrameType, _event: str, _arg: Any) -> None:
    """The hook a new thread runs first: from here on its own profiler counts its calls."""
    profile = cProfile.Profile(time.thread_time)
    with _lock:
        _threads.append(profile)
    profile.enable()  # replaces this hook for the thread


def label(code: Any) -> str:
    """A function's name as pstats prints it: file:line(name), or the builtin's description."""
    if isinstance(code, str):
        return code
    return f"{code.co_filename}:{code.co_firstlineno}({code.co_name})"


def calls(profile: cProfile.Profile) -> Counter[str]:
    """Calls per function so far (read without stopping a profiler that may still run in its thread)."""
    counted: Counter[str] = Counter()
    for entry in profile.getstats():
        counted[label(entry.code)] += entry.callcount
    return counted


def own_seconds(profiles: list[cProfile.Profile]) -> dict[str, float]:
    """CPU seconds in each function's own code so far (cProfile's inline time), summed over ``profiles``."""
    spent: dict[str, float] = {}
    for profile in profiles:
        for entry in profile.getstats():
            name = label(entry.code)
            spent[name] = spent.get(name, 0.0) + entry.inlinetime
    return spent


def main() -> None:
    out, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit(__doc__)
    sys.argv = [module, *args]
    main_thread = cProfile.Profile(time.thread_time)
    threading.setprofile(_profile_this_thread)
    code: Any = 0
    main_thread.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
    finally:
        main_thread.disable()
        threading.setprofile(None)
        main_calls = calls(main_thread)
        with _lock:
            other = sum((calls(profile) for profile in _threads), Counter[str]())
            spent = own_seconds([main_thread, *_threads])
            threads = len(_threads)
        both = main_calls + other
        report = {
            "main_thread_calls": sum(main_calls.values()),
            "other_threads_calls": sum(other.values()),
            "threads": threads,
            "functions": dict(both),
            "own_seconds": spent,
        }
        Path(out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    sys.exit(code)


if __name__ == "__main__":
    main()
