"""The import layers of docs/architecture.md, enforced on the source tree.

protocols -> hwloop <- instruments, simulated_device; instruments and
simulated_device never import each other or protocols; hwloop imports none of
the three; nothing imports tests; no import cycle between the modules of a
package. The contracts are import-linter's, declared in pyproject.toml
(``[tool.importlinter]``) and checked here with its own command; the imports it
cannot see (``import_module`` / ``__import__`` with a literal name) are checked
here as well. Packages compose only through the entry points declared in
pyproject.toml.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
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
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(no_cache=True, no_logo=True))")


def _lint(cwd: Path) -> tuple[int, str]:
    """Run import-linter on the pyproject.toml in ``cwd``: exit code and output."""
    env = {**os.environ, "COLUMNS": "400"}  # one contract per line in the report
    out = subprocess.run([sys.executable, "-c", LINT], cwd=cwd, capture_output=True,
                         text=True, timeout=300, check=False, env=env)
    return out.returncode, out.stdout + out.stderr


def _broken(output: str) -> set[str]:
    """Names of the contracts import-linter reports broken."""
    return {m.group(1).strip() for m in re.finditer(r"^(.+?) BROKEN$", output, flags=re.M)}


def _contracts() -> list[dict[str, object]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts: list[dict[str, object]] = data["tool"]["importlinter"]["contracts"]
    return contracts


def test_import_contracts_hold() -> None:
    code, output = _lint(ROOT)
    assert code == 0 and not _broken(output), output
    kinds = {str(c["type"]) for c in _contracts()}
    assert kinds >= {"layers", "forbidden", "acyclic_siblings"}


# The same contracts on a throwaway tree whose packages stand for ours (the installed
# hwloop packages cannot be shadowed by a temporary directory): each case adds one
# forbidden import (function-level, as the lazy command imports are) and must break
# exactly the contracts named.
STAND_IN = {"hwloop": "core_x", "instruments": "instr_x", "protocols": "proto_x",
            "simulated_device": "sim_x", "tests": "tests_x"}
CASES = {
    "clean": ({}, set()),
    "core imports protocols": ({"core_x/a.py": "proto_x.a"}, {"layers"}),
    "instruments import the emulator": ({"instr_x/a.py": "sim_x.a"},
                                        {"layers", "backends-apart"}),
    "the emulator imports instruments": ({"sim_x/a.py": "instr_x.a"},
                                         {"layers", "backends-apart"}),
    "protocols import the emulator": ({"proto_x/a.py": "sim_x.a"}, {"layers"}),
    "a package imports tests": ({"sim_x/a.py": "tests_x.helpers"}, {"no-tests"}),
    "a cycle inside a package": ({"proto_x/b.py": "proto_x.a"}, {"acyclic"}),
}


def _stand_in_config() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    start = text.index("[tool.importlinter]")
    rest = text[start:]
    nxt = re.search(r"^\[(?!\[?tool\.importlinter)", rest[1:], flags=re.M)
    section = rest if nxt is None else rest[: nxt.start() + 1]
    names = "|".join(STAND_IN)
    return "\n".join(
        line if line.startswith("name") else
        re.sub(rf"\b({names})\b", lambda m: STAND_IN[m.group(1)], line)
        for line in section.splitlines()
    )


@pytest.mark.parametrize("case", list(CASES))
def test_the_contracts_catch_a_violation(case: str, tmp_path: Path) -> None:
    extra, expect_ids = CASES[case]
    (tmp_path / "pyproject.toml").write_text(_stand_in_config(), encoding="utf-8")
    for pkg in STAND_IN.values():
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "a.py").write_text("import core_x.a\n" if pkg != "core_x" else "")
        (tmp_path / pkg / "helpers.py").write_text("")
    (tmp_path / "proto_x" / "b.py").write_text("")
    (tmp_path / "proto_x" / "a.py").write_text("import core_x.a\nimport proto_x.b\n")
    for path, target in extra.items():
        with (tmp_path / path).open("a") as fh:
            fh.write(f"def f():\n    import {target}\n")
    code, output = _lint(tmp_path)
    names = {str(c["id"]): str(c["name"]) for c in _contracts()}
    assert _broken(output) == {names[i] for i in expect_ids}, output
    assert (code == 0) == (not expect_ids), output


def _dynamic_imports(path: Path) -> list[tuple[int, str]]:
    """Top-level names imported by ``import_module("x")`` / ``__import__("x")`` calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(
            node.func, "attr", getattr(node.func, "id", "")
        ) in ("import_module", "__import__") and (
            node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_dynamic_imports_flow_down_to_hwloop(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = []
    for f in files:
        for line, mod in _dynamic_imports(f):
            if (mod in PACKAGES and mod not in ALLOWED[package]) or mod in NEVER:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_the_dynamic_import_checker_catches_a_violation(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import importlib\ndef f():\n    importlib.import_module('simulated_device.drn')\n"
                 "    __import__('tests.x')\n")
    assert [m for _, m in _dynamic_imports(f)] == ["simulated_device", "tests"]


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
