"""Instrument kinds as plugins: a throwaway kind joins through the entry point and runs a board.

The throwaway kind is a real installed distribution for the duration of a test: a
``.dist-info`` directory with an ``entry_points.txt`` and a module, written to a
temporary directory that is put on ``sys.path`` (``importlib.metadata`` finds it as
it finds any installed package). Nothing in hwloop's packages is changed.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from hwloop.cli import main
from hwloop.device import CurrentNudge
from hwloop.errors import ConfigError
from instruments import roles
from instruments.board_file import parse_board_file
from instruments.kinds import GROUP, installed_kind_names, installed_kinds, load_kind
from instruments.real_board import RealBoard
from tests.board_helpers import board_head

ROOT = Path(__file__).resolve().parents[1]
MODULE = "hwloop_throwaway_rig"

# A lab's instrument written against instruments.kinds only: a rig whose meter channel j
# reads divider_ratio * (input level on channel j % n_in) + sense_ohm * (nudge current on
# channel j % n_nudge), and whose crosspoints change by step_s per pulse.
PLUGIN = '''
import numpy as np

from instruments.kinds import InstrumentKind, KindOption, OpenedInstrument, RoleDrivers
from instruments.roles import CrosspointRole, CurrentSourceRole, MeterRole, VoltageSourceRole

RIGS = []


class Rig:
    def __init__(self, address, divider, sense_ohm, n, n_cp, g0_s, step_s):
        self.address, self.divider, self.sense_ohm = address, divider, sense_ohm
        self.v = np.zeros(n)
        self.i = np.zeros(n)
        self.g = np.full(n_cp, g0_s)
        self.step_s = step_s
        self.on = False
        self.closed = False
        self.calls = []

    def identity(self):
        return f"throwaway rig at {self.address}"

    def safe_state(self):
        self.calls.append("safe_state")
        self.v[:] = 0.0
        self.i[:] = 0.0
        self.on = False

    def is_energised(self):
        return self.on and bool(np.any(self.v) or np.any(self.i))

    def close(self):
        self.safe_state()
        self.closed = True

    def set_voltages(self, channels, volts):
        self.calls.append("set_voltages")
        self.v[channels] = volts
        self.on = True

    def set_currents(self, channels, amps):
        self.calls.append("set_currents")
        self.i[channels] = amps
        self.on = True

    def read_voltages(self, channels, n_samples):
        n_in, n_nudge = self.n_in, self.n_nudge
        row = np.array([self.divider * self.v[c % n_in] + self.sense_ohm * self.i[c % n_nudge]
                        for c in channels])
        samples = np.tile(row, (n_samples, 1))
        return samples, np.zeros(samples.shape, dtype=np.uint8), np.arange(n_samples) * 1e-3

    def pulse(self, crosspoint, amplitude_v, width_s, count):
        self.g[crosspoint] += np.sign(amplitude_v) * self.step_s * count
        return count

    def read_conductance(self, crosspoints, v_read):
        return self.g[np.asarray(crosspoints)].copy()


def open_rig(ctx):
    rig = Rig(ctx.address, float(ctx.option("divider_ratio")), float(ctx.option("sense_ohm")),
              8, 64, 50e-6, 1e-6)
    rig.n_in = ctx.used_channels(("inputs",))
    rig.n_nudge = ctx.used_channels(("nudges",))
    RIGS.append(rig)
    return OpenedInstrument(
        identity=rig.identity(),
        device=rig,
        roles=RoleDrivers(inputs=rig, nudges=rig, meter=rig, crosspoints=rig),
        channel_counts={"inputs": 8, "nudges": 8, "meter": 8, "crosspoints": 64},
        hard_close=lambda: None,
    )


KIND = InstrumentKind(
    name="throwaway-rig",
    help="a throwaway rig for the plugin test",
    roles=(VoltageSourceRole, CurrentSourceRole, MeterRole, CrosspointRole),
    options=(
        KindOption("divider_ratio", "number", "", 0.5, "meter reading per input volt"),
        KindOption("sense_ohm", "number", "ohm", 1000.0, "meter volts per nudge ampere"),
    ),
    open=open_rig,
    address_key="url",
)
'''

BOARD = board_head("throwaway", "2-2-2") + """
[instruments.rig]
kind = "throwaway-rig"
url = "mem://rig"
{options}

[roles]
inputs = "rig"
nudges = "rig"
meter = "rig"
crosspoints = "rig"

[wiring]
inputs = {{ first = 0 }}
nudges = {{ first = 0 }}
meter = {{ first = 0 }}
crosspoints = {{ first = 0 }}

[pulse]
amplitude_v = 1.0
width_s = 1e-6
step_s = 1e-6

[safety]
v_input_max_v = 5.0
i_nudge_max_a = 1e-3
compliance_a = 1e-3
pulse_amplitude_max_v = 2.0
pulse_width_max_s = 1e-3
max_pulses_per_step = 10
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """Install the throwaway kind as a distribution on sys.path; return its module."""
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "hwloop_throwaway_rig-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hwloop-throwaway-rig\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(f"[{GROUP}]\nthrowaway-rig = {MODULE}:KIND\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "throwaway-rig" in installed_kind_names()
        kind = load_kind("throwaway-rig")
        mod = sys.modules[MODULE]
        assert kind is mod.KIND
        yield mod
    finally:
        sys.modules.pop(MODULE, None)


