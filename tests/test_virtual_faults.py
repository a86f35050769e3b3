"""Fault rules of ``hwloop virtual-board``: per command, with a count, a rate and a start.

The serial board's rules are checked at the protocol level (exact reply frames from
:meth:`VirtualBoard.respond`) and over a socket with hwloop's serial driver; the SCPI
bench's rules over TCP with raw pyvisa; the command line through ``hwloop.cli.main``.
"""

from __future__ import annotations

import io
import socket
import time
from contextlib import redirect_stderr
from typing import Any

import numpy as np
import pytest
import pyvisa

from hwloop.board_protocol import (
    BoardError,
    Command,
    ErrorCode,
    Frame,
    GetState,
    Identify,
    Pulse,
    PulseStatus,
    ReadNodes,
    SetInputs,
    StateReply,
    decode_frame,
    decode_reply,
    encode_request,
)
from hwloop.cli import main as hwloop_main
from hwloop.device import SampleFlag
from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_board import FaultConfig, VirtualBoard
from simulated_device.virtual_faults import SCPI_KINDS, SERIAL_KINDS, FaultRule, parse_fault
from simulated_device.virtual_scpi import VirtualScpiBench

OPTS = {"arch": "8-4-2", "preset": "reram"}


def _frame(seq: int, req: Any) -> Frame:
    return decode_frame(encode_request(seq, req))


SET = SetInputs(np.array([0]), np.array([0.5]))
READ = ReadNodes(np.array([0, 1]), 2)


def _answer(vb: VirtualBoard, seq: int, req: Any) -> Any:
    """The decoded reply (or the BoardError / None for no reply) to one request."""
    sends = vb.respond(_frame(seq, req))
    if not sends:
        return None
    data = sends[-1][1]
    try:
        return decode_reply(decode_frame(data), req.COMMAND)
    except BoardError as exc:
        return exc


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("busy", ErrorCode.BUSY),
        ("out-of-range", ErrorCode.OUT_OF_RANGE),
        ("bad-argument", ErrorCode.BAD_ARGUMENT),
        ("unknown-command", ErrorCode.UNKNOWN_COMMAND),
        ("internal", ErrorCode.INTERNAL),
        ("crc-request", ErrorCode.BAD_CRC),
        ("length-request", ErrorCode.BAD_LENGTH),
        ("compliance", ErrorCode.COMPLIANCE_TRIP),
    ],
)
def test_every_error_reply_of_the_protocol_on_a_chosen_command(kind: str, code: int) -> None:
    vb = VirtualBoard(OPTS, seed=1, faults=FaultConfig(
        rules=(FaultRule(kind, "SET_INPUTS", count=1),)))
    try:
        assert isinstance(_answer(vb, 1, GetState()), StateReply)  # other commands untouched
        r = _answer(vb, 2, SET)
        assert isinstance(r, BoardError) and r.error_code == code
        assert not vb.outputs_on and vb.is_safe  # nothing was applied
        # count=1: the next SET_INPUTS is executed
        assert not isinstance(_answer(vb, 3, SET), BoardError)
        assert vb.outputs_on
    finally:
        vb.close()


def test_count_rate_and_start_after_n_exchanges() -> None:
    rule = FaultRule("timeout", "READ_NODES", count=None, rate=0.3, after=10)
    vb = VirtualBoard(OPTS, seed=1, faults=FaultConfig(rules=(rule,)))
    try:
        _answer(vb, 1, SET)
        lost = [_answer(vb, k, READ) is None for k in range(2, 402)]
        assert not any(lost[:9])  # the first 10 exchanges (SET + 9 reads) pass
        frac = sum(lost[9:]) / len(lost[9:])
        assert 0.22 < frac < 0.38  # rate 0.3 (seeded draw; binomial sd ~0.023)
        assert rule.fired == sum(lost)
        # a count bounds it
        vb.set_faults(FaultConfig(rules=(FaultRule("timeout", "*", count=3),)))
        gone = [_answer(vb, k, Identify()) is None for k in range(500, 510)]
        assert gone == [True] * 3 + [False] * 7
    finally:
        vb.close()


