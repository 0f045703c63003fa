"""One file's way from its claim to its last event, traced: it visits each gateway module at most twice.

The detector claims a file and hands it to the pipeline, which takes it to its outcome, on the real parts
(``tests/pipeline/parts.py``, the SQLite store). A profiler hook (``sys.setprofile`` on the loop's thread,
``threading.setprofile`` on the worker threads started meanwhile) follows every function of gateway/,
spool/ and validators/ that runs.

A *visit* to a module B is control entering a function of B from another module A: A is the module of the
nearest traced frame below it on the same thread, or nobody when the event loop starts a task or callback,
or a worker thread a job. These are not visits:

- returning into a caller, and the event loop resuming a suspended coroutine;
- entering B while B is still at work, a function of B begun and not finished: the group transaction
  running the piece B handed it, a callback into B from the step B awaits;
- A calling into B right after its previous call into B, nothing else entered by A in between (A using
  B's interface call after call: the decision's record, decide and accept in one store transaction;
  not so for entries from nobody: each task or job is a hand-over of its own);
- reading a value: a property, a special method (construction, comparison, hashing), generated code.

Every module of gateway/ is counted, except gateway/batch/: its thread jobs and group commits are the
conduit each durable step takes, several times a file by design. spool/ and validators/ are traced (they
are callers too) and shown, not counted. On failure the assertion prints the whole sequence.
"""

from __future__ import annotations

import asyncio
import dis
import functools
import inspect
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import CodeType, FrameType, TracebackType
from typing import Any

import pytest

from gateway.pipeline.together import take
from gateway.store.rules import State
from harness.config import REPO
from harness.daemon import TC, d1001_body, d1001_name, drop
from tests.pipeline.parts import Parts, composed, detector_of

_TRACED = ("gateway", "spool", "validators")
_UNCOUNTED = "gateway.batch."
_MOST = 2
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
_YIELD = dis.opmap["YIELD_VALUE"]


def _value_readers() -> set[CodeType]:
    """The code of every property of the traced packages' classes: reading one reads a value."""
    codes: set[CodeType] = set()
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in _TRACED:
            continue
        for cls in [v for v in vars(module).values() if inspect.isclass(v) and v.__module__ == name]:
            for attribute in vars(cls).values():
                if isinstance(attribute, property) and attribute.fget is not None:
                    codes.add(attribute.fget.__code__)
                elif isinstance(attribute, functools.cached_property):
                    codes.add(attribute.func.__code__)
    return codes


class WayTracer:
    """Records the visits (see the module's docstring) made while it is entered."""

    def __init__(self, root: Path) -> None:
        self._root = f"{root}/"
        self._modules: dict[str, str | None] = {}
        self._readers = _value_readers()
        self._started: set[FrameType] = set()  # resumable frames seen to start (held: their ids stay unique)
        self._open: dict[FrameType, str] = {}  # begun, not finished: the module is at work
        self._at_work: Counter[str] = Counter()
        self._last: dict[tuple[int, str | None], str] = {}  # (thread, caller's module): module it last called
        self._on = False
        self.visits: list[tuple[str | None, str, str]] = []  # (from, to, the function entered)

    def counts(self) -> Counter[str]:
        return Counter(to for _, to, _ in self.visits)

    def over(self) -> dict[str, int]:
        """The counted modules visited more than twice."""
        counted = {m: n for m, n in self.counts().items() if m.startswith("gateway.")}
        return {m: n for m, n in counted.items() if not m.startswith(_UNCOUNTED) and n > _MOST}

    def sequence(self) -> str:
        lines = (f"  {origin or '(loop or thread)'} -> {to}  {name}" for origin, to, name in self.visits)
        return "\n".join(lines)

    def _module(self, filename: str) -> str | None:
        if filename not in self._modules:
            relative = filename[len(self._root) :] if filename.startswith(self._root) else ""
            traced = relative.endswith(".py") and relative.split("/", 1)[0] in _TRACED
            dotted = relative[: -len(".py")].replace("/", ".").removesuffix(".__init__")
            self._modules[filename] = dotted if traced else None
        return self._modules[filename]

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self._on:
            sys.setprofile(None)  # a worker thread that outlives the trace
            return
        if event == "return":
            self._returned(frame)
        elif event == "call":
            self._called(frame)

    def _returned(self, frame: FrameType) -> None:
        module = self._open.get(frame)
        if module is None:
            return
        code = frame.f_code
        if code.co_flags & _RESUMABLE and code.co_code[frame.f_lasti] == _YIELD:
            return  # suspended, not finished
        del self._open[frame]
        self._at_work[module] -= 1

    def _called(self, frame: FrameType) -> None:
        code = frame.f_code
        module = self._module(code.co_filename)
        if module is None:
            return
        if code.co_flags & _RESUMABLE:
            if frame in self._started:
                return  # resumed
            self._started.add(frame)
        caller = frame.f_back
        while caller is not None and self._module(caller.f_code.co_filename) is None:
            caller = caller.f_back
        origin = self._module(caller.f_code.co_filename) if caller is not None else None
        at_work = self._at_work[module] > 0
        self._open[frame] = module
        self._at_work[module] += 1
        if code in self._readers or (code.co_name.startswith("__") and code.co_name.endswith("__")):
            return
        if origin == module:
            return
        key = (threading.get_ident(), origin)
        continued = origin is not None and self._last.get(key) == module
        self._last[key] = module
        if not at_work and not continued:
            self.visits.append((origin, module, code.co_qualname))

    def __enter__(self) -> WayTracer:
        self._on = True
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        self._on = False


