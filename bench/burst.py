"""Burst: N valid 1 KiB D2001 files renamed into 100 k6666 mailboxes at once, gateway vs two naive movers.

    python -m bench.burst --files 20000 [--rounds 2] [--hand-off copy|link] [--processes 2] [--profile]
    python -m bench.burst --kinds gateway,split --split 2   # what a gateway process per CPU could reach

Each run gets a fresh directory (``--root``, default a new temp dir on the repo's filesystem). The files
are written first under ``stage/`` (not timed), then renamed into ``<spool>/k6666/<tc>/in/`` as fast as
one process can (the clock starts at the first rename). Three contenders, taking turns, ``--rounds``
times (this filesystem slows file creation for minutes after mass deletes, so ratios within a round are
the fair figure):

- gateway: ``fdep-gateway run`` on k6666 (windows off) with 100 transfer codes; done when every file has
  its ``forwarded`` history event, its ``_OK`` receipt in ``out/`` and its copy in the core directory
  (the route's ``hand_off``: a durable copy, or with ``--hand-off link`` a hard link).
- inotifywait: ``inotifywait -m -e moved_to ... | while read f; do mv "$f" core/; done`` (inotify-tools).
- watchdog: a minimal Python ``watchdog`` observer that ``os.rename``\\ s each file it hears about.

- split (only when asked for, with ``--kinds``): ``--split`` independent gateways, each with its own spool,
  ledger and history and every ``--split``-th transfer code, the files renamed into them interleaved. Not
  a product configuration: an upper bound for a gateway that ran a process per CPU (nothing shared).

A baseline is done when everything is moved, or when nothing moved for ``--idle`` seconds: what is left
in ``in/`` is what it never moved (lost inotify events: the queue holds 16,384 by default). Neither
baseline validates, writes receipts or history, or fsyncs anything; the gateway does all of that.

Prints a table and writes ``bench/results/burst-<files>.json``; with ``--plot`` also ``burst-<files>.png``
beside it: files moved per second over time, each contender (the gateway's from its ``forwarded``
history events, a baseline's from the change times of the files it moved into the core). ``--profile``
runs the daemon under cProfile (slower) and prints its top functions.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench.measure import pyplot, tree_cpu

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
    root: Path, config: Path, profile: Path | None = None, command: str = "run"
) -> subprocess.Popen[bytes]:
    """``fdep-gateway run`` (or ``drain``) on ``config``, logging to root/daemon.log; returns once started."""
    log = (root / "daemon.log").open("ab")
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "cProfile", "-o", str(profile)]
    process = subprocess.Popen(
        [*prefix, "-m", "gateway", command, "-c", str(config)],
        cwd=REPO,
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 60
    while b"gateway.started" not in (root / "daemon.log").read_bytes():
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
    process = start_gateway(root, config, profile)
    try:
        wall, before = time.time(), tree_cpu(process.pid)
        start, renamed = rename_all(pairs)
        end = wait_for_outcomes(root, len(files), start + timeout)
        cpu = cpu_used(before, tree_cpu(process.pid))
    finally:
        stop_gateway(process)
    bad = verify_gateway(root, files)
    return {**figures(len(files), (wall, start, renamed, end), bad, forwarded_times(root).values()), **cpu}


def cpu_used(before: tuple[float, float], after: tuple[float, float]) -> dict[str, float]:
    """The CPU the gateway's processes spent on the burst: where a gap to the goal has to come from."""
    user, system = after[0] - before[0], after[1] - before[1]
    return {"cpu_user_s": user, "cpu_system_s": system}


def cpu_note(result: dict[str, Any], files: int) -> str:
    cpu_ms = 1000 * (result["cpu_user_s"] + result["cpu_system_s"]) / files
    return f"cpu={cpu_ms:.2f}ms/file ({result['cpu_system_s']:.1f}s system)"


