"""A job done in a forked child that the caller waits for: what the job imports and allocates leaves
with the child. The supervisor of several processes serves no file, yet its start-up clean-up needs the
pipeline's and the cores' modules; imported in the supervisor they would stay for as long as it runs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("gateway.workers")

_PR_SET_PDEATHSIG = 1
_FAILED = 1


def run_apart(job: Callable[[], None], name: str) -> bool:
    """Do ``job`` in a child process and wait for it; False (logged) when it failed or was killed.

    Called while no other thread runs (refused otherwise): a fork copies only the calling thread, and a
    lock another thread held would stay held in the child.
    """
    if threading.active_count() > 1:
        raise RuntimeError(f"{name}: not forked beside {threading.active_count() - 1} other thread(s)")
    sys.stdout.flush()  # what the parent buffered is written once, not again by the child
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = _FAILED
        try:
            die_with_parent(parent)
            job()
            code = 0
        except BaseException:
            log.exception(f"{name}.failed")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # never the parent's cleanup: its with-blocks and finally clauses are its own
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        log.error(f"{name}.failed", exit_code=code, note="done in a child process")
    return code == 0


def die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies, however it dies; exit at once if it is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(_FAILED)
