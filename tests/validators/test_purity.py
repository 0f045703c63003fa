"""validators/ and codes/ stay pure and independent: no gateway imports, no file-system access."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

FORBIDDEN_EVERYWHERE = {"gateway"}
FORBIDDEN_IN_VALIDATORS = {"os", "pathlib", "shutil", "io", "aiofiles", "spool", "glob", "tempfile"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def calls_open(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
        for node in ast.walk(tree)
    )


def test_validators_do_no_io_and_know_no_gateway() -> None:
    files = sorted((REPO / "validators").glob("*.py"))
    assert len(files) >= 5
    for path in files:
        bad = imported_modules(path) & (FORBIDDEN_EVERYWHERE | FORBIDDEN_IN_VALIDATORS)
        assert not bad, f"{path.name} imports {sorted(bad)}"
        assert not calls_open(path), f"{path.name} calls open()"


def test_codes_and_spool_know_no_gateway() -> None:
    for package in ("codes", "spool"):
        for path in sorted((REPO / package).glob("*.py")):
            bad = imported_modules(path) & FORBIDDEN_EVERYWHERE
            assert not bad, f"{package}/{path.name} imports {sorted(bad)}"


def test_spool_knows_no_validation() -> None:
    for path in sorted((REPO / "spool").glob("*.py")):
        assert not imported_modules(path) & {"validators", "codes"}, path.name
