"""The import layers of DEVELOPERS.md, enforced on the source tree.

protocols -> hwloop <- instruments, simulated_device; instruments and
simulated_device never import each other or protocols; hwloop imports none of
the three; nothing imports tests. Packages compose only through the entry
points declared in pyproject.toml.
"""

from __future__ import annotations

import ast
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hwloop", "instruments", "protocols", "simulated_device")
ALLOWED: dict[str, set[str]] = {
    "hwloop": {"hwloop"},
    "protocols": {"protocols", "hwloop"},
    "instruments": {"instruments", "hwloop"},
    "simulated_device": {"simulated_device", "hwloop"},
}
NEVER = {"tests", "benchmarks", "examples"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Top-level module names imported anywhere in a file (function bodies included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and getattr(
            node.func, "attr", getattr(node.func, "id", "")
        ) in (
            "import_module",
            "__import__",
        ) and (
            node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_down_to_hwloop(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = []
    for f in files:
        for line, mod in _imports(f):
            if (mod in PACKAGES and mod not in ALLOWED[package]) or mod in NEVER:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from simulated_device import drn\n    import tests.x\n")
    assert [m for _, m in _imports(f)] == ["simulated_device", "tests"]


def _entry_points() -> dict[str, dict[str, str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    eps: dict[str, dict[str, str]] = data["project"]["entry-points"]
    return eps


def test_commands_and_backends_come_from_entry_points() -> None:
    eps = _entry_points()
    assert set(eps) >= {"hwloop.commands", "hwloop.backends"}
    assert "emulator" in eps["hwloop.backends"]
    assert "op" in eps["hwloop.commands"]
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["scripts"]["hwloop"] == "hwloop.cli:main"


@pytest.mark.parametrize(
    ("group", "name"),
    [(g, n) for g, entries in _entry_points().items() for n in entries],
)
def test_every_declared_entry_point_resolves(group: str, name: str) -> None:
    target = _entry_points()[group][name]
    module, _, attr = target.partition(":")
    assert callable(getattr(import_module(module), attr))


def test_installed_metadata_matches_pyproject() -> None:
    from importlib.metadata import entry_points

    for group, entries in _entry_points().items():
        installed = {ep.name: ep.value for ep in entry_points(group=group)}
        for name, value in entries.items():
            assert installed.get(name) == value, (
                f"entry point {group}:{name} is not installed as declared; re-run pip install -e ."
            )
