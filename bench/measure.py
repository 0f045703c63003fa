"""What the bench scripts read of a running daemon from outside it, and their optional figures.

Shared so that every script takes a figure the same way: memory from /proc (VmHWM of the daemon *and* of
the worker processes it spawns for validation, which ``ru_maxrss`` of one process would not show),
inotify watches from the kernel, start-up from the daemon's own log line, and matplotlib only when the
``bench`` extra is installed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from types import ModuleType, TracebackType

PROC = Path("/proc")


def _vm(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in KiB; zeros once it has exited."""
    rss = hwm = 0
    try:
        text = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: the validation pool's workers and multiprocessing's helpers."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])  # the command name may hold spaces and parens
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu(pid: int, *, reaped: bool = True) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by ``pid`` and its descendants (the gateway's processes).

    With ``reaped``, also what their children that have exited and been waited for used (a server's
    short-lived backends): the kernel adds it to the parent's cutime and cstime.
    """
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for each in [pid, *descendants(pid)]:
        try:
            fields = (PROC / str(each) / "stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        user += int(fields[11])  # utime, then stime: fields 14 and 15 of proc(5), counted after the name
        system += int(fields[12])
        if reaped:
            user += int(fields[13])  # cutime, cstime: fields 16 and 17
            system += int(fields[14])
    return user / tick, system / tick


class TreeMemory(threading.Thread):
    """Peak memory of a process and its descendants, sampled while a ``with`` block runs.

    VmHWM is the kernel's own high-water mark, so a process's peak is exact however coarse the sampling;
    the summed VmRSS of the whole tree at one moment is only as good as the sampling interval.
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.hwm_kib: dict[int, int] = {}
        self.tree_peak_kib = 0
        self._done = threading.Event()

    def sample(self) -> None:
        total = 0
        for pid in [self.pid, *descendants(self.pid)]:
            rss, hwm = _vm(pid)
            total += rss
            if hwm:
                self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), hwm)
        self.tree_peak_kib = max(self.tree_peak_kib, total)

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeMemory:
        self.sample()
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._done.set()
        self.join()
        self.sample()  # the last word, while the processes still exist

    def figures(self) -> dict[str, float]:
        children = [kib for pid, kib in self.hwm_kib.items() if pid != self.pid]
        return {
            "daemon_hwm_mb": self.hwm_kib.get(self.pid, 0) / 1024,
            "child_hwm_mb": max(children, default=0) / 1024,
            "hwm_sum_mb": sum(self.hwm_kib.values()) / 1024,
            "tree_rss_peak_mb": self.tree_peak_kib / 1024,
            "tree_processes": len(self.hwm_kib),  # not "processes": a run names the gateway's own
        }


def memory_text(figures: dict[str, float]) -> str:
    """The memory figures of a daemon run as one table cell."""
    return (
        f"{figures['daemon_hwm_mb']:.0f} daemon, {figures['child_hwm_mb']:.0f} largest child, "
        f"{figures['tree_rss_peak_mb']:.0f} whole tree ({figures['tree_processes']:.0f} processes)"
    )


def inotify_watches(pid: int) -> int:
    """Watches the process holds: ``inotify wd:`` lines in the fdinfo of its inotify descriptors."""
    count = 0
    for fd in (PROC / str(pid) / "fd").iterdir():
        try:
            if fd.readlink() != Path("anon_inode:inotify"):
                continue
            info = (PROC / str(pid) / "fdinfo" / fd.name).read_text()
        except FileNotFoundError:  # closed meanwhile
            continue
        count += sum(line.startswith("inotify wd:") for line in info.splitlines())
    return count


def started_at(log: Path) -> float:
    """POSIX time of the daemon's ``gateway.started`` log line (after recovery and the first scan)."""
    for line in log.read_text(encoding="utf-8").splitlines():
        if '"gateway.started"' in line:
            return datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
    raise SystemExit(f"no gateway.started line in {log}")


def pyplot() -> ModuleType | None:
    """matplotlib's pyplot on the file-only Agg backend, or None (saying why) without the bench extra."""
    try:
        import matplotlib
    except ImportError:
        print(
            "no plot: matplotlib is not installed (.venv/bin/pip install -e '.[bench]')",
            file=sys.stderr,
        )
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
