"""What the pipeline reads of the configuration, as one immutable value.

A reload builds a new ``Settings`` and the daemon swaps it in one assignment; every step reads the
current one through the getter it was given, so one read never finds the config of one reload beside
the rules or forwarders of another. (A file in flight may read the old settings at one step and the new
ones at a later step, as it could before.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.config import GatewayConfig
from gateway.forward import Forwarder
from gateway.pipeline.validate import Rules
from gateway.windows import Calendar


@dataclass(frozen=True, slots=True)
class Settings:
    config: GatewayConfig
    rules: Rules
    calendar: Calendar
    forwarders: Mapping[str, Forwarder]

    @classmethod
    def of(cls, config: GatewayConfig, calendar: Calendar, forwarders: Mapping[str, Forwarder]) -> Settings:
        return cls(config, Rules.from_config(config), calendar, MappingProxyType(dict(forwarders)))

    @property
    def stations(self) -> list[str]:
        return list(self.config.stations)
