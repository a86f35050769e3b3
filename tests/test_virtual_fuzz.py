"""Fuzz the virtual instruments: random and mutated commands never stop them answering.

For each instrument, thousands of commands (seeded: random bytes, tokens of the
instrument's own language, and mutations of valid commands: cut, duplicated,
swapped, case-flipped, with characters dropped or inserted) go straight to the
instrument's command processor; every few commands the test checks over TCP that
the instrument still answers ``*IDN?`` and that its state stays within the
instrument's limits (levels, limits and ranges of the 2602B and the 2400; at most
the existing crosspoints closed on the 707B; the error queue bounded).
"""

from __future__ import annotations

import math
import random
import socket
import time

import numpy as np
import pytest

from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_scpi import VirtualScpiBench
from simulated_device.virtual_tsp_instruments import I_MAX, LIMITI, LIMITV, V_MAX

N_COMMANDS = 3000
BUDGET_S = 120.0

VALID = {
    "smu": [
        "smua.source.levelv = 1.5", "smua.source.output = smua.OUTPUT_ON",
        "print(smua.measure.i())", "print(smua.measure.iv())", "smub.source.func = 0",
        "smub.source.leveli = 1e-6", "smua.source.limiti = 1e-3", "smua.measure.count = 3",
        "smua.measure.v(smua.nvbuffer1)", "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1)",
        "print(errorqueue.next())", "errorqueue.clear()", "reset()", "smua.reset()",
        "print(localnode.model)", "for i = 1, 3 do print(i) end", "*OPC?", "*STB?",
        "print(status.measurement.instrument.smua.condition)", "display.clear()",
        "smua.source.rangev = 6", "smua.source.autorangev = 0", "delay(0.001)",
        "print(smua.source.compliance)", "waitcomplete()", "format.asciiprecision = 10",
    ],
    "matrix": [
        "channel.close('1A01')", 'channel.open("allslots")', "print(channel.getclose('allslots'))",
        "channel.exclusiveclose('1A02,1B01')", "reset()", "*IDN?", "print(errorqueue.count)",
        "channel.close('1A01:1B03')", "channel.reset('all')",
    ],
    "daq": [
        ":SENS:FUNC 'VOLT', (@101,102)", ":SENS:VOLT:NPLC 0.01", ":ROUT:SCAN (@101:103)",
        ":ROUT:SCAN:COUN:SCAN 2", ":INIT", ":TRAC:ACT?",
        ":TRAC:DATA? 1, 2, 'defbuffer1', READ, REL",
        ":READ?", ":ROUT:CLOS (@101)", "SYST:ERR?", "*IDN?;*OPC?", ":SENS:VOLT:RANG 10",
        "*ESE 60;*SRE 32", "*STB?", ":MEAS:VOLT? (@102)", "SYST:ERR:COUN?",
    ],
    "k2400": [
        ":SOUR:FUNC VOLT", ":SOUR:VOLT 0.2", ":SENS:CURR:PROT 1e-3", ":OUTP ON", ":READ?",
        ":FORM:ELEM VOLT,CURR", ":TRIG:COUN 3", ":MEAS:CURR?", ":SOUR:CURR 1e-6",
        ":SOUR:FUNC CURR", ":INIT", ":FETC?", ":TRAC:CLE;:TRAC:POIN 3;:TRAC:FEED:CONT NEXT",
        ":SOUR:CLE:AUTO ON", "*RST", ":SOUR:VOLT:RANG 20", "SYST:ERR?",
    ],
}
TOKENS = [
    "smua", "smub", "node[2]", ".", "source", "measure", "levelv", "leveli", "limiti", "(",
    ")", "=", "'", '"', ",", ";", "print", "for", "do", "end", "if", "then", "while", "true",
    "nil", "1e308", "-1e308", "0", "-5", "1/0", "#", "..", "channel", "close", "@", ":",
    "SOUR", "VOLT", "SENS", "?", "*", "(@101:9999)", "MAX", "MIN", "ON", "OFF", "nan", "inf",
    "errorqueue", "[", "]", "{", "}", "--", "\\", "%", "^", "function", "local", "break",
]


def _mutate(rng: random.Random, cmd: str) -> str:
    op = rng.randrange(8)
    if op == 0 and cmd:
        i = rng.randrange(len(cmd))
        return cmd[:i]
    if op == 1 and cmd:
        i = rng.randrange(len(cmd))
        return cmd[:i] + cmd[i + 1 :]
    if op == 2:
        i = rng.randrange(len(cmd) + 1)
        return cmd[:i] + rng.choice(TOKENS) + cmd[i:]
    if op == 3:
        return cmd.swapcase()
    if op == 4:
        return cmd + ";" + cmd
    if op == 5:
        return " ".join(rng.choice(TOKENS) for _ in range(rng.randrange(1, 12)))
    if op == 6:
        return "".join(chr(rng.randrange(1, 128)) for _ in range(rng.randrange(1, 40)))
    parts = cmd.split(" ")
    rng.shuffle(parts)
    return " ".join(parts)


def _idn(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as s:
        s.sendall(b"*IDN?\n")
        buf = b""
        deadline = time.monotonic() + 10.0
        while b"\n" not in buf and time.monotonic() < deadline:
            buf += s.recv(4096)
        return buf.decode()


def _within_limits(bench: VirtualScpiBench, name: str) -> None:
    if name == "smu":
        for c in bench.smu.channels.values():
            assert abs(c.levelv) <= V_MAX and abs(c.leveli) <= I_MAX
            assert LIMITV[0] <= c.limitv <= LIMITV[1] and LIMITI[0] <= c.limiti <= LIMITI[1]
            assert 1 <= c.count <= 60000 and 0.001 <= c.nplc <= 25
            assert c.output in (0, 1, 2) and c.func in (0, 1)
            assert math.isfinite(c.levelv) and math.isfinite(c.leveli)
        assert np.all(np.isfinite(bench.network.inputs_v))
    elif name == "matrix":
        assert all(len(s) == 4 for s in bench.matrix.closed)
    elif name == "k2400":
        k = bench.k2400
        assert abs(k.level["VOLT"]) <= 210 and abs(k.level["CURR"]) <= 1.05
        assert 1 <= k.trig_count * k.arm_count <= 2500
    dev = bench.devices[name]
    assert len(dev.status.errors) <= 10


@pytest.mark.parametrize("name", ["smu", "matrix", "daq", "k2400"])
def test_fuzzed_commands_keep_the_instrument_answering(name: str) -> None:
    net = BenchNetwork({"arch": "4-3-2", "preset": "reram"}, np.random.default_rng(0))
    rng = random.Random(1234 + len(name))
    t0 = time.monotonic()
    with VirtualScpiBench(net) as bench:
        dev = bench.devices[name]
        port = bench.ports[name]
        identity = dev.identity
        for k in range(N_COMMANDS):
            cmd = _mutate(rng, rng.choice(VALID[name]))
            with bench._lock:
                out = dev.process(cmd)
            assert isinstance(out, list) and all(isinstance(x, str) for x in out), cmd
            if k % 250 == 0:
                assert _idn(port).strip() == identity, f"no answer after {cmd!r}"
                with bench._lock:
                    _within_limits(bench, name)
            assert time.monotonic() - t0 < BUDGET_S, "fuzzing took too long"
        assert _idn(port).strip() == identity
        with bench._lock:
            _within_limits(bench, name)
        # the error queue kept the overflow rule: at most 10 entries
        assert len(dev.status.errors) <= 10
