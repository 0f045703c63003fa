from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.config import load_config
from gateway.pipeline.route import route
from validators.names import parse_name


def test_routes_and_refusals(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config())
    own = parse_name("CISP-41210000_D1001_V01_1_20220401_01_Q.TXT")
    other = parse_name("CISP-41220000_D2001_V01_1_20220401_01_Q.TXT")

    routed, problems = route(config, "k6666", "TC41210000", own)
    assert routed is not None and routed.route == "core-prod" and routed.environment == "production"
    assert problems == []

    routed, problems = route(config, "k1237", "TC41210000", other)
    assert routed is not None and [p.code for p in problems] == ["ORG_MISMATCH"]

    _, problems = route(config, "k1237", "TC41220000", other)
    assert [p.code for p in problems] == ["TABLE_NOT_ALLOWED"]

    routed, problems = route(config, "k6666", "TC41220000", other)
    assert routed is None and [p.code for p in problems] == ["STATION_NOT_ALLOWED"]

    routed, problems = route(config, "k1237", "NOBODY", own)
    assert routed is None and [p.code for p in problems] == ["UNKNOWN_TRANSFER_CODE"]
