"""The crash soak's short variant (spec 14): >= 20 SIGKILLs of the real daemon under a mixed load.

The long run is ``python -m bench.soak --kills 200 --seed N`` (see docs/reliability.md). This one uses
the same generator, driver and outside-in checks with a fixed seed (override with FDEP_SOAK_SEED, and
the kill count with FDEP_SOAK_KILLS) and must end with every failure count at zero.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench import soak


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cp") is None, reason="the cp writer needs cp")
def test_short_crash_soak_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("FDEP_SOAK_SEED", "1237"))
    kills = int(os.environ.get("FDEP_SOAK_KILLS", "24"))
    assert kills >= 20
    fig = soak.run_soak(kills, seed, tmp_path, log=lambda _: None)
    report = soak.table(fig) + "\n" + "\n".join(fig.problems[:30])
    assert fig.kills >= 20, report
    assert fig.files >= 100, report
    for counter in soak.Figures.FAILURES:
        assert getattr(fig, counter) == 0, f"seed {seed}: {counter}\n{report}"
    assert fig.ok, report
