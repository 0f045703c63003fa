"""Forwarders: hand validated files to the reporting core (a directory or an HTTP service), and retry.

``make_forwarder(route).send(item)`` makes one attempt; ``deliver`` wraps it in the retry policy of
spec section 10. See ``base`` for the exceptions that tell the pipeline what happened.

A new kind of core is a module with a class that meets ``base.Forwarder`` and takes its route's config,
a config model with its ``type`` (``gateway/config.py``, ``Route``), and one entry in ``TARGETS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

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
    "TARGETS",
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

TARGETS: Mapping[str, Callable[[Any], Forwarder]] = MappingProxyType(
    {"directory": DirectoryForwarder, "http": HttpForwarder}
)
"""Route ``type`` -> the forwarder that serves it."""


def make_forwarder(route: DirectoryRoute | HttpRoute) -> Forwarder:
    return TARGETS[route.type](route)
