"""Console: an institution's page over a history of N events (default 1,000,000), p95 over real HTTP.

    python -m bench.console [--events 1000000] [--requests 200]

The history is generated directly (JSON lines in 100 daily files, two events per file: received, then
forwarded or, one in ten, rejected with a finding), spread over 50 transfer codes, one institution each.
``fdep-gateway web`` starts on it (its start-up indexes the whole history: timed), an institution logs
in, and its pages are fetched ``--requests`` times each: the newest-first list, a name search, and one
file's story. The baseline, in the same run, is the CLI's reader (``historyview.query``) answering the
same list (the institution's events) by scanning the daily files. Prints a table, writes
``bench/results/console-<events>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import yaml

from bench.burst import REPO, save_result
from gateway.store.historyview import query
from harness.daemon import run_gateway

ZONE = ZoneInfo("Asia/Shanghai")
CODES = 50
DAYS = 100
PASSWORD = "bench-password-123"  # noqa: S105 (a throwaway account)
FINDING = {
    "code": "ENUM_INVALID",
    "severity": "error",
    "message_zh": "取值不在枚举范围内",
    "message_en": "The value is not one of the allowed values",
    "hint_zh": "请按码表填写",
    "hint_en": "Use a value from the code list",
    "line": 3,
    "field_no": 4,
    "field": "JGLX",
    "value": "09",
}


def code(n: int) -> str:
    return f"TC{41000000 + n:08d}"


def generate(history: Path, events: int) -> None:
    """``events`` lines in ``DAYS`` daily files, oldest day first, times rising."""
    history.mkdir(parents=True)
    files = events // 2
    per_day = files // DAYS
    start = datetime(2026, 1, 1, tzinfo=ZONE)
    n = 0
    for d in range(DAYS):
        day = start + timedelta(days=d)
        lines = []
        for i in range(per_day):
            ts = day + timedelta(seconds=i * 86_000 / per_day)
            tc = code(n % CODES)
            org = tc[2:]
            date = (day - timedelta(days=1)).strftime("%Y%m%d")
            file_id = f"{day:%Y%m%d}-{ts:%H%M%S}-{n % 1_000_000:06d}-{n % 65536:04x}"
            base = {
                "file_id": file_id,
                "station": "k1237",
                "transfer_code": tc,
                "institution": org,
                "table": "D1001",
                "date": date,
                "batch": "01",
                "mode": "Q",
                "name": f"CISP-{org}_D1001_V01_{n % 9 + 1}_{date}_01_Q.TXT",
                "size": 2048,
            }
            stamp = ts.isoformat(timespec="milliseconds")
            lines.append(json.dumps({"ts": stamp, "event": "received", **base, "message": "received"}))
            if n % 10 == 9:
                outcome = {"event": "rejected", "records": 10, "findings": [FINDING], "findings_total": 1}
            else:
                outcome = {"event": "forwarded", "records": 10}
            later = (ts + timedelta(milliseconds=40)).isoformat(timespec="milliseconds")
            lines.append(json.dumps({"ts": later, **base, **outcome, "message": outcome["event"]}))
            n += 1
        (history / f"history-{day:%Y%m%d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def config(root: Path, port: int) -> Path:
    data = {
        "spool_root": str(root / "spool"),
        "stations": {"k1237": {"environment": "test", "route": "core"}},
        "routes": {"core": {"type": "directory", "path": str(root / "core")}},
        "transfer_codes": {
            code(n): {"institution": code(n)[2:], "stations": ["k1237"]} for n in range(CODES)
        },
        "history": {"dir": str(root / "history")},
        "web": {"listen": f"127.0.0.1:{port}", "dir": str(root / "web"), "logins_per_address": 1000},
    }
    path = root / "gateway.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def gateway(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = run_gateway(*args, stdin=stdin)
    done.check_returncode()
    return done


def timed(client: httpx.Client, path: str, requests: int) -> list[float]:
    client.get(path).raise_for_status()  # warm
    times = []
    for _ in range(requests):
        began = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - began) * 1000)
    return times


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--port", type=int, default=18581)
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="console-", dir=REPO.parent))
    process = None
    try:
        began = time.perf_counter()
        generate(root / "history", args.events)
        generated = time.perf_counter() - began
        path = config(root, args.port)
        org = code(7)[2:]
        gateway(
            "web-user",
            "add",
            "inst",
            "--institution",
            org,
            "--password-stdin",
            "-c",
            str(path),
            stdin=PASSWORD,
        )

        began = time.perf_counter()
        baseline = [e for e in query(root / "history", institution=org)][-50:]
        scan = (time.perf_counter() - began) * 1000

        env = {**os.environ, "PYTHONPATH": str(REPO), "FDEP_WEB_SECRET": "b" * 64}
        log = (root / "web.log").open("wb")
        began = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "web", "-c", str(path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
        )
        url = f"http://127.0.0.1:{args.port}"
        while True:
            try:
                if httpx.get(f"{url}/login", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
            if process.poll() is not None:
                raise SystemExit((root / "web.log").read_text())
        indexed = time.perf_counter() - began

        with httpx.Client(base_url=url, timeout=60) as client:
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
            assert token
            login = client.post(
                "/login", data={"csrf_token": token.group(1), "username": "inst", "password": PASSWORD}
            )
            assert login.status_code == 303, login.text
            page = client.get("/files").text
            newest = re.findall(r'data-file-id="([^"]+)"', page)
            assert len(newest) == 50 and baseline[-1]["file_id"] in newest
            results = {
                "list": timed(client, "/files", args.requests),
                "search": timed(client, "/files?name=_v01_3_&state=rejected", args.requests),
                "file": timed(client, f"/files/{newest[10]}", args.requests),
            }
        report = {
            "events": args.events,
            "requests": args.requests,
            "generate_s": round(generated, 1),
            "start_and_index_s": round(indexed, 1),
            "baseline_scan_ms": round(scan, 1),
            **{f"{k}_p50_ms": round(statistics.median(v), 1) for k, v in results.items()},
            **{f"{k}_p95_ms": round(p95(v), 1) for k, v in results.items()},
        }
        report["list_speedup_vs_scan"] = round(scan / report["list_p95_ms"], 1)
        print(f"{args.events:,} events; generated in {generated:.1f} s; web start + index {indexed:.1f} s")
        print(f"baseline: historyview.query of one institution's events: {scan:,.0f} ms")
        for name, times in results.items():
            print(f"{name:<7} p50 {statistics.median(times):7.1f} ms   p95 {p95(times):7.1f} ms")
        print(f"list p95 is {report['list_speedup_vs_scan']}x faster than the scan")
        print(f"wrote {save_result(f'console-{args.events}', report)}")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
