"""``hwloop op``: output against the solver, JSON, options and error exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hwloop.cli import main
from simulated_device.dcop import solve_op
from simulated_device.netlist import read_netlist
from simulated_device.op_command import natural_key
from tests.procs import DEADLINE_S

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "netlists").glob("*.cir"))


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("hwloop op: error:")]


def test_examples_are_shipped() -> None:
    assert len(EXAMPLES) >= 2
    for path in EXAMPLES:
        lines = path.read_text().splitlines()
        assert any(ln.startswith("* What it is:") for ln in lines[:4]), path


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("ideal", [False, True])
def test_json_matches_solver(path: Path, ideal: bool, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["op", str(path), "--json"] + (["--ideal-diodes"] if ideal else [])
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"node_voltages_v", "iterations", "max_residual_a"}
    op = solve_op(read_netlist(path), diodes="ideal" if ideal else "shockley")
    assert out["node_voltages_v"] == op.node_voltages_v  # exact: JSON keeps every digit
    assert list(out["node_voltages_v"]) == sorted(op.node_voltages_v, key=natural_key)
    assert out["iterations"] == op.iterations
    assert out["max_residual_a"] < 1e-12


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_table_matches_solver(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["op", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["node", "voltage_v"]
    assert lines[-1].startswith("# ")
    table = {name: float(v) for name, v in (ln.split() for ln in lines[1:-1])}
    op = solve_op(read_netlist(path))
    assert table == pytest.approx(op.node_voltages_v, rel=1e-14, abs=1e-300)
    assert "0" not in table  # ground is not listed


def test_temperature_option(capsys: pytest.CaptureFixture[str]) -> None:
    path = next(p for p in EXAMPLES if p.name == "diode_bridge.cir")
    assert main(["op", str(path), "--json", "--temp", "85"]) == 0
    hot = json.loads(capsys.readouterr().out)["node_voltages_v"]
    assert hot == solve_op(read_netlist(path), temperature_c=85.0).node_voltages_v
    assert hot != solve_op(read_netlist(path)).node_voltages_v


def test_natural_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "order.cir"
    path.write_text(
        "order\nV1 n10 0 1\nR1 n10 n2 1k\nR2 n2 n1 1k\nR3 n1 0 1k\nR4 a 0 1\nV2 a 0 0\n"
    )
    assert main(["op", str(path), "--json"]) == 0
    names = list(json.loads(capsys.readouterr().out)["node_voltages_v"])
    assert names == ["a", "n1", "n2", "n10"]


@pytest.mark.parametrize(
    ("text", "argv_extra", "fragment"),
    [
        (None, [], "cannot read netlist"),
        ("bad\nR1 a 0 1k\nR2 a b\n", [], "bad.cir:3: resistor 'r2' has 3 fields"),
        ("float\nV1 a 0 1\nR1 a 0 1k\nI1 a b 1m\n", [], "floating node(s) b"),
        ("loop\nV1 a 0 1\nV2 a 0 2\nR1 a 0 1\n", [], "do not add up"),
        ("ok\nV1 a 0 1\nR1 a 0 1k\n", ["--temp", "-300"], "absolute zero"),
        ("ok\nV1 a 0 1\nR1 a 0 1k\n", ["--temp", "nan"], "--temp"),
        ("fb\nV1 a 0 1\nD1 a 0 DI\n.model DI D\n", ["--ideal-diodes"], "forward-biased"),
    ],
)
def test_errors_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str | None,
    argv_extra: list[str],
    fragment: str,
) -> None:
    path = tmp_path / "bad.cir"
    if text is not None:
        path.write_text(text)
    assert main(["op", str(path), *argv_extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = _error_lines(captured.err)
    assert len(errors) == 1 and fragment in errors[0], captured.err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["op"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["op", "--help"])
    assert exc.value.code == 0
    assert "--ideal-diodes" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("hwloop") is None, reason="the hwloop script is not installed")
def test_subprocess_exit_code_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cir"
    bad.write_text("bad\nV1 a 0 1\nQ1 a b c npn\n")
    res = subprocess.run(["hwloop", "op", str(bad)], capture_output=True, text=True, check=False,
                         timeout=DEADLINE_S)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert f"{bad}:3: unsupported element 'q1'" in res.stderr
    ok = subprocess.run(
        ["hwloop", "op", str(EXAMPLES[0]), "--json"], capture_output=True, text=True, check=False,
        timeout=DEADLINE_S,
    )
    assert ok.returncode == 0, ok.stderr
    assert (
        json.loads(ok.stdout)["node_voltages_v"]
        == solve_op(read_netlist(EXAMPLES[0])).node_voltages_v
    )
