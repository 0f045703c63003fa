"""kill -9 of the real daemon in the middle of a batch and during start-up recovery, then ``drain``.

Spec 14: every file that enters an ``in/`` ends in exactly one outcome, with a receipt and history
events, also when the gateway is killed at any instant and restarted; nothing reaches the core twice and
nothing unvalidated reaches it. Everything is asserted from outside: history files, receipts, the core
directory, the spool's state dirs and the ledger file.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import time
from datetime import datetime

from bench.soak import d3006_pair
from gateway.store.history import HistoryEvent, HistoryWriter
from gateway.store.ledger import Ledger
from harness.daemon import (
    ORG,
    TC,
    ZONE,
    Gateway,
    d1001_body,
    d1001_name,
    day,
    drop,
    kill_when,
    launch,
    ledger_states,
    outcome_count,
    started_since,
    state_files,
    wait_for,
)
from spool.ids import new_file_id
from spool.layout import State, StationLayout
from tests.conftest import base_config
from tests.e2e.settled import Dropped, assert_settled, enum_body
from validators import findings


def the_batch() -> tuple[Dropped, list[Dropped]]:
    """A file to forward before the batch, and 60 files: valid parts, re-reports, bad ones, a duplicate.

    Sizes differ (a few files are ~2 MB) so that outcomes trickle in while others are still in flight.
    """
    seeded = Dropped(d1001_name(date=day(1), part=9), d1001_body(date=day(1), rows=5), "forwarded")
    files: list[Dropped] = []
    for k in range(39):
        date, part = day(2 + k // 8), 1 + k % 8
        rows = 30_000 if k % 13 == 5 else 1 + (k * 97) % 1500
        files.append(Dropped(d1001_name(date=date, part=part), d1001_body(date=date, rows=rows), "forwarded"))
    for j in range(4):  # both batches at once: 01 is forwarded first or found stale, 02 always forwarded
        date = day(10 + j)
        first = d1001_body(date=date, rows=40 + j, name="第一批")
        second = d1001_body(date=date, rows=50 + j, name="第二批")
        files.append(Dropped(d1001_name(date=date, batch=1), first, "stale-or-forwarded"))
        files.append(Dropped(d1001_name(date=date, batch=2), second, "forwarded"))
    for j in range(6):
        date = day(20 + j)
        bom = b"\xef\xbb\xbf" + d1001_body(date=date, rows=10 + 300 * j)
        files.append(Dropped(d1001_name(date=date), bom, "rejected", "BOM_PRESENT"))
    for j in range(6):
        date = day(30 + j)
        files.append(Dropped(d1001_name(date=date), enum_body(date, 5 + 400 * j), "rejected", "FIELD_ENUM"))
    files.append(Dropped(seeded.name, seeded.body, "duplicate"))
    assert len(files) == 60 and len({f.name for f in files}) == 60
    return seeded, files


def seed_and_drop(gateway: Gateway) -> list[Dropped]:
    """Forward the seeded file, then drop the batch (its duplicate included) while no daemon runs."""
    seeded, files = the_batch()
    drop(gateway.inbox(), seeded.name, seeded.body)
    gateway.drain()
    assert gateway.outcomes() == {seeded.name: ["forwarded"]}
    for f in files:
        drop(gateway.inbox(), f.name, f.body)
    return [seeded, *files]


def crash_log(gateway: Gateway) -> str:
    return gateway.log()[-4000:]


def test_kill_9_mid_batch_then_drain_ends_every_file_once(gateway: Gateway) -> None:
    files = seed_and_drop(gateway)
    total = len(files)  # outcomes in the history once all is done (the seed's included)

    launch(gateway)
    kill_when(gateway, lambda: outcome_count(gateway) > 1)  # right after the batch's first outcome
    at_kill = [outcome_count(gateway)]
    assert at_kill[0] < total, f"the first kill came after every outcome ({at_kill}): not mid-batch"

    for share in (0.5, 0.75):  # then after about half, and later again, of what the batch produces
        if at_kill[-1] >= total:
            break
        target = max(round(total * share), at_kill[-1] + 1)

        def reached(target: int = target) -> bool:
            return outcome_count(gateway) >= target

        launch(gateway)
        kill_when(gateway, reached)
        at_kill.append(outcome_count(gateway))

    gateway.drain()
    assert_settled(gateway, files)
    assert "Traceback" not in gateway.log(), crash_log(gateway)


def test_kill_9_during_start_up_recovery_then_drain(gateway: Gateway) -> None:
    files = seed_and_drop(gateway)
    launch(gateway)
    kill_when(gateway, lambda: outcome_count(gateway) > 1)
    assert outcome_count(gateway) < len(files)
    assert state_files(gateway, "work"), "nothing left for recovery to do"

    offset = launch(gateway, wait=False)  # killed in recovery, before it says it started
    kill_when(gateway, lambda: "recovery." in gateway.log()[offset:] or started_since(gateway, offset))

    offset = launch(gateway, wait=False)  # killed the moment it has started: resumed files in flight
    kill_when(gateway, lambda: started_since(gateway, offset))

    before = outcome_count(gateway)
    if before < len(files):
        launch(gateway)  # killed as soon as the resumed files produce something
        kill_when(gateway, lambda: outcome_count(gateway) > before)

    gateway.drain()
    assert_settled(gateway, files)
    assert "Traceback" not in gateway.log(), crash_log(gateway)


def test_identical_copies_in_flight_together_are_one_forward_and_duplicates(gateway: Gateway) -> None:
    """Spec 7: the same name with the same content again is DUPLICATE, also when both are in one batch.

    Two transfer codes of one institution on one station (the registry allows it) each get the same
    ten files at once: per name, one is forwarded and the other is a duplicate, never BATCH_STALE
    (which is for *other* content, and would tell the sender to re-report under a new batch number).
    """
    codes = base_config(gateway.root)["transfer_codes"]
    codes["TC41210000B"] = {"institution": ORG, "stations": ["k1237"]}
    gateway.write_config(transfer_codes=codes)
    names = []
    for k in range(10):
        date = day(2 + k)
        name, body = d1001_name(date=date), d1001_body(date=date, rows=500)
        drop(gateway.inbox(tc=TC), name, body)
        drop(gateway.inbox(tc="TC41210000B"), name, body)
        names.append(name)
    gateway.drain()
    outcomes = gateway.outcomes()
    wrong = {}
    for name in names:
        if sorted(outcomes.get(name, [])) != ["duplicate", "forwarded"]:
            codes_seen = [e["findings"][0]["code"] for e in gateway.outcome_events(name) if e["findings"]]
            wrong[name] = (outcomes.get(name), codes_seen)
    assert not wrong, f"{len(wrong)} of 10 identical pairs not forwarded+duplicate: {wrong}"
    assert sorted(p.name for p in gateway.core().iterdir()) == sorted(names)


def test_a_rejection_logged_before_a_kill_is_finished_never_forwarded(gateway: Gateway) -> None:
    """The core refused an accepted file (CORE_REJECTED), the ``rejected`` event was written, then the
    daemon died before the quarantine move: the spool as such a kill leaves it. The restart must finish
    that rejection with its findings, not decide the file again and forward it."""
    gateway.drain()  # an empty spool, laid out by the daemon
    name, body = d1001_name(), d1001_body()
    file_id = new_file_id(datetime.now(ZONE))
    work = StationLayout("k1237", gateway.spool / "k1237").state_path(State.WORK, TC, file_id, name)
    work.write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    date = name.split("_")[4]
    with Ledger.open(gateway.spool / ".gateway-ledger.sqlite") as ledger:
        ledger.record(file_id, station="k1237", transfer_code=TC, name=name, sha256=digest, size=len(body))
        key = {"station": "k1237", "institution": ORG, "table": "D1001", "date": date, "part": 1}
        ledger.accept(file_id, **key, batch=1, sha256=digest)
    refused = findings.make("CORE_REJECTED", core_message="report period closed")
    facts = {"file_id": file_id, "station": "k1237", "transfer_code": TC, "institution": ORG, "name": name}
    with HistoryWriter(gateway.root / "history", ZONE) as history:
        history.append(
            [
                HistoryEvent(event="received", message="received", **facts),
                HistoryEvent(
                    event="rejected",
                    message="rejected by the core",
                    findings=[refused.to_dict()],
                    findings_total=1,
                    **facts,
                ),
            ]
        )

    gateway.drain()

    assert gateway.outcomes()[name] == ["rejected"]
    assert list(gateway.core().iterdir()) == []
    head, line = gateway.receipt(name, ok=False).splitlines()
    assert head.split("|")[5:] == [file_id, "rejected"]
    assert line.split("|")[3] == "CORE_REJECTED"
    assert [p.name.split(".", 1)[0] for p in state_files(gateway, "quarantine")] == [file_id, file_id]
    assert ledger_states(gateway)[file_id] == "rejected"


def _defer_then_restart(gateway: Gateway, drops: list[tuple[str, bytes]]) -> None:
    """The core breaks (its directory is a file), the files are deferred, the daemon is killed, the
    operator mends the core and starts the daemon again: recovery finishes the deferred files."""
    launch(gateway)
    core = gateway.core("k1237")
    shutil.rmtree(core)
    core.write_text("not a directory")
    for name, body in drops:
        drop(gateway.inbox(), name, body)
    wait_for(lambda: state_files(gateway, "deferred"), timeout=30, what="a deferral")
    time.sleep(1)  # the rest of a unit follows its first file into deferred/, or stays in work/
    gateway.kill()
    core.unlink()
    core.mkdir()
    launch(gateway)
    wait_for(
        lambda: sum(e["event"] == "forwarded" for e in gateway.events()) >= len(drops),
        timeout=60,
        what="every file forwarded",
    )
    assert gateway.stop() == 0


def test_a_pair_finished_after_a_restart_has_a_truthful_receipt_for_each_file(gateway: Gateway) -> None:
    """Recovery forwards a deferred TXT and ZIP one at a time: each gets an OK receipt that names it,
    the second under its distinct name (its spec name holds the first's receipt, which stays)."""
    txt, txt_body, zip_name, zip_body = d3006_pair(day(40), 1, random.Random(1))  # noqa: S311 - test data
    _defer_then_restart(gateway, [(zip_name, zip_body), (txt, txt_body)])
    ids = {e["name"]: e["file_id"] for e in gateway.events() if e["event"] == "forwarded"}
    heads = {p.name: p.read_text().split("|") for p in gateway.outbox().iterdir()}
    stem = txt.removesuffix(".TXT")
    assert f"{stem}_OK.TXT" in heads
    allowed = {f"{stem}_OK.TXT", *(f"{stem}_{file_id}_OK.TXT" for file_id in ids.values())}
    assert set(heads) <= allowed, sorted(heads)
    for head in heads.values():  # each names one of the pair, with its own id, and says OK
        assert head[1] == "OK" and ids.get(head[0]) == head[5], head


def test_a_late_file_finished_after_a_restart_is_still_flagged_late(gateway: Gateway) -> None:
    name = d1001_name(date="20260115")  # monthly: due in February 2026, long past
    _defer_then_restart(gateway, [(name, d1001_body(date="20260115"))])
    (event,) = gateway.outcome_events(name)
    assert [f["code"] for f in event["findings"]] == ["LATE"]
    assert "LATE" in gateway.receipt(name, ok=True)
