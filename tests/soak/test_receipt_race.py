"""Receipt race found by the crash soak (bench/soak.py, seed 4242): two files of one stem in flight at once.

A sender whose file was rejected sends the corrected file under the same name as soon as the first has
left ``in/``. Both are in flight together; the big bad one finishes last, so its BAD receipt is written
after the small good one's OK receipt and, by the "a newer receipt replaces the older one of the other
kind" rule, deletes it: the outbox says BAD although the newest file was forwarded. The receipt should
follow the newest file (file_ids sort by time). Expected to fail until gateway/pipeline/receipts.py compares
file_ids (see docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

from harness.daemon import ORG, Gateway, d1001_body, d1001_name, drop, wait_for, yesterday


def test_receipt_of_a_stem_follows_its_newest_file(tmp_path: Path) -> None:
    gw = Gateway(root=tmp_path, config_path=tmp_path / "gateway.yaml")
    gw.write_config()
    gw.start()
    try:
        date = yesterday()
        name = d1001_name(date=date)
        bad = f"{ORG}|示例基金|91110000100000000X|09|北京市||||{date}\n".encode() * 60_000  # FIELD_ENUM
        inbox = gw.inbox()
        drop(inbox, name, bad)
        wait_for(lambda: not (inbox / name).exists(), timeout=30, what="the bad file to be taken")
        drop(inbox, name, d1001_body(date=date))  # the corrected file, at once
        wait_for(lambda: len(gw.outcome_events(name)) == 2, timeout=60, what="both outcomes")
        events = gw.outcome_events(name)
        newest = max(events, key=lambda e: str(e["file_id"]))
        assert newest["event"] == "forwarded", events
        stem = name.rsplit(".", 1)[0]
        receipts = sorted(p.name for p in gw.outbox().iterdir())
        assert receipts == [f"{stem}_OK.TXT"], (receipts, [(e["file_id"], e["event"]) for e in events])
    finally:
        gw.kill()
