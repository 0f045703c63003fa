"""Burst: N valid 1 KiB D2001 files renamed into 100 k6666 mailboxes at once, gateway vs three baselines.

    python -m bench.burst --files 20000 [--rounds 2] [--hand-off copy|link] [--processes 8] [--plot]
    python -m bench.burst --kinds gateway,split --split 2   # what a gateway process per CPU could reach
    python -m bench.burst --kinds '' --calls 2000           # Python function calls a file, the gateway alone

Each run gets a fresh directory (``--root``, default a new temp dir on the repo's filesystem). Every
contestant is fed the same way: the files are written under ``stage/`` (not timed); the contestant is
started and, once it watches its inboxes, stopped (SIGSTOP to every process of its tree); the files are
renamed into ``<spool>/k6666/<tc>/in/`` by this process, uncontended (``feed_seconds``); then the
contestant is let go (SIGCONT) and the clock starts. So every contestant starts with the whole burst
in its inboxes and its inotify events queued, and none pays for the feeder's CPU: renaming the files
in while the contestant ran took 9.7-11 s of 20,000 files beside the gateway (eight processes on two
CPUs) and ~1 s beside a baseline, so the gateway's clock held a feed nine times as slow as theirs.
Staging the files in place before the start instead would have left the event-driven baselines
nothing to hear. The price of "all at once": a kernel inotify queue holds 16,384 events
(``fs.inotify.max_queued_events``), so a watcher with one queue for all inboxes (both event-driven
movers, a gateway process) loses the rest of a larger burst's events at once; the gateway rescans on
the overflow, the movers never move those files (``missed``: 3,616 of 20,000).

Contestants, taking turns, ``--rounds`` times (this filesystem slows file creation for minutes after
mass deletes, so ratios within a round are the fair figure):

- gateway: ``fdep-gateway run`` on k6666 (windows off) with 100 transfer codes; done when every file has
  an outcome in the history; then checked: its ``forwarded`` event, its ``_OK`` receipt in ``out/``
  and its copy in the core directory (the route's ``hand_off``: a durable copy, or a hard link).
- inotifywait: ``inotifywait -m -e moved_to ... | while read f; do mv "$f" core/; done`` (inotify-tools).
- watchdog: a minimal Python ``watchdog`` observer that ``os.rename``\\ s each file it hears about.
- durable: ``bench/durable_mover.py``, the gateway's durable file steps and nothing else.
- split (only when asked for, with ``--kinds``): ``--split`` independent gateways, each with its own spool,
  ledger and history and every ``--split``-th transfer code, the files renamed into them interleaved. Not
  a product configuration: an upper bound for a gateway that ran a process per CPU (nothing shared).

The end is each contestant's real end state, never a pause in its progress: the gateway's outcome
events, the durable mover's count of files whose batch is done (it counts a batch of up to 2,048 at
once). The event-driven movers may lose events, so theirs is "drained": a marker file renamed into
every inbox (again every 0.25 s until it arrives, as one renamed while the queue is full is never
heard of) has reached the core, so every event queued before it was handled; what is left in ``in/``
then is what the mover will never move. The time is that of the last file done by the contestant's own
record (the gateway's last outcome event, the durable mover's count file, the last core file's change
time). A contestant that has not reached its end state ``--timeout`` seconds after the start is an
error (exit status 1, no figures written), never a figure.

CPU a file (user and system, per file moved) is that of the contestant's process tree over the race,
from /proc, the exited and waited-for processes of the tree included (the shell loop's ``mv``\\ s).
Neither naive baseline validates, writes receipts or history, or fsyncs anything; the gateway does all.

Prints a table and writes ``bench/results/burst-<files>.json``; with ``--plot`` also ``burst-<files>.png``
beside it: files moved per second over time, each contender (the gateway's from its ``forwarded``
history events, a baseline's from the change times of the files it moved into the core). ``--profile``
runs the daemon under cProfile (slower) and prints its top functions. ``--calls FILES`` runs one gateway
process (``processes: 1``) under ``bench/profiled.py`` on a FILES burst, fed as above, and once more
with no files for as long; the difference over FILES is the Python function calls a file, every thread
counted; it writes ``bench/results/burst-calls-<FILES>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bench.measure import PROC, descendants, pyplot, tree_cpu

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
STATION = "k6666"
CODES = 100
ZONE = "Asia/Shanghai"
KINDS = ("inotifywait", "watchdog", "durable", "gateway")
DURABLE_THREADS = 16
GATEWAYS = ("gateway", "split")


# -- the files ------------------------------------------------------------------------------------------


def org_of(code: int) -> str:
    return f"{43000000 + code:08d}"


def tc_of(code: int) -> str:
    return f"TC{org_of(code)}"


def names(count: int, codes: int = CODES) -> list[tuple[str, str, str]]:
    """(tc, org, name) for ``count`` files spread round-robin over ``codes`` transfer codes; every name is
    the first batch of its own (institution, table, date, part), so none is a re-report of another."""
    from zoneinfo import ZoneInfo

    today = datetime.now(ZoneInfo(ZONE)).date()
    out = []
    for i in range(count):
        code, n = i % codes, i // codes
        back, part = 1 + n // 9, 1 + n % 9
        date = (today - timedelta(days=back)).strftime("%Y%m%d")
        org = org_of(code)
        out.append((tc_of(code), org, f"CISP-{org}_D2001_V01_{part}_{date}_01_Q.TXT"))
    return out


def body(org: str, name: str, serial: int, size: int = 1024) -> bytes:
    """A valid D2001 body of about ``size`` bytes: JGBH = the name's org, SJRQ = the name's date."""
    date = name.split("_")[4]
    rng = random.Random(serial)
    rows, total, n = [], 0, 0
    while total < size - 60:
        ywlx = rng.choice(("020", "022", "024", "036"))
        amount = f"{rng.randint(100, 5_000_000)}.{rng.randint(0, 99):02d}"
        sqje, sqfe = (amount, "") if ywlx in ("020", "022") else ("", amount)
        row = (
            "|".join(
                (
                    org,
                    f"{date}{serial:08d}{n:04d}",
                    "0",
                    f"{org[:4]}{rng.randint(0, 10**12):012d}",
                    f"{rng.randint(0, 999_999):06d}",
                    ywlx,
                    sqje,
                    sqfe,
                    date,
                    "101010",
                    "",
                    date,
                )
            )
            + "\n"
        )
        rows.append(row)
        total += len(row.encode())
        n += 1
    return "".join(rows).encode()


def stage(root: Path, files: list[tuple[str, str, str]]) -> list[tuple[Path, Path]]:
    """Write every file under root/stage/<tc>/ and make the inboxes; return (staged, inbox path) pairs."""
    pairs = []
    for serial, (tc, org, name) in enumerate(files):
        src_dir = root / "stage" / tc
        inbox = root / "spool" / STATION / tc / "in"
        if not inbox.is_dir():
            src_dir.mkdir(parents=True, exist_ok=True)
            inbox.mkdir(parents=True, exist_ok=True)
        src = src_dir / name
        src.write_bytes(body(org, name, serial))
        pairs.append((src, inbox / name))
    return pairs


def rename_all(pairs: list[tuple[Path, Path]]) -> tuple[float, float]:
    start = time.monotonic()
    for src, dst in pairs:
        os.rename(src, dst)  # noqa: PTH104 - the plain syscall: the fastest burst one process can make
    return start, time.monotonic()



# -- the race: every contestant fed and timed the same way ---------------------------------------------

POLL = 0.02
"""Seconds between two looks at a contestant's end state."""
MARKER = "drain-marker-"
"""The names of the files that tell when an event-driven mover has handled every event it was given."""
MARKER_IDLE = 0.25
"""Seconds without a change in the core after which a marker not yet arrived is taken as lost."""


