"""The order of the daemon's durable steps, as the kernel saw it (strace): no name before its bytes.

A power cut keeps only what was synced. So, for every file of a burst: its claimed bytes are synced
before the core gets it; each temp file (the core's copy, the receipt) is synced after its last write
and before it is renamed into place; the core's directory is synced before the receipt says OK, and
the outbox before the file leaves work/. A sync is an fsync of that file or directory, or a syncfs
(which writes everything dirty on the filesystem). Taking out any of these syncs fails this test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.daemon import Gateway, d1001_body, d1001_name, day, wait_for
from spool.sync import SYNCFS_FROM, trusts_syncfs
from tests.conftest import REPO

_TRACED = "openat,write,rename,renameat,renameat2,fsync,fdatasync,syncfs"
_CALL = re.compile(r"^\d+ +(?:<\.\.\. (\w+) resumed>(.*)|(\w+)\((.*))$")
_FD_PATH = re.compile(r"^\d+<([^>]*)>")
_STRINGS = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass
class Call:
    name: str
    args: str
    start: int
    end: int
    result: str = ""

    @property
    def fd_path(self) -> str | None:
        match = _FD_PATH.match(self.args)
        return match.group(1) if match else None

    @property
    def strings(self) -> list[str]:
        return _STRINGS.findall(self.args)


def parse(trace: str) -> list[Call]:
    """Each system call with the line it started on and the line it finished on."""
    calls: list[Call] = []
    pending: dict[tuple[str, str], Call] = {}
    for index, line in enumerate(trace.splitlines()):
        match = _CALL.match(line)
        if match is None:
            continue
        pid = line.split()[0]
        if match.group(1):  # "<... fsync resumed>) = 0"
            call = pending.pop((pid, match.group(1)), None)
            if call is not None:
                call.end, call.result = index, match.group(2).rpartition("=")[2].strip()
            continue
        name, rest = match.group(3), match.group(4)
        if rest.endswith("<unfinished ...>"):
            call = Call(name, rest, index, -1)
            pending[pid, name] = call
        else:
            call = Call(name, rest, index, index, rest.rpartition("=")[2].strip())
        calls.append(call)
    return [c for c in calls if c.end >= 0]


def renames(calls: list[Call]) -> list[tuple[Call, str, str]]:
    found = []
    for call in calls:
        if call.name in ("rename", "renameat", "renameat2") and call.result.startswith("0"):
            source, target = call.strings[:2]
            found.append((call, source, target))
    return found


def synced_between(calls: list[Call], after: int, before: int, path: str) -> bool:
    """A sync of ``path`` (or of its whole filesystem) started after line ``after`` and finished before
    line ``before``."""
    return any(
        c.start > after
        and c.end < before
        and c.result.startswith("0")
        and (c.name == "syncfs" or (c.name in ("fsync", "fdatasync") and c.fd_path == path))
        for c in calls
    )


@contextmanager
def traced(gateway: Gateway, trace: Path) -> Iterator[None]:
    """The daemon runs under strace for the block, then is stopped with SIGTERM and must exit 0."""
    log = (gateway.root / "daemon.log").open("ab")
    command = [sys.executable, "-m", "gateway", "run", "-c", str(gateway.config_path)]
    tracer = subprocess.Popen(
        ["strace", "-f", "-y", "-qq", "-o", str(trace), "-e", f"trace={_TRACED}", *command],
        cwd=REPO,
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        wait_for(lambda: "gateway.started" in gateway.log(), timeout=60, what="the daemon to start")
        yield
    finally:
        children = Path(f"/proc/{tracer.pid}/task/{tracer.pid}/children").read_text().split()
        assert children, f"the daemon is gone:\n{gateway.log()[-3000:]}"
        os.kill(int(children[0]), signal.SIGTERM)
        code = tracer.wait(timeout=60)
        log.close()
    assert code == 0, gateway.log()[-3000:]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (CI installs it)")
@pytest.mark.parametrize(
    "count",
    [
        pytest.param(4, id="each-synced-alone"),
        # shared out over eight thread jobs: batches large enough for a syncfs
        pytest.param(20 * SYNCFS_FROM, id="burst"),
    ],
)
def test_every_name_reaches_the_disk_after_its_bytes(gateway: Gateway, count: int) -> None:
    trace = gateway.root / "trace"
    inbox = gateway.inbox()
    names = [d1001_name(date=day(n)) for n in range(1, count + 1)]
    with traced(gateway, trace):
        for name in names:
            (inbox / f".{name}.part").write_bytes(d1001_body(date=name.split("_")[4]))
        for name in names:
            (inbox / f".{name}.part").rename(inbox / name)
        wait_for(
            lambda: len(gateway.outcomes()) == count and not any(inbox.iterdir()),
            timeout=120,
            what="every file forwarded",
        )
    assert all(outcome == ["forwarded"] for outcome in gateway.outcomes().values())

    calls = parse(trace.read_text(errors="replace"))
    moves = renames(calls)
    writes: dict[str, int] = {}
    for call in calls:
        if call.name == "write" and call.fd_path:
            writes[call.fd_path] = call.end
    core, outbox = str(gateway.core()), str(gateway.outbox())
    problems: list[str] = []
    for name in names:
        claim, work_path = next((c, dst) for c, src, dst in moves if src == f"{inbox}/{name}")
        stored = next((c, src) for c, src, dst in moves if dst == f"{core}/{name}")
        receipt = next((c, src) for c, src, dst in moves if dst.startswith(f"{outbox}/{name[:-4]}"))
        archived = next(c for c, src, dst in moves if src == work_path and "/archive/" in dst)
        checks = {
            "claimed bytes before the core's copy": (claim.end, stored[0].start, work_path),
            "core copy's bytes before its name": (writes[stored[1]], stored[0].start, stored[1]),
            "core directory before the receipt": (stored[0].end, receipt[0].start, core),
            "receipt's bytes before its name": (writes[receipt[1]], receipt[0].start, receipt[1]),
            "outbox before leaving work/": (receipt[0].end, archived.start, outbox),
        }
        problems += [
            f"{name}: {what}"
            for what, (after, before, path) in checks.items()
            if not synced_between(calls, after, before, path)
        ]
    assert problems == []
    syncfs = any(c.name == "syncfs" for c in calls)
    assert syncfs == (count > SYNCFS_FROM and trusts_syncfs(gateway.root))
