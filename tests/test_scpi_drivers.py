"""Exact-string tests of the SCPI/TSP drivers, the VISA transport's recovery, pyvisa-sim.

In PyMeasure's style: a fake resource checks every message the driver writes
against the expected list and serves the paired canned reply; at the end every pair
must be consumed. pyvisa-sim (tests/sim/*.yaml) runs the dialogues it can express.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvisa
from pyvisa import constants
from pyvisa.errors import VisaIOError

from hwloop.device import SampleFlag
from hwloop.errors import ConfigError, LimitError
from instruments.daq6510 import DAQ6510
from instruments.keithley707b import Keithley707B, PulsingSmu, SwitchedCrosspoints, parse_closed
from instruments.keithley2400 import Keithley2400
from instruments.keithley2600 import Keithley2600
from instruments.visa_transport import (
    InstrumentError,
    InstrumentIdentityError,
    InstrumentReplyError,
    InstrumentRestartedError,
    InstrumentStateError,
    InstrumentTimeoutError,
    InstrumentWriteError,
    VisaTransport,
    planned_timeout_s,
)

SIM = Path(__file__).parent / "sim"
TMO = VisaIOError(constants.StatusCode.error_timeout)

IDN_2400 = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,1234567,C30   Mar 17 2006 09:29:29/A02  /K/J"
IDN_2602 = "Keithley Instruments Inc., Model 2602B, 4390000, 3.2.2"
IDN_DAQ = "KEITHLEY INSTRUMENTS,MODEL DAQ6510,04412345,1.7.12b"
IDN_707 = "Keithley Instruments Inc., Model 707B, 1234567, 1.6.1"

Reply = str | Exception | list[str | Exception] | None


class FakeResource:
    """Matches each write against the script and serves the paired replies."""

    def __init__(self, comms: Sequence[tuple[str, Reply]]) -> None:
        self.comms = list(comms)
        self.pos = 0
        self.pending: list[str | Exception] = []
        self.writes: list[str] = []
        self.clears = 0
        self.timeout: float | None = 2000
        self.closed = False

    def write(self, message: str) -> int:
        self.writes.append(message)
        assert self.pos < len(self.comms), f"unexpected write {message!r}"
        expected, reply = self.comms[self.pos]
        assert message == expected, f"write #{self.pos}: {message!r} != expected {expected!r}"
        self.pos += 1
        if isinstance(reply, list):
            self.pending += reply
        elif reply is not None:
            self.pending.append(reply)
        return len(message)

    def read(self) -> str:
        if not self.pending:
            raise TMO
        r = self.pending.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    def clear(self) -> None:
        self.clears += 1

    def close(self) -> None:
        self.closed = True

    def done(self) -> None:
        assert self.pos == len(self.comms), f"unused: {self.comms[self.pos :]}"
        assert not self.pending, f"unread replies: {self.pending}"


def fake(
    comms: Sequence[tuple[str, Reply]], idn: str = IDN_2602, **kw: Any
) -> tuple[VisaTransport, FakeResource, list[tuple[str, str]]]:
    res = FakeResource([("*IDN?", idn), *comms])
    events: list[tuple[str, str]] = []
    kw.setdefault("backoff_s", 0.0)
    t = VisaTransport(res, name="inst", on_event=lambda k, m: events.append((k, m)), **kw)
    return t, res, events


# ====================================================================== transport
def test_query_timeout_is_resynchronised_and_retried() -> None:
    t, res, events = fake([(":TRAC:DATA?", TMO), ("*IDN?", IDN_2602), (":TRAC:DATA?", "1,2")])
    assert t.query(":TRAC:DATA?") == "1,2"
    res.done()
    assert res.clears == 1
    kinds = [k for k, _ in events]
    assert "retry" in kinds and "warning" in kinds
    assert any("retry 1 of 3" in m for k, m in events if k == "retry")


def test_stale_late_reply_is_discarded_during_resync() -> None:
    t, res, events = fake([("print(x)", TMO), ("*IDN?", ["4.2e+00", IDN_2602]), ("print(x)", "5")])
    assert t.query("print(x)", idempotent=True) == "5"
    res.done()
    assert any("stale" in m for _, m in events)


def test_garbled_reply_is_retried() -> None:
    t, res, events = fake([(":READ?", "?#GARBLED"), ("*IDN?", IDN_2602), (":READ?", "1.5")])
    assert t.query(":READ?", parse=float) == 1.5
    res.done()
    assert [k for k, _ in events].count("retry") == 1


def test_retries_are_bounded() -> None:
    comms: list[tuple[str, Reply]] = []
    for _ in range(3):
        comms += [("A?", TMO), ("*IDN?", IDN_2602)]
    t, res, events = fake(comms, max_retries=2)
    with pytest.raises(InstrumentTimeoutError, match=r"inst: timeout on 'A\?' after 3 tries"):
        t.query("A?")
    res.done()
    assert [k for k, _ in events].count("retry") == 2


def test_failed_write_is_not_retried() -> None:
    class WriteFails(FakeResource):
        def write(self, message: str) -> int:
            if message.startswith("smua.source.levelv"):
                self.writes.append(message)
                raise TMO
            return super().write(message)

    res = WriteFails([("*IDN?", IDN_2602), ("*IDN?", IDN_2602)])
    t = VisaTransport(res, name="smu1")
    with pytest.raises(InstrumentWriteError, match=r"not retried.*re-read the instrument state"):
        t.write("smua.source.levelv = 1")
    assert res.writes.count("smua.source.levelv = 1") == 1
    res.done()


def test_pulse_query_that_times_out_is_not_retried() -> None:
    chunk = "smua.source.levelv = 1; print(1)"
    t, res, events = fake([(chunk, TMO), ("*IDN?", IDN_2602)])
    with pytest.raises(InstrumentWriteError, match="sources or pulses"):
        t.query(chunk)  # a TSP chunk: not idempotent by default
    res.done()
    assert "retry" not in [k for k, _ in events]


@pytest.mark.parametrize(
    ("idn_reply", "error", "match"),
    [
        (IDN_2400, InstrumentIdentityError, "another instrument is on this address"),
        (TMO, InstrumentTimeoutError, "stopped answering"),  # a dead instrument
    ],
)
def test_resync_after_a_lost_reply_is_an_error_without_the_same_instrument(
    idn_reply: Reply, error: type[Exception], match: str
) -> None:
    t, res, _ = fake([("A?", TMO), ("*IDN?", idn_reply)])
    with pytest.raises(error, match=match):
        t.query("A?")
    res.done()


def test_identity_checked_at_connect_and_exchanges_logged() -> None:
    res = FakeResource([("*IDN?", IDN_2400)])
    with pytest.raises(InstrumentIdentityError, match="expected"):
        VisaTransport(res, name="x", expected_identity=IDN_2602)
    log: list[tuple[str, str, float]] = []
    res = FakeResource([("*IDN?", IDN_2400), (":OUTP OFF", None)])
    t = VisaTransport(res, name="x", on_exchange=lambda d, s, ts: log.append((d, s, ts)))
    t.write(":OUTP OFF", timeout_s=0.25)
    assert [(d, s) for d, s, _ in log] == [
        ("write", "*IDN?"),
        ("read", IDN_2400),
        ("write", ":OUTP OFF"),
    ]
    assert res.timeout == 250 and log[0][2] <= log[2][2]
    t.close()
    t.close()
    assert res.closed


def test_planned_timeout() -> None:
    assert planned_timeout_s(100, 1.0, line_frequency_hz=50.0, floor_s=0.0) == pytest.approx(
        2 * 100 * (0.02 + 1e-3)
    )
    assert planned_timeout_s(1, 0.01) == 1.0


# ====================================================================== Keithley 2400
def k2400(comms: Sequence[tuple[str, Reply]]) -> tuple[Keithley2400, FakeResource]:
    t, res, _ = fake(comms, idn=IDN_2400)
    return Keithley2400(t, nplc=0.1), res


def test_2400_sources_and_safe_state() -> None:
    d, res = k2400(
        [
            (":SENS:CURR:PROT 0.001;:SENS:VOLT:PROT 21;:SENS:CURR:NPLC 0.1", None),
            (":SOUR:FUNC VOLT;:SOUR:VOLT:MODE FIX;:SOUR:VOLT:LEV 1.25;:OUTP ON", None),
            (":SOUR:FUNC CURR;:SOUR:CURR:MODE FIX;:SOUR:CURR:LEV -1e-06;:OUTP ON", None),
            (":SOUR:CLE:AUTO OFF;:SOUR:VOLT:LEV 0;:SOUR:CURR:LEV 0;:OUTP OFF", None),
            (
                ":OUTP?;:SOUR:FUNC?;:SOUR:VOLT:LEV?;:SOUR:CURR:LEV?",
                "0;VOLT;+0.000000E+00;+0.000000E+00",
            ),
            (
                ":OUTP?;:SOUR:FUNC?;:SOUR:VOLT:LEV?;:SOUR:CURR:LEV?",
                "1;CURR;+1.000000E+00;-1.000000E-06",
            ),
        ]
    )
    d.configure(current_limit_a=1e-3, voltage_limit_v=21, nplc=0.1)
    d.set_voltages(np.array([0]), np.array([1.25]))
    d.set_currents(np.array([0]), np.array([-1e-6]))
    d.safe_state()
    assert not d.is_energised()
    assert d.is_energised()
    res.done()


def test_2400_limits_reject_before_writing() -> None:
    d, res = k2400([])
    with pytest.raises(LimitError, match=r"voltage level 211 V is outside .*\[-210, 210\] V"):
        d.set_voltages(np.array([0]), np.array([211.0]))
    with pytest.raises(LimitError, match="current level"):
        d.set_currents(np.array([0]), np.array([1.1]))
    with pytest.raises(LimitError, match="samples"):
        d.read_voltages(np.array([0]), 2501)
    with pytest.raises(ConfigError, match="do not exist"):
        d.set_voltages(np.array([1]), np.array([1.0]))
    res.done()


def test_2400_buffered_read_flags_overrange_and_compliance() -> None:
    state = (
        ":OUTP?;:SOUR:FUNC?;:SOUR:VOLT:LEV?;:SOUR:CURR:LEV?",
        "1;CURR;+0.000000E+00;+0.000000E+00",
    )
    setup = (
        ':SENS:FUNC "VOLT";:FORM:ELEM VOLT,TIME,STAT;:TRIG:COUN 3;:TRAC:CLE;:TRAC:POIN 3;'
        ":TRAC:FEED SENS;:TRAC:FEED:CONT NEXT;:INIT"
    )
    data = "5.0E-01,0,16384,9.9E+37,0.021,16385,4.9E-01,0.042,16392"
    d, res = k2400([state, (setup, None), ("*OPC?", "1"), (":TRAC:DATA?", data)])
    v, f, ts = d.read_voltages(np.array([0]), 3)
    res.done()
    assert v[0, 0] == 0.5 and np.isnan(v[1, 0]) and v[2, 0] == 0.49
    assert f[:, 0].tolist() == [0, SampleFlag.OVERRANGE, SampleFlag.COMPLIANCE]
    assert np.allclose(np.diff(ts), 0.021)


def test_2400_read_refused_when_output_off() -> None:
    state = (":OUTP?;:SOUR:FUNC?;:SOUR:VOLT:LEV?;:SOUR:CURR:LEV?", "0;VOLT;+0.0E+00;+0.0E+00")
    d, res = k2400([state])
    with pytest.raises(InstrumentStateError, match="output is off"):
        d.read_voltages(np.array([0]), 1)
    res.done()


def k2400_setup(level: str, delay: str, elements: str, count: int) -> tuple[str, None]:
    """The 2400's one-message set-up of a pulse train or a current read (no reply)."""
    return (
        f":SOUR:FUNC VOLT;:SOUR:VOLT:MODE FIX;:SOUR:VOLT:LEV {level};:SOUR:DEL {delay};"
        f':SOUR:CLE:AUTO ON;:SENS:FUNC "CURR";:FORM:ELEM {elements};:TRIG:COUN {count}',
        None,
    )


