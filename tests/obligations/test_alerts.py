"""The shipped Prometheus rules: valid (``promtool check rules``), and each alert fires in its unit test
(``promtool test rules``) at the time it should and not before."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

RULES = REPO / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus; .ci/run installs it)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_fires_in_its_unit_test() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_where_it_fires() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text(encoding="utf-8"))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((RULES / "alerts.test.yml").read_text(encoding="utf-8"))
    fired = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert alerts == fired
    assert {
        "FdepReportAtRisk",
        "FdepReportMissing",
        "FdepFilesDeferredTooLong",
        "FdepQuarantineGrowing",
    } <= alerts
