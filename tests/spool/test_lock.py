from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spool.errors import SpoolError, SpoolLocked
from spool.lock import SpoolLock

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from pathlib import Path
from spool.lock import SpoolLock
with SpoolLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the lock on tmp_path."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "locked\n"
            yield proc
        finally:
            proc.kill()


def test_the_lock_holds_this_pid(tmp_path: Path) -> None:
    with SpoolLock(tmp_path):
        assert (tmp_path / ".gateway.lock").read_text() == f"{os.getpid()}\n"
    assert (tmp_path / ".gateway.lock").read_text() == ""


def test_the_lock_is_free_again_after_the_block(tmp_path: Path) -> None:
    with SpoolLock(tmp_path):
        pass
    with SpoolLock(tmp_path):
        pass


def test_a_second_holder_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with SpoolLock(tmp_path), pytest.raises(SpoolLocked):
        SpoolLock(tmp_path).__enter__()


@pytest.mark.timeout(30)
def test_a_second_holder_is_refused_with_the_pid_and_gets_it_after_sigkill(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(SpoolLocked, match=rf"pid {holder.pid}\b") as caught:
        SpoolLock(tmp_path).__enter__()
    assert caught.value.pid == holder.pid
    assert str(tmp_path) in str(caught.value)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with SpoolLock(tmp_path):
        assert (tmp_path / ".gateway.lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.timeout(30)
def test_a_forked_child_does_not_keep_the_lock(tmp_path: Path) -> None:
    ready, started = os.pipe()
    with SpoolLock(tmp_path):
        child = os.fork()
        if child == 0:  # a process-pool worker outliving the daemon; fork hooks have run by now
            os.write(started, b"x")
            time.sleep(30)
            os._exit(0)
        assert os.read(ready, 1) == b"x"
    os.close(ready)
    os.close(started)
    try:
        with SpoolLock(tmp_path):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_missing_spool_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match="does not exist"):
        SpoolLock(tmp_path / "missing").__enter__()
