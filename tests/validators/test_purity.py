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


# -- the rooms of gateway/ and the one direction of their imports -------------------------------------------

BASE = {"config", "text", "windows"}
"""What every room reads: the typed config, safe text, the calendar and reporting windows."""
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "batch": set(),
    "metrics": {"base"},
    "store": {"base"},
    "cluster": {"base", "store"},
    "forward": {"base", "batch", "metrics"},
    "detect": {"base", "metrics"},
    "pipeline": {"base", "batch", "forward", "metrics", "store"},
    "obligations": {"base", "metrics", "store"},
    "ops": {"base", "pipeline", "store"},
    "web": {"base", "obligations", "ops", "pipeline", "store"},
    "daemon": {
        "base", "batch", "cluster", "detect", "forward", "metrics", "obligations", "pipeline", "store"
    },
    "cli": {"base", "cluster", "daemon", "obligations", "ops", "pipeline", "store", "web"},
    "__main__": {"cli"},
}
"""Each room of gateway/ and the rooms it may import: e.g. pipeline never imports daemon, forward never
imports pipeline, store never imports pipeline. A new room must be placed here."""


def room_of(module: str) -> str:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "gateway"
    return "base" if name in BASE else name


def gateway_imports(path: Path) -> set[str]:
    """Every gateway module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gateway":
            if node.module == "gateway":
                found.update(f"gateway.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "gateway")
    return found


def test_gateway_rooms_import_only_downwards() -> None:
    problems = []
    for path in sorted((REPO / "gateway").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        room = room_of(module)
        if room == "__init__":  # the package's own: a docstring
            continue
        assert room in ALLOWED, f"{path.relative_to(REPO)}: room {room!r} is not in the layering table"
        for target in gateway_imports(path):
            other = room_of(target)
            if other != room and other not in ALLOWED[room]:
                problems.append(f"{module} imports {target} ({room} -> {other})")
    assert problems == []


def test_the_layering_table_has_no_cycle() -> None:
    placed: list[str] = []
    left = dict(ALLOWED)
    while left:
        ready = [room for room, needs in left.items() if needs <= set(placed)]
        assert ready, f"a cycle among {sorted(left)}"
        placed += ready
        for room in ready:
            del left[room]