def figures(
    total: int, clock: tuple[float, float, float, float], bad: dict[str, int], forwarded: Iterable[float]
) -> dict[str, Any]:
    """A gateway run's figures; ``clock``: wall time at the start, then monotonic start, end of the
    renames, last outcome."""
    wall, start, renamed, end = clock
    moved = total - bad["not_forwarded"]
    return {
        "seconds": end - start,
        "rename_seconds": renamed - start,
        "moved": moved,
        "missed": total - moved,
        "files_per_s": moved / (end - start),
        **bad,
        "per_second": per_second(forwarded, wall),
    }


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
    try:
        wall, cpu = time.time(), [tree_cpu(process.pid) for process in processes]
        interleaved = [pair for group in zip(*(pairs for *_, pairs in parts), strict=False) for pair in group]
        interleaved += [pair for *_, pairs in parts for pair in pairs[len(interleaved) // daemons :]]
        start, renamed = rename_all(interleaved)
        end = max(wait_for_outcomes(part_root, len(part), start + timeout) for part_root, part, _ in parts)
        after = [tree_cpu(process.pid) for process in processes]
    finally:
        for process in processes:
            stop_gateway(process)
    bad: dict[str, int] = {}
    times: list[float] = []
    for part_root, part, _ in parts:
        for key, value in verify_gateway(part_root, part).items():
            bad[key] = bad.get(key, 0) + value
        times.extend(forwarded_times(part_root).values())
    used = cpu_used(
        (sum(c[0] for c in cpu), sum(c[1] for c in cpu)), (sum(c[0] for c in after), sum(c[1] for c in after))
    )
    return {**figures(len(files), (wall, start, renamed, end), bad, times), **used, "daemons": daemons}


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


def moved_so_far(kind: str, dest: Path) -> int:
    """Files a baseline has moved: those in the core, or for the durable mover those whose every step,
    directory fsyncs included, is done (what it counts after each batch)."""
    if kind == "durable":
        try:
            return int(Path(f"{dest}.done").read_text() or 0)
        except FileNotFoundError:
            return 0
    return sum(not name.startswith(".") for name in os.listdir(dest))  # noqa: PTH208 - a cheap poll


def run_baseline(
    kind: str, root: Path, files: list[tuple[str, str, str]], idle: float, timeout: float, hand_off: str
) -> dict[str, Any]:
    pairs = stage(root, files)
    dest = root / "core"
    dest.mkdir()
    inboxes = sorted({str(dst.parent) for _src, dst in pairs})
    if kind == "inotifywait":
        process = subprocess.Popen(
            ["bash", "-c", INOTIFY_MOVER, "mover", str(dest), *inboxes], start_new_session=True
        )
        err = Path(f"{dest}.err")
        deadline = time.monotonic() + 60
        while b"Watches established" not in (err.read_bytes() if err.exists() else b""):
            if time.monotonic() > deadline:
                raise SystemExit("inotifywait did not start")
            time.sleep(0.02)
    elif kind == "durable":
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.durable_mover",
                str(dest),
                hand_off,
                str(DURABLE_THREADS),
                *inboxes,
            ],
            cwd=REPO,
            start_new_session=True,
        )
        ready = Path(f"{dest}.ready")
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the durable mover did not start")
            time.sleep(0.02)
    else:
        process = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG_MOVER, str(dest), *inboxes],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stdout is not None
        process.stdout.readline()
    try:
        wall, before = time.time(), tree_cpu(process.pid)
        start, renamed = rename_all(pairs)
        total, moved, last_change, last_count = len(files), 0, time.monotonic(), -1
        done_at = start
        while time.monotonic() < start + timeout:
            moved = moved_so_far(kind, dest)
            now = time.monotonic()
            if moved != last_count:
                last_count, last_change = moved, now
                done_at = now
            if moved >= total or now - last_change > idle:
                break
            time.sleep(0.02)
        cpu = cpu_used(before, tree_cpu(process.pid))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    seconds = done_at - start
    moved_at = (entry.stat().st_ctime for entry in os.scandir(dest) if not entry.name.startswith("."))
    return {
        "seconds": seconds,
        "rename_seconds": renamed - start,
        "moved": moved,
        "missed": total - moved,
        "files_per_s": moved / seconds if seconds > 0 else 0.0,
        "per_second": per_second(moved_at, wall),
        **(cpu if kind != "inotifywait" else {}),  # its mv processes have exited: their CPU is not seen
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS)
    )
    parser.add_argument(
        "--idle", type=float, default=5.0, help="a baseline is done after this long without a move"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--hand-off", default="copy", choices=("copy", "link"), help="the core route's hand_off"
    )
    parser.add_argument("--processes", type=int, default=1, help="the gateway's processes (config key)")
    parser.add_argument("--split", type=int, default=2, help="how many gateways the split run starts")
    parser.add_argument("--root", type=Path, default=None, help="where the run directories go (fresh ones)")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--profile", action="store_true", help="run the daemon under cProfile")
    parser.add_argument("--plot", action="store_true", help="also write a PNG of files/s over time")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    base = Path(tempfile.mkdtemp(prefix="burst-", dir=args.root or REPO.parent))
    files = names(args.files)
    runs: list[dict[str, Any]] = []
    print(f"{args.files:,} files over {CODES} transfer codes on {STATION}; run dirs under {base}", flush=True)
    print(
        f"{'round':>5} {'run':12} {'files/s':>9} {'seconds':>8} {'moved':>7} {'missed':>7}  notes", flush=True
    )
    try:
        for rnd in range(1, args.rounds + 1):
            for kind in kinds:
                root = base / f"{rnd}-{kind}"
                root.mkdir()
                if kind in GATEWAYS:
                    profile = root / "daemon.prof" if args.profile and kind == "gateway" else None
                    if kind == "gateway":
                        result = run_gateway(
                            root, files, profile, args.timeout, args.hand_off, args.processes
                        )
                    else:
                        result = run_split(root, files, args.split, args.timeout, args.hand_off)
                    notes = " ".join(
                        f"{k}={result[k]}"
                        for k in (
                            "not_forwarded",
                            "no_receipt",
                            "no_core_copy",
                            "left_in_inbox",
                            "extra_outcomes",
                        )
                    )
                    notes += " " + cpu_note(result, len(files))
                else:
                    profile = None
                    result = run_baseline(kind, root, files, args.idle, args.timeout, args.hand_off)
                    notes = cpu_note(result, len(files)) if "cpu_user_s" in result else ""
                result.update(kind=kind, round=rnd)
                runs.append(result)
                print(
                    f"{rnd:5} {kind:12} {result['files_per_s']:9,.0f} {result['seconds']:8.2f} "
                    f"{result['moved']:7,} {result['missed']:7,}  {notes}",
                    flush=True,
                )
                if profile is not None and profile.exists():
                    shutil.copy(profile, RESULTS / f"burst-{args.files}.prof")
                    print_profile(profile)
                if not args.keep:
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    ratios = []
    for rnd in range(1, args.rounds + 1):
        by = {r["kind"]: r for r in runs if r["round"] == rnd}
        for gateway in (g for g in GATEWAYS if g in by):
            ratio = {
                f"vs_{k}": by[gateway]["files_per_s"] / by[k]["files_per_s"]
                for k in by
                if k != gateway and by[k]["files_per_s"]
            }
            ratios.append({"round": rnd, "run": gateway, **ratio})
            print(f"round {rnd}: {gateway} " + ", ".join(f"{v:.2f}x {k[3:]}" for k, v in ratio.items()))
    report = {
        "files": args.files,
        "codes": CODES,
        "station": STATION,
        "hand_off": args.hand_off,
        "processes": args.processes,
        "runs": runs,
        "ratios": ratios,
    }
    stem = result_stem(f"burst-{args.files}", args.processes)
    save_result(stem, report)
    if args.plot and runs:
        plot(runs, args.files, RESULTS / f"{stem}.png")


if __name__ == "__main__":
    main()
