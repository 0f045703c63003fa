from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, load_config
from tests.conftest import REPO, base_config


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_bundled_config_loads_with_paths_under_the_repo() -> None:
    config = load_config(REPO / "config" / "gateway.yaml")
    assert config.spool_root == REPO / "var" / "spool"
    assert config.routes["core-prod"].type == "directory"
    assert config.transfer_codes["TC41210000"].institution == "41210000"
    assert {"D1001", "D1005", "D2001", "D3006"} <= set(config.tables)
    assert config.tables["D1005"].restricted


def test_unknown_key_is_named_by_its_path(write_config: Callable[..., Path]) -> None:
    path = write_config(limits={"max_file_bytes": 10, "zip_max_membres": 3})
    assert problems_of(path) == ["limits.zip_max_membres: Extra inputs are not permitted"]


def test_wrong_type_names_the_key(write_config: Callable[..., Path]) -> None:
    path = write_config(settle_seconds="soon")
    (problem,) = problems_of(path)
    assert problem.startswith("settle_seconds: ")


def test_station_with_unknown_route(write_config: Callable[..., Path]) -> None:
    path = write_config(stations={"k1237": {"environment": "test", "route": "nowhere"}})
    assert "stations.k1237.route: no route named 'nowhere'" in problems_of(path)


def test_test_station_routed_to_production_route_is_refused(write_config: Callable[..., Path]) -> None:
    path = write_config(
        stations={
            "k1237": {"environment": "test", "route": "core-prod"},
            "k6666": {"environment": "production", "route": "core-prod"},
        }
    )
    (problem,) = problems_of(path)
    assert problem.startswith("routes.core-prod: used by both test and production")


def test_transfer_code_route_override_cannot_mix_environments(write_config: Callable[..., Path]) -> None:
    path = write_config(
        transfer_codes={"TC1": {"institution": "41210000", "stations": ["k1237"], "route": "core-prod"}}
    )
    assert any(p.startswith("routes.core-prod: used by both") for p in problems_of(path))


def test_http_route_keys_are_checked(write_config: Callable[..., Path], tmp_path: Path) -> None:
    path = write_config(
        routes={
            "core-test": {"type": "http", "url": "not a url"},
            "core-prod": {"type": "directory", "path": str(tmp_path), "url": "http://x"},
        }
    )
    found = problems_of(path)
    assert any(p.startswith("routes.core-test.url: ") for p in found)
    assert "routes.core-prod.url: Extra inputs are not permitted" in found


def test_registry_from_a_separate_file(write_config: Callable[..., Path], tmp_path: Path) -> None:
    registry = tmp_path / "codes.yaml"
    registry.write_text(
        yaml.safe_dump({"TCX": {"institution": "12345678", "stations": ["k1237"], "tables": ["D9999"]}})
    )
    assert problems_of(write_config(transfer_codes="codes.yaml")) == [
        "transfer_codes.TCX.tables: unknown table 'D9999'"
    ]


def test_bad_transfer_code_and_institution(write_config: Callable[..., Path]) -> None:
    path = write_config(transfer_codes={"bad code!": {"institution": "4121", "stations": ["k1237"]}})
    found = problems_of(path)
    assert any(p.startswith("transfer_codes.bad code!") for p in found)
    assert any(p.startswith("transfer_codes.bad code!.institution: ") for p in found)


def test_deployment_adds_and_overrides_tables(write_config: Callable[..., Path]) -> None:
    path = write_config(
        tables={
            "D9001": {
                "title": "测试表",
                "frequency": "daily",
                "fields": [{"name": "JGBH", "type": "C(8)", "required": True}],
            },
            "D1001": {"title": "覆盖", "frequency": "monthly", "fields": [{"name": "JGBH", "type": "C(8)"}]},
        }
    )
    config = load_config(path)
    assert config.tables["D9001"].fields[0].type.length == 8
    assert config.tables["D1001"].title == "覆盖"
    assert "D2001" in config.tables


def test_malformed_table_definition_names_its_path(write_config: Callable[..., Path]) -> None:
    path = write_config(
        tables={"D9001": {"title": "x", "frequency": "daily", "fields": [{"name": "A", "type": "N(2,5)"}]}}
    )
    (problem,) = problems_of(path)
    assert problem.startswith("tables.D9001: fields.0.type")
    assert "scale <= precision" in problem


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("stations: {k1237: [\n")
    (problem,) = problems_of(path)
    assert problem.startswith("YAML syntax error at line")


def test_missing_file(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "absent.yaml")
    assert problem.startswith("cannot read")



def without_processes(tmp_path: Path, **overrides: object) -> Path:
    """A config that leaves ``processes`` out (the tests' base config sets 1)."""
    data = base_config(tmp_path)
    del data["processes"]
    data.update(overrides)
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_processes_default_to_the_cpus_this_process_may_run_on(tmp_path: Path) -> None:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("one CPU: the default is 1 either way")
    path = without_processes(tmp_path)
    assert load_config(path).processes == min(len(cpus), 16)
    try:
        os.sched_setaffinity(0, {min(cpus)})  # as under taskset or a cpuset
        assert load_config(path).processes == 1
    finally:
        os.sched_setaffinity(0, cpus)


def test_on_postgresql_processes_default_to_one_and_more_are_refused(tmp_path: Path) -> None:
    store = {"kind": "postgresql", "dsn": "host=db.example dbname=fdep", "password_env": "FDEP_PG_PASSWORD"}
    assert load_config(without_processes(tmp_path, store=store)).processes == 1
    assert problems_of(without_processes(tmp_path, store=store, processes=2)) == [
        "processes: must be 1 with store kind postgresql (run one node per CPU: leases share the mailboxes "
        "among nodes)"
    ]
