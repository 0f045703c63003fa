"""Forwarders: hand validated files to the reporting core (a directory or an HTTP service), and retry.

``make_forwarder(route).send(item)`` makes one attempt; ``deliver`` wraps it in the retry policy of
spec section 10. See ``base`` for the exceptions that tell the pipeline what happened.
"""

from __future__ import annotations

from gateway.config import DirectoryRoute, HttpRoute
from gateway.forward.base import (
    Forwarder,
    ForwardError,
    Outbound,
    Rejected,
    TaskNotReady,
    Transient,
)
from gateway.forward.directory import DirectoryForwarder
from gateway.forward.http import HttpForwarder
from gateway.forward.retry import Cancelled, RetryPolicy, RouteBroken, deliver

__all__ = [
    "Cancelled",
    "DirectoryForwarder",
    "ForwardError",
    "Forwarder",
    "HttpForwarder",
    "Outbound",
    "Rejected",
    "RetryPolicy",
    "RouteBroken",
    "TaskNotReady",
    "Transient",
    "deliver",
    "make_forwarder",
]


def make_forwarder(route: DirectoryRoute | HttpRoute) -> Forwarder:
    if isinstance(route, HttpRoute):
        return HttpForwarder(route)
    return DirectoryForwarder(route)
