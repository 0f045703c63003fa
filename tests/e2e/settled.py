"""What a settled spool looks like after any run, crashes included: the checks of spec 14 from outside."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness.daemon import (
    ORG,
    OUTCOMES,
    Gateway,
    ledger_problems,
    ledger_states,
    receipt_head,
    state_files,
)

FINAL_STATES = {"forwarded", "rejected", "duplicate"}


def enum_body(date: str, rows: int) -> bytes:
    """D1001 rows whose JGLX (E(01,02,03)) is 09."""
    return (f"{ORG}|示例基金|91110000100000000X|09|北京市||||{date}\n" * rows).encode()


@dataclass(frozen=True)
class Dropped:
    name: str
    body: bytes
    expect: str  # forwarded | rejected | duplicate | stale-or-forwarded
    code: str | None = None  # the first finding of a rejection

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]


def assert_settled(gateway: Gateway, files: list[Dropped]) -> None:
    """Every dropped file ended exactly once, with its receipt, core copy, spool state and ledger row."""
    history = gateway.root / "history"
    for path in history.glob("*.jsonl"):  # every line whole and JSON (events() also parses them)
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends in a torn line"
    events = gateway.events()
    for event in events:
        assert {"ts", "event", "file_id", "name", "message"} <= event.keys(), event

    per_kind = Counter((e["file_id"], e["event"]) for e in events)
    repeated = {k: n for k, n in per_kind.items() if n > 1}
    assert not repeated, f"events written more than once: {repeated}"
    outcomes = [e for e in events if e["event"] in OUTCOMES]
    per_file = Counter(e["file_id"] for e in outcomes)
    assert max(per_file.values()) == 1, f"a file_id with two outcomes: {per_file.most_common(3)}"

    by_name: dict[str, list[dict[str, Any]]] = {}
    for event in outcomes:
        by_name.setdefault(str(event["name"]), []).append(event)
    expected_names = {f.name for f in files}
    missing, unknown = sorted(expected_names - set(by_name)), sorted(set(by_name) - expected_names)
    assert not missing and not unknown, f"no outcome: {missing}; unknown: {unknown}"
    forwarded: dict[str, bytes] = {}
    last: dict[str, dict[str, Any]] = {}  # name -> its newest outcome (the receipt's)
    drops = Counter(f.name for f in files)
    for f in files:
        got = sorted(str(e["event"]) for e in by_name[f.name])
        assert len(got) == drops[f.name], f"{f.name}: {got} for {drops[f.name]} drop(s)"
        mine = [e for e in by_name[f.name] if e["event"] == f.expect or f.expect == "stale-or-forwarded"]
        assert mine, f"{f.name}: expected {f.expect}, got {got}"
        event = mine[0] if f.expect != "duplicate" else next(e for e in mine if e["event"] == "duplicate")
        if f.expect == "stale-or-forwarded":
            assert event["event"] in ("forwarded", "rejected"), event
            if event["event"] == "rejected":
                assert [x["code"] for x in event["findings"]] == ["BATCH_STALE"], event
        if event["event"] == "rejected" and f.code:
            assert event["findings"][0]["code"] == f.code, event
        if event["event"] == "forwarded":
            forwarded[f.name] = f.body
        assert event["sha256"] == hashlib.sha256(f.body).hexdigest(), f.name
        newest = max(by_name[f.name], key=lambda e: str(e["file_id"]))
        last[f.name] = newest

    # receipts: exactly one per stem, OK or BAD as the (newest) outcome says, naming its file_id
    outbox = gateway.outbox()
    expected_receipts = {
        f"{n.rsplit('.', 1)[0]}_{'BAD' if e['event'] == 'rejected' else 'OK'}.TXT": (n, e)
        for n, e in last.items()
    }
    assert sorted(p.name for p in outbox.iterdir()) == sorted(expected_receipts)
    for receipt, (name, event) in expected_receipts.items():
        head = receipt_head(outbox / receipt)
        assert head[0] == name and head[5] == event["file_id"] and head[6] == event["event"], (receipt, head)

    # the core holds each forwarded file once, byte-identical, and nothing else (no rejected, no temp)
    core = gateway.core()
    assert sorted(p.name for p in core.iterdir()) == sorted(forwarded)
    for name, body in forwarded.items():
        assert (core / name).read_bytes() == body, f"{name} differs at the core"

    # nothing left in flight; every file where its outcome says
    assert list(gateway.inbox().iterdir()) == []
    for state in ("work", "deferred", "held"):
        assert state_files(gateway, state) == [], f"left in .gateway/{state}"
    archived = {p.name for p in state_files(gateway, "archive")}
    quarantined = {p.name for p in state_files(gateway, "quarantine")}
    want_archived = {f"{e['file_id']}.{e['name']}" for e in outcomes if e["event"] != "rejected"}
    rejected = [e for e in outcomes if e["event"] == "rejected"]
    want_quarantined = {f"{e['file_id']}.{e['name']}" for e in rejected}
    want_quarantined |= {f"{e['file_id']}.reason.json" for e in rejected}
    assert archived == want_archived
    assert quarantined == want_quarantined

    # the ledger: sound, and every row it has is final and agrees with the history
    assert ledger_problems(gateway) == []
    states = ledger_states(gateway)
    open_rows = {fid: s for fid, s in states.items() if s not in FINAL_STATES}
    assert not open_rows, f"ledger rows left open: {open_rows}"
    for event in outcomes:
        fid = str(event["file_id"])
        if event["event"] != "rejected" or fid in states:
            assert states.get(fid) == event["event"], (event["name"], states.get(fid), event["event"])
