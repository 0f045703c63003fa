"""The validation pool of a gateway process, started for its first large file.

A ``ProcessPoolExecutor`` starts multiprocessing's resource tracker as it is made: an interpreter of its
own, ~13 MB, in every gateway process, for pools that most processes never use (only a TXT larger than
one segment is validated in the pool). Made at the first ``submit`` instead, from whichever thread
validates that file.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class LazyPool(Executor):
    def __init__(self, workers: int | None) -> None:
        self._workers = workers  # None: one a CPU
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._pool is not None

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=self._workers, mp_context=context)
            pool = self._pool
        return pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait, cancel_futures=cancel_futures)
