"""Helpers of the watcher tests: a recording sink, real writer processes, and a way to stall the reader."""

from __future__ import annotations

import asyncio
import mmap
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.detect.watch import WatchEvent, WatchKind

STATION_TC = ("k1237", "TC41210000")
NAME = "CISP-41210000_D1001_V01_1_20241031_01_Q.TXT"

# Writes chunks in place, pausing between them with the file open; prints the time of its last write.
SLOW_WRITER = """
import sys, time
path, pauses = sys.argv[1], [float(p) for p in sys.argv[2].split(",")]
with open(path, "wb") as f:
    for pause in pauses:
        f.write(b"41210000|x|" + b"y" * 988 + b"\\n")
        f.flush()
        time.sleep(pause)
    f.write(b"41210000|last\\n")
    f.flush()
    print(time.monotonic(), flush=True)
"""

# Creates N empty files (one IN_CREATE and one IN_CLOSE_WRITE each), then sets a byte in a shared map.
CREATOR = """
import mmap, os, sys
directory, count, flag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(count):
    os.close(os.open(os.path.join(directory, f"F{i:06d}"), os.O_CREAT | os.O_WRONLY, 0o644))
with open(flag, "r+b") as f, mmap.mmap(f.fileno(), 1) as done:
    done[0] = 1
"""


class Recorder:
    """The sink: keeps every event with the monotonic time it reached the loop."""

    def __init__(self) -> None:
        self.timed: list[tuple[float, WatchEvent]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: WatchEvent) -> None:
        self.timed.append((time.monotonic(), event))
        self._changed.set()

    @property
    def events(self) -> list[WatchEvent]:
        return [event for _, event in self.timed]

    def kinds(self, name: str) -> list[WatchKind]:
        return [event.kind for event in self.events if event.name == name]

    async def wait_for(self, predicate: Callable[[WatchEvent], bool], timeout: float = 10.0) -> WatchEvent:
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                while seen < len(self.timed):
                    event = self.timed[seen][1]
                    if predicate(event):
                        return event
                    seen += 1
                self._changed.clear()
                await self._changed.wait()

    async def barrier(self, directory: Path, name: str = "zz-barrier") -> None:
        """Everything that happened in the watched directories before this call has reached the sink:
        one inotify instance delivers its events in order."""
        (directory / name).touch()
        await self.wait_for(lambda e: e.name == name and e.kind is WatchKind.CLOSED)


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)


@contextmanager
def creating(directory: Path, count: int, flag: Path) -> Iterator[Callable[[], bool]]:
    """Start a process that creates ``count`` files; yields a check whether it is done that never
    releases the GIL (a read of shared memory, no system call)."""
    flag.write_bytes(b"\0")
    with flag.open("r+b") as f, mmap.mmap(f.fileno(), 1) as done:
        proc = run_python(CREATOR, str(directory), str(count), str(flag))
        try:
            yield lambda: done[0] == 1
        finally:
            proc.communicate(timeout=60)
        assert proc.returncode == 0


def hold_gil_until(done: Callable[[], bool], limit: float) -> bool:
    """Spin on this thread without ever letting another Python thread run, like a loop stuck in
    CPU-bound code: the inotify reader thread cannot read while this runs."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(limit + 60)
    try:
        end = time.monotonic() + limit
        while not done():
            if time.monotonic() > end:
                return False
        return True
    finally:
        sys.setswitchinterval(old)


def inotify_watch_count() -> int:
    """inotify watches held by this process, as the kernel counts them (fdinfo has one line each)."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if fd.readlink() != Path("anon_inode:inotify"):
                continue
            info = Path(f"/proc/self/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        count += sum(line.startswith("inotify wd:") for line in info.splitlines())
    return count
