"""What is due: ``due`` over 5,000 institutions x 20 tables for one period, against a real ledger.

    python -m bench.obligations [--institutions 5000] [--tables 20] [--repeat 3]

Builds a throwaway deployment: 20 tables (the 4 bundled ones and 16 more, half daily, half monthly),
5,000 transfer codes on k6666 that each owe all of them (the default: no ``owes`` list), a SQLite
ledger holding, for the data date 30 September 2024, an accepted file for 80% of the 100,000
obligations (some late, some re-reports) and a history with a rejected file for another 5%.
Then times, best of ``--repeat``:

* ``baseline``: the ledger's rows for the period, fetched by one plain SQL query (what any answer must read);
* ``assess``: every obligation's standing (expected obligations, facts from ledger and history, matching);
* ``answer``: what ``fdep-gateway due --date 2024-09-30`` does once its config is loaded: assess, sort
  and write 100,000 lines (text; ``answer_json`` with ``--json``), to memory;
* ``load_config``: loading and checking the 5,000-code config (pydantic), once;
* ``command``: the whole command as an operator or a timer runs it, in a fresh process (interpreter
  start, imports, config, answer; output to /dev/null).

Prints the figures and the ratios to the baseline; the issue's bar is ``due`` answering under a second.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from codes.tables import bundled_tables
from gateway.config import load_config
from gateway.obligations.assess import LEDGER_NAME, assess, ledger_facts
from gateway.obligations.command import add_arguments, show_due
from gateway.store.history import HistoryEvent, HistoryWriter
from gateway.store.ledger import Ledger
from gateway.windows import PLATFORM_ZONE
from spool.ids import new_file_id

REPO = Path(__file__).resolve().parent.parent


BUNDLED = tuple(bundled_tables())
DAY = "20240930"
NOW = datetime(2024, 10, 16, 9, 0, tzinfo=PLATFORM_ZONE)


def tables(count: int) -> dict[str, dict[str, object]]:
    """Half daily (T+2), half monthly (7th working day), each with two fields: only the rules matter."""
    fields = [
        {"name": "JGBH", "type": "C(8)", "required": True},
        {"name": "SJRQ", "type": "D", "required": True},
    ]
    return {
        f"X{9000 + k}": {
            "title": f"table {k}",
            "frequency": "daily" if k % 2 == 0 else "monthly",
            "fields": fields,
        }
        for k in range(count)
    }


def build(root: Path, institutions: int, table_count: int) -> Path:
    extra = tables(table_count - len(BUNDLED))
    everything = sorted([*BUNDLED, *extra])
    codes = {  # no ``owes`` or ``tables``: each code owes the whole catalogue, as most deployments will
        f"TC{40000000 + i}": {"institution": f"{40000000 + i}", "stations": ["k6666"]}
        for i in range(institutions)
    }
    config = {
        "spool_root": str(root / "spool"),
        "stations": {"k6666": {"environment": "production", "route": "core"}},
        "routes": {"core": {"type": "directory", "path": str(root / "core")}},
        "transfer_codes": codes,
        "tables": extra,
        "history": {"dir": str(root / "history")},
    }
    path = root / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    (root / "spool").mkdir()
    Ledger.open(root / "spool" / LEDGER_NAME).close()
    accepted, rejected = [], []
    n = 0
    when = datetime(2024, 10, 8, 9, 0, tzinfo=PLATFORM_ZONE)
    for i in range(institutions):
        org = f"{40000000 + i}"
        for table in everything:
            n += 1
            slot = n % 20
            file_id = new_file_id(when)
            name = f"CISP-{org}_{table}_V01_1_{DAY}_01_Q.TXT"
            if slot < 16:  # 80% accepted (ids made on 8 Oct: some tables' deadlines passed by then)
                batch = 2 if slot == 0 else 1
                row = (
                    file_id,
                    "k6666",
                    f"TC{org}",
                    name,
                    file_id,
                    10,
                    "forwarded",
                    table,
                    org,
                    DAY,
                    1,
                    batch,
                    "Q",
                )
                accepted.append(row)
            elif slot == 16:  # 5% rejected
                rejected.append((file_id, org, table, name))
    conn = sqlite3.connect(root / "spool" / LEDGER_NAME)
    with conn:
        conn.executemany(
            "INSERT INTO files (file_id, station, transfer_code, name, sha256, size, state, table_code, "
            "institution, data_date, part, batch, mode, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,0)",
            accepted,
        )
    conn.close()
    writer = HistoryWriter(root / "history", PLATFORM_ZONE, now=lambda: when)
    finding = {
        "code": "FIELD_FORMAT",
        "severity": "error",
        "message_zh": "格式错误",
        "message_en": "bad format",
    }
    writer.append(
        [
            HistoryEvent(
                ts=when,
                event="rejected",
                file_id=file_id,
                station="k6666",
                transfer_code=f"TC{org}",
                institution=org,
                table=table,
                date=DAY,
                batch="01",
                mode="Q",
                name=name,
                findings=[finding],
                findings_total=1,
                message="rejected",
            )
            for file_id, org, table, name in rejected
        ]
    )
    print(f"ledger: {len(accepted):,} accepted files; history: {len(rejected):,} rejected", flush=True)
    return path


def parser_for_due() -> argparse.ArgumentParser:
    due, report = argparse.ArgumentParser(), argparse.ArgumentParser()
    add_arguments(due, report)
    return due


def best(repeat: int, job: object) -> float:
    assert callable(job)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--institutions", type=int, default=5000)
    parser.add_argument("--tables", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="obligations-"))
    try:
        path = build(root, args.institutions, args.tables)
        config = load_config(path)
        ledger = root / "spool" / LEDGER_NAME
        day = datetime.strptime(DAY, "%Y%m%d").date()

        def baseline() -> None:
            conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
            conn.execute(
                "SELECT file_id, station, institution, table_code, data_date, batch, state, name FROM files "
                "WHERE data_date BETWEEN '20240901' AND '20240930'"
            ).fetchall()
            conn.close()

        found: list[object] = []

        def assessing() -> None:
            found[:] = assess(config, ledger_facts(config), day=day, now=NOW)

        def answer(*flags: str) -> None:
            args = parser_for_due().parse_args(["--date", DAY, "--now", NOW.isoformat(), *flags])
            show_due(config, args, io.StringIO())

        def command() -> None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "due",
                    "-c",
                    str(path),
                    "--date",
                    DAY,
                    "--now",
                    NOW.isoformat(),
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                check=False,
            )

        started = time.perf_counter()
        load_config(path)
        figures = {
            "obligations": args.institutions * args.tables,
            "load_config_s": time.perf_counter() - started,
            "baseline_s": best(args.repeat, baseline),
            "assess_s": best(args.repeat, assessing),
            "answer_s": best(args.repeat, answer),
            "answer_json_s": best(args.repeat, lambda: answer("--json")),
            "command_s": best(args.repeat, command),
        }
        assert len(found) == args.institutions * args.tables, len(found)
        figures["assess_over_baseline"] = figures["assess_s"] / figures["baseline_s"]
        figures["answer_over_baseline"] = figures["answer_s"] / figures["baseline_s"]
        print(json.dumps(figures, indent=1))
        print(
            f"due over {args.institutions:,} institutions x {args.tables} tables: answers in "
            f"{figures['answer_s']:.3f} s ({figures['answer_json_s']:.3f} s as JSON; assess "
            f"{figures['assess_s']:.3f} s; plain SQL read {figures['baseline_s']:.3f} s); the whole command "
            f"in a fresh process {figures['command_s']:.3f} s, of which loading the config "
            f"{figures['load_config_s']:.3f} s"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
