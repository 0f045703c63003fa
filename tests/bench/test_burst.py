"""The burst benchmark feeds every contestant the same way, counts each to its real end, and a contestant
that did not get there is an error, never a figure (bench/burst.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.burst import UnfinishedError, names, run_baseline


def test_a_baseline_not_done_by_the_timeout_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UnfinishedError, match=r"durable: \d+ of 300 files done 0 s in"):
        run_baseline("durable", tmp_path, names(300), timeout=0.0, hand_off="copy")


@pytest.mark.parametrize("kind", ["inotifywait", "watchdog", "durable"])
def test_each_baseline_is_counted_to_its_last_file(tmp_path: Path, kind: str) -> None:
    result = run_baseline(kind, tmp_path, names(300), timeout=60.0, hand_off="copy")
    assert (result["moved"], result["missed"]) == (300, 0)
    assert not list((tmp_path / "spool").glob("*/*/in/CISP-*"))  # nothing left behind in an inbox
    assert sorted(p.name for p in (tmp_path / "core").iterdir() if p.name.startswith("CISP-")) == sorted(
        name for _tc, _org, name in names(300)
    )
    assert 0 < result["seconds"] <= result["seen_seconds"] + 0.05
    assert result["feed_seconds"] > 0 and result["cpu_user_s"] + result["cpu_system_s"] > 0
