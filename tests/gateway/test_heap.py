"""The daemon's malloc arenas are capped (glibc), unless the environment chose."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

PROBE = "from gateway.daemon.heap import limit_arenas; print(limit_arenas())"


def probe(**env: str) -> str:
    env = {"PATH": "/usr/bin:/bin", **env}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_arenas_are_capped_unless_the_environment_says_how_many() -> None:
    assert probe() == "True"
    assert probe(MALLOC_ARENA_MAX="4") == "False"
