"""The registry keys obligations add (owes, valid_from, valid_until) and the obligations config section:
wrong values are config errors naming the key, as every other key's are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config


def problems(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return "\n".join(caught.value.problems)


def code(**keys: object) -> dict[str, object]:
    return {"TCX": {"institution": "12345678", "stations": ["k6666"], **keys}}


def test_owes_must_name_known_tables_the_code_may_send(write_config: Callable[..., Path]) -> None:
    assert "transfer_codes.TCX.owes: unknown table 'D9999'" in problems(
        write_config(transfer_codes=code(owes=["D9999"]))
    )
    found = problems(write_config(transfer_codes=code(tables=["D1001"], owes=["D2001"])))
    assert "transfer_codes.TCX" in found and "(not in tables): D2001" in found


def test_validity_dates(write_config: Callable[..., Path]) -> None:
    found = problems(write_config(transfer_codes=code(valid_from="2024-10-01", valid_until="2024-09-30")))
    assert "transfer_codes.TCX" in found and "valid_until 2024-09-30 is before valid_from 2024-10-01" in found
    assert "transfer_codes.TCX.valid_from" in problems(
        write_config(transfer_codes=code(valid_from="2024-02-30"))
    )
    loaded = load_config(write_config(transfer_codes=code(valid_from="2024-10-01", owes=["D2001"])))
    assert loaded.transfer_codes["TCX"].owes == ("D2001",)


def test_obligations_section(write_config: Callable[..., Path], tmp_path: Path) -> None:
    assert "obligations.at_risk_hours" in problems(write_config(obligations={"at_risk_hours": 0}))
    assert "obligations.nonsense" in problems(write_config(obligations={"nonsense": 1}))
    loaded = load_config(write_config(obligations={"reports_dir": "out/reports"}))
    assert loaded.obligations.reports_dir == tmp_path / "out" / "reports"  # relative to the config file


def test_a_bad_config_exits_78_from_due(write_config: Callable[..., Path]) -> None:
    path = write_config(transfer_codes=code(owes=["D9999"]))
    assert main(["due", "-c", str(path)]) == 78
    assert main(["report", "-c", str(path)]) == 78
