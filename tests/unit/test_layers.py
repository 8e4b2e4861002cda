"""Imports point one way: cli -> commands -> streams -> projections -> locker."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN: dict[str, set[str]] = {
    "locker": {"streams", "projections", "commands", "cli"},
    "projections": {"streams", "commands", "cli"},
    "streams": {"commands", "cli"},
    "commands": {"cli"},
}
PURE_FOLD = ROOT / "projections" / "index.py"
PURE_FOLD_FORBIDDEN = {"faust", "rocksdict", "structlog"}


def imported_roots(source: str, module: str) -> set[str]:
    """Top-level package of every import in `source` (any depth, including function bodies)."""
    package = module.split(".")
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package[: len(package) - node.level]
                target = ".".join([*base, *([node.module] if node.module else [])])
                roots.add(target.split(".")[0] if target else package[0])
            elif node.module:
                roots.add(node.module.split(".")[0])
    return roots


def modules_of(package: str) -> list[tuple[str, Path]]:
    files = sorted((ROOT / package).rglob("*.py"))
    return [(".".join(f.relative_to(ROOT).with_suffix("").parts), f) for f in files]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    modules = modules_of(package)
    assert modules, f"no modules found in {package}"
    offenders = {
        module: sorted(imported_roots(path.read_text(), module) & FORBIDDEN[package])
        for module, path in modules
    }
    assert {m: bad for m, bad in offenders.items() if bad} == {}


def test_pure_fold_has_no_io_dependencies() -> None:
    roots = imported_roots(PURE_FOLD.read_text(), "projections.index")
    assert roots & PURE_FOLD_FORBIDDEN == set()
    assert "locker" in roots  # sanity: the walker does see its real imports


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import streams.app", {"streams"}),
        ("from cli import main", {"cli"}),
        ("def f():\n    from commands.service import start", {"commands"}),
        ("from . import index", {"projections"}),
        ("from ..streams import app", {"streams"}),
        ("import os, rocksdict as r", {"os", "rocksdict"}),
        ("if TYPE_CHECKING:\n    import faust", {"faust"}),
    ],
)
def test_import_walker(source: str, expected: set[str]) -> None:
    assert imported_roots(source, "projections.store") == expected
