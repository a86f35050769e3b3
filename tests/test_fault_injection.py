"""Fault injection over both virtual benches through ``hwloop train --backend board``.

Every fault kind of ``hwloop virtual-board --help`` (the same ``--fault`` specs, parsed
by the same parser) on the commands a training run sends, with counts and rates. The
benches run in this process (threads, stopped in ``finally``); ``hwloop train`` runs
through :func:`hwloop.cli.main`. Each run must end completed (exit 0) or with one
one-line error (exit 2, no traceback); every instrument must be left in its safe state
unless it never answered again; the session file must record the outcome (status,
reason) and, when a fault was noticed, the events that show it.

Networks are small so a run takes about a second: the serial board 32-8-2 and the SCPI
bench 32-8-2, both on ``mnist-01-4x4`` (2 steps of 4 examples, 4 test examples).
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwloop.board_protocol import Command
from hwloop.cli import main
from hwloop.sessionlog import open_session
from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_board import FaultConfig, VirtualBoard
from simulated_device.virtual_command import SCPI_ENV
from simulated_device.virtual_faults import SCPI_KINDS, SERIAL_KINDS, FaultRule, parse_fault
from simulated_device.virtual_scpi import VirtualScpiBench
from tests.board_helpers import scpi_board_text, serial_board_text

ARCH = "32-8-2"
TRAIN = [
    "train", "--backend", "board", "--dataset", "mnist-01-4x4", "--nudge", "current",
    "--input-gain", "5", "--lr", "0.05", "--lr-biases", "0.05", "--epochs", "1",
    "--batch-size", "4", "--train-limit", "8", "--test-limit", "4", "--quiet", "--overwrite",
]
SERIAL_TIMEOUT_S = 0.3
"""Fixed part of a serial exchange's deadline, s (short: lost replies cost little)."""
SCPI_TIMEOUT_S = 0.5
"""VISA timeout of the SCPI instruments, s."""