def test_reply_corruptions_and_reading_faults() -> None:
    rules = (
        FaultRule("garble", "GET_STATE"),
        FaultRule("crc-reply", "IDENTIFY"),
        FaultRule("truncate", "READ_NODES"),
        FaultRule("nan", "READ_NODES", after=3),
        FaultRule("overrange", "READ_NODES", after=4),
        FaultRule("compliance", "READ_NODES", after=5),
        FaultRule("delay", "SAFE_STATE", value=0.25),
    )
    vb = VirtualBoard(OPTS, seed=1, faults=FaultConfig(rules=rules))
    try:
        for req in (GetState(), Identify(), READ):
            data = vb.respond(_frame(7, req))[-1][1]
            with pytest.raises(Exception, match=r"CRC|truncated|declares"):
                decode_frame(data)
        nan = _answer(vb, 8, READ)
        assert np.all(np.isnan(nan.mean_v))
        over = _answer(vb, 9, READ)
        assert np.all(over.flags & SampleFlag.OVERRANGE)
        comp = _answer(vb, 10, READ)
        assert np.all(comp.flags & SampleFlag.COMPLIANCE)
        assert np.all(np.isfinite(_answer(vb, 11, READ).mean_v))  # each count=1
        from hwloop.board_protocol import SafeState

        assert vb.respond(_frame(12, SafeState()))[0][0] == pytest.approx(0.25)
    finally:
        vb.close()


def test_pulse_trip_reboot_and_stop() -> None:
    rules = (
        FaultRule("compliance", "PULSE", value=3),
        FaultRule("reboot", "GET_STATE"),
        FaultRule("stop", "IDENTIFY", after=20),
    )
    vb = VirtualBoard(OPTS, seed=1, faults=FaultConfig(rules=rules))
    try:
        p = _answer(vb, 1, Pulse(np.array([0, 1]), np.array([2, 5]), 1.0, 1e-4))
        assert p.aborted and p.applied.tolist() == [2, 1]
        assert p.status.tolist() == [PulseStatus.OK, PulseStatus.COMPLIANCE]
        _answer(vb, 2, SET)
        assert vb.outputs_on
        assert _answer(vb, 3, GetState()) is None and vb.is_safe and vb.reboots == 1
        for k in range(4, 21):
            assert _answer(vb, k, Identify()) is not None
        assert _answer(vb, 21, Identify()) is None
        assert _answer(vb, 22, GetState()) is None  # never answers again
    finally:
        vb.close()