def test_2400_pulses_stop_counting_at_compliance_and_read_current() -> None:
    d, res = k2400(
        [
            k2400_setup("-1.5", "0.002", "CURR,STAT", 4),
            (":READ?", "1E-4,16384,1E-4,16384,1E-3,16392,1E-3,16392"),
            (":SOUR:CLE:AUTO OFF;:SOUR:VOLT:LEV 0;:SOUR:DEL 0;:TRIG:COUN 1", None),
            k2400_setup("0.1", "0", "CURR", 1),
            (":READ?", "2.000000E-06"),
            (":SOUR:CLE:AUTO OFF;:SOUR:VOLT:LEV 0", None),
        ]
    )
    assert isinstance(d, PulsingSmu)
    assert d.pulse_voltage(-1.5, 2e-3, 4) == 2
    assert d.measure_current_at(0.1) == 2e-6
    res.done()


def test_2400_pulse_read_timeout_is_not_retried_and_source_is_reset() -> None:
    d, res = k2400(
        [
            k2400_setup("1", "0.001", "CURR,STAT", 1),
            (":READ?", TMO),
            ("*IDN?", IDN_2400),
            (":SOUR:CLE:AUTO OFF;:SOUR:VOLT:LEV 0;:SOUR:DEL 0;:TRIG:COUN 1", None),
        ]
    )
    with pytest.raises(InstrumentWriteError):
        d.pulse_voltage(1.0, 1e-3, 1)
    res.done()


