"""One step for every file of a claimed batch, in one thread job: one file's failure is its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each(step: Callable[[T], R], items: Sequence[T]) -> list[R | Exception]:
    """``step`` of every item in order; an item whose step raises gets its error in its place and the
    others go on (the caller sends that file the one-file way, or to ``on_failure``)."""
    done: list[R | Exception] = []
    for item in items:
        try:
            done.append(step(item))
        except Exception as exc:
            done.append(exc)
    return done
