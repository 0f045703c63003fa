"""Restricted tables (D1005): no field value in any output, quarantined copies readable by owner only."""

from __future__ import annotations

import json
import stat
import urllib.request
from pathlib import Path

from harness.daemon import ORG, Gateway, drop, launch, wait_for, yesterday
from tests.forward.helpers import free_port

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
    (reason,) = gateway.spool.rglob("*.reason.json")
    assert stat.S_IMODE(quarantined.stat().st_mode) == 0o600
    assert stat.S_IMODE(reason.stat().st_mode) == 0o600
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


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode("utf-8"))


def test_planted_value_never_appears_in_operator_outputs_or_metrics(gateway: Gateway) -> None:
    """The running daemon, with metrics: history (text, JSON), status, /metrics, the log, the ledger;
    the quarantined copy and its reason sidecar readable by the owner only."""
    port = free_port()
    gateway.write_config(metrics={"listen": f"127.0.0.1:{port}"})
    date = yesterday()
    bad = f"CISP-{ORG}_D1005_V01_1_{date}_01_Q.TXT"
    good = f"CISP-{ORG}_D1005_V01_2_{date}_01_Q.TXT"
    launch(gateway)
    wait_for(lambda: "metrics.listening" in gateway.log(), what="the metrics endpoint")
    bad_body = (
        f"{ORG}|{PLANTED * 10}|总经理|20200101||{PLANTED}|{date}\n"  # too long, bad decimal
        f"{ORG}|{PLANTED}|{PLANTED}|2020013x||1.5|{date}\n"  # bad date
        f"{ORG}|{PLANTED}|{PLANTED}|20200101|{PLANTED}|1.5|{date}|{PLANTED}\n"  # field count
    ).encode()
    drop(gateway.inbox(), bad, bad_body)
    drop(gateway.inbox(), good, f"{ORG}|{PLANTED}|{PLANTED}|20200101||1200000.00|{date}\n".encode())
    wait_for(lambda: {bad, good} <= set(gateway.outcomes()), what="both outcomes")
    assert gateway.outcomes() == {bad: ["rejected"], good: ["forwarded"]}
    (event,) = gateway.outcome_events(bad)
    assert {"FIELD_TOO_LONG", "FIELD_FORMAT", "FIELD_COUNT"} <= {f["code"] for f in event["findings"]}

    metrics = scrape(port)
    assert 'fdep_gateway_findings_total{code="FIELD_TOO_LONG"}' in metrics  # the file was counted
    config = str(gateway.config_path)

    def output(*args: str, code: int = 0) -> str:
        result = gateway.command(*args)
        assert result.returncode == code, (args, result.stderr[-2000:])
        return result.stdout + result.stderr

    texts = {
        "metrics": metrics,
        "history": output("history", "-c", config),
        "history --json": output("history", "-c", config, "--json"),
        "history --name": output("history", "-c", config, "--name", bad, "--status", "rejected"),
        "status": output("status", "-c", config),
        "status --json": output("status", "-c", config, "--json"),
    }
    offline = gateway.root / "offline"  # what the institution sees checking the same file before sending
    offline.mkdir()
    (offline / bad).write_bytes(bad_body)
    texts["check"] = output("check", str(offline), code=1)
    texts["check --json"] = output("check", "--json", str(offline), code=1)
    assert "FIELD_TOO_LONG" in texts["check"] and "FIELD_TOO_LONG" in texts["check --json"]
    assert gateway.stop() == 0
    assert bad in texts["history"] and good in texts["history"] and "FIELD_TOO_LONG" in texts["history"]
    history_json = [json.loads(line) for line in texts["history --json"].splitlines()]
    assert {e["name"] for e in history_json} == {bad, good}
    assert [e["event"] for e in history_json if e["name"] == bad] == ["received", "rejected"]
    assert bad in texts["history --name"] and good not in texts["history --name"]
    (k1237,) = [row for row in json.loads(texts["status --json"]) if row["station"] == "k1237"]
    assert k1237["quarantined_today"] == 1
    texts["daemon log"] = gateway.log()
    assert "file.done" in texts["daemon log"]
    for what, text in texts.items():
        assert PLANTED not in text, f"the restricted value leaked into {what}"

    # every file the gateway wrote, but the two copies of the data itself (quarantined and forwarded)
    quarantined = [p for p in gateway.spool.rglob(f"*.{bad}") if "quarantine" in p.parts]
    archived = [p for p in gateway.spool.rglob(f"*.{good}") if "archive" in p.parts]
    assert len(quarantined) == 1 and len(archived) == 1
    evidence = {*quarantined, *archived, gateway.core() / good, offline / bad}
    written = [p for p in gateway.root.rglob("*") if p.is_file() and p not in evidence]
    written = [p for p in written if p.name != "gateway.yaml"]
    assert any(p.name.endswith(".reason.json") for p in written)
    assert any(p.suffix == ".sqlite" for p in written)
    for path in written:
        assert PLANTED.encode() not in path.read_bytes(), f"the restricted value leaked into {path}"

    (reason,) = gateway.spool.rglob("*.reason.json")
    assert stat.S_IMODE(quarantined[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(archived[0].stat().st_mode) == 0o600  # an accepted copy holds the same data
    assert stat.S_IMODE(reason.stat().st_mode) == 0o600
    assert PLANTED in quarantined[0].read_text(encoding="utf-8")  # the evidence itself is kept intact