# ====================================================================== Keithley 2600B
def k2600(
    comms: Sequence[tuple[str, Reply]], channels: Sequence[str] = ("smua", "smub", "node[2].smua")
) -> tuple[Keithley2600, FakeResource]:
    t, res, _ = fake(comms)
    return Keithley2600(t, channels, nplc=0.1), res


def test_2600_sources_safe_state_and_energised() -> None:
    d, res = k2600(
        [
            (
                "smua.source.func = smua.OUTPUT_DCVOLTS; smua.source.levelv = 0.5;"
                " smua.source.output = smua.OUTPUT_ON; smub.source.func = smub.OUTPUT_DCVOLTS;"
                " smub.source.levelv = -0.25; smub.source.output = smub.OUTPUT_ON",
                None,
            ),
            (
                "node[2].smua.source.func = node[2].smua.OUTPUT_DCAMPS;"
                " node[2].smua.source.leveli = 1e-06;"
                " node[2].smua.source.output = node[2].smua.OUTPUT_ON",
                None,
            ),
            (
                "smua.source.levelv = 0; smua.source.leveli = 0;"
                " smua.source.output = smua.OUTPUT_OFF; smub.source.levelv = 0;"
                " smub.source.leveli = 0; smub.source.output = smub.OUTPUT_OFF;"
                " node[2].smua.source.levelv = 0; node[2].smua.source.leveli = 0;"
                " node[2].smua.source.output = node[2].smua.OUTPUT_OFF",
                None,
            ),
            (
                "print(smua.source.output, smua.source.func, smua.source.levelv,"
                " smua.source.leveli, smub.source.output, smub.source.func, smub.source.levelv,"
                " smub.source.leveli, node[2].smua.source.output, node[2].smua.source.func,"
                " node[2].smua.source.levelv, node[2].smua.source.leveli)",
                # smua off; smub on at 0 V (sourcing volts); node 2 on at 1 uA (amps)
                "0\t1\t5e-01\t0\t1\t1\t0\t3e-06\t1\t0\t0\t1e-06",
            ),
        ]
    )
    d.set_voltages(np.array([0, 1]), np.array([0.5, -0.25]))
    d.set_currents(np.array([2]), np.array([1e-6]))
    d.safe_state()
    assert d.is_energised()  # node[2].smua sources 1 uA
    res.done()


