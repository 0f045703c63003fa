"""The validation pool starts no process (not even multiprocessing's resource tracker) before its first
file, and then validates as a ProcessPoolExecutor does."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.daemon.pool import LazyPool


def children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rpartition(")")[2].split()[1] == me:
                found.add(int(entry.name))
    return found


def test_no_process_until_the_first_submit() -> None:
    before = children()
    pool = LazyPool(workers=1)
    try:
        assert children() == before and not pool.started
        assert pool.submit(pow, 2, 10).result(timeout=60) == 1024
        assert pool.started and children() - before  # the worker and the resource tracker
    finally:
        pool.shutdown(wait=True)
