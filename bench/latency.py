"""Latency at a steady rate: rename into in/ -> the core's copy appearing, p50/p99/max.

    python -m bench.latency --rate 200 --seconds 60 [--processes 2] [--hog]

Same set-up as ``bench/burst.py`` (k6666, windows off, 100 transfer codes, valid 1 KiB D2001 files, a
fresh directory). All files are written under ``stage/`` first; then one thread renames them into the
inboxes on a fixed schedule (file i at t0 + i/rate, round-robin over the codes), and another reads
inotify events of the core directory itself (``IN_MOVED_TO | IN_CLOSE_WRITE``, via ctypes) and stamps
each name on arrival. Both stamps are ``time.monotonic()`` in this process. At the end it checks that
every file was forwarded with its receipt. Prints the figures, writes ``bench/results/latency-<rate>.json``;
with ``--plot`` also ``latency-<rate>.png`` beside it: the latency distribution (histogram and CDF).

``--hog [N]``: a co-tenant, N (1) processes of a Python busy loop started after the gateway's start and
killed after the last file, so the figures say what a shared host does: one CPU of the two is wanted
by someone else the whole time. The JSON says how many there were and the CPU they got (results named
``latency-<rate>-hog<N>``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.burst import (
    REPO,
    RESULTS,
    gateway_config,
    names,
    result_stem,
    save_result,
    stage,
    start_gateway,
    stop_gateway,
    verify_gateway,
    wait_for_outcomes,
)
from bench.measure import pyplot, tree_cpu

IN_CLOSE_WRITE, IN_MOVED_TO, IN_NONBLOCK = 0x8, 0x80, 0o4000
_libc = ctypes.CDLL(None, use_errno=True)


class CoreWatch(threading.Thread):
    """name -> monotonic time its core copy appeared (first IN_MOVED_TO or IN_CLOSE_WRITE)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, float] = {}
        self.fd = _libc.inotify_init1(IN_NONBLOCK)
        if (
            self.fd < 0
            or _libc.inotify_add_watch(self.fd, str(directory).encode(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0
        ):
            raise OSError(ctypes.get_errno(), "inotify")
        self.stopping = False

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self.stopping:
            if not poller.poll(100):
                continue
            try:
                data = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                continue
            now = time.monotonic()
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                raw = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                if raw and not raw.startswith("."):
                    self.seen.setdefault(raw, now)


HOG = "while True: pass"


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` busy-loop processes: a co-tenant that wants a CPU each, all the time."""
    return [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> float:
    """Kill the busy loops; the CPU seconds they got (user and system), read just before."""
    used = sum(sum(tree_cpu(hog.pid)) for hog in hogs)
    for hog in hogs:
        hog.send_signal(signal.SIGKILL)
        hog.wait()
    return used


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def plot(latencies: list[float], rate: float, path: Path) -> None:
    """Histogram and CDF of the latencies: where the bulk is and how long the tail, with p50/p99 marked."""
    plt = pyplot()
    if plt is None:
        return
    figure, (histogram, cdf) = plt.subplots(1, 2, figsize=(11, 4.5))
    ordered = sorted(latencies)
    histogram.hist(ordered, bins=100)
    histogram.set_xlabel("rename into in/ -> core copy (ms)")
    histogram.set_ylabel("files")
    cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))])
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, log scale)")
    cdf.set_ylabel("fraction of files")
    for axes in (histogram, cdf):
        for q, style in ((0.50, "--"), (0.99, ":")):
            value = percentile(ordered, q)
            axes.axvline(value, color="black", linestyle=style, label=f"p{q * 100:.0f} {value:.1f} ms")
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(f"Latency at {rate:g} files/s: {len(ordered):,} files")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--processes", type=int, default=1, help="the gateway's processes (config key)")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--plot", action="store_true", help="also write a PNG of the latency distribution")
    parser.add_argument(
        "--hog", type=int, nargs="?", const=1, default=0, metavar="N", help="N (1) busy-loop co-tenants"
    )
    args = parser.parse_args()
    count = int(args.rate * args.seconds)
    root = Path(tempfile.mkdtemp(prefix="latency-", dir=args.root or REPO.parent))
    try:
        files = names(count)
        config = gateway_config(root, processes=args.processes)
        pairs = stage(root, files)
        (root / "core").mkdir(exist_ok=True)
        watch = CoreWatch(root / "core")
        watch.start()
        process = start_gateway(root, config)
        renamed: dict[str, float] = {}
        late = 0.0
        hogs, hogged = start_hogs(args.hog), time.monotonic()
        hog_cpu = 0.0
        try:
            time.sleep(1.0)
            t0 = time.monotonic() + 0.1
            for i, (src, dst) in enumerate(pairs):
                due = t0 + i / args.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    late = max(late, -delay)
                os.rename(src, dst)  # noqa: PTH104 - the plain syscall, stamped right after
                renamed[dst.name] = time.monotonic()
            sent = time.monotonic() - t0
            wait_for_outcomes(root, count, time.monotonic() + 60)
            time.sleep(0.2)
        finally:
            hog_cpu, hogged = stop_hogs(hogs), time.monotonic() - hogged
            stop_gateway(process)
            watch.stopping = True
            watch.join()
        bad = verify_gateway(root, files)
        latencies = [(watch.seen[n] - t) * 1000 for n, t in renamed.items() if n in watch.seen]
        result = {
            "rate": args.rate,
            "seconds": args.seconds,
            "processes": args.processes,
            "hog_processes": args.hog,
            "hog_cpu_seconds": hog_cpu,
            "hog_seconds": hogged if args.hog else 0.0,
            "files": count,
            "sent_seconds": sent,
            "max_sender_lag_ms": late * 1000,
            "measured": len(latencies),
            "missing": count - len(latencies),
            "p50_ms": percentile(latencies, 0.50),
            "p90_ms": percentile(latencies, 0.90),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies),
            "mean_ms": statistics.fmean(latencies),
            **bad,
        }
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"{count:,} files at {args.rate:g}/s for {args.seconds:g}s (sent in {sent:.2f}s, sender lag max "
        f"{late * 1000:.1f} ms); core copies seen: {len(latencies):,}"
    )
    print(f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}")
    print(
        f"{result['p50_ms']:8.1f} {result['p90_ms']:8.1f} {result['p99_ms']:8.1f} {result['max_ms']:8.1f} "
        f"{result['mean_ms']:8.1f}"
    )
    print(" ".join(f"{k}={bad[k]}" for k in bad))
    if args.hog:
        print(f"co-tenant: {args.hog} busy loop(s), {hog_cpu:.1f} CPU seconds in their {hogged:.1f} s")
    stem = result_stem(f"latency-{args.rate:g}", args.processes) + (f"-hog{args.hog}" if args.hog else "")
    save_result(stem, result)
    if args.plot:
        plot(latencies, args.rate, RESULTS / f"{stem}.png")


if __name__ == "__main__":
    main()
