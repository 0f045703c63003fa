"""The base config of a throwaway spool, built the way a deployment writes one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
"""The checkout: the daemon runs from here (``python -m gateway``)."""


def base_config(tmp: Path) -> dict[str, Any]:
    return {
        "spool_root": str(tmp / "spool"),
        "settle_seconds": 0.5,
        "rescan_seconds": 2,
        "pair_timeout_seconds": 5,
        "processes": 1,  # the default, one a CPU, would differ between machines: tests ask for more
        "stations": {
            "k1237": {"environment": "test", "route": "core-test"},
            "k6666": {"environment": "production", "route": "core-prod"},
        },
        "routes": {
            "core-test": {"type": "directory", "path": str(tmp / "core" / "k1237")},
            "core-prod": {"type": "directory", "path": str(tmp / "core" / "k6666")},
        },
        "transfer_codes": {
            "TC41210000": {
                "institution": "41210000",
                "name": "示例基金销售有限公司",
                "stations": ["k1237", "k6666"],
            },
            "TC41220000": {"institution": "41220000", "stations": ["k1237"], "tables": ["D1001"]},
        },
        "history": {"dir": str(tmp / "history")},
    }
