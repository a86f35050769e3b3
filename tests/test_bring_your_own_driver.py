"""Bring your own driver: PyMeasure's classes drive the instruments of a RealBoard.

The board's sources go through PyMeasure's own driver class (mapped onto hwloop's
roles by the ``python-class`` adapter of the board file), and its crosspoints through
PyMeasure's generic ``Instrument`` (the 707B matrix, TSP commands from its manual) and
``Keithley2600`` (the pulsing SMU) with the ``python-class+smu`` adapter of the shipped
example. The reference is a twin bench (same network, same seed) driven by hwloop's
own drivers: two independent drivers of the same instruments must produce the same
node voltages and conductances.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwloop.cli import main
from hwloop.device import CurrentNudge
from hwloop.errors import ConfigError, HwloopError, LimitError
from hwloop.sessionlog import open_session
from instruments.adapted import Action, AdaptedMatrix
from instruments.board_file import parse_board_file
from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_scpi import VirtualScpiBench
from tests.board_helpers import board_head, open_scpi

pytest.importorskip("pymeasure")  # in the test extra; the adapter itself needs no PyMeasure
pytestmark = pytest.mark.filterwarnings(  # PyMeasure's own notice about its 2600 class
    "ignore:It is not known whether this device support SCPI:FutureWarning"
)

ARCH = "1-4-1"

PYMEASURE_SMU = """
[instruments.smu]
kind = "python-class"
resource = "${HWLOOP_SMU_RESOURCE}"

[instruments.smu.options]
class = "pymeasure.instruments.keithley:Keithley2600"
kwargs = { visa_library = "@py", read_termination = "\\n", write_termination = "\\n" }
channels = ["ChA", "ChB"]
identity = "id"
set_voltage = ["source_mode = 'voltage'", "source_voltage = value", "source_output = 'ON'"]
set_current = ["source_mode = 'current'", "source_current = value", "source_output = 'ON'"]
safe_state = ["source_voltage = 0", "source_current = 0", "source_output = 'OFF'"]
output_state = "source_output"
output_on = "ON"
confirm = ["id"]
close = ["adapter.close()"]
v_max_v = {v_max_v}
i_max_a = 0.01
"""

HWLOOP_SMU = """
[instruments.smu]
kind = "keithley2600"
resource = "${HWLOOP_SMU_RESOURCE}"
options = { n_channels = 2, nplc = 0.01, visa_library = "@py" }
"""

REST = board_head("byod", "1-4-1") + """
[instruments.daq]
kind = "daq6510"
resource = "${HWLOOP_DAQ_RESOURCE}"
options = { n_channels = 5, nplc = 0.01, range_v = 10.0, visa_library = "@py" }

[instruments.crossbar]
kind = "keithley707b+smu"
resource = "${HWLOOP_MATRIX_RESOURCE}"
smu_resource = "${HWLOOP_XSMU_RESOURCE}"
options = { smu_channel = "smua", nplc = 0.01, visa_library = "@py" }

[roles]
inputs = "smu"
nudges = "smu"
meter = "daq"
crosspoints = "crossbar"

[wiring]
inputs = { first = 0 }
nudges = { first = 1 }
meter = { first = 0 }
crosspoints = { first = 0 }

[pulse]
amplitude_v = 1.0
width_s = 1e-4
step_s = 0.99e-6
read_v = 0.2