def test_2600_ranges_and_channel_names() -> None:
    d, res = k2600([])
    with pytest.raises(LimitError, match=r"voltage level 40.5 V .*\[-40, 40\] V"):
        d.set_voltages(np.array([0]), np.array([40.5]))
    with pytest.raises(LimitError, match="current compliance"):
        d.configure(current_limit_a=5.0)
    with pytest.raises(LimitError, match="NPLC"):
        d.configure(nplc=30)
    res.done()
    t, _, _ = fake([])
    with pytest.raises(ConfigError, match="not a 2600B SMU channel"):
        Keithley2600(t, ("smuc",))
    t, _, _ = fake([], idn="Keithley Instruments Inc., Model 2636B, 1, 3.0")
    assert Keithley2600(t, ("smua",)).ranges.v_max_v == 200.0


def test_2600_configure_checks_errors() -> None:
    d, res = k2600(
        [
            ("print(status.standard.event)", "1.28000e+02"),  # PON from power-on: armed
            ("smua.source.limiti = 0.01; smua.measure.nplc = 0.1", None),
            ("print(errorqueue.count, status.standard.event)", "1.00000e+00\t0.00000e+00"),
            ("print(errorqueue.next())", "-2.85000e+02\tTSP Syntax error\t2.00000e+00\t1"),
        ],
        channels=("smua",),
    )
    with pytest.raises(InstrumentError, match="TSP Syntax error"):
        d.configure(current_limit_a=0.01, nplc=0.1)
    res.done()