def test_a_throwaway_kind_runs_a_real_board_through_the_entry_point(plugin: ModuleType) -> None:
    bf = parse_board_file(BOARD.format(options="options = { divider_ratio = 0.25 }"))
    with RealBoard(bf) as board:
        (rig,) = plugin.RIGS
        assert rig.address == "mem://rig" and rig.sense_ohm == 1000.0  # the declared default
        info = board.describe().info["instruments"]  # type: ignore[index]
        assert info == {"rig": {"kind": "throwaway-rig", "identity": "throwaway rig at mem://rig"}}
        v_in = np.array([[1.0, -2.0], [0.5, 3.0]])
        board.apply_inputs(v_in)
        i_nudge = np.array([[1e-4, -2e-4], [0.0, 3e-4]])
        board.apply_nudge(CurrentNudge(i_nudge))
        r = board.read_nodes(n_samples=3)
        # free nodes are meter channels 0..3 (hidden 0, 1, outputs 0, 1)
        ch = np.arange(4)
        want = 0.25 * v_in[:, ch % 2] + 1000.0 * i_nudge[:, ch % 2]
        assert r.nodes.tolist() == board.describe().free_nodes.tolist()
        np.testing.assert_allclose(r.samples_v, np.broadcast_to(want, r.samples_v.shape),
                                   rtol=0, atol=1e-12)
        assert not board.is_safe and rig.on
        g0 = board.read_conductances(np.array([0, 5]))
        res = board.program_pulses(np.array([0, 5]), np.array([3, -2]))
        assert res.applied_pulses.tolist() == [3, -2]
        np.testing.assert_allclose(board.read_conductances(np.array([0, 5])) - g0,
                                   [3e-6, -2e-6], rtol=0, atol=1e-15)
        board.safe_state()
        assert board.is_safe
        assert not rig.on and not np.any(rig.v) and not np.any(rig.i)
    assert rig.closed and rig.calls.count("safe_state") >= 3  # connect, safe_state, close


def test_board_files_are_checked_against_the_throwaway_kinds_declaration(
    plugin: ModuleType,
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_board_file(BOARD.format(options="options = { divider = 0.25 }"))
    msg = str(info.value)
    assert "\n" not in msg and "'divider'" in msg and "divider_ratio" in msg, msg
    with pytest.raises(ConfigError, match=r"sense_ohm = 'x' must be a number \(ohm\)"):
        parse_board_file(BOARD.format(options='options = { sense_ohm = "x" }'))
    with pytest.raises(ConfigError, match="name the address 'url'"):
        parse_board_file(BOARD.replace('url = "mem://rig"', 'resource = "x"').format(options=""))
    text = BOARD.format(options="").replace('kind = "throwaway-rig"', 'kind = "throwaway-rigg"')
    with pytest.raises(ConfigError) as info:
        parse_board_file(text)
    msg = str(info.value)
    assert "\n" not in msg and "kind = 'throwaway-rigg' is not known" in msg
    assert "throwaway-rig" in msg and "serial-board" in msg, msg
    # a kind that offers no meter cannot play the meter role; the fix names those that can
    both = BOARD.format(options="") + '\n[instruments.dmm]\nkind = "daq6510"\nresource = "x"\n'
    bad = both.replace('crosspoints = "rig"', 'crosspoints = "dmm"')
    with pytest.raises(ConfigError, match="cannot play crosspoints; use an instrument of kind "
                                          "keithley707b\\+smu or python-class\\+smu or "
                                          "serial-board or throwaway-rig"):
        parse_board_file(bad)


def test_every_installed_kind_declares_options_roles_and_a_role_driver_per_role() -> None:
    kinds = installed_kinds()
    assert {"serial-board", "keithley2600", "keithley2400", "daq6510",
            "keithley707b+smu"} <= set(kinds)
    protocols = {roles.VoltageSourceRole, roles.CurrentSourceRole, roles.MeterRole,
                 roles.CrosspointRole}
    for name, kind in kinds.items():
        assert kind.name == name and kind.roles and set(kind.roles) <= protocols
        assert len({o.name for o in kind.options}) == len(kind.options), name
        for o in kind.options:
            assert o.help and "\n" not in o.help, (name, o.name)


def test_no_instrument_kind_is_named_outside_its_own_module() -> None:
    """grep: a kind's name appears as a string only in the module that declares it."""
    homes = {name: Path(str(sys.modules[k.open.__module__].__file__)).resolve()
             for name, k in installed_kinds().items()}
    # the matrix kind names its default pulsing SMU as the declared default of smu_kind
    allowed = {("keithley707b.py", "keithley2600")}
    hits = []
    for pkg in ("hwloop", "protocols", "simulated_device", "instruments"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for name, home in homes.items():
                if path.resolve() == home or (path.name, name) in allowed:
                    continue
                if re.search(rf"""["']{re.escape(name)}["']""", text):
                    hits.append(f"{path.relative_to(ROOT)}: {name}")
    assert not hits, hits


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_hwloop_instruments_lists_the_kinds_and_a_kinds_options(
    plugin: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(["instruments"], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert "throwaway-rig" in rows and "serial-board" in rows
    assert "inputs, nudges, biases, meter, crosspoints" in rows["throwaway-rig"]
    assert "meter" in rows["daq6510"] and "inputs" not in rows["daq6510"]
    code, out, _ = _cli(["instruments", "throwaway-rig", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["address"] == ["url"]
    assert {"name": "sense_ohm", "type": "number", "unit": "ohm", "default": 1000.0,
            "help": "meter volts per nudge ampere"} in d["options"]
    code, _, err = _cli(["instruments", "throwaway-rigg"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "'throwaway-rigg' is not installed" in lines[0], err
    assert "throwaway-rig" in lines[0] and "Traceback" not in err
