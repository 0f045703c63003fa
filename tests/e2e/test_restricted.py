"""Restricted tables (D1005): no field value in any output, quarantined copies readable by owner only."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.e2e.harness import ORG, Gateway, drop, yesterday

PLANTED = "绝密薪酬张三丰"  # a value that must never leave the file


def test_planted_value_never_appears_in_any_output(gateway: Gateway) -> None:
    date = yesterday()
    name = f"CISP-{ORG}_D1005_V01_1_{date}_01_Q.TXT"
    rows = (
        f"{ORG}|{PLANTED * 10}|总经理|20200101||{PLANTED}|{date}\n"  # too long, bad decimal
        f"{ORG}|{PLANTED}|{PLANTED}|2020013x||1.5|{date}\n"  # bad date
    )
    drop(gateway.inbox(), name, rows.encode())
    result = gateway.drain()
    (event,) = gateway.outcome_events(name)
    codes = {f["code"] for f in event["findings"]}
    assert {"FIELD_TOO_LONG", "FIELD_FORMAT"} <= codes

    outputs: list[Path] = [*gateway.root.joinpath("history").glob("*.jsonl")]
    outputs += [*gateway.outbox().iterdir()]
    outputs += [*gateway.spool.rglob("*.reason.json")]
    assert len(outputs) >= 3
    for path in outputs:
        assert PLANTED not in path.read_text(encoding="utf-8"), path
    assert PLANTED not in result.stdout and PLANTED not in result.stderr

    (quarantined,) = [p for p in gateway.spool.rglob(f"*.{name}") if "quarantine" in p.parts]
    assert stat.S_IMODE(quarantined.stat().st_mode) == 0o600
    assert PLANTED in quarantined.read_text(encoding="utf-8")  # the evidence itself is kept intact


def test_accepted_restricted_file_leaves_no_value_either(gateway: Gateway) -> None:
    date = yesterday()
    name = f"CISP-{ORG}_D1005_V01_1_{date}_01_Q.TXT"
    drop(gateway.inbox(), name, f"{ORG}|{PLANTED}|总经理|20200101||1200000.00|{date}\n".encode())
    result = gateway.drain()
    assert gateway.outcomes()[name] == ["forwarded"]
    for path in [*gateway.root.joinpath("history").glob("*.jsonl"), *gateway.outbox().iterdir()]:
        assert PLANTED not in path.read_text(encoding="utf-8")
    assert PLANTED not in result.stderr