@pytest.fixture
async def sqlite_parts(tmp_path: Path) -> AsyncIterator[Parts]:
    async with composed(tmp_path, "sqlite") as parts:
        yield parts


async def traced_way(parts: Parts, name: str, body: bytes) -> WayTracer:
    """Drop a file as a rename into the inbox (ready at once), then trace from its claim until the
    pipeline is done with it. Worker threads are new ones, so that each starts with the hook."""
    detector = detector_of(parts, functools.partial(take, parts.pipeline))
    drop(parts.layout.station("k1237").inbox(TC), name, body)
    detector.tracker.renamed_in(("k1237", TC, name), time.monotonic())
    loop = asyncio.get_running_loop()
    threads = ThreadPoolExecutor(8, thread_name_prefix="traced")
    loop.set_default_executor(threads)
    try:
        with WayTracer(REPO) as tracer:
            await detector.claim_ready()
            assert detector.in_flight == 1
            while detector.in_flight:
                await asyncio.sleep(0.01)
    finally:
        loop.set_default_executor(ThreadPoolExecutor(8))  # for the rest of the test, untraced
        threads.shutdown()
    return tracer


def assert_one_way(tracer: WayTracer, *through: str) -> None:
    counts = tracer.counts()
    shown = f"visits: {dict(counts)}\n{tracer.sequence()}"
    expected = {"gateway.detect.detector", "gateway.pipeline.flow", "gateway.pipeline.record", *through}
    assert expected <= set(counts), shown  # the trace saw the way: the count below cannot pass empty
    assert tracer.over() == {}, shown


def outcome_of(parts: Parts, name: str) -> State:
    (file_id,) = {event["file_id"] for event in map(json.loads, parts.events()) if event["name"] == name}
    row = parts.store.get(file_id)
    assert row is not None
    return row.state


async def test_a_forwarded_file_visits_each_module_at_most_twice(sqlite_parts: Parts) -> None:
    name = d1001_name()
    tracer = await traced_way(sqlite_parts, name, d1001_body())
    assert outcome_of(sqlite_parts, name) is State.FORWARDED
    assert_one_way(
        tracer,
        "gateway.pipeline.validate",
        "gateway.pipeline.route",
        "gateway.store.ledger",
        "gateway.forward.directory",
        "gateway.pipeline.receipts",
        "gateway.store.history",
    )


async def test_a_rejected_file_visits_each_module_at_most_twice(sqlite_parts: Parts) -> None:
    name = d1001_name()
    tracer = await traced_way(sqlite_parts, name, b"\xef\xbb\xbf" + d1001_body())
    assert outcome_of(sqlite_parts, name) is State.REJECTED
    assert_one_way(tracer, "gateway.pipeline.validate", "gateway.pipeline.receipts", "gateway.store.history")


async def test_a_duplicate_visits_each_module_at_most_twice(sqlite_parts: Parts) -> None:
    name = d1001_name()
    await traced_way(sqlite_parts, name, d1001_body())
    tracer = await traced_way(sqlite_parts, name, d1001_body())
    assert sum('"duplicate"' in line for line in sqlite_parts.events()) == 1
    assert_one_way(tracer, "gateway.pipeline.validate", "gateway.store.ledger", "gateway.pipeline.receipts")