@dataclass
class Outcome:
    """What one faulted ``hwloop train`` run left behind."""

    code: int
    err: str
    status: str
    reason: str
    events: list[dict[str, Any]]
    rules: list[FaultRule]
    safe: bool
    """Every instrument that still answers is in its safe state (virtual side)."""
    never_answered: list[str] = field(default_factory=list)
    stuck: bool = False
    """Matrix relays were stuck closed by the fault (the safe state cannot be reached)."""
    commands: dict[str, int] = field(default_factory=dict)
    """Serial board: valid request frames received per command name."""

    @property
    def fired(self) -> int:
        return sum(r.fired for r in self.rules)

    def noticed(self) -> list[dict[str, Any]]:
        """Events that show a fault (retries, warnings, safety actions)."""
        return [e for e in self.events if e["kind"] in ("retry", "warning", "safety")]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _train(board_file: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``hwloop train``; its stderr and, after it, the board's log lines."""
    capsys.readouterr()
    log = _Collect()
    logger = logging.getLogger("hwloop")
    logger.addHandler(log)
    try:
        code = main([*TRAIN, "--board", str(board_file), "--out", str(out)])
    finally:
        logger.removeHandler(log)
    return code, capsys.readouterr().err + "\n".join(["", "board log:", *log.lines])


def _session(out: Path) -> tuple[str, str, list[dict[str, Any]]]:
    if not out.exists():
        return "", "", []
    with open_session(out) as s:
        return s.status, str(s.attrs.get("reason", "")), s.events()


def run_serial(specs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
               monkeypatch: pytest.MonkeyPatch, *, retry_attempts: int = 3) -> Outcome:
    """``hwloop train`` on a virtual serial board with these ``--fault`` specs."""
    rules = [parse_fault(s, SERIAL_KINDS, seed=k)[0] for k, s in enumerate(specs)]
    vb = VirtualBoard({"arch": ARCH, "preset": "reram"}, seed=0,
                      faults=FaultConfig(rules=tuple(rules)))
    try:
        monkeypatch.setenv("HWLOOP_BOARD_URL", vb.start_tcp())
        board = tmp_path / "serial.toml"
        board.write_text(serial_board_text(ARCH, timeout_s=SERIAL_TIMEOUT_S,
                                           retry_attempts=retry_attempts,
                                           v_input_max_v=120.0, i_nudge_max_a=1e-3))
        out = tmp_path / "run.h5"
        code, err = _train(board, out, capsys)
    finally:
        vb.close()
    stopped = any(r.kind == "stop" and r.fired for r in rules)
    status, reason, events = _session(out)
    commands = {Command(c).name: n for c, n in vb.command_counts.items()}
    return Outcome(code, err, status, reason, events, rules, vb.is_safe,
                   ["board"] if stopped else [], commands=commands)


def _scpi_safe(bench: VirtualScpiBench, name: str) -> bool:
    """The instrument ``name`` of the bench is in its safe state (virtual side)."""
    def check() -> bool:
        if name in ("smu", "xsmu"):
            dev = bench.smu if name == "smu" else bench.xsmu
            return all(c.output == 0 and c.levelv == 0.0 and c.leveli == 0.0
                       for c in dev.channels.values())
        if name == "matrix":
            return not bench.matrix.closed
        if name == "k2400":
            return not bench.k2400.output and not any(bench.k2400.level.values())
        return True  # the DAQ sources nothing
    return bool(bench.with_lock(check))


def run_scpi(specs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """``hwloop train`` on the virtual SCPI bench with these ``--fault`` specs."""
    net = BenchNetwork({"arch": ARCH, "preset": "reram"}, np.random.default_rng(0))
    bench = VirtualScpiBench(net, bias_channels=True)
    rules: list[FaultRule] = []
    for k, spec in enumerate(specs):
        rule, instrument = parse_fault(spec, SCPI_KINDS, seed=k)
        for name in SCPI_ENV if instrument is None else (instrument,):
            r = copy.deepcopy(rule)
            bench.faults(name).rules.append(r)
            rules.append(r)
    bench.start()
    try:
        for name, resource in bench.resources.items():
            monkeypatch.setenv(SCPI_ENV[name], resource)
        board = tmp_path / "scpi.toml"
        board.write_text(scpi_board_text(ARCH, v_input_max_v=120.0, i_nudge_max_a=1e-3).replace(
            'visa_library = "@py" }', f'visa_library = "@py", timeout_s = {SCPI_TIMEOUT_S} }}'))
        out = tmp_path / "run.h5"
        code, err = _train(board, out, capsys)
        dead = [n for n in SCPI_ENV if bench.faults(n).dead]
        safe = all(_scpi_safe(bench, n) for n in SCPI_ENV if n not in dead)
    finally:
        bench.stop()
    status, reason, events = _session(out)
    stuck = any(r.kind == "stuck" and r.fired for r in rules)
    return Outcome(code, err, status, reason, events, rules, safe, dead, stuck)


def check_outcome(o: Outcome, *, fired: int | None = None) -> None:
    """The rules every faulted run obeys (see the module docstring); ``fired``: the
    number of times the faults must have fired (None: not checked)."""
    if fired is not None:
        assert o.fired == fired, (o.fired, o.events)
    assert "Traceback" not in o.err and "event sink failed" not in o.err, o.err
    cli = o.err.split("\nboard log:")[0]
    errors = [ln for ln in cli.splitlines() if re.match(r"hwloop \S+: error: ", ln)]
    if o.code == 0:
        assert not errors, o.err
        assert o.status == "completed", (o.status, o.reason)
    else:
        assert o.code == 2, (o.code, o.err)
        assert len(errors) == 1 and cli.rstrip().endswith(errors[0]), o.err
        if o.status:  # the file exists when the board opened: it says why the run ended
            assert o.status == "failed", (o.status, o.reason)
            said = errors[0].split(": error: ", 1)[1]
            # the file's reason is the same message (a training fault adds its type name)
            assert o.reason and (said.startswith(o.reason[:60])
                                 or o.reason.split(": ", 1)[-1][:60] in said), (o.reason, said)
            assert o.events[-1]["kind"] == "stop" and o.events[-1]["message"].startswith(
                "failed"), o.events[-1]
    if o.never_answered:
        assert o.code == 2, "an instrument stopped answering but the run completed"
    if o.stuck:  # relays stuck closed cannot be opened: the run must say so
        assert o.code == 2 and "safe state NOT confirmed" in " ".join(
            e["message"] for e in o.events) + o.err, o
        assert "still closed" in o.err + " ".join(e["message"] for e in o.events), o
    else:
        assert o.safe, f"an instrument that still answers was left energised: {o}"

@dataclass
class Runs:
    """:func:`run_serial` and :func:`run_scpi` bound to one test's fixtures."""

    tmp_path: Path
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    def serial(self, specs: list[str], *, subdir: str = "", retry_attempts: int = 3) -> Outcome:
        """:func:`run_serial` in ``tmp_path / subdir``."""
        workdir = self.tmp_path / subdir
        workdir.mkdir(exist_ok=True)
        return run_serial(specs, workdir, self.capsys, self.monkeypatch,
                          retry_attempts=retry_attempts)

    def scpi(self, specs: list[str]) -> Outcome:
        """:func:`run_scpi` in ``tmp_path``."""
        return run_scpi(specs, self.tmp_path, self.capsys, self.monkeypatch)


@pytest.fixture
def runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Runs:
    """The faulted runs of one test."""
    return Runs(tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------ the final safe state

def test_unconfirmed_final_safe_state_is_recorded_before_the_file_closes(
    runs: Runs
) -> None:
    # the first SAFE_STATE after the opening exchanges is the final one: the board stops
    # answering there, once training and evaluation are done
    o = runs.serial(["stop,command=SAFE_STATE,after=20"],
                   retry_attempts=2)
    check_outcome(o, fired=1)
    assert o.code == 2 and o.status == "failed", (o.code, o.status, o.err)
    assert o.reason.startswith("the safe state could not be confirmed for 'board'"), o.reason
    (line,) = [ln for ln in o.err.splitlines() if ln.startswith("hwloop train: error:")]
    assert line.startswith("hwloop train: error: the safe state could not be confirmed")
    # whole, not cut mid-word
    assert "the board's power); its link is closed on close(); switch the outputs off" in line
    safety = [e["message"] for e in o.events if e["kind"] == "safety"]
    assert len(safety) == 1 and "safe state NOT confirmed for 'board'" in safety[0], o.events
    retries = [e["message"] for e in o.events if e["kind"] == "retry"]
    assert any("reconnecting on a fresh connection" in m for m in retries), o.events
    # safe_session's later safe state and close repeat nothing (one safety event above)
    assert o.events[-1]["message"].startswith("failed: the safe state could not be confirmed")


# ------------------------------------------------------------------ the serial board

SERIAL_COMMANDS = ("IDENTIFY", "GET_STATE", "SET_INPUTS", "SET_NUDGE_CURRENTS",
                   "SET_BIAS_CURRENTS", "READ_NODES", "READ_CONDUCTANCE", "PULSE", "SAFE_STATE")
"""The commands a training run sends (IDENTIFY and GET_STATE at connect, then on a fault)."""
AT_CONNECT = ("IDENTIFY", "GET_STATE")
"""Commands hit from the first exchange on (``after=0``); the others after 10 exchanges."""
SERIAL_TRANSIENT = ("timeout", "drop", "delay", "garble", "truncate", "crc-reply",
                    "crc-request", "length-request", "busy")
"""Kinds the host retries or reconciles: a run with one of each per command completes."""
SERIAL_ONLY_ON = {"compliance": ("SET_INPUTS", "SET_NUDGE_CURRENTS", "SET_BIAS_CURRENTS",
                                 "PULSE", "READ_NODES"),
                  "nan": ("READ_NODES",), "overrange": ("READ_NODES",)}
VALUES = {"delay": ",value=0.45", "compliance": ",value=1"}
"""``value=`` per kind: a delay beyond the 0.3 s deadline; a pulse trip after 1 pulse."""


def _serial_specs(kind: str, count: int) -> list[str]:
    cmds = SERIAL_ONLY_ON.get(kind, SERIAL_COMMANDS)
    return [f"{kind},command={c},count={count},after={0 if c in AT_CONNECT else 10}"
            f"{VALUES.get(kind, '')}" for c in cmds]


def test_the_suite_covers_every_serial_fault_kind() -> None:
    assert set(SERIAL_KINDS) == set(SERIAL_TRANSIENT) | {
        "out-of-range", "bad-argument", "unknown-command", "internal", "compliance", "nan",
        "overrange", "stop", "disconnect", "reboot"}


REPLY_LOST = ("timeout", "drop", "delay", "garble", "truncate", "crc-reply")
"""Transient kinds after which only LAST_REPLY can say whether a PULSE was applied."""


@pytest.mark.parametrize("kind", list(SERIAL_KINDS))
def test_serial_fault_on_every_command(
    kind: str, runs: Runs
) -> None:
    # a transient fault twice in a row on each command but PULSE (count=2: a read's third
    # attempt, a SET's GET_STATE reconciliation); any other kind once per command: the
    # first one that fires ends the run in the safe state
    transient = kind in SERIAL_TRANSIENT
    count = 2 if transient and kind != "delay" else 1
    specs = [s for s in _serial_specs(kind, count) if "=PULSE," not in s]
    o = runs.serial(specs)
    assert o.fired >= 1, "the fault never fired: the run did not send the command"
    check_outcome(o)
    if transient:
        assert o.code == 0, o.err
        fired = {r.match for r in o.rules if r.fired}
        cmds = set(SERIAL_COMMANDS) - {"PULSE"}
        assert fired == cmds, f"commands never hit: {cmds - fired}"
    if o.status and (kind != "delay" or o.code):
        assert o.noticed(), f"{kind} fired {o.fired} time(s) but the session file shows nothing"


@pytest.mark.parametrize("kind", [k for k in SERIAL_KINDS if k not in ("nan", "overrange")])
def test_serial_fault_on_pulse(
    kind: str, runs: Runs
) -> None:
    o = runs.serial([f"{kind},command=PULSE,after=10{VALUES.get(kind, '')}"])
    check_outcome(o, fired=1)
    assert o.noticed(), o.events
    if kind in ("busy", "crc-request", "length-request"):  # nothing applied: sent again
        assert o.code == 0, o.err
        assert any("PULSE (seq" in e["message"] and "sending it again" in e["message"]
                   for e in o.events), o.events
    elif kind in REPLY_LOST:  # LAST_REPLY says whether it ran: the run goes on, truthfully
        assert o.code == 0, o.err
        said = [e["message"] for e in o.events if "LAST_REPLY shows" in e["message"]]
        assert len(said) == 1, o.events
        # the request itself lost ("timeout"): never executed, sent again; else it ran once
        # and its kept reply stands for the lost one (no second PULSE frame)
        ran = kind != "timeout"
        assert ("the board executed it" in said[0]) == ran, said
        assert ("sending it again" in said[0]) == (not ran), said
        assert o.commands["LAST_REPLY"] == 1, o.commands
        # the same run without the fault sends as many PULSE frames (one more when resent)
        ref = runs.serial([], subdir="ref")
        assert ref.code == 0 and "LAST_REPLY" not in ref.commands
        assert o.commands["PULSE"] == ref.commands["PULSE"] + (0 if ran else 1), (
            o.commands, ref.commands)


@pytest.mark.parametrize("kind", ["drop", "timeout"])
def test_lost_pulse_reply_on_a_board_without_last_reply_stops_the_run(
    kind: str, runs: Runs
) -> None:
    """Firmware without LAST_REPLY (UNKNOWN_COMMAND): applied or not is unknown, so stop."""
    o = runs.serial([f"{kind},command=PULSE,after=10", "unknown-command,command=LAST_REPLY,"
                    "count=inf"])
    check_outcome(o)
    assert o.code == 2 and "PULSE (seq" in o.err and "reconcile" in o.err, o.err
    assert o.commands["LAST_REPLY"] == 1


@pytest.mark.parametrize("kind", ["timeout", "garble", "busy", "crc-request", "truncate"])
def test_serial_fault_at_a_rate_on_any_command(
    kind: str, runs: Runs
) -> None:
    o = runs.serial([f"{kind},count=inf,rate=0.1,after=10"])
    assert o.fired >= 3, o.fired
    check_outcome(o)
    assert o.code == 0, o.err  # 0.1 per exchange: three in a row (a read's last try) is rare
    retries = [e for e in o.events if e["kind"] in ("retry", "warning")]
    assert len(retries) >= o.fired // 2, (o.fired, retries)


@pytest.mark.parametrize("kind", ["stop", "disconnect", "reboot", "internal", "out-of-range"])
@pytest.mark.parametrize("command", ["SET_NUDGE_CURRENTS", "READ_CONDUCTANCE"])
def test_serial_fatal_fault_mid_run(
    kind: str, command: str, runs: Runs
) -> None:
    o = runs.serial([f"{kind},command={command},after=40"])
    check_outcome(o, fired=1)
    assert o.noticed(), o.events


# ------------------------------------------------------------------ the SCPI bench

SCPI_COMMANDS: dict[str, tuple[str, ...]] = {
    "smu": ("OUTPUT_DCVOLTS", "OUTPUT_DCAMPS", "compliance", "errorqueue"),
    "daq": ("INIT", "TRAC:DATA?", "ROUT:SCAN", "ROUT:OPEN"),
    "matrix": ("channel.close", "channel.open", "getclose", "errorqueue"),
    "xsmu": ("OUTPUT_DCVOLTS", "errorqueue"),
}
"""What each instrument of the board file is sent in a run (text in the command line)."""
SCPI_ONLY_ON: dict[str, dict[str, tuple[str, ...]]] = {
    "compliance": {"smu": ("compliance",), "xsmu": ("OUTPUT_DCVOLTS",)},
    "nan": {"daq": ("INIT",)},  # the scan takes the readings; TRAC:DATA? returns them
    "overrange": {"daq": ("INIT",)},
    "stuck": {"matrix": ("channel.close", "channel.open")},
}
SCPI_VALUES = {"delay": ",value=0.8", "compliance": ",value=1", "error": ",value=-300"}
"""``value=`` per kind: a delay beyond the 0.5 s VISA timeout; a trip after 1 pulse."""


def _scpi_specs(kind: str) -> list[str]:
    where = SCPI_ONLY_ON.get(kind, SCPI_COMMANDS)
    return [f"{kind},instrument={name},command={c},after=5{SCPI_VALUES.get(kind, '')}"
            for name, cmds in where.items() for c in cmds]


def test_the_suite_covers_every_scpi_fault_kind() -> None:
    assert set(SCPI_KINDS) == {"timeout", "drop", "delay", "garble", "truncate", "error",
                               "compliance", "nan", "overrange", "stuck", "stop",
                               "disconnect", "reboot"}


@pytest.mark.parametrize("kind", list(SCPI_KINDS))
def test_scpi_fault_on_every_command(
    kind: str, runs: Runs
) -> None:
    # one rule per (instrument, command), once each: the first fault that ends the run
    # ends it in the safe state; the others never fire
    o = runs.scpi(_scpi_specs(kind))
    assert o.fired >= 1, "the fault never fired: the run did not send the command"
    check_outcome(o)
    if o.status:
        assert o.noticed(), f"{kind} fired {o.fired} time(s) but the session file shows nothing"


@pytest.mark.parametrize("kind", ["stop", "disconnect", "reboot", "timeout"])
@pytest.mark.parametrize("instrument", ["smu", "daq", "matrix"])
def test_scpi_instrument_fault_mid_run(
    kind: str, instrument: str, runs: Runs
) -> None:
    o = runs.scpi([f"{kind},instrument={instrument},after=20"])
    check_outcome(o, fired=1)
    if kind == "timeout" and o.code == 0:
        # exchange 21 of this instrument is a write: it was executed and expects no reply
        assert o.status == "completed"
    elif o.status:  # the file exists (the fault came after the first checkpoint's reads)
        assert o.noticed(), o.events
    if kind == "stop":
        assert o.never_answered == [instrument]


@pytest.mark.parametrize("after", [5, 40])
def test_scpi_smu_restart_during_a_level_write_ends_the_run(
    after: int, runs: Runs
) -> None:
    """The SMU reboots on a level write (the write lost, every setting at its default).

    Its error queue is empty again, so only the power-on bit of its standard event
    register shows it: the run ends with one line naming the restart, the SMU safe, and
    the session file records the fault.
    """
    o = runs.scpi([f"reboot,instrument=smu,command=OUTPUT_ON,after={after}"])
    check_outcome(o, fired=1)
    assert o.code == 2 and "smu: the instrument restarted" in o.err, o.err
    assert o.status == "failed" and "restarted" in o.reason, o.reason
    msgs = [e["message"] for e in o.noticed()]
    assert any("restarted" in m for m in msgs), msgs
    assert any("every instrument confirmed its safe state" in m for m in msgs), msgs


@pytest.mark.parametrize("kind", ["garble", "error"])
def test_scpi_fault_at_a_rate_on_any_command(
    kind: str, runs: Runs
) -> None:
    o = runs.scpi([f"{kind},count=inf,rate=0.02,after=5"])
    assert o.fired >= 1
    check_outcome(o)
    if o.status:  # the file exists (the fault came after the first checkpoint's reads)
        assert o.noticed(), o.events