[safety]
v_input_max_v = 10.0
i_nudge_max_a = 1e-4
compliance_a = 1.0
pulse_amplitude_max_v = 3.0
pulse_width_max_s = 1e-3
max_pulses_per_step = 100
"""


def byod_text(v_max_v: float = 5.0) -> str:
    return REST + PYMEASURE_SMU.replace("{v_max_v}", str(v_max_v))


def run(text: str) -> tuple[np.ndarray, np.ndarray, bool]:
    board, bench = open_scpi(21, ARCH, text=text)
    try:
        board.apply_inputs(np.array([[1.5], [-2.0], [0.7]]))
        board.apply_nudge(CurrentNudge(np.array([[2e-5], [0.0], [-3e-5]])))
        board.settle()
        v = board.read_nodes(2).samples_v
        assert not bench.is_safe
        res = board.program_pulses(np.array([0, 3]), np.array([2, -1]))
        assert res.applied_pulses.tolist() == [2, -1]
        g = board.read_conductances()
    finally:
        board.close()
    return v, g, bench.is_safe


def test_pymeasure_driven_sources_give_the_readings_of_hwloops_own_driver() -> None:
    v, g, safe = run(byod_text())
    v_ref, g_ref, safe_ref = run(REST + HWLOOP_SMU)
    assert safe and safe_ref  # every exit: PyMeasure's channels at 0 and off
    # the same bench, seed and levels: the same node voltages (the DAQ's read noise)
    np.testing.assert_allclose(v, v_ref, rtol=0, atol=2e-3)
    assert np.ptp(v_ref) > 0.1  # the levels did reach the network
    np.testing.assert_allclose(g, g_ref, rtol=0.02)


def _example_crossbar(**edits: str) -> str:
    """The shipped example's ``[instruments.crossbar]`` tables (PyMeasure), edited."""
    text = PYMEASURE_EXAMPLE.read_text(encoding="utf-8")
    part = text[text.index("[instruments.crossbar]"):text.index("[roles]")]
    for old, new in edits.items():
        assert old in part
        part = part.replace(old, new)
    return part


def _with_crossbar(text: str, crossbar: str) -> str:
    head, rest = text.split("[instruments.crossbar]", 1)
    return head + crossbar + rest[rest.index("[roles]"):]


def test_pymeasure_driven_crosspoints_program_and_read_as_hwloops_driver_does() -> None:
    v, g, safe = run(_with_crossbar(byod_text(), _example_crossbar()))
    v_ref, g_ref, safe_ref = run(REST + HWLOOP_SMU)  # hwloop's 707B and 2600B drivers
    assert safe and safe_ref  # every relay open, the pulsing SMU at 0 and off
    np.testing.assert_allclose(v, v_ref, rtol=0, atol=2e-3)
    # the same pulse trains and reads on the same seed: the same conductances
    np.testing.assert_allclose(g, g_ref, rtol=1e-9)
    # the pulses reached the devices: programmed edges moved against a fresh twin
    board, _ = open_scpi(21, ARCH, text=REST + HWLOOP_SMU)
    try:
        g0 = board.read_conductances()
    finally:
        board.close()
    assert g[0] > g0[0] * 1.001 and g[3] < g0[3] / 1.001, (g0, g)


def test_a_crosspoint_adapter_without_its_pulse_actions_is_a_one_line_error_at_open() -> None:
    part = _example_crossbar()
    part = part[:part.index("smu_pulse =")] + part[part.index("smu_read_current ="):]
    with pytest.raises(ConfigError) as info:
        board, _ = open_scpi(21, ARCH, text=_with_crossbar(byod_text(), part))
        board.close()
    msg = str(info.value)
    assert "has no smu_pulse" in msg and "\n" not in msg, msg


def test_the_crosspoint_adapter_refuses_a_pulse_before_any_relay_closes() -> None:
    text = _with_crossbar(byod_text(), _example_crossbar(**{
        "smu_v_max_v = 40.0": "smu_v_max_v = 0.5"}))
    board, bench = open_scpi(21, ARCH, text=text)
    try:
        with pytest.raises(LimitError, match=r"pulse amplitude 1 V exceeds the adapter's limit"):
            board.program_pulses(np.array([0]), np.array([1]))
        assert bench.closed_crosspoints() == () and bench.is_safe
    finally:
        board.close()
    assert bench.is_safe


def test_the_matrix_adapter_confirms_by_read_back_and_names_a_relay_left_closed() -> None:
    from pymeasure.instruments import Instrument

    net = BenchNetwork({"arch": ARCH, "preset": "reram"}, np.random.default_rng(0))
    bench = VirtualScpiBench(net, bias_channels=True)
    bench.start()
    dev = Instrument(bench.resources["matrix"], "707B", includeSCPI=False, visa_library="@py",
                     read_termination="\n", write_termination="\n", timeout=2000)
    try:
        acts = {k: tuple(Action.parse(t, k) for t in v) for k, v in {
            "close_crosspoint": ["write(\"channel.close('{channel}')\")"],
            "open_crosspoint": ["write(\"channel.open('{channel}')\")"],
            "closed_crosspoints": ["ask(\"print(channel.getclose('allslots'))\")"],
            # a wrong safe state, as a lab might declare it: opens one relay only
            "safe_state": ["write(\"channel.open('1A01')\")"],
        }.items()}
        m = AdaptedMatrix("707B", dev, ["1A01", "1A02", "1H12"], acts, closed_none="nil")
        m.close_channels(["1H12", "1A02"])
        assert m.closed_channels() == ("1A02", "1H12") == bench.closed_crosspoints()
        assert m.is_energised()
        with pytest.raises(ConfigError, match=r"'1B01' is not in options\.channels"):
            m.close_channels(["1B01"])
        with pytest.raises(HwloopError, match=r"1A02,1H12 still closed after the safe_state"):
            m.safe_state()
        m.open_channels(["1A02", "1H12"])
        assert m.closed_channels() == () and not m.is_energised()
    finally:
        dev.adapter.close()
        bench.stop()


