"""The pipeline, the recorder and the detector in-process: a real spool in a temp dir, a real store, a real
directory core; no daemon. A step's logic is tested here without starting a process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.detect.detector import Claims
from gateway.store.rules import State
from harness.daemon import TC, d1001_body, d1001_name, drop
from spool.claim import Claimed
from tests.pipeline.parts import Parts, claimed, detector_of


async def test_a_sound_file_is_forwarded_receipted_and_recorded(parts: Parts) -> None:
    name = d1001_name()
    item = claimed(parts, name, d1001_body())
    await parts.pipeline.process(item)
    row = parts.store.get(item.file_id)
    assert row is not None and row.state is State.FORWARDED
    assert (parts.config.routes["core-test"].path / name).read_bytes() == d1001_body()  # type: ignore[union-attr]
    receipt = parts.layout.station("k1237").outbox(TC) / name.replace(".TXT", "_OK.TXT")
    assert receipt.read_text().startswith(f"{name}|OK|1|0|")
    assert [e for e in parts.events() if '"forwarded"' in e]


async def test_a_file_with_a_bom_is_quarantined_with_a_bad_receipt(parts: Parts) -> None:
    name = d1001_name()
    item = claimed(parts, name, b"\xef\xbb\xbf" + d1001_body())
    await parts.pipeline.process(item)
    row = parts.store.get(item.file_id)
    assert row is not None and row.state is State.REJECTED
    receipt = parts.layout.station("k1237").outbox(TC) / name.replace(".TXT", "_BAD.TXT")
    assert "BOM_PRESENT" in receipt.read_text()
    assert not (parts.config.routes["core-test"].path / name).exists()  # type: ignore[union-attr]


async def test_the_same_file_again_is_a_duplicate_and_not_forwarded_twice(parts: Parts) -> None:
    name = d1001_name()
    first = claimed(parts, name, d1001_body())
    await parts.pipeline.process(first)
    again = claimed(parts, name, d1001_body())
    await parts.pipeline.process(again)
    row = parts.store.get(again.file_id)
    assert row is not None and row.state is State.DUPLICATE
    assert sum('"duplicate"' in e for e in parts.events()) == 1


async def test_the_detector_claims_a_renamed_in_file_and_hands_it_over(parts: Parts) -> None:
    handed: list[tuple[str, Claimed]] = []

    async def on_claimed(claims: Claims, done: Callable[[], None]) -> None:
        handed.extend(claims)

    detector = detector_of(parts, on_claimed)
    name = d1001_name()
    drop(parts.layout.station("k1237").inbox(TC), name, d1001_body())
    assert await detector.scan() == 1
    for _ in range(50):  # found by scans, not seen renamed in: unchanged over settle_seconds, then ready
        await detector.claim_ready()
        await asyncio.sleep(0.05)
        if handed:
            break
        await detector.scan()
    ((station, taken),) = handed
    assert station == "k1237" and taken.name == name and taken.path.is_file()
    assert not (parts.layout.station("k1237").inbox(TC) / name).exists()