class UnfinishedError(RuntimeError):
    """A contestant that did not reach its end state before the timeout: an error, never a figure."""


@dataclass
class Race:
    """One contestant's race: when it was let go, when its end state was seen, and what it cost."""

    wall: float  # POSIX time of the start
    seen_seconds: float  # from the start until its end state was seen (up to a poll late)
    feed_seconds: float  # the renames into the inboxes, before the start, the contestant stopped
    cpu: tuple[float, float]  # user and system seconds of its processes from the start to the end


def process_state(pid: int) -> str:
    """The one-letter state of a process (proc(5)): T once stopped; "" once gone."""
    try:
        return (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def trees(pids: list[int]) -> list[int]:
    return [each for pid in pids for each in (pid, *descendants(pid))]


def signal_each(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def freeze(pids: list[int]) -> None:
    """Stop every process of these trees and wait until each is: a process stops only once it leaves
    the kernel, and one forked meanwhile is found by listing the trees again."""
    deadline = time.monotonic() + 30
    while running := [pid for pid in trees(pids) if process_state(pid) not in ("T", "Z", "X", "")]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {running} did not stop")
        signal_each(running, signal.SIGSTOP)
        time.sleep(0.005)


def tree_cpus(pids: list[int]) -> tuple[float, float]:
    cpus = [tree_cpu(pid) for pid in pids]
    return sum(user for user, _ in cpus), sum(system for _, system in cpus)


def race(
    pids: list[int],
    pairs: list[tuple[Path, Path]],
    finished: Callable[[], bool],
    done: Callable[[], int],
    timeout: float,
    who: str,
) -> Race:
    """Stop the contestant (``pids`` and their descendants), rename every staged file into its inbox, let
    it go, and wait for ``finished()``; past ``timeout`` seconds, :class:`UnfinishedError` says how many files
    ``done()`` counts."""
    try:
        freeze(pids)
        fed = time.monotonic()
        rename_all(pairs)
        fed = time.monotonic() - fed
        before = tree_cpus(pids)
        wall, start = time.time(), time.monotonic()
    finally:
        signal_each(trees(pids), signal.SIGCONT)
    while not finished():
        if time.monotonic() > start + timeout:
            raise UnfinishedError(f"{who}: {done():,} of {len(pairs):,} files done {timeout:g} s in")
        time.sleep(POLL)
    seen = time.monotonic() - start
    after = tree_cpus(pids)
    return Race(wall, seen, fed, (after[0] - before[0], after[1] - before[1]))


def figures(total: int, run: Race, moved: int, last: float, moved_at: Iterable[float]) -> dict[str, Any]:
    """A run's figures; ``last``: POSIX time of its last file done, by the contestant's own record."""
    if not moved:
        raise UnfinishedError(f"no file of {total:,} was moved")
    seconds = max(last - run.wall, 1e-3)
    user, system = run.cpu
    return {
        "seconds": seconds,
        "seen_seconds": run.seen_seconds,
        "feed_seconds": run.feed_seconds,
        "moved": moved,
        "missed": total - moved,
        "files_per_s": moved / seconds,
        "cpu_user_s": user,
        "cpu_system_s": system,
        "cpu_user_ms_per_file": 1000 * user / moved,
        "cpu_system_ms_per_file": 1000 * system / moved,
        "per_second": per_second(moved_at, run.wall),
    }


# -- the gateway ----------------------------------------------------------------------------------------


def gateway_config(root: Path, codes: int = CODES, hand_off: str = "copy", **extra: Any) -> Path:
    """The daemon's config for a run under ``root``: ``codes`` mailboxes, one directory core."""
    path = root / "gateway.yaml"
    path.write_text(yaml.safe_dump(config_data(root, codes, hand_off, **extra)), encoding="utf-8")
    return path


def config_data(root: Path, codes: int = CODES, hand_off: str = "copy", **extra: Any) -> dict[str, Any]:
    """What ``gateway_config`` writes: also each node's config, with its ``store``."""
    data: dict[str, Any] = {
        "spool_root": str(root / "spool"),
        "processes": 1,  # each run names its processes: the default, one a CPU, differs between machines
        "settle_seconds": 2,
        "rescan_seconds": 30,
        "stations": {STATION: {"environment": "production", "route": "core-prod"}},  # windows off
        "routes": {"core-prod": {"type": "directory", "path": str(root / "core"), "hand_off": hand_off}},
        "transfer_codes": {
            tc_of(c): {"institution": org_of(c), "stations": [STATION], "tables": ["D2001"]}
            for c in range(codes)
        },
        "history": {"dir": str(root / "history")},
    }
    data.update(extra)
    return data


def daemon_log_tail(root: Path) -> str:
    """The end of the daemon's log under ``root``: what a failed run shows."""
    return (root / "daemon.log").read_text(encoding="utf-8", errors="replace")[-3000:]


def start_gateway(
    root: Path,
    config: Path,
    profile: Path | None = None,
    command: str = "run",
    processes: int = 1,
    calls: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``fdep-gateway run`` (or ``drain``) on ``config``, logging to root/daemon.log; returns once each of
    its ``processes`` has started. ``profile``: under cProfile (the main thread); ``calls``: under
    ``bench/profiled.py`` (every thread's calls counted, written to that file at exit)."""
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "cProfile", "-o", str(profile)]
    elif calls is not None:
        prefix += ["-m", "bench.profiled", str(calls)]
    with (root / "daemon.log").open("ab") as log:  # the daemon writes to its own copy of the descriptor
        process = subprocess.Popen(
            [*prefix, "-m", "gateway", command, "-c", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    deadline = time.monotonic() + 60
    while (root / "daemon.log").read_bytes().count(b"gateway.started") < processes:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()  # a bench never leaves a daemon behind
            raise SystemExit(f"the daemon did not start:\n{daemon_log_tail(root)}")
        time.sleep(0.05)
    return process


def stop_gateway(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)


class OutcomeCounter:
    """Outcome events in the history so far, reading only what was appended since the last call: a
    poller that re-read the whole history (24 MB after a 20,000-file burst) every 20 ms took a tenth of
    the CPU the gateway was measured on."""

    KINDS = (b"forwarded", b"rejected", b"duplicate")

    def __init__(self, root: Path) -> None:
        self.history = root / "history"
        self.read: dict[Path, int] = {}  # bytes of whole lines counted, per daily file
        self.count = 0

    def __call__(self) -> int:
        for path in self.history.glob("history-*.jsonl"):
            try:
                with path.open("rb") as f:
                    f.seek(self.read.get(path, 0))
                    fresh = f.read()
            except FileNotFoundError:
                continue
            whole = fresh[: fresh.rfind(b"\n") + 1]  # a torn last line is a write in progress
            self.read[path] = self.read.get(path, 0) + len(whole)
            self.count += sum(whole.count(b'"event":"%s"' % kind) for kind in self.KINDS)
        return self.count


def wait_for_outcomes(root: Path, total: int, until: float) -> float:
    """Poll the history until ``total`` files have an outcome or ``until`` (monotonic) passed; when."""
    outcomes = OutcomeCounter(root)
    while time.monotonic() < until and outcomes() < total:
        time.sleep(0.02)
    return time.monotonic()


def history_events(root: Path) -> Iterator[dict[str, Any]]:
    """Every event of the sync history: the daemon's own record of what happened to each file."""
    for path in (root / "history").glob("history-*.jsonl"):
        whole, _, _ = path.read_bytes().rpartition(b"\n")  # a torn last line is a write in progress
        yield from (json.loads(line) for line in whole.splitlines() if line.strip())


def forwarded_times(root: Path) -> dict[str, float]:
    """name -> POSIX time of its ``forwarded`` event (stamped when the event was durable, to the ms)."""
    return {
        event["name"]: datetime.fromisoformat(event["ts"]).timestamp()
        for event in history_events(root)
        if event.get("event") == "forwarded"
    }


def outcome_times(root: Path) -> list[float]:
    """POSIX times of every outcome event (forwarded, rejected, duplicate): the last is the gateway's end."""
    return [
        datetime.fromisoformat(event["ts"]).timestamp()
        for event in history_events(root)
        if event.get("event") in ("forwarded", "rejected", "duplicate")
    ]


def per_second(times: Iterable[float], start: float) -> list[int]:
    """How many of ``times`` (POSIX) fell into each whole second after ``start``."""
    counts: list[int] = []
    for moment in times:
        second = max(0, int(moment - start))
        counts.extend([0] * (second + 1 - len(counts)))
        counts[second] += 1
    return counts


def core_files(root: Path) -> dict[str, int]:
    """name -> copies of it in the core directory (any depth; temporaries left out)."""
    found: dict[str, int] = {}
    for _dirpath, _dirs, files in os.walk(root / "core"):
        for f in files:
            if not f.startswith("."):
                found[f] = found.get(f, 0) + 1
    return found


def verify_gateway(
    root: Path, files: list[tuple[str, str, str]], events: Iterable[dict[str, Any]] | None = None
) -> dict[str, int]:
    """Every file: one forwarded event, an _OK receipt, one core copy, and gone from in/. ``events``:
    the history when it is not in files under ``root`` (nodes keep it in the database)."""
    outcomes: dict[str, list[str]] = {}
    for event in history_events(root) if events is None else events:
        if event.get("event") in ("forwarded", "rejected", "duplicate"):
            outcomes.setdefault(event["name"], []).append(event["event"])
    core = core_files(root)
    bad = {"not_forwarded": 0, "no_receipt": 0, "no_core_copy": 0, "left_in_inbox": 0, "extra_outcomes": 0}
    for tc, _org, name in files:
        got = outcomes.get(name, [])
        bad["not_forwarded"] += got != ["forwarded"] and "forwarded" not in got
        bad["extra_outcomes"] += len(got) > 1
        box = root / "spool" / STATION / tc
        bad["no_receipt"] += not (box / "out" / f"{name.rsplit('.', 1)[0]}_OK.TXT").exists()
        bad["no_core_copy"] += core.get(name, 0) != 1
        bad["left_in_inbox"] += (box / "in" / name).exists()
    return bad


def run_gateway(
    root: Path,
    files: list[tuple[str, str, str]],
    profile: Path | None,
    timeout: float,
    hand_off: str = "copy",
    processes: int = 1,
) -> dict[str, Any]:
    config = gateway_config(root, hand_off=hand_off, processes=processes)
    pairs = stage(root, files)
    process = start_gateway(root, config, profile, processes=processes)
    outcomes = OutcomeCounter(root)
    try:
        run = race([process.pid], pairs, lambda: outcomes() >= len(files), outcomes, timeout, "gateway")
    finally:
        stop_gateway(process)
    return gateway_figures([(root, files)], run)


def gateway_figures(parts: list[tuple[Path, list[tuple[str, str, str]]]], run: Race) -> dict[str, Any]:
    """The figures of gateways' runs (one, or the split's parts), each file checked."""
    bad: dict[str, int] = {}
    forwarded: list[float] = []
    ends: list[float] = []
    for root, files in parts:
        for key, value in verify_gateway(root, files).items():
            bad[key] = bad.get(key, 0) + value
        forwarded.extend(forwarded_times(root).values())
        ends.extend(outcome_times(root))
    total = sum(len(files) for _root, files in parts)
    return {**figures(total, run, total - bad["not_forwarded"], max(ends), forwarded), **bad}


def run_split(
    root: Path, files: list[tuple[str, str, str]], daemons: int, timeout: float, hand_off: str = "copy"
) -> dict[str, Any]:
    """``daemons`` independent gateways, the transfer codes dealt out between them round-robin."""
    parts = []
    for index in range(daemons):
        part_root = root / f"part{index}"
        part_root.mkdir()
        part = [f for f in files if (int(f[1]) - 43000000) % daemons == index]
        parts.append((part_root, part, stage(part_root, part)))
    processes = [
        start_gateway(part_root, gateway_config(part_root, hand_off=hand_off)) for part_root, *_ in parts
    ]
    counters = [(OutcomeCounter(part_root), len(part)) for part_root, part, _ in parts]
    try:
        interleaved = [pair for group in zip(*(pairs for *_, pairs in parts), strict=False) for pair in group]
        interleaved += [pair for *_, pairs in parts for pair in pairs[len(interleaved) // daemons :]]
        run = race(
            [process.pid for process in processes],
            interleaved,
            lambda: all(counter() >= total for counter, total in counters),
            lambda: sum(counter() for counter, _ in counters),
            timeout,
            "split",
        )
    finally:
        for process in processes:
            stop_gateway(process)
    return {**gateway_figures([(part_root, part) for part_root, part, _ in parts], run), "daemons": daemons}


# -- the baselines --------------------------------------------------------------------------------------

WATCHDOG_MOVER = r"""
import os, sys, time
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

dest = sys.argv[1]

class Mover(FileSystemEventHandler):
    def on_moved(self, event):
        self.move(event.dest_path)
    def on_created(self, event):
        self.move(event.src_path)
    def move(self, path):
        if os.path.basename(path).startswith("."):
            return
        try:
            os.rename(path, os.path.join(dest, os.path.basename(path)))
        except FileNotFoundError:
            pass

observer = Observer()
for inbox in sys.argv[2:]:
    observer.schedule(Mover(), inbox, recursive=False)
observer.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(1)
finally:
    observer.stop()
"""

INOTIFY_MOVER = (
    'inotifywait -m -e moved_to -e close_write --format "%w%f" "${@:2}" 2>"$1.err" '
    '| while IFS= read -r f; do mv -- "$f" "$1/"; done'
)


def start_baseline(kind: str, dest: Path, inboxes: list[Path], hand_off: str) -> subprocess.Popen[bytes]:
    """A baseline mover in a session of its own (stopped as a group), once it watches (or lists) the
    inboxes."""
    boxes = [str(inbox) for inbox in inboxes]
    if kind == "inotifywait":
        process = subprocess.Popen(
            ["bash", "-c", INOTIFY_MOVER, "mover", str(dest), *boxes], start_new_session=True
        )
        ready, sign = Path(f"{dest}.err"), b"Watches established"
    elif kind == "durable":
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.durable_mover", str(dest), hand_off, str(DURABLE_THREADS), *boxes],
            cwd=REPO,
            start_new_session=True,
        )
        ready, sign = Path(f"{dest}.ready"), b""
    else:
        process = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG_MOVER, str(dest), *boxes],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stdout is not None
        with process.stdout:  # it says "ready" once, then nothing
            process.stdout.readline()
        return process
    deadline = time.monotonic() + 60
    while not (ready.exists() and sign in ready.read_bytes()):
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise SystemExit(f"the {kind} mover did not start")
        time.sleep(0.02)
    return process


def moved_files(dest: Path) -> dict[str, float]:
    """name -> change time of each file a baseline moved into the core (its rename there)."""
    return {
        entry.name: entry.stat().st_ctime
        for entry in os.scandir(dest)
        if not entry.name.startswith((".", MARKER))
    }


def durable_done(dest: Path) -> int:
    """Files the durable mover has taken through every step, its batch's directory fsyncs included."""
    try:
        return int(Path(f"{dest}.done").read_text() or 0)
    except FileNotFoundError:
        return 0


class DrainMarkers:
    """Whether an event-driven mover has handled every event it was given.

    A marker file renamed into an inbox after the burst is queued behind that inbox's events (each
    inotify queue of a mover serves one inbox or all of them, first in, first out), so when it reaches
    the core, every event of that inbox is handled. A marker renamed in while its queue is full is lost
    as the files' events were; so once nothing has changed in the core for ``MARKER_IDLE`` seconds (the
    mover idle) and an inbox's marker has not arrived, another is renamed into it.
    """

    def __init__(self, root: Path, inboxes: list[Path], core: Path) -> None:
        self.stage = root / "markers"
        self.stage.mkdir()
        self.core = core
        self.waiting: dict[Path, list[str]] = {inbox: [] for inbox in inboxes}  # markers sent, per inbox
        self.sent = 0
        self.sent_at = self.changed_at = 0.0
        self.core_mtime = 0

    def __call__(self) -> bool:
        now = time.monotonic()
        for inbox, markers in list(self.waiting.items()):
            if any((self.core / name).exists() for name in markers):
                del self.waiting[inbox]
        mtime = self.core.stat().st_mtime_ns
        if mtime != self.core_mtime:
            self.core_mtime, self.changed_at = mtime, now
        if self.waiting and (not self.sent or now - max(self.changed_at, self.sent_at) >= MARKER_IDLE):
            for inbox, markers in self.waiting.items():
                markers.append(self.send(inbox))
            self.sent_at = now
        return not self.waiting

    def send(self, inbox: Path) -> str:
        self.sent += 1
        name = f"{MARKER}{self.sent:06d}"
        (self.stage / name).write_bytes(b"")
        os.rename(self.stage / name, inbox / name)  # noqa: PTH104
        return name


def run_baseline(
    kind: str, root: Path, files: list[tuple[str, str, str]], timeout: float, hand_off: str
) -> dict[str, Any]:
    pairs = stage(root, files)
    dest = root / "core"
    dest.mkdir()
    inboxes = sorted({dst.parent for _src, dst in pairs})
    process = start_baseline(kind, dest, inboxes, hand_off)
    try:
        if kind == "durable":
            done = partial(durable_done, dest)
            run = race([process.pid], pairs, lambda: done() >= len(files), done, timeout, kind)
        else:
            drained = DrainMarkers(root, inboxes, dest)
            run = race([process.pid], pairs, drained, lambda: len(moved_files(dest)), timeout, kind)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    moved_at = moved_files(dest)
    if kind == "durable":
        moved, last = durable_done(dest), Path(f"{dest}.done").stat().st_mtime
    else:
        moved, last = len(moved_at), max(moved_at.values(), default=0.0)
    return figures(len(files), run, moved, last, moved_at.values())


# -- Python calls a file --------------------------------------------------------------------------------


def profiled_run(
    root: Path, files: list[tuple[str, str, str]], timeout: float, hold: float | None = None
) -> dict[str, Any]:
    """One gateway process under bench/profiled.py, fed ``files`` as in the race and stopped once all are
    done; or, given ``hold``, the files staged but never fed and the process stopped ``hold`` seconds
    after its start. Returns its call counts, and ``held``: the seconds from its start to its stop."""
    config = gateway_config(root)
    pairs = stage(root, files)
    counts = root / "calls.json"
    process = start_gateway(root, config, calls=counts)
    started = time.monotonic()
    outcomes = OutcomeCounter(root)
    try:
        if hold is None:
            race([process.pid], pairs, lambda: outcomes() >= len(files), outcomes, timeout, "gateway (calls)")
        else:
            time.sleep(hold)
        held = time.monotonic() - started
    finally:
        stop_gateway(process)
    bad = verify_gateway(root, files) if hold is None else {}
    if any(bad.values()):
        raise UnfinishedError(f"the profiled gateway did not take every file through: {bad}")
    report: dict[str, Any] = json.loads(counts.read_text(encoding="utf-8"))
    return {**report, "held": held}


def short(label: str) -> str:
    """A function's label without the directories of this repository and of Python's libraries."""
    for prefix in (str(REPO), sysconfig.get_path("purelib"), sysconfig.get_path("stdlib")):
        label = label.replace(prefix + "/", "")
    return label


def count_calls(base: Path, count: int, timeout: float) -> dict[str, Any]:
    """Python function calls a file: a gateway process's calls over a burst of ``count`` files, less
    those of the same process kept as long with nothing to do (start-up, timers, the stop)."""
    files = names(count)
    (base / "calls-burst").mkdir()
    (base / "calls-idle").mkdir()
    burst = profiled_run(base / "calls-burst", files, timeout)
    idle = profiled_run(base / "calls-idle", files, timeout, hold=burst["held"])
    main_calls = (burst["main_thread_calls"] - idle["main_thread_calls"]) / count
    other_calls = (burst["other_threads_calls"] - idle["other_threads_calls"]) / count
    functions = Counter(burst["functions"])
    functions.subtract(idle["functions"])
    spent = Counter(burst["own_seconds"])
    spent.subtract(idle["own_seconds"])
    return {
        "files": count,
        "processes": 1,
        "calls_per_file": main_calls + other_calls,
        "main_thread_calls_per_file": main_calls,
        "other_threads_calls_per_file": other_calls,
        "burst_calls": burst["main_thread_calls"] + burst["other_threads_calls"],
        "idle_calls": idle["main_thread_calls"] + idle["other_threads_calls"],
        "threads": burst["threads"],
        "seconds_held": burst["held"],
        "top_per_file": [(short(name), calls / count) for name, calls in functions.most_common(25)],
        "top_own_us_per_file": [(short(name), 1e6 * spent / count) for name, spent in spent.most_common(40)],
    }


def print_calls(calls: dict[str, Any]) -> None:
    print(
        f"calls: {calls['calls_per_file']:,.0f} Python function calls a file ({calls['files']:,} files, one "
        f"process, {calls['threads']} threads): {calls['main_thread_calls_per_file']:,.0f} on the main "
        f"thread, {calls['other_threads_calls_per_file']:,.0f} on the others; {calls['burst_calls']:,} in "
        f"all, {calls['idle_calls']:,} the same process with no files"
    )
    for name, per_file in calls["top_per_file"][:15]:
        print(f"{per_file:10.1f}  {name}")
    print("CPU in a function's own code a file, us (all threads, under the profiler):")
    for name, per_file in calls["top_own_us_per_file"][:25]:
        print(f"{per_file:10.1f}  {name}")


# -- driver ---------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"nproc": os.cpu_count(), "cpu": model, "python": sys.version.split()[0]}


def result_stem(stem: str, processes: int) -> str:
    """A run's results name: ``-p<N>`` added when the gateway ran with several processes."""
    return stem + (f"-p{processes}" if processes > 1 else "")


def save_result(name: str, report: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the machine and the time added; returns its path."""
    report = {**report, "machine": machine(), "at": datetime.now().isoformat(timespec="seconds")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def plot(runs: list[dict[str, Any]], files: int, path: Path) -> None:
    """Files moved per second over time, one line per run (log scale: the contenders differ 50-fold)."""
    plt = pyplot()
    if plt is None:
        return
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for run in runs:
        counts = run["per_second"]
        label = f"{run['kind']} (round {run['round']})"
        axes.stairs(counts, range(len(counts) + 1), baseline=None, linewidth=2, label=label)
    axes.set_yscale("log")
    axes.set_xlabel("seconds since the first rename")
    axes.set_ylabel("files moved per second")
    axes.set_title(f"{files:,} files renamed in at once ({STATION}, {CODES} transfer codes)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"plot: {path}")


def print_profile(path: Path, top: int = 25) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


GATEWAY_NOTES = ("not_forwarded", "no_receipt", "no_core_copy", "left_in_inbox", "extra_outcomes")


def run_one(
    kind: str, root: Path, files: list[tuple[str, str, str]], args: argparse.Namespace
) -> dict[str, Any]:
    """One contestant's run under ``root``."""
    if kind == "gateway":
        profile = root / "daemon.prof" if args.profile else None
        return run_gateway(root, files, profile, args.timeout, args.hand_off, args.processes)
    if kind == "split":
        return run_split(root, files, args.split, args.timeout, args.hand_off)
    return run_baseline(kind, root, files, args.timeout, args.hand_off)


def row(rnd: int, kind: str, result: dict[str, Any]) -> str:
    notes = " ".join(f"{k}={result[k]}" for k in GATEWAY_NOTES if k in result)
    return (
        f"{rnd:5} {kind:12} {result['files_per_s']:9,.0f} {result['seconds']:8.2f} "
        f"{result['feed_seconds']:6.2f} {result['moved']:7,} {result['missed']:7,} "
        f"{result['cpu_user_ms_per_file']:7.3f} {result['cpu_system_ms_per_file']:7.3f}  {notes}"
    )


def ratios(runs: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Each round's gateways' files a second over each other contestant's of that round."""
    found = []
    for rnd in range(1, rounds + 1):
        by = {r["kind"]: r for r in runs if r["round"] == rnd}
        for gateway in (g for g in GATEWAYS if g in by):
            ratio = {f"vs_{k}": by[gateway]["files_per_s"] / by[k]["files_per_s"] for k in by if k != gateway}
            found.append({"round": rnd, "run": gateway, **ratio})
            print(f"round {rnd}: {gateway} " + ", ".join(f"{v:.2f}x {k[3:]}" for k, v in ratio.items()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join((*KINDS, "split"))
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds from the start: not done by then is an error"
    )
    parser.add_argument(
        "--hand-off", default="copy", choices=("copy", "link"), help="the core route's hand_off"
    )
    parser.add_argument("--processes", type=int, default=1, help="the gateway's processes (config key)")
    parser.add_argument("--split", type=int, default=2, help="how many gateways the split run starts")
    parser.add_argument("--root", type=Path, default=None, help="where the run directories go (fresh ones)")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--profile", action="store_true", help="run the daemon under cProfile")
    parser.add_argument("--plot", action="store_true", help="also write a PNG of files/s over time")
    parser.add_argument(
        "--calls",
        type=int,
        nargs="?",
        const=2000,
        default=0,
        metavar="FILES",
        help="also count the gateway's Python calls a file on a burst of FILES (2000), one process",
    )
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    base = Path(tempfile.mkdtemp(prefix="burst-", dir=args.root or REPO.parent))
    files = names(args.files)
    runs: list[dict[str, Any]] = []
    calls: dict[str, Any] = {}
    if kinds:
        print(f"{args.files:,} files over {CODES} transfer codes on {STATION}; runs under {base}", flush=True)
        print(
            f"{'round':>5} {'run':12} {'files/s':>9} {'seconds':>8} {'feed s':>6} {'moved':>7} {'missed':>7} "
            f"{'user ms':>7} {'sys ms':>7}  (CPU a file moved)",
            flush=True,
        )
    try:
        for rnd in range(1, args.rounds + 1):
            for kind in kinds:
                root = base / f"{rnd}-{kind}"
                root.mkdir()
                result = {**run_one(kind, root, files, args), "kind": kind, "round": rnd}
                runs.append(result)
                print(row(rnd, kind, result), flush=True)
                if (root / "daemon.prof").exists():
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    shutil.copy(root / "daemon.prof", RESULTS / f"burst-{args.files}.prof")
                    print_profile(root / "daemon.prof")
                if not args.keep:
                    shutil.rmtree(root, ignore_errors=True)
        if args.calls:
            calls = count_calls(base, args.calls, args.timeout)
    except UnfinishedError as error:
        raise SystemExit(f"error: {error}; no figures written") from None
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    if runs:
        report = {
            "files": args.files,
            "codes": CODES,
            "station": STATION,
            "hand_off": args.hand_off,
            "processes": args.processes,
            "runs": runs,
            "ratios": ratios(runs, args.rounds),
        }
        stem = result_stem(f"burst-{args.files}", args.processes)
        save_result(stem, report)
        if args.plot:
            plot(runs, args.files, RESULTS / f"{stem}.png")
    if calls:
        print_calls(calls)
        save_result(f"burst-calls-{args.calls}", calls)


if __name__ == "__main__":
    main()