def test_the_adapters_limit_refuses_a_level_before_the_driver_could_truncate_it() -> None:
    # PyMeasure truncates source_voltage into [-200, 200] silently; the adapter refuses
    board, bench = open_scpi(21, ARCH, text=byod_text(v_max_v=1.0))
    try:
        board.apply_inputs(np.array([[1.5]]))  # within the board file's 10 V
        board.settle()
        with pytest.raises(LimitError, match=r"level 1\.5 V exceeds the adapter's limit 1 V"):
            board.read_nodes(1)
        assert bench.is_safe
    finally:
        board.close()
    assert "smu" in board.describe().info["instruments"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (('"source_voltage = value"', '"source_voltage = __import__(\'os\')"'),
         "is not an adapter action"),
        (('"source_voltage = value"', '"source_voltage = value; x = 1"'),
         "is not an adapter action"),
        (("pymeasure.instruments.keithley:Keithley2600", "pymeasure.nowhere:Smu"),
         "cannot be imported"),
        (('channels = ["ChA", "ChB"]', 'channels = ["ChA", "ChC"]'),
         "channel 'ChC' is not an attribute of Keithley2600"),
    ],
    ids=["code-not-a-literal", "two-statements", "unknown-class", "unknown-channel"],
)
def test_adapter_mistakes_are_one_line_errors_at_open(edit: tuple[str, str], words: str) -> None:
    text = byod_text().replace(*edit)
    with pytest.raises(ConfigError) as info:
        board, _ = open_scpi(21, ARCH, text=text)
        board.close()
    msg = str(info.value)
    assert words in msg and "\n" not in msg, msg


def test_board_file_rejects_unknown_adapter_keys_and_names_the_known_ones() -> None:
    text = byod_text().replace('output_on = "ON"', 'output_on = "ON"\nouput_state = "x"')
    env = {k: "TCPIP::127.0.0.1::1::SOCKET" for k in (
        "HWLOOP_SMU_RESOURCE", "HWLOOP_DAQ_RESOURCE", "HWLOOP_MATRIX_RESOURCE",
        "HWLOOP_XSMU_RESOURCE")}
    with pytest.raises(ConfigError, match="did you mean 'output_state'"):
        parse_board_file(text, env=env)


def test_actions_are_parsed_not_evaluated() -> None:
    class Target:
        def __init__(self) -> None:
            self.sub = self
            self.level = 0.0
            self.calls: list[tuple[object, ...]] = []

        def apply(self, *args: object, **kw: object) -> str:
            self.calls.append((*args, *sorted(kw.items())))
            return "done"

    t = Target()
    Action.parse("sub.level = value", "x").run(t, 0.25)
    assert t.level == 0.25
    assert Action.parse("apply(1, 'on', value, mode=-2)", "x").run(t, 3.0) == "done"
    assert t.calls == [(1, "on", 3.0, ("mode", -2))]
    assert Action.parse("sub.level", "x").run(t) == 0.25
    for bad in ("level = value + 1", "apply(open('f'))", "[x for x in y]", "a = b = 1",
                "import os"):
        with pytest.raises(ConfigError, match="is not an adapter action"):
            Action.parse(bad, "x")


# --------------------------------------------------------------------------- the example file