def test_dropped_link_and_host_watchdog_over_a_socket() -> None:
    vb = VirtualBoard(OPTS, seed=1, faults=FaultConfig(
        rules=(FaultRule("disconnect", "READ_NODES"),), watchdog_s=0.3))
    url = vb.start_tcp()
    host, port = url.removeprefix("socket://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5.0) as s:
            s.sendall(encode_request(1, SET))
            assert s.recv(4096)  # the ACK
            assert vb.outputs_on
            s.sendall(encode_request(2, READ))
            assert s.recv(4096) == b""  # the board closed the link
        deadline = time.monotonic() + 5.0
        while not vb.is_safe and time.monotonic() < deadline:
            time.sleep(0.01)
        assert vb.is_safe and vb.disconnects == 1
        # the watchdog: outputs on, then silence longer than watchdog_s -> safe state
        with socket.create_connection((host, int(port)), timeout=5.0) as s:
            s.sendall(encode_request(3, SET))
            assert s.recv(4096)
            t0 = time.monotonic()
            while vb.watchdog_trips == 0 and time.monotonic() - t0 < 5.0:
                time.sleep(0.01)
            assert vb.watchdog_trips == 1 and vb.is_safe
            assert time.monotonic() - t0 >= 0.25
            assert vb.disconnects == 1  # the link stayed up: the watchdog did it
    finally:
        vb.close()


def test_watchdog_keeps_quiet_while_frames_arrive() -> None:
    vb = VirtualBoard(OPTS, seed=1, faults=FaultConfig(watchdog_s=0.3))
    url = vb.start_tcp()
    host, port = url.removeprefix("socket://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5.0) as s:
            s.sendall(encode_request(1, SET))
            s.recv(4096)
            for k in range(8):
                time.sleep(0.1)
                s.sendall(encode_request(2 + k, GetState()))
                s.recv(4096)
            assert vb.watchdog_trips == 0 and vb.outputs_on
    finally:
        vb.close()


# ---------------------------------------------------------------------- SCPI bench
@pytest.fixture
def scpi() -> Any:
    net = BenchNetwork({"arch": "4-3-2", "preset": "reram"}, np.random.default_rng(0))
    with VirtualScpiBench(net) as bench:
        rm = pyvisa.ResourceManager("@py")
        try:
            yield bench, rm
        finally:
            rm.close()


def _open(rm: Any, bench: VirtualScpiBench, name: str) -> Any:
    return rm.open_resource(bench.resources[name], timeout=800, read_termination="\n",
                            write_termination="\n")


def test_scpi_rules_per_command(scpi: Any) -> None:
    bench, rm = scpi
    bench.faults("daq").rules += [
        FaultRule("timeout", "TRAC:ACT?", count=1),
        FaultRule("garble", "*IDN?", count=1, after=2),
        FaultRule("error", "SENS:VOLT:NPLC", value=-222),
        FaultRule("nan", "READ?", count=1),
    ]
    d = _open(rm, bench, "daq")
    try:
        with pytest.raises(pyvisa.errors.VisaIOError):
            d.query(":TRAC:ACT?")
        assert d.query(":TRAC:ACT?") == "0"  # count=1
        assert d.query("*IDN?").startswith("?#GARBLED#")  # the third exchange
        assert "DAQ6510" in d.query("*IDN?")
        d.write(":SENS:VOLT:NPLC 1")
        assert d.query("SYST:ERR?").startswith("-222,")
        d.write("ROUT:CLOS (@101)")
        assert float(d.query(":READ?")) == pytest.approx(9.91e37)
        assert abs(float(d.query(":READ?"))) < 20
    finally:
        d.close()


def test_scpi_stuck_relay_compliance_reboot_stop_disconnect(scpi: Any) -> None:
    bench, rm = scpi
    bench.faults("matrix").rules.append(FaultRule("stuck", "close", count=1))
    bench.faults("smu").rules += [FaultRule("compliance", "measure", count=1),
                                  FaultRule("reboot", "REBOOT-ME", count=1)]
    bench.faults("xsmu").rules.append(FaultRule("disconnect", "DROP-ME"))
    bench.faults("k2400").rules.append(FaultRule("stop", "*", after=2))
    m, s, x, k = (_open(rm, bench, n) for n in ("matrix", "smu", "xsmu", "k2400"))
    try:
        m.write("channel.close('1A01')")
        m.write("channel.open('allslots')")
        assert m.query("print(channel.getclose('allslots'))") == "1A01"  # stuck closed
        s.write("smua.source.levelv = 0.3 smua.source.output = 1")
        assert s.query("print(smua.measure.i(), smua.source.compliance)").endswith("true")
        assert s.query("print(smua.source.compliance)") == "false"
        assert s.query("*ESR?") == "128"  # PON: powered on since the last read
        assert s.query("*ESR?") == "0"  # the read cleared it
        s.write("smua.source.levelv = 0.4 -- REBOOT-ME")
        assert s.query("print(smua.source.levelv, smua.source.output)") == \
            "0.00000e+00\t0.00000e+00"  # the reboot reset every setting
        assert s.query("*ESR?") == "128"  # and set PON (bit 7) as a power-on does
        x.write("print(1) -- DROP-ME")
        with pytest.raises(pyvisa.errors.VisaIOError):
            x.query("*IDN?")  # the link is gone
        assert "2400" in k.query("*IDN?")
        assert "2400" in k.query("*IDN?")
        with pytest.raises(pyvisa.errors.VisaIOError):
            k.query("*IDN?")  # stopped answering
        assert bench.faults("k2400").dead
    finally:
        for r in (m, s, x, k):
            r.close()


# ---------------------------------------------------------------------- command line
def test_fault_specs_parse_and_bad_ones_give_one_line() -> None:
    rule, inst = parse_fault("garble,command=READ_NODES,count=3,rate=0.5,after=7",
                             SERIAL_KINDS, seed=0)
    assert (rule.kind, rule.match, rule.count, rule.rate, rule.after) == (
        "garble", "READ_NODES", 3, 0.5, 7)
    assert inst is None
    rule, inst = parse_fault("stuck,instrument=matrix,count=inf", SCPI_KINDS, seed=0)
    assert rule.count is None and inst == "matrix"
    for bad, msg in [
        ("bogus", "unknown kind 'bogus'"),
        ("garble,rate=2", "rate must lie in"),
        ("garble,count", "is not key=value"),
        ("delay", "delay needs value="),
        ("garble,colour=red", "unknown key 'colour'"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_fault(bad, SERIAL_KINDS, seed=0)


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--fault", "bogus"], "unknown kind 'bogus'"),
        (["--fault", "garble,command=READ"], "unknown command 'READ'"),
        (["--kind", "scpi", "--arch", "4-3-2", "--fault", "stuck,instrument=dmm"],
         "unknown instrument 'dmm'"),
        (["--kind", "scpi", "--arch", "4-3-2", "--watchdog-s", "1"], "--watchdog-s is for"),
        (["--watchdog-s", "-1"], "must be > 0"),
    ],
)
def test_cli_rejects_bad_fault_options_with_one_line(argv: list[str], msg: str) -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        code = hwloop_main(["virtual-board", "--arch", "4-3-2", *argv])
    assert code == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in err.getvalue()


def test_cli_help_lists_every_fault_kind(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        hwloop_main(["virtual-board", "--help"])
    out = capsys.readouterr().out
    for kind in [*SERIAL_KINDS, *SCPI_KINDS]:
        assert f"  {kind} " in out
    assert Command.READ_NODES.name in out


def test_hwloop_smu_drivers_detect_a_restart_on_a_write(scpi: Any) -> None:
    """A reboot during a level write (the write lost, settings reset) raises at the check.

    The 2600B driver reads ``status.standard.event`` and the 2400 driver ``*ESR?`` with
    its confirmation; the power-on bit (128) set again means a restart.
    """
    from instruments.keithley2400 import KIND as K2400_KIND
    from instruments.keithley2400 import Keithley2400, _arm, _opc
    from instruments.keithley2600 import Keithley2600
    from instruments.visa_transport import InstrumentRestartedError, VisaTransport

    assert K2400_KIND.name == "keithley2400"
    bench, rm = scpi
    bench.faults("smu").rules.append(FaultRule("reboot", "levelv = 0.25", count=1))
    bench.faults("k2400").rules.append(FaultRule("reboot", "VOLT:LEV 0.25", count=1))

    def transport(name: str) -> VisaTransport:
        return VisaTransport.open(bench.resources[name], resource_manager=rm, name=name,
                                  timeout_s=2.0, resync_timeout_s=0.5, backoff_s=0.01)

    s = Keithley2600(transport("smu"), ("smua", "smub"))
    k = _arm(Keithley2400(transport("k2400"), nplc=0.1))
    try:
        s.configure(current_limit_a=1e-3, nplc=0.1)  # reads the power-on PON away first
        s.set_voltages(np.array([0]), np.array([0.2]))
        s.check_errors()  # no restart yet
        s.set_voltages(np.array([0]), np.array([0.25]))  # lost in the reboot
        with pytest.raises(InstrumentRestartedError, match="restarted"):
            s.check_errors()
        s.check_errors()  # reported once: the register read cleared PON
        k.set_voltages(np.array([0]), np.array([0.2]))
        _opc(k)
        k.set_voltages(np.array([0]), np.array([0.25]))
        with pytest.raises(InstrumentRestartedError, match=r"power-on bit of \*ESR\?"):
            _opc(k)
        _opc(k)
    finally:
        s.transport.close()
        k.transport.close()
