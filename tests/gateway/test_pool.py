"""The validation pool starts no process (not even multiprocessing's resource tracker) before its first
file, and then validates as a ProcessPoolExecutor does."""

from __future__ import annotations

import os

from gateway.daemon.pool import LazyPool
from harness.daemon import children


def test_no_process_until_the_first_submit() -> None:
    before = children(os.getpid())
    pool = LazyPool(workers=1)
    try:
        assert children(os.getpid()) == before and not pool.started
        assert pool.submit(pow, 2, 10).result(timeout=60) == 1024
        assert pool.started and children(os.getpid()) - before  # the worker and the resource tracker
    finally:
        pool.shutdown(wait=True)
