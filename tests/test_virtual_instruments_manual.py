"""The virtual instruments against statements of their manuals, command by command.

Commands go straight to each instrument's command processor (what its TCP server
calls for one message); the expected answers are the manuals' (Series 2600B reference
manual, 707B reference manual, DAQ6510 reference manual, 2400 series manual) and
Ohm's law on the emulated network.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_scpi import VirtualScpiBench


@pytest.fixture
def bench() -> Iterator[VirtualScpiBench]:
    net = BenchNetwork({"arch": "4-3-2", "preset": "reram", "read_noise_v": 1e-4},
                       np.random.default_rng(5))
    yield VirtualScpiBench(net)  # not started: the processors are called directly


def tsp(b: VirtualScpiBench, name: str, *lines: str) -> list[str]:
    out: list[str] = []
    dev = b.devices[name]
    for line in lines:
        out += dev.process(line)
    return out


def next_error(b: VirtualScpiBench, name: str) -> int:
    return int(float(tsp(b, name, "print(errorqueue.next())")[0].split("\t")[0]))


# ---------------------------------------------------------------------- 2600B
def test_reset_restores_every_default(bench: VirtualScpiBench) -> None:
    before = tsp(bench, "smu", "print(smua.source.limiti, smua.source.limitv, "
                 "smua.measure.nplc, smua.measure.count, smua.source.autorangev)")
    tsp(bench, "smu", "smua.source.limiti = 1e-6 smua.source.limitv = 2 smua.measure.nplc = 0.01",
        "smua.measure.count = 5 smua.source.autorangev = 0 smua.source.levelv = 0.05",
        "smua.source.output = 1")
    assert tsp(bench, "smu", "print(smua.source.limiti)") == ["1.00000e-06"]
    tsp(bench, "smu", "reset()")
    after = tsp(bench, "smu", "print(smua.source.limiti, smua.source.limitv, "
                "smua.measure.nplc, smua.measure.count, smua.source.autorangev)")
    assert after == before == ["1.00000e-01\t2.00000e+01\t1.00000e+00\t1.00000e+00\t1.00000e+00"]
    assert tsp(bench, "smu", "print(smua.source.output, smua.source.levelv)") == [
        "0.00000e+00\t0.00000e+00"]
    assert not bench.network.energised


def test_chunks_syntax_and_runtime_errors(bench: VirtualScpiBench) -> None:
    # a syntax error runs nothing (-285); a run-time error stops the chunk there (-286)
    tsp(bench, "smu", "smua.source.levelv = 0.2 smua.source.output = = 1")
    assert next_error(bench, "smu") == -285
    assert tsp(bench, "smu", "print(smua.source.levelv)") == ["0.00000e+00"]
    tsp(bench, "smu", "smua.source.levelv = 0.2 nosuch.thing = 1 smua.source.levelv = 0.3")
    assert next_error(bench, "smu") == -286
    assert tsp(bench, "smu", "print(smua.source.levelv)") == ["2.00000e-01"]
    # an attribute the library does not have reads nil (Lua), a function as a statement
    assert tsp(bench, "smu", "print(smua.source.nosuchsetting)") == ["nil"]
    assert tsp(bench, "smu", "smua.measure.v() smua.measure.i()") == []
    assert tsp(bench, "smu", "print(errorqueue.count)") == ["0.00000e+00"]
    # loops are bounded
    tsp(bench, "smu", "while true do end")
    assert next_error(bench, "smu") == -286
    # several statements, locals, for, printing several values with tabs
    assert tsp(bench, "smu", "local s = 0 for i = 1, 4 do s = s + i end print(s, 'x'..\"y\")") == [
        "1.00000e+01\txy"]
    # an empty queue answers code 0
    empty = tsp(bench, "smu", "print(errorqueue.next())")[0]
    assert empty.startswith("0.00000e+00\tNo Error")


def test_levels_limits_and_ranges_beyond_the_2602b_are_refused(bench: VirtualScpiBench) -> None:
    for cmd, code in [
        ("smua.source.levelv = 41", 1102), ("smua.source.levelv = -41", 1103),
        ("smua.source.leveli = 3.1", 1102), ("smua.source.limiti = 5e-9", 1103),
        ("smua.source.limitv = 41", 1102), ("smua.measure.count = 0", 1103),
        ("smua.measure.nplc = 30", 1102), ("smua.source.rangev = 200", 1102),
        ("smua.source.func = 3", 1102), ("smua.source.output = -1", 1103),
    ]:
        tsp(bench, "smu", cmd)
        assert next_error(bench, "smu") == code, cmd
    # a fixed range bounds the level: 1 V range, 2 V refused, 1 V accepted
    tsp(bench, "smu", "smua.source.rangev = 0.9")  # the smallest range >= 0.9 V: 1 V
    assert tsp(bench, "smu", "print(smua.source.rangev, smua.source.autorangev)") == [
        "1.00000e+00\t0.00000e+00"]
    tsp(bench, "smu", "smua.source.levelv = 2")
    assert next_error(bench, "smu") == 1102
    tsp(bench, "smu", "smua.source.levelv = 1")
    assert tsp(bench, "smu", "print(errorqueue.count, smua.source.levelv)") == [
        "0.00000e+00\t1.00000e+00"]
    # measurements still work after the refused count
    assert len(tsp(bench, "smu", "print(smua.measure.v())")) == 1


def test_compliance_limits_the_output_and_sets_the_status_bits(bench: VirtualScpiBench) -> None:
    tsp(bench, "smu", "smua.source.levelv = 1 smua.source.limiti = 1e-3 smua.source.output = 1")
    i_free = float(tsp(bench, "smu", "print(smua.measure.i())")[0])
    assert 1e-6 < i_free < 1e-3
    tsp(bench, "smu", f"smua.source.limiti = {i_free / 4}")
    i, v = (float(x) for x in tsp(bench, "smu", "print(smua.measure.iv())")[0].split("\t"))
    assert i == pytest.approx(i_free / 4, rel=1e-6)
    assert 0 < v < 0.5  # the voltage source became current-limited
    assert tsp(bench, "smu", "print(smua.source.compliance, "
               "status.measurement.instrument.smua.condition)") == ["true\t2.00000e+00"]
    assert bench.network.inputs_v[0] == pytest.approx(v, abs=3e-4)  # the network sees it
    tsp(bench, "smu", "smua.source.limiti = 1e-3")
    assert tsp(bench, "smu", "print(smua.source.compliance)") == ["false"]
    assert bench.network.inputs_v[0] == 1.0


def test_buffers_printbuffer_and_timestamps(bench: VirtualScpiBench) -> None:
    tsp(bench, "smu", "smua.nvbuffer1.clear() smua.nvbuffer1.collecttimestamps = 1",
        "smua.measure.count = 4 smua.measure.nplc = 0.5 smua.source.levelv = 0.5",
        "smua.source.output = 1 smua.measure.v(smua.nvbuffer1)")
    assert tsp(bench, "smu", "print(smua.nvbuffer1.n)") == ["4.00000e+00"]
    vals = tsp(bench, "smu", "printbuffer(1, 4, smua.nvbuffer1.readings, "
               "smua.nvbuffer1.timestamps)")[0].split(", ")
    v = np.array([float(x) for x in vals[0::2]])
    t = np.array([float(x) for x in vals[1::2]])
    assert np.all(np.abs(v - 0.5) < 1e-3)
    assert np.allclose(np.diff(t), 0.5 / 60 + 1e-4)  # NPLC at the 60 Hz line frequency
    assert tsp(bench, "smu", "print(smua.nvbuffer1[2] == smua.nvbuffer1.readings[2])") == ["true"]
    tsp(bench, "smu", "printbuffer(1, 9, smua.nvbuffer1)")  # beyond the readings
    assert next_error(bench, "smu") == 1102


def test_current_source_on_an_output_node_respects_its_voltage_limit(
    bench: VirtualScpiBench,
) -> None:
    out = bench.smu_channels[4]  # node[3].smua: the first output node
    tsp(bench, "smu", f"{out}.source.func = {out}.OUTPUT_DCAMPS {out}.source.limitv = 0.05",
        f"{out}.source.leveli = 1e-3 {out}.source.output = 1")
    i, v = (float(x) for x in tsp(bench, "smu", f"print({out}.measure.iv())")[0].split("\t"))
    assert abs(v) <= 0.05 + 1e-3 and 0 < i < 1e-3
    assert tsp(bench, "smu", f"print({out}.source.compliance)") == ["true"]


def test_common_commands_on_tsp_instruments(bench: VirtualScpiBench) -> None:
    for name in ("smu", "matrix", "xsmu"):
        assert tsp(bench, name, "*OPC?") == ["1"]
        tsp(bench, name, "nosuch()")
        assert tsp(bench, name, "*STB?") == ["4"]  # EAV
        assert int(tsp(bench, name, "*ESR?")[0]) & 0x10  # EXE (-286)
        tsp(bench, name, "*CLS")
        assert tsp(bench, name, "*STB?") == ["0"]
        tsp(bench, name, "status.standard.enable = 16 status.request_enable = 32", "nosuch()")
        assert tsp(bench, name, "*STB?") == [str(4 | 32 | 64)]
        tsp(bench, name, "errorqueue.clear()", "display.clear() display.settext('x')",
            "display.screen = display.SMUA_SMUB")
        assert tsp(bench, name, "print(errorqueue.count)") == ["0.00000e+00"]
    assert tsp(bench, "smu", "print(localnode.model, localnode.linefreq)") == [
        "2602B\t6.00000e+01"]
    assert tsp(bench, "xsmu", "print(localnode.model)") == ["2601B"]
    assert tsp(bench, "matrix", "print(localnode.model)") == ["707B"]


def test_707b_channel_lists(bench: VirtualScpiBench) -> None:
    tsp(bench, "matrix", "channel.close('1A01:1B02')")
    assert tsp(bench, "matrix", 'print(channel.getclose("slot1"))') == ["1A01;1A02;1B01;1B02"]
    tsp(bench, "matrix", "channel.exclusiveclose(\"1C03\")")
    assert tsp(bench, "matrix", "print(channel.getclose('allslots'))") == ["1C03"]
    tsp(bench, "matrix", "channel.close('1A13')")  # column 13 does not exist
    assert next_error(bench, "matrix") == 1115
    tsp(bench, "matrix", "channel.reset('allslots')")
    assert tsp(bench, "matrix", "print(channel.getclose('allslots'))") == ["nil"]


# ---------------------------------------------------------------------- DAQ6510
def test_daq_scan_buffer_and_readings(bench: VirtualScpiBench) -> None:
    d = bench.daq
    true = bench.network.true_voltages()[bench.network.desc.free_nodes]
    d.process(":SENS:FUNC 'VOLT:DC', (@101:103);:SENS:VOLT:NPLC 0.01, (@101:103)")
    d.process(":ROUT:SCAN (@101:103);:ROUT:SCAN:COUN:SCAN 2;:INIT")
    assert d.process(":TRAC:ACT?") == ["6"]
    data = d.process(":TRAC:DATA? 1, 6, 'defbuffer1', READ, CHAN")[0].split(",")
    assert [int(c) for c in data[1::2]] == [101, 102, 103] * 2
    assert np.allclose([float(x) for x in data[0::2]], np.tile(true[:3], 2), atol=1e-3)
    d.process(":ROUT:SCAN:COUN:SCAN 0")
    assert d.process(":SYST:ERR?")[0].startswith("-222,")
    d.process(":ROUT:CLOS (@102);:SENS:COUN 3")
    assert float(d.process(":READ?")[0]) == pytest.approx(true[1], abs=1e-3)
    assert d.process(":TRAC:ACT?") == ["9"]  # READ? took the 3 counted readings
    assert float(d.process(":FETC?")[0]) == pytest.approx(true[1], abs=1e-3)
    assert float(d.process(":MEAS:VOLT? (@103)")[0]) == pytest.approx(true[2], abs=1e-3)
    assert d.process(":ROUT:CLOS?") == ["(@102)"]
    d.process("*RST")
    assert d.process(":ROUT:CLOS?;:ROUT:SCAN:COUN:SCAN?") == ["(@);1"]


# ---------------------------------------------------------------------- 2400
def test_2400_source_measure_cycles(bench: VirtualScpiBench) -> None:
    k = bench.k2400
    k.process(":OUTP OFF")
    k.process(":READ?")
    assert k.process(":SYST:ERR?") == ['803,"Output disabled"']
    bench.matrix.process("channel.close('1A02')")
    g = float(bench.network.board.network.g_flat[1])
    k.process(":SOUR:FUNC VOLT;:SOUR:VOLT:LEV 0.2;:SENS:CURR:PROT 1e-3;:OUTP ON")
    k.process(":FORM:ELEM CURR,VOLT,STAT;:TRIG:COUN 2")
    vals = [float(x) for x in k.process(":READ?")[0].split(",")]
    assert len(vals) == 6
    assert vals[0] == pytest.approx(0.2 * g, rel=0.05) and vals[1] == 0.2
    assert int(vals[2]) & 8 == 0  # no compliance
    k.process(":SENS:CURR:PROT 1e-9")
    vals = [float(x) for x in k.process(":READ?")[0].split(",")]
    assert abs(vals[0]) == pytest.approx(1e-9) and int(vals[2]) & 8
    assert k.process(":SENS:CURR:PROT:TRIP?") == ["1"]
    k.process(":SOUR:VOLT:RANG 2;:SOUR:VOLT:RANG:AUTO 0;:SOUR:VOLT 5")
    assert k.process(":SYST:ERR?")[0].startswith("-222,")
    k.process(":TRIG:COUN 2000;:ARM:COUN 2")  # 4000 > 2500 readings
    assert k.process(":SYST:ERR?")[0].startswith("-221,")
    k.process("*RST")
    assert k.process(":OUTP?;:SOUR:FUNC?;:SOUR:VOLT?;:SENS:CURR:PROT?") == [
        "0;VOLT;0.000000000E+00;1.050000000E-04"]
