"""Drive the real daemon: a tmp spool, a config, the process itself, and what it leaves behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import yaml

from harness.config import REPO, base_config

ZONE = ZoneInfo("Asia/Shanghai")
ORG = "41210000"
TC = "TC41210000"


def day(back: int) -> str:
    """A data date ``back`` days before today (gateway clock): in the past, and distinct per ``back``."""
    return (datetime.now(ZONE) - timedelta(days=back)).strftime("%Y%m%d")


def yesterday() -> str:
    return day(1)


def d1001_name(date: str | None = None, batch: int = 1, org: str = ORG, part: int = 1) -> str:
    return f"CISP-{org}_D1001_V01_{part}_{date or yesterday()}_{batch:02d}_Q.TXT"


def d1001_body(date: str | None = None, org: str = ORG, rows: int = 1, name: str = "示例基金") -> bytes:
    date = date or yesterday()
    line = f"{org}|{name}|91110000100000000X|01|北京市||||{date}\n"
    return (line * rows).encode()


@dataclass
class Gateway:
    root: Path
    config_path: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _log: BinaryIO | None = None

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    def inbox(self, station: str = "k1237", tc: str = TC) -> Path:
        path = self.spool / station / tc / "in"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def outbox(self, station: str = "k1237", tc: str = TC) -> Path:
        return self.spool / station / tc / "out"

    def core(self, station: str = "k1237") -> Path:
        return self.root / "core" / station

    def write_config(self, **overrides: Any) -> None:
        data = base_config(self.root)
        data.update(self.overrides)
        data.update(overrides)
        self.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    def command(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_gateway(*args, timeout=timeout)

    def drain(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = self.command("drain", "-c", str(self.config_path), timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    def start(self) -> None:
        self._log = (self.root / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path)],
            cwd=REPO,
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        wait_for(lambda: "gateway.started" in self.log(), timeout=30, what="the daemon to start")

    def log(self) -> str:
        path = self.root / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=60)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def stop(self) -> int:
        return self.kill(signal.SIGTERM)

    def events(self) -> list[dict[str, Any]]:
        """Every whole event line so far; a last line without its newline is a write in progress."""
        found: list[dict[str, Any]] = []
        history = self.root / "history"
        for path in sorted(history.glob("history-*.jsonl")) if history.is_dir() else []:
            whole, _, _ = path.read_bytes().rpartition(b"\n")
            found.extend(json.loads(line) for line in whole.splitlines() if line.strip())
        return found

    def outcomes(self) -> dict[str, list[str]]:
        """name -> the outcome events (forwarded, rejected, duplicate) it got, in order."""
        result: dict[str, list[str]] = {}
        for event in self.events():
            if event["event"] in ("forwarded", "rejected", "duplicate"):
                result.setdefault(event["name"], []).append(event["event"])
        return result

    def outcome_events(self, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events()
            if e["name"] == name and e["event"] in ("forwarded", "rejected", "duplicate")
        ]

    def receipt(self, name: str, ok: bool, station: str = "k1237", tc: str = TC) -> str:
        stem = name.rsplit(".", 1)[0]
        path = self.outbox(station, tc) / f"{stem}_{'OK' if ok else 'BAD'}.TXT"
        return path.read_text(encoding="utf-8")


def run_gateway(
    *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``fdep-gateway ARGS`` from this checkout, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def drop(inbox: Path, name: str, data: bytes) -> Path:
    """The recommended writer: a hidden temporary name, then rename into place."""
    tmp = inbox / f".{name}.part"
    tmp.write_bytes(data)
    final = inbox / name
    tmp.rename(final)
    return final


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` now (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def wait_for(condition: Callable[[], object], *, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- helpers for crash, HTTP-core and operator tests (additive) ----------------------------------------

OUTCOMES = ("forwarded", "rejected", "duplicate")


def launch(gateway: Gateway, *, wait: bool = True, timeout: float = 30) -> int:
    """Start ``run`` again (the log is appended to); return the log offset where this run's lines begin.

    Unlike ``Gateway.start`` it waits for *this* run's ``gateway.started`` (a restart's log already holds
    the earlier runs' lines), or not at all with ``wait=False``.
    """
    offset = len(gateway.log())
    gateway._log = (gateway.root / "daemon.log").open("ab")
    gateway.process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(gateway.config_path)],
        cwd=REPO,
        stdout=gateway._log,
        stderr=gateway._log,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if wait:
        process = gateway.process

        def up() -> bool:
            if process.poll() is not None:
                gateway.kill()  # reaps it and closes the log
                raise AssertionError(
                    f"the daemon exited ({process.returncode}):\n{gateway.log()[offset:][-3000:]}"
                )
            return started_since(gateway, offset)

        wait_for(up, timeout=timeout, what="the daemon to start")
    return offset


def started_since(gateway: Gateway, offset: int) -> bool:
    """Whether the run whose log begins at ``offset`` has logged ``gateway.started``."""
    return "gateway.started" in gateway.log()[offset:]


def outcome_count(gateway: Gateway) -> int:
    """Outcome events in the history so far, counted fast (no JSON parsing): for timing kills."""
    history = gateway.root / "history"
    count = 0
    for path in history.glob("history-*.jsonl") if history.is_dir() else []:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        count += sum(data.count(f'"event":"{kind}"'.encode()) for kind in OUTCOMES)
    return count


def kill_when(gateway: Gateway, condition: Callable[[], object], *, timeout: float = 30) -> None:
    """SIGKILL the daemon as soon as ``condition`` holds (polled in a tight loop)."""
    assert gateway.process is not None
    deadline = time.monotonic() + timeout
    while not condition():
        if gateway.process.poll() is not None:
            code = gateway.kill()  # reaps it and closes the log
            raise AssertionError(f"the daemon exited by itself ({code}):\n{gateway.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting to kill the daemon")
        time.sleep(0.001)
    gateway.kill()


def ledger_problems(gateway: Gateway) -> list[str]:
    """``PRAGMA integrity_check`` of the ledger, as a list of problems (empty when it is sound)."""
    import sqlite3

    conn = sqlite3.connect(gateway.spool / ".gateway-ledger.sqlite")
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    return [] if rows == ["ok"] else rows


def ledger_states(gateway: Gateway) -> dict[str, str]:
    """file_id -> state of every ledger row (read-only)."""
    import sqlite3

    conn = sqlite3.connect(gateway.spool / ".gateway-ledger.sqlite")
    try:
        return {str(fid): str(state) for fid, state in conn.execute("SELECT file_id, state FROM files")}
    finally:
        conn.close()


def state_files(gateway: Gateway, state: str, station: str = "k1237") -> list[Path]:
    """Every file below ``<spool>/<station>/.gateway/<state>/`` (recursively)."""
    root = gateway.spool / station / ".gateway" / state
    return sorted(p for p in root.rglob("*") if not p.is_dir()) if root.is_dir() else []


def receipt_head(path: Path) -> list[str]:
    """The fields of a receipt's first line."""
    return path.read_text(encoding="utf-8").splitlines()[0].split("|")