ROOT = Path(__file__).resolve().parents[1]
PYMEASURE_EXAMPLE = ROOT / "examples" / "boards" / "virtual-pymeasure.toml"
SCPI_EXAMPLE = ROOT / "examples" / "boards" / "virtual-scpi.toml"


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def _cli_on_bench(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``hwloop ARGV`` on a fresh 32-8-2 virtual SCPI bench (stopped also on failure).

    Returns its stdout; the run must exit 0 and leave the bench safe.
    """
    net = BenchNetwork({"arch": "32-8-2", "preset": "reram"}, np.random.default_rng(0))
    bench = VirtualScpiBench(net, bias_channels=True)
    bench.start()
    try:
        for name, res in bench.resources.items():
            monkeypatch.setenv(f"HWLOOP_{name.upper()}_RESOURCE", res)
        code, stdout, stderr = _cli(argv)
        assert code == 0, stderr
        assert bench.is_safe
    finally:
        bench.stop()
    return stdout


def _train_on_bench(board_file: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    stdout = _cli_on_bench([
        "train", "--backend", "board", "--board", str(board_file), "--dataset",
        "mnist-01-4x4", "--nudge", "current", "--input-gain", "20", "--lr", "0.03",
        "--lr-biases", "0.03", "--epochs", "1", "--train-limit", "24", "--test-limit", "12",
        "--seed", "0", "--quiet", "--json", "--out", str(out)], monkeypatch)
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def test_the_pymeasure_example_trains_as_hwloops_driver_does_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = _train_on_bench(PYMEASURE_EXAMPLE, tmp_path / "pymeasure.h5", monkeypatch)
    ref = _train_on_bench(SCPI_EXAMPLE, tmp_path / "hwloop.h5", monkeypatch)
    assert mine["status"] == ref["status"] == "completed"
    # the same bench, seed and levels through two independent drivers: the same run
    assert mine["final_test_accuracy"] == ref["final_test_accuracy"]
    assert mine["final_train_accuracy"] == ref["final_train_accuracy"]
    with open_session(tmp_path / "pymeasure.h5") as a, open_session(tmp_path / "hwloop.h5") as b:
        assert b.description.info["instruments"]["smu"]["kind"] == "keithley2600"  # type: ignore[index]
        assert b.description.info["instruments"]["daq"]["kind"] == "daq6510"  # type: ignore[index]
        ident = a.description.info["instruments"]["smu"]  # type: ignore[index]
        assert ident["kind"] == "python-class" and "Model 2602B" in ident["identity"]
        meter = a.description.info["instruments"]["daq"]  # type: ignore[index]
        assert meter["kind"] == "python-class" and "DAQ6510" in meter["identity"]
        cross = a.description.info["instruments"]["crossbar"]  # type: ignore[index]
        assert cross["kind"] == "python-class+smu" and "707B" in cross["identity"]
        np.testing.assert_allclose(a.checkpoint(-1).arrays["conductances_s"],
                                   b.checkpoint(-1).arrays["conductances_s"],
                                   rtol=1e-9)
    code, _, err = _cli(["replay", str(tmp_path / "pymeasure.h5")])
    assert code == 0, err


def _readme_line(start: str) -> list[str]:
    """The README's command line that starts with ``start``, split, comment dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.startswith(start))
    return shlex.split(line.split("  #", 1)[0])[1:]  # without the leading "hwloop"


def test_the_readme_commands_train_and_replay_the_pymeasure_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's train and replay lines for the example, as written.

    Only ``--train-limit`` / ``--test-limit`` are cut (400/200 would take minutes) and
    the output goes to ``tmp_path``; the example file, dataset, gains and rates are the
    README's.
    """
    train = _readme_line("hwloop train --backend board --board examples/boards/"
                         "virtual-pymeasure.toml")
    replay = _readme_line("hwloop replay pymeasure-run.h5")
    assert train[train.index("--out") + 1] == replay[1] == "pymeasure-run.h5"
    for opt, n in (("--train-limit", "16"), ("--test-limit", "8")):
        train[train.index(opt) + 1] = n
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples" / "boards").mkdir(parents=True)
    (tmp_path / "examples" / "boards" / PYMEASURE_EXAMPLE.name).write_text(
        PYMEASURE_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    _cli_on_bench(train, monkeypatch)
    with open_session(tmp_path / "pymeasure-run.h5") as s:
        assert s.status == "completed"
        insts = s.description.info["instruments"]
        assert isinstance(insts, dict)
        kinds = {n: i["kind"] for n, i in insts.items()}
    assert kinds == {"smu": "python-class", "daq": "python-class",
                     "crossbar": "python-class+smu"}
    code, _, err = _cli(replay)  # offline: no instrument is needed to replay
    assert code == 0, err