def test_2600_restart_is_detected_by_the_power_on_bit() -> None:
    """A set PON bit (bit 7 = 128 of ``status.standard.event``) after configure: restarted."""
    d, res = k2600(
        [
            ("print(status.standard.event)", "1.28000e+02"),
            ("smua.source.limiti = 0.01", None),
            ("print(errorqueue.count, status.standard.event)", "0.00000e+00\t1.00000e+00"),
            ("print(errorqueue.count, status.standard.event)", "0.00000e+00\t1.29000e+02"),
        ],
        channels=("smua",),
    )
    d.configure(current_limit_a=0.01)  # OPC (bit 0) alone is no restart
    with pytest.raises(InstrumentRestartedError, match=r"restarted \(power-on bit"):
        d.check_errors()
    res.done()


def test_2600_buffered_read_with_compliance_and_overflow() -> None:
    d, res = k2600(
        [
            (
                "smub.measure.count = 2; smub.nvbuffer1.clear();"
                " smub.nvbuffer1.collecttimestamps = 1; smub.measure.v(smub.nvbuffer1);"
                " smua.measure.count = 2; smua.nvbuffer1.clear();"
                " smua.nvbuffer1.collecttimestamps = 1; smua.measure.v(smua.nvbuffer1)",
                None,
            ),
            (
                "printbuffer(1, 2, smub.nvbuffer1.readings, smub.nvbuffer1.timestamps)",
                "1.0e-01, 5.0e-03, 9.91e+37, 7.0e-03",
            ),
            (
                "printbuffer(1, 2, smua.nvbuffer1.readings, smua.nvbuffer1.timestamps)",
                "2.0e-01, 9.0e-03, 2.1e-01, 1.1e-02",
            ),
            ("print(smub.source.compliance, smua.source.compliance)", "false\ttrue"),
        ]
    )
    v, f, ts = d.read_voltages(np.array([1, 0]), 2)
    res.done()
    assert v[0].tolist() == [0.1, 0.2] and np.isnan(v[1, 0])
    assert f[1, 0] == SampleFlag.OVERRANGE | 0 and f[0, 1] == SampleFlag.COMPLIANCE
    assert ts[1] - ts[0] == pytest.approx(2e-3)


def test_2600_pulse_and_conductance_chunks() -> None:
    pulse = (
        "smub.source.func = smub.OUTPUT_DCVOLTS; smub.source.levelv = 0;"
        " smub.source.output = smub.OUTPUT_ON; hwl_n = 0; for hwl_k = 1, 5 do"
        " smub.source.levelv = -2; delay(0.0001); hwl_c = smub.source.compliance;"
        " smub.source.levelv = 0; delay(0.0001); if hwl_c then break end; hwl_n = hwl_k end;"
        " smub.source.output = smub.OUTPUT_OFF; print(hwl_n)"
    )
    read = (
        "smub.source.func = smub.OUTPUT_DCVOLTS; smub.source.levelv = 0.2;"
        " smub.source.output = smub.OUTPUT_ON; hwl_i = smub.measure.i(); smub.source.levelv = 0;"
        " smub.source.output = smub.OUTPUT_OFF; print(hwl_i)"
    )
    d, res = k2600([(pulse, "3.00000e+00"), (read, "4.00000e-06")])
    ch = d.channel(1)
    assert isinstance(ch, PulsingSmu)
    assert ch.pulse_voltage(-2.0, 1e-4, 5) == 3
    assert ch.measure_current_at(0.2) == 4e-6
    with pytest.raises(LimitError, match="pulse width"):
        ch.pulse_voltage(1.0, 1e-7, 1)
    res.done()


