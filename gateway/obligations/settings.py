"""The ``obligations`` config section (kept here so the config module only gains one line)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ObligationsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at_risk_hours: float = Field(default=24, gt=0)  # nothing accepted this close to a deadline: at risk
    reports_dir: Path | None = None  # daily reconciliation reports; None: ``reports`` beside history.dir
    gauges_seconds: float = Field(default=300, gt=0)  # how often the daemon refreshes the gauges
