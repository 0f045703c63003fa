"""Backlog: N valid 1 KiB D2001 files already waiting in the k6666 inboxes when the daemon starts.

    python -m bench.backlog --files 100000 [--processes 2]

Same files and set-up as ``bench/burst.py`` (100 transfer codes, windows off, a fresh directory on the
repository's filesystem). The files are written under ``stage/`` and renamed into their inboxes, all
before ``fdep-gateway drain`` starts (it processes everything there is, then exits). Timed from the
process start to its ``gateway.started`` log line, to the last ``forwarded`` history event (stamped when
durable; files/s is over this) and to the process exit. ``drain`` is always one process: with
``--processes 2`` the benchmark runs ``fdep-gateway run`` instead and stops it (SIGTERM) once every
file has its outcome, so the last column is the time it took to stop. Peak RSS: VmHWM of the
daemon and of each validation worker, read from /proc while it runs. Afterwards every file is checked
as burst does (one forwarded event, its receipt, one core copy, gone from ``in/``). Prints a table,
writes ``bench/results/backlog-<files>[-p<processes>].json``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.burst import (
    CODES,
    REPO,
    STATION,
    daemon_log_tail,
    forwarded_times,
    gateway_config,
    names,
    rename_all,
    result_stem,
    save_result,
    stage,
    start_gateway,
    verify_gateway,
    wait_for_outcomes,
)
from bench.measure import TreeMemory, memory_text, started_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=1800.0, help="kill the daemon after this long")
    parser.add_argument("--processes", type=int, default=1, help="the gateway's processes (config key)")
    parser.add_argument("--root", type=Path, default=None, help="where the run directory goes (a fresh one)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="backlog-", dir=args.root or REPO.parent))
    files = names(args.files)
    try:
        config = gateway_config(root, processes=args.processes)
        print(f"staging {args.files:,} files over {CODES} transfer codes under {root}", flush=True)
        rename_all(stage(root, files))
        start = time.time()
        process = start_gateway(root, config, command="drain" if args.processes == 1 else "run")
        try:
            with TreeMemory(process.pid) as memory:
                if args.processes > 1:
                    wait_for_outcomes(root, args.files, time.monotonic() + args.timeout)
                    process.send_signal(signal.SIGTERM)
                code = process.wait(timeout=args.timeout)
            exited = time.time()
        except subprocess.TimeoutExpired:
            raise SystemExit(f"the drain did not finish within {args.timeout:g}s") from None
        finally:
            if process.poll() is None:  # timed out or interrupted
                process.kill()
                process.wait()
        if code != 0:
            raise SystemExit(f"the drain exited with {code}:\n{daemon_log_tail(root)}")
        started = started_at(root / "daemon.log")
        last = max(forwarded_times(root).values(), default=start)
        bad = verify_gateway(root, files)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    moved = args.files - bad["not_forwarded"]
    result = {
        "files": args.files,
        "processes": args.processes,
        "codes": CODES,
        "station": STATION,
        "startup_seconds": started - start,
        "seconds": last - start,
        "exit_seconds": exited - start,
        "moved": moved,
        "files_per_s": moved / (last - start),
        **memory.figures(),
        **bad,
    }
    print(f"{'files':>8} {'files/s':>8} {'start s':>8} {'drained s':>9} {'exit s':>7}  peak RSS MB")
    print(
        f"{args.files:8,} {result['files_per_s']:8,.0f} {result['startup_seconds']:8.2f} "
        f"{result['seconds']:9.2f} {result['exit_seconds']:7.2f}  {memory_text(result)}"
    )
    print(" ".join(f"{k}={v}" for k, v in bad.items()))
    save_result(result_stem(f"backlog-{args.files}", args.processes), result)


if __name__ == "__main__":
    main()
