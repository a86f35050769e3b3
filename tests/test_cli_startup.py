"""Lazy start-up of the ``hwloop`` command (DR-32).

``hwloop --help`` lists every installed subcommand from the one-line help its
entry point declares, without importing the command modules or numpy, h5py, scipy
or matplotlib (the time figure is in benchmarks/bench_op.py; a wall-clock bound
here would fail on a busy machine, the imported modules do not). The declared help
is the help each command registers, and the chosen command is the only one imported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import pytest

from hwloop import cli
from tests.procs import DEADLINE_S

HEAVY = ("numpy", "h5py", "scipy", "matplotlib")
COMMAND_MODULES = ("protocols.cli", "protocols.planner", "protocols.sweep",
                   "protocols.characterize", "simulated_device.op_command",
                   "simulated_device.drn_command", "simulated_device.virtual_command",
                   "hwloop.inspect_cmd", "hwloop.plugins")

_PROBE = """
import json, sys
from hwloop.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _modules_after(*argv: str) -> tuple[Any, set[str]]:
    res = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True,
                         timeout=DEADLINE_S, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["code"], set(out["modules"])


def _choices(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help for a in sub._choices_actions}


def test_help_imports_no_command_module_and_no_numerics() -> None:
    code, mods = _modules_after("--help")
    assert code == 0
    assert not {m for m in mods if m.split(".")[0] in HEAVY}, sorted(mods)
    assert not mods & set(COMMAND_MODULES), sorted(mods & set(COMMAND_MODULES))


def test_the_chosen_command_alone_is_imported() -> None:
    code, mods = _modules_after("op", "--help")
    assert code == 0
    assert "simulated_device.op_command" in mods
    assert not mods & (set(COMMAND_MODULES) - {"simulated_device.op_command"})


def test_declared_help_is_the_help_each_command_registers() -> None:
    lazy = _choices(cli.build_parser(None))
    full = _choices(cli.build_parser("*"))
    assert len(full) >= 13
    assert lazy == full


def test_a_plain_register_callable_still_works(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A lab's plugin that names its ``register`` function directly (no LazyCommand)."""

    def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        p = sub.add_parser("hello", help="say hello")
        p.add_argument("--name", default="lab")
        p.set_defaults(func=lambda a: print(f"hello {a.name}") or 0)

    class EntryPoint:
        name = "hello"

        def load(self) -> Any:
            return register

    eps = {**cli._command_entry_points(), "hello": EntryPoint()}
    monkeypatch.setattr(cli, "_command_entry_points", lambda: eps)
    assert cli.main(["hello", "--name", "x"]) == 0
    assert capsys.readouterr().out == "hello x\n"
    assert _choices(cli.build_parser(None))["hello"] == "say hello"
    with pytest.raises(SystemExit) as ei:
        cli.main(["helo"])
    assert ei.value.code == 2
    assert "invalid choice: 'helo'" in capsys.readouterr().err