# ====================================================================== DAQ6510
def test_daq6510_scan_order_overflow_and_caching() -> None:
    t, res, _ = fake(
        [
            (
                ':SENS:FUNC "VOLT:DC", (@101,103);:SENS:VOLT:NPLC 0.5, (@101,103);'
                ":SENS:VOLT:RANG 10, (@101,103);:ROUT:SCAN:CRE (@101,103)",
                None,
            ),
            (':ROUT:SCAN:COUN:SCAN 2;:TRAC:CLE "defbuffer1"', None),
            (":INIT;*OPC?", "1"),
            (':TRAC:DATA? 1, 4, "defbuffer1", READ, REL', "1.0,0,9.9E37,0.011,1.5,0.1,2.5,0.111"),
            (':ROUT:SCAN:COUN:SCAN 1;:TRAC:CLE "defbuffer1"', None),
            (":INIT;*OPC?", "1"),
            (':TRAC:DATA? 1, 2, "defbuffer1", READ, REL', "1.0,0,2.0,0.01"),
        ],
        idn=IDN_DAQ,
    )
    d = DAQ6510(t, [101, 102, 103], nplc=0.5)
    v, f, ts = d.read_voltages(np.array([2, 0]), 2)  # channels 103, 101
    assert v[0, 1] == 1.0 and np.isnan(v[0, 0]) and v[1].tolist() == [2.5, 1.5]
    assert f[0].tolist() == [SampleFlag.OVERRANGE, 0] and not f[1].any()
    assert ts[1] - ts[0] == pytest.approx(0.1)
    v, _, _ = d.read_voltages(np.array([0, 2]), 1)  # same scan list: not configured again
    assert v.tolist() == [[1.0, 2.0]]
    res.done()


def test_daq6510_checks() -> None:
    t, res, _ = fake([], idn=IDN_DAQ)
    with pytest.raises(ConfigError, match="not voltage channels"):
        DAQ6510(t, [101, 150])
    with pytest.raises(LimitError, match="NPLC"):
        DAQ6510(t, [101], nplc=20)
    d = DAQ6510(t, [101, 102])
    with pytest.raises(LimitError, match="readings per call"):
        d.read_voltages(np.array([0, 1]), 60_000)
    assert not d.is_energised()
    res.done()


# ====================================================================== 707B
GETCLOSE = 'print(channel.getclose("allslots"))'


def test_707b_route_guard_refuses_a_second_route() -> None:
    t, res, _ = fake([(GETCLOSE, "1A01")], idn=IDN_707)
    m = Keithley707B(t)
    with pytest.raises(InstrumentStateError, match="1A01 are closed while route 1B02"):
        m.close_route(["1B02"])
    res.done()  # nothing was closed


def test_707b_close_route_verifies_read_back() -> None:
    t, res, _ = fake(
        [
            (GETCLOSE, "nil"),
            ('channel.close("1B02,1C12")', None),
            (GETCLOSE, "1B02;1C12"),
            (GETCLOSE, "nil"),
            ('channel.close("2H01")', None),
            (GETCLOSE, "nil"),
            ('channel.open("allslots")', None),
            (GETCLOSE, "nil"),  # the safe state's read-back
            (GETCLOSE, "nil"),
            ('channel.open("allslots")', None),
            (GETCLOSE, "1A03"),  # a relay stuck closed: the safe state is not confirmed
        ],
        idn=IDN_707,
    )
    m = Keithley707B(t)
    m.close_route(["1C12", "1B02"])
    with pytest.raises(InstrumentStateError, match="closed crosspoints are none"):
        m.close_route(["2H01"])
    m.safe_state()
    assert not m.is_energised()
    with pytest.raises(InstrumentStateError, match=r"crosspoint\(s\) 1A03 still closed"):
        m.safe_state()
    with pytest.raises(ConfigError, match="not a crosspoint"):
        m.close_channels(["1I01"])
    res.done()
    assert parse_closed("1B02;1A01") == ("1A01", "1B02") and parse_closed("nil") == ()
    with pytest.raises(ValueError):
        parse_closed("garbage")


class RecordingSmu:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail

    def pulse_voltage(self, amplitude_v: float, width_s: float, count: int) -> int:
        self.calls.append(("pulse", amplitude_v, width_s, count))
        if self.fail:
            raise InstrumentWriteError("smu: pulse failed")
        return count

    def measure_current_at(self, v_read: float) -> float:
        self.calls.append(("read", v_read))
        return 2e-6 * v_read

    def safe_state(self) -> None:
        self.calls.append(("safe",))


