"""Many mailboxes: 2,000 transfer codes x 5 files: start-up time, inotify watches, files/s.

    python -m bench.mailboxes --codes 2000 --per-code 5

Same set-up as ``bench/burst.py`` (k6666, windows off, valid 1 KiB D2001 files, a fresh directory on
the repository's filesystem), but with ``--codes`` transfer codes, each its own ``in/``. The daemon
starts on empty inboxes: start-up is from the process start to its ``gateway.started`` log line (after
recovery and the first scan, which arms every inbox's watch). The watch count is the kernel's: the
``inotify wd:`` lines in /proc/<pid>/fdinfo of the daemon's inotify descriptors. Then every file (staged
beforehand) is renamed in at once, and timed until each has its outcome, as in burst; afterwards every
file is checked as burst does. Prints a table, writes ``bench/results/mailboxes-<codes>x<per-code>.json``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.burst import (
    REPO,
    STATION,
    gateway_config,
    names,
    rename_all,
    save_result,
    stage,
    start_gateway,
    stop_gateway,
    verify_gateway,
    wait_for_outcomes,
)
from bench.measure import inotify_watches, started_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=2000, help="transfer codes, one mailbox each")
    parser.add_argument("--per-code", type=int, default=5, help="files renamed into each mailbox")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on the daemon after this long")
    parser.add_argument("--root", type=Path, default=None, help="where the run directory goes (a fresh one)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    total = args.codes * args.per_code
    root = Path(tempfile.mkdtemp(prefix="mailboxes-", dir=args.root or REPO.parent))
    files = names(total, args.codes)
    try:
        config = gateway_config(root, args.codes)
        print(f"{args.codes:,} transfer codes x {args.per_code} files on {STATION} under {root}", flush=True)
        pairs = stage(root, files)
        launched = time.time()
        process = start_gateway(root, config)
        try:
            startup = started_at(root / "daemon.log") - launched
            watches = inotify_watches(process.pid)
            start, _renamed = rename_all(pairs)
            end = wait_for_outcomes(root, total, start + args.timeout)
        finally:
            stop_gateway(process)
        bad = verify_gateway(root, files)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    moved = total - bad["not_forwarded"]
    result = {
        "codes": args.codes,
        "per_code": args.per_code,
        "files": total,
        "station": STATION,
        "startup_seconds": startup,
        "watches": watches,
        "seconds": end - start,
        "moved": moved,
        "files_per_s": moved / (end - start),
        **bad,
    }
    print(f"{'codes':>6} {'files':>7} {'start-up s':>10} {'watches':>8} {'files/s':>8} {'seconds':>8}")
    print(
        f"{args.codes:6,} {total:7,} {startup:10.2f} {watches:8,} {result['files_per_s']:8,.0f} "
        f"{result['seconds']:8.2f}"
    )
    print(" ".join(f"{k}={v}" for k, v in bad.items()))
    save_result(f"mailboxes-{args.codes}x{args.per_code}", result)


if __name__ == "__main__":
    main()
