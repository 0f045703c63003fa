"""The C heap of a gateway process: two malloc arenas, so that its RSS follows what is live.

glibc gives a thread that finds the heap locked an arena of its own, up to eight a CPU. The daemon's
I/O threads (64) take turns on the files' buffers, so what they free stays spread over up to sixteen
arenas on two CPUs, and the RSS crept with the files processed: one process draining a backlog held
122 MB after 10,000 files and 181 MB after 100,000 (``bench/backlog.py``), and so it would go on
towards a million. With two arenas: 124 MB after 100,000, at the same speed (548 against 560 files/s).
``MALLOC_ARENA_MAX`` in the environment still decides when set.
"""

from __future__ import annotations

import ctypes
import os

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap this process's malloc arenas (before its threads start); False where that cannot be done
    (not glibc) or the environment chose already."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_ARENA_MAX, arenas))