def test_switched_crosspoints_route_pulse_read_and_release() -> None:
    t, res, _ = fake(
        [
            (GETCLOSE, "nil"),
            ('channel.close("1A02")', None),
            (GETCLOSE, "1A02"),
            ('channel.open("1A02")', None),
            (GETCLOSE, "nil"),
            ('channel.close("1A01")', None),
            (GETCLOSE, "1A01"),
            ('channel.open("1A01")', None),
            (GETCLOSE, "nil"),  # a failing pulse still opens the route
            ('channel.close("1A02")', None),
            (GETCLOSE, "1A02"),
            ('channel.open("1A02")', None),
        ],
        idn=IDN_707,
    )
    smu = RecordingSmu()
    cp = SwitchedCrosspoints(Keithley707B(t), smu, [("1A01",), ("1A02",)])
    assert cp.pulse(1, 1.0, 1e-4, 3) == 3
    assert cp.read_conductance(np.array([0]), 0.1) == pytest.approx([2e-6])
    with pytest.raises(LimitError, match="pulse amplitude"):
        cp.pulse(0, 3.5, 1e-4, 1)
    assert cp.pulse(0, 1.0, 1e-4, 0) == 0
    smu.fail = True
    with pytest.raises(InstrumentWriteError):
        cp.pulse(1, -1.0, 1e-4, 1)
    res.done()
    assert smu.calls[:3] == [("safe",), ("pulse", 1.0, 1e-4, 3), ("safe",)]


# ====================================================================== pyvisa-sim
def sim(name: str, address: str) -> VisaTransport:
    rm = pyvisa.ResourceManager(f"{SIM / name}@sim")
    return VisaTransport.open(address, resource_manager=rm, name=name, timeout_s=0.5)


def test_sim_2400() -> None:
    d = Keithley2400(sim("keithley2400.yaml", "GPIB0::24::INSTR"), nplc=0.1)
    assert d.identity().startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2400")
    d.configure(current_limit_a=1e-3, nplc=0.1)
    assert d.is_energised()  # the sim starts on at 0.5 V
    d.set_voltages(np.array([0]), np.array([0.0]))
    assert not d.is_energised()
    d.set_voltages(np.array([0]), np.array([0.75]))
    v, f, _ = d.read_voltages(np.array([0]), 3)
    assert v[0, 0] == pytest.approx(0.500001) and np.isnan(v[1, 0])
    assert f[1, 0] == SampleFlag.OVERRANGE
    d.close()


def test_sim_2600() -> None:
    d = Keithley2600(sim("keithley2600.yaml", "TCPIP::192.168.0.26::5025::SOCKET"), ("smua",))
    assert d.model == "2602B"
    d.configure(current_limit_a=0.01, nplc=0.1)
    assert not d.is_energised()
    d.set_voltages(np.array([0]), np.array([0.25]))
    assert d.is_energised()
    v, f, _ = d.read_voltages(np.array([0]), 2)
    assert v[:, 0].tolist() == [0.25, 0.25001] and not f.any()
    d.close()


def test_sim_daq6510() -> None:
    t = sim("daq6510.yaml", "TCPIP::192.168.0.27::5025::SOCKET")
    d = DAQ6510(t, [101, 102], nplc=0.5)
    v, f, _ = d.read_voltages(np.array([0, 1]), 2)
    assert np.isnan(v[0, 1]) and v[1].tolist() == [1.001, 2.002]
    assert f[0, 1] == SampleFlag.OVERRANGE
    assert t.query(":SYST:ERR?") == '0,"No error"'
    d.close()


def test_sim_707b_guard() -> None:
    m = Keithley707B(sim("keithley707b.yaml", "TCPIP::192.168.0.28::5025::SOCKET"))
    assert not m.is_energised()
    m.close_route(["1B02"])
    assert m.closed_channels() == ("1B02",)
    with pytest.raises(InstrumentStateError, match="only one route may be closed"):
        m.close_route(["1C03"])
    # the pyvisa-sim definition cannot model channel.open (a property has one setter):
    # to it the relay stays closed, and the safe state's read-back says so
    with pytest.raises(InstrumentStateError, match=r"1B02 still closed after channel.open"):
        m.close()


def test_sim_unknown_command_is_a_reply_error() -> None:
    t = sim("keithley2600.yaml", "TCPIP::192.168.0.26::5025::SOCKET")
    t.max_retries = 1
    t.resync_timeout_s = 0.2
    with pytest.raises(InstrumentReplyError):
        t.query("print(smua.source.levelv)", parse=float, idempotent=True)
    t.close()
