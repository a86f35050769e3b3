"""SerialBoardDriver + SerialTransport, without hardware.

* protocol bytes: each driver command writes exactly the documented bytes (a
  scripted fake port, PyMeasure style: every (tx, rx) pair must be consumed);
* against the virtual board over a real TCP socket (and a pseudo-terminal):
  readings agree with the emulator's true voltages within the read noise, averaging
  shrinks the spread by sqrt(N), pulses change conductances exactly as the device
  model does;
* fault injection: every fault ends in a clear HwloopError or a bounded retry that
  is visible as a "retry" event, never a hang, and the board ends safe.

Timeouts here are 0.15 s; the whole module runs in a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serial

from hwloop.board_protocol import (
    Ack,
    BoardError,
    Command,
    ErrorCode,
    GetState,
    Identify,
    IdentifyReply,
    LastReply,
    Pulse,
    PulseReply,
    PulseStatus,
    ReadConductanceReply,
    ReadNodesMeanReply,
    ReadNodesSamplesReply,
    SetInputs,
    StateReply,
    decode_frame,
    decode_reply,
    encode_frame,
    encode_reply,
    encode_request,
)
from hwloop.device import SampleFlag
from hwloop.errors import ConfigError, HwloopError, LimitError
from instruments import roles
from instruments.serial_board import ComplianceTripError, SerialBoardDriver
from instruments.transport import (
    BoardTimeoutError,
    ExchangeRecord,
    LinkError,
    RetryPolicy,
    SerialTransport,
    UnconfirmedCommandError,
)
from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_board import FaultConfig, VirtualBoard
from simulated_device.virtual_faults import FaultRule
from tests.procs import child, wait_until
from tests.test_board_protocol import IDENT, doc_frames

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 0.15
FAST = RetryPolicy(attempts=3, backoff_s=0.01, backoff_factor=2.0, backoff_max_s=0.05)
OPTS = {"arch": "8-4-2", "preset": "reram"}
SIGMA_V = 20.0 / 2**16  # reram preset: 1 LSB of a 16-bit ±10 V ADC, additive, per sample


# ---------------------------------------------------------------------------
# A scripted port: exact bytes out, canned bytes in
# ---------------------------------------------------------------------------


class ScriptedPort:
    """Fake pyserial port: each write must equal the next expected tx; its rx is queued."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.script = list(script)
        self.rx = bytearray()
        self.timeout: float | None = None
        self.closed = False

    def write(self, data: bytes) -> int:
        assert self.script, f"unexpected write {bytes(data).hex(' ')}"
        tx, rx = self.script.pop(0)
        assert bytes(data) == tx, f"wrote\n{bytes(data).hex(' ')}\nexpected\n{tx.hex(' ')}"
        self.rx += rx
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if not self.rx:
            time.sleep(0.001)
            return b""
        out = bytes(self.rx[:size])
        del self.rx[:size]
        return out

    def reset_input_buffer(self) -> None:
        self.rx.clear()

    def close(self) -> None:
        self.closed = True

    def assert_done(self) -> None:
        assert not self.script, f"{len(self.script)} expected exchange(s) not made"
        assert not self.rx, "reply bytes left unread"


def scripted_driver(script: list[tuple[bytes, bytes]]) -> tuple[SerialBoardDriver, ScriptedPort]:
    port = ScriptedPort(script)
    t = SerialTransport(port, base_timeout_s=TIMEOUT_S, retry=FAST)
    return SerialBoardDriver(t), port


DOCF = doc_frames()
IDENT_TX = DOCF["identify-request"]
IDENT_RX = DOCF["identify-reply"]


def ack(seq: int, cmd: Command) -> bytes:
    return encode_reply(seq, cmd, Ack())


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def test_driver_commands_write_exactly_the_documented_bytes() -> None:
    """Sequence numbers 1..7 are those of the spec's worked examples."""
    script = [
        (IDENT_TX, IDENT_RX),
        (DOCF["set-inputs-request"], DOCF["set-inputs-reply"]),
        (DOCF["set-inputs-block-request"], ack(3, Command.SET_INPUTS)),
        (DOCF["read-nodes-request"], DOCF["read-nodes-mean-reply"]),
        (DOCF["pulse-request"], DOCF["pulse-reply"]),
        (encode_request(6, _set_inputs([0], [9.0])), DOCF["error-reply"]),
        (DOCF["read-conductance-request"], DOCF["read-conductance-reply"]),
    ]
    d, port = scripted_driver(script)
    assert d.identity() == "hwloop-board-8, s/n HB-0001, firmware 1.0.0, protocol 1"
    assert d.info == IDENT
    d.set_voltages([0, 3], [0.5, -1.25])
    d.set_voltages(np.array([4, 5]), np.array([1.0, 2.0]))
    m = d.read_mean([0, 5], 16)
    assert m.mean_v.tolist() == [0.25, -0.125]
    assert m.spread_v.tolist() == [2.0**-10, 2.0**-9]
    assert m.flags.tolist() == [0, int(SampleFlag.COMPLIANCE)]
    assert m.sem_v[0] == pytest.approx(2.0**-10 / 4)
    assert (m.t_first_s, m.t_last_s, m.n_samples) == (1.5, 1.5003, 16)
    rep = d.pulse_many([5, 17], [3, -2], 1.5, 1e-6)
    assert rep.applied.tolist() == [3, -2] and rep.total_pulses == 5
    assert rep.status.tolist() == [PulseStatus.OK, PulseStatus.AT_MAX]
    with pytest.raises(BoardError) as ei:
        d.set_voltages([0], [9.0])
    assert ei.value.error_code == ErrorCode.OUT_OF_RANGE
    assert "input 12 V beyond 10 V" in str(ei.value)
    assert d.read_conductance([17], 0.2).tolist() == [5e-5]
    port.assert_done()


def _set_inputs(ch: list[int], v: list[float]) -> Any:
    from hwloop.board_protocol import SetInputs

    return SetInputs(ch, v)


def test_every_other_command_writes_exact_bytes() -> None:
    state = StateReply(True, [0.0] * 7 + [1.0], [0.0, 0.0], [0.0] * 6)
    samples = ReadNodesSamplesReply([[0.5, float("nan")], [0.25, 20.0]], [[0, 0], [0, 1]],
                                    [1.0, 1.25])
    script = [
        (IDENT_TX, IDENT_RX),
        (h("a5 01 00 00 00 00 02 00 02 b5 6a 02 44"), encode_reply(2, Command.GET_STATE, state)),
        (h("a5 01 00 00 00 00 03 00 03 14 30 c7 32"), ack(3, Command.SAFE_STATE)),
        (
            h("a5 01 0d 00 00 00 04 00 11 01 01 00 01 00 8d ed b5 a0 f7 c6 b0 be a2 91 14 38"),
            ack(4, Command.SET_NUDGE_CURRENTS),
        ),
        (
            h("a5 01 17 00 00 00 05 00 12 00 02 00 05 00 00 00 00 00 00 00 00 00 00 00 8d ed"
              " b5 a0 f7 c6 b0 3e cc 76 7d f7"),
            ack(5, Command.SET_BIAS_CURRENTS),
        ),
        (
            h("a5 01 0b 00 00 00 06 00 20 01 02 00 00 00 02 00 02 00 03 00 a9 9f 59 19"),
            encode_reply(6, Command.READ_NODES, samples),
        ),
        (
            h("a5 01 00 00 00 00 07 00 03 c8 98 ce 35"),
            ack(7, Command.SAFE_STATE),
        ),
    ]
    d, port = scripted_driver(script)
    st = d.get_state()
    assert st.outputs_on and st.energised
    d.safe_state()
    d.set_currents([1], [-1e-6])
    d.bias_source.set_currents([5, 0], [0.0, 1e-6])
    s, f, t = d.read_voltages([2, 3], 2)
    assert s[0, 0] == 0.5 and s[1, 0] == 0.25
    assert np.isnan(s[0, 1]) and np.isnan(s[1, 1])  # NaN, and overrange (flag bit 0)
    assert f.tolist() == [[0, SampleFlag.OVERRANGE], [0, SampleFlag.OVERRANGE]]
    assert t.tolist() == [1.0, 1.25]
    d.close()
    d.close()  # idempotent
    assert port.closed
    port.assert_done()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda d: d.set_voltages([8], [0.0]), LimitError),  # channel beyond the board
        (lambda d: d.set_voltages([0], [10.5]), LimitError),  # beyond v_input_max_v
        (lambda d: d.set_currents([0], [2e-4]), LimitError),  # beyond i_nudge_max_a
        (lambda d: d.set_currents([2], [0.0]), LimitError),  # 2 nudge channels only
        (lambda d: d.set_bias_currents([0], [-1e-3]), LimitError),
        (lambda d: d.read_mean([6], 1), LimitError),  # 6 ADC channels
        (lambda d: d.read_mean([0], 70_000), LimitError),  # beyond max_samples
        (lambda d: d.pulse_many([40], [1], 1.0, 1e-6), LimitError),  # 40 crosspoints
        (lambda d: d.pulse_many([0], [1001], 1.0, 1e-6), LimitError),  # max pulses
        (lambda d: d.pulse_many([0], [1], 3.5, 1e-6), LimitError),  # amplitude
        (lambda d: d.pulse_many([0], [1], 1.0, 2e-3), LimitError),  # width
        (lambda d: d.pulse_many([0], [1], 1.0, 1e-8), LimitError),
        (lambda d: d.read_conductance([0], 0.6), LimitError),  # read voltage
        (lambda d: d.set_voltages([0], [float("nan")]), ConfigError),
        (lambda d: d.set_voltages([0, 0], [1.0, 1.0]), ConfigError),  # duplicate
        (lambda d: d.set_voltages([0, 1], [1.0]), ConfigError),
        (lambda d: d.read_voltages([0], 0), ConfigError),
        (lambda d: d.pulse_many([0], [1.5], 1.0, 1e-6), ConfigError),
        (lambda d: d.pulse_many([0], [1], -1.0, 1e-6), ConfigError),  # polarity is the count's
        (lambda d: d.pulse(0, 0.0, 1e-6, 1), ConfigError),
        (lambda d: d.read_conductance([0], 0.0), ConfigError),
    ],
)
def test_arguments_are_checked_against_identify_before_anything_is_sent(
    call: Any, error: type[HwloopError]
) -> None:
    d, port = scripted_driver([(IDENT_TX, IDENT_RX)])
    with pytest.raises(error):
        call(d)
    port.assert_done()  # nothing was written after IDENTIFY


def test_the_driver_plays_every_role() -> None:
    d, _ = scripted_driver([(IDENT_TX, IDENT_RX)])
    for role in (roles.Instrument, roles.VoltageSourceRole, roles.CurrentSourceRole,
                 roles.MeterRole, roles.CrosspointRole):
        assert isinstance(d, role), role.__name__
    assert isinstance(d.bias_source, roles.CurrentSourceRole)


def test_stale_replies_and_garbage_are_discarded_by_sequence_number() -> None:
    # the board answers GET_STATE (seq 2) after garbage, a late reply to seq 1 and a
    # reply with our sequence number to another command (an earlier session's)
    state = StateReply(False, [0.0] * 8, [0.0] * 2, [0.0] * 6)
    late = encode_reply(1, Command.IDENTIFY, IDENT)
    other = encode_reply(2, Command.SAFE_STATE, Ack())
    script = [
        (IDENT_TX, IDENT_RX),
        (
            encode_request(2, GetState()),
            b"\x00\x13" + late + other + encode_reply(2, Command.GET_STATE, state),
        ),
    ]
    events: list[tuple[str, str]] = []
    port = ScriptedPort(script)
    t = SerialTransport(port, base_timeout_s=TIMEOUT_S, retry=FAST,
                        on_event=lambda k, m: events.append((k, m)))
    d = SerialBoardDriver(t)
    assert not d.is_energised()
    port.assert_done()
    kinds = [k for k, _ in events]
    assert kinds == ["warning"] * 3
    assert "stale IDENTIFY reply (seq 1)" in events[1][1]
    assert "stale SAFE_STATE reply (seq 2)" in events[2][1]
    assert t.stats["stale_replies"] == 2


def test_loop_url_echo_is_never_taken_for_a_reply() -> None:
    """pyserial's loop:// echoes our own request back: a request frame, not a reply."""
    events: list[tuple[str, str]] = []
    t = SerialTransport("loop://", base_timeout_s=0.05, retry=RetryPolicy(attempts=2,
                        backoff_s=0.0), on_event=lambda k, m: events.append((k, m)))
    t0 = time.monotonic()
    with pytest.raises(BoardTimeoutError, match="IDENTIFY"):
        t.exchange(Identify(), IdentifyReply)
    assert time.monotonic() - t0 < 5.0  # bounded (0.1 s of timeouts), with room for a busy CPU
    assert any(k == "retry" for k, _ in events)
    assert any("stale IDENTIFY frame" in m for _, m in events)
    t.close()
    with pytest.raises(LinkError):
        t.exchange(Identify(), IdentifyReply)


def test_opening_a_missing_board_is_a_clear_link_error() -> None:
    with pytest.raises(LinkError, match="cannot open"):
        SerialTransport("socket://127.0.0.1:1")


# ---------------------------------------------------------------------------
# Against the virtual board over a real socket
# ---------------------------------------------------------------------------


class Board:
    """A virtual board on a socket, a driver connected to it, and the events seen."""

    def __init__(self, seed: int = 1, **driver_kw: Any) -> None:
        self.vb = VirtualBoard(OPTS, seed=seed)
        self.url = self.vb.start_tcp()
        self.events: list[tuple[str, str]] = []
        self.records: list[ExchangeRecord] = []
        self.d = SerialBoardDriver.open(
            self.url,
            base_timeout_s=TIMEOUT_S,
            retry=driver_kw.pop("retry", FAST),
            on_event=lambda k, m: self.events.append((k, m)),
            on_exchange=self.records.append,
            **driver_kw,
        )

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    def close(self) -> None:
        with contextlib.suppress(HwloopError):
            self.d.close()
        self.vb.close()


@pytest.fixture
def board() -> Iterator[Board]:
    b = Board()
    yield b
    b.close()


def test_identify_reports_the_bench_network(board: Board) -> None:
    desc = board.vb.bench.desc
    i = board.d.info
    assert (i.n_input_channels, i.n_nudge_channels, i.n_bias_channels, i.n_adc_channels,
            i.n_crosspoints) == (8, 2, 6, 6, desc.n_edges)
    assert i.adc_range_v == 10.0
    assert not board.d.is_energised()
    assert board.kinds() == []


def test_inputs_then_reads_agree_with_the_true_voltages(board: Board) -> None:
    d, vb = board.d, board.vb
    free = vb.bench.desc.free_nodes
    d.set_voltages(np.arange(8), np.linspace(-4.0, 4.0, 8))
    d.set_bias_currents([0], [1e-6])
    d.set_currents([1], [-2e-6])
    assert d.is_energised() and not vb.is_safe
    true = vb.true_voltages()[free]
    assert np.ptp(true) > 0.01  # a non-trivial operating point
    n = 64
    m = d.read_mean(np.arange(6), n)
    lsb = 20.0 / 2**16
    sd = np.sqrt(SIGMA_V**2 + lsb**2 / 12)  # noise + quantisation per sample
    tol = 5 * sd / np.sqrt(n)
    np.testing.assert_allclose(m.mean_v, true, atol=tol, rtol=0)
    assert not m.flags.any()
    s, f, t = d.read_voltages(np.arange(6), 32)
    assert s.shape == (32, 6) and f.shape == (32, 6) and not f.any()
    np.testing.assert_allclose(s.mean(axis=0), true, atol=5 * sd / np.sqrt(32), rtol=0)
    assert np.all(np.diff(t) > 0)  # one timestamp per sample sweep, increasing
    st = d.get_state()
    assert st.inputs_v.tolist() == np.linspace(-4.0, 4.0, 8).tolist()
    assert st.nudge_a.tolist() == [0.0, -2e-6] and st.bias_a[0] == 1e-6
    d.safe_state()
    assert vb.is_safe and not d.is_energised()


def test_averaging_n_samples_shrinks_the_spread_by_sqrt_n(board: Board) -> None:
    """Spread of repeated means: N = 16 is 4x tighter than N = 1 (within 20 %, seed 1)."""
    d = board.d
    d.set_voltages(np.arange(8), np.linspace(-3.0, 3.0, 8))
    repeats = 60
    spread = {}
    for n in (1, 16):
        means = np.array([d.read_mean(np.arange(6), n).mean_v for _ in range(repeats)])
        # pool the six channels: each has the same (additive) noise
        spread[n] = float(np.sqrt(((means - means.mean(axis=0)) ** 2).sum()
                                  / (means.size - 6)))
    ratio = spread[1] / spread[16]
    assert ratio == pytest.approx(4.0, rel=0.20), ratio
    # the board's own spread (per-sample std) predicts it: sem = spread / sqrt(N)
    m = d.read_mean(np.arange(6), 16)
    assert float(np.mean(m.sem_v)) == pytest.approx(spread[16], rel=0.3)
    assert spread[1] == pytest.approx(SIGMA_V, rel=0.25)


def test_pulses_change_conductance_exactly_as_the_device_model() -> None:
    """Same seed, same calls on a reference bench: bit-identical conductances."""
    seed = 7
    b = Board(seed=seed)
    try:
        edges = np.arange(b.d.info.n_crosspoints)
        counts = np.where(edges % 2 == 0, 20, -20)
        counts[5] = 0
        g0 = b.d.read_conductance(edges, 0.2)
        rep = b.d.pulse_many(edges, counts, 1.0, 1e-6)
        g1 = b.d.read_conductance(edges, 0.2)
        assert b.d.pulse(3, -1.0, 1e-6, 5) == 5  # negative amplitude: 5 depressing pulses
    finally:
        b.close()
    ref = BenchNetwork(dict(OPTS), np.random.default_rng(seed))
    r0 = ref.conductances(edges)
    nz = np.flatnonzero(counts)
    res = ref.board.program_pulses(edges[nz], counts[nz])
    r1 = ref.conductances(edges)
    assert np.array_equal(g0, r0) and np.array_equal(g1, r1)
    assert rep.applied.tolist() == counts.tolist()
    assert rep.status[5] == PulseStatus.NO_CHANGE
    assert rep.status[nz].tolist() == np.asarray(res.status).tolist()
    # and the physics: potentiated devices went up, depressed ones down (read noise 1 %)
    up, down = nz[counts[nz] > 0], nz[counts[nz] < 0]
    assert np.mean(g1[up] - g0[up]) > 0 > np.mean(g1[down] - g0[down])


def test_every_exchange_is_logged_with_direction_seq_and_command(board: Board) -> None:
    board.records.clear()
    board.d.read_mean([0, 1], 4)
    tx, rx = board.records
    assert (tx.direction, tx.command, rx.direction, rx.command) == ("tx", "READ_NODES", "rx",
                                                                      "READ_NODES")
    assert tx.seq == rx.seq
    assert decode_frame(bytes.fromhex(tx.data_hex)).seq == tx.seq
    reply = decode_reply(decode_frame(bytes.fromhex(rx.data_hex)), Command.READ_NODES)
    assert isinstance(reply, ReadNodesMeanReply)
    assert abs(tx.time_s - time.time()) < 60


def test_disconnecting_puts_the_board_in_its_safe_state(board: Board) -> None:
    board.d.set_voltages([0, 1], [1.0, -1.0])
    assert not board.vb.is_safe
    board.d.transport.close()  # the host vanishes without SAFE_STATE
    assert wait_until(lambda: board.vb.disconnects == 1)
    assert board.vb.is_safe


def test_the_board_answers_damaged_and_unknown_frames() -> None:
    with VirtualBoard(OPTS, seed=0) as vb:
        port = serial.serial_for_url(vb.url, timeout=0.5)
        try:
            bad = bytearray(encode_request(0x0102, GetState()))
            bad[-1] ^= 0xFF
            port.write(b"\x00garbage\xa5" + bytes(bad))
            err = _read_frame(port)
            assert err.is_error and err.seq == 0x0102 and err.payload[0] == ErrorCode.BAD_CRC
            port.write(encode_frame(9, 0x2F, b""))  # unknown command code
            reply = _read_frame(port)
            assert reply.seq == 9 and reply.is_error
            assert reply.payload[0] == ErrorCode.UNKNOWN_COMMAND
            port.write(encode_frame(10, Command.READ_NODES, b"\x00\x01"))  # short payload
            assert _read_frame(port).payload[0] == ErrorCode.BAD_LENGTH
            port.write(encode_request(11, Identify()))  # and it still answers properly
            ident = decode_reply(_read_frame(port), Command.IDENTIFY)
            assert isinstance(ident, IdentifyReply) and ident.n_input_channels == 8
        finally:
            port.close()


def _read_frame(port: Any) -> Any:
    from hwloop.board_protocol import FrameDecoder

    dec = FrameDecoder()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        for ev in dec.feed(port.read(dec.wanted())):
            if not hasattr(ev, "kind"):
                return ev
    raise AssertionError("no frame")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX pseudo-terminal")
def test_a_real_serial_port_on_a_pseudo_terminal() -> None:
    vb = VirtualBoard(OPTS, seed=2)
    path = vb.start_pty()
    try:
        assert path.startswith("/dev/")
        d = SerialBoardDriver.open(path, base_timeout_s=0.5, retry=FAST)
        assert isinstance(d.transport.port, serial.Serial)
        d.set_voltages([0, 1, 2], [1.0, -1.0, 0.5])
        m = d.read_mean(np.arange(6), 8)
        np.testing.assert_allclose(m.mean_v, vb.true_voltages()[vb.bench.desc.free_nodes],
                                   atol=5 * SIGMA_V)
        s, _, _ = d.read_voltages(np.arange(6), 2000)  # 110 kB through the terminal
        assert s.shape == (2000, 6)
        d.transport.close()  # the terminal closes: the board goes safe
        assert wait_until(lambda: vb.disconnects >= 1) and vb.is_safe
    finally:
        vb.close()


def test_command_line_serves_and_prints_the_url() -> None:
    cmd = [sys.executable, "-m", "simulated_device.virtual_board", "--arch", "8-4-2",
           "--preset", "reram", "--port", "0"]
    with child(cmd, cwd=ROOT) as proc:  # killed with its group if anything fails
        url = proc.wait_line(lambda line: line.endswith("\n")).strip()
        assert url.startswith("socket://127.0.0.1:")
        with SerialBoardDriver.open(url, base_timeout_s=1.0) as d:
            assert d.info.n_input_channels == 8
        proc.signal(signal.SIGINT)
        assert proc.wait() == 0, proc.text("stderr")


def test_ctrl_c_does_not_cut_an_exchange_in_half(board: Board) -> None:
    """SIGINT during an exchange: the reply is read in full first, then KeyboardInterrupt.

    The signal is raised from inside the exchange, right after the request went out
    (no timer racing the scheduler); the board answers 0.08 s later.
    """
    board.vb.set_faults(FaultConfig(delayed_replies=1, reply_delay_s=0.08,
                                    commands=frozenset({Command.READ_NODES})))
    board.d.transport.base_timeout_s = 5.0  # a busy machine must not turn the delay into a retry
    log = board.d.transport.on_exchange
    assert log is not None
    sent: list[float] = []

    def interrupt_after_the_request(rec: ExchangeRecord) -> None:
        log(rec)
        if rec.direction == "tx" and rec.command == "READ_NODES" and not sent:
            sent.append(time.monotonic())
            signal.raise_signal(signal.SIGINT)  # the handler runs before this returns

    board.d.transport.on_exchange = interrupt_after_the_request
    board.records.clear()
    with pytest.raises(KeyboardInterrupt):
        board.d.read_mean([0, 1], 4)
    assert sent and time.monotonic() - sent[0] >= 0.07  # the interrupt waited for the reply
    assert [(r.direction, r.command) for r in board.records] == [("tx", "READ_NODES"),
                                                                 ("rx", "READ_NODES")]
    assert board.records[0].seq == board.records[1].seq  # the reply was read in full
    board.events.clear()
    assert board.d.read_mean([0, 1], 4).n_samples == 4  # the link is in step
    assert board.kinds() == []  # no stale reply, no garbage, no retry


# ---------------------------------------------------------------------------
# Fault injection
# ---------------------------------------------------------------------------

READS = frozenset({Command.READ_NODES})
SETS = frozenset({Command.SET_INPUTS})


@pytest.mark.parametrize(
    "fault",
    [
        FaultConfig(silent=1, commands=READS),  # timeout: never answered
        FaultConfig(drop_replies=1, commands=READS),  # executed, reply lost
        FaultConfig(garble_replies=1, commands=READS),  # reply damaged on the line
        FaultConfig(bad_crc_replies=1, commands=READS),
        FaultConfig(busy_replies=1, commands=READS),
        FaultConfig(silent=2, commands=READS),  # two attempts lost, the third succeeds
    ],
    ids=["timeout", "dropped", "garbled", "bad-crc", "busy", "two-timeouts"],
)
def test_idempotent_reads_recover_with_a_bounded_visible_retry(
    board: Board, fault: FaultConfig
) -> None:
    board.d.set_voltages([0], [1.0])
    board.vb.set_faults(fault)
    t0 = time.monotonic()
    m = board.d.read_mean(np.arange(6), 4)
    assert time.monotonic() - t0 < 5.0  # bounded (<= 0.5 s of timeouts), room for a busy CPU
    assert m.n_samples == 4 and np.all(np.isfinite(m.mean_v))
    retries = [m for k, m in board.events if k == "retry"]
    expected = 2 if fault.silent == 2 else 1
    assert len(retries) == expected, board.events
    assert "READ_NODES" in retries[0]


def test_a_garbled_reply_is_detected_before_the_timeout(board: Board) -> None:
    board.vb.set_faults(FaultConfig(garble_replies=1, commands=frozenset({Command.GET_STATE})))
    board.d.transport.base_timeout_s = 30.0  # a long deadline that must not be waited out
    t0 = time.monotonic()
    board.d.get_state()
    assert time.monotonic() - t0 < 10.0
    assert any("damaged" in m for k, m in board.events if k == "retry")


def test_a_late_reply_is_discarded_as_stale(board: Board) -> None:
    # the reply comes 0.5 s after the 1 s timeout: the retry has gone out by then, even
    # on a busy machine, so the late reply arrives inside the retry's exchange
    board.d.transport.base_timeout_s = 1.0
    board.vb.set_faults(FaultConfig(delayed_replies=1, reply_delay_s=1.5, commands=READS))
    m = board.d.read_mean([0], 2)
    assert m.n_samples == 2
    assert "retry" in board.kinds()
    assert any("stale READ_NODES" in m for _, m in board.events)


def test_garbage_before_a_reply_needs_no_retry(board: Board) -> None:
    board.vb.set_faults(FaultConfig(noise_before_replies=1, commands=READS))
    assert board.d.read_mean([0], 2).n_samples == 2
    assert "retry" not in board.kinds() and "warning" in board.kinds()


def test_a_set_without_reply_is_never_resent_and_the_state_reconciles(board: Board) -> None:
    d, vb = board.d, board.vb
    # 1) the board never got it (silent): not applied
    vb.set_faults(FaultConfig(silent=1, commands=SETS))
    with pytest.raises(UnconfirmedCommandError) as ei:
        d.set_voltages([0, 1], [1.0, 2.0])
    assert ei.value.resynchronised and ei.value.command == Command.SET_INPUTS
    assert "re-read the state" in str(ei.value).lower()
    assert vb.command_counts[Command.SET_INPUTS] == 1  # sent once, never resent
    assert "retry" not in board.kinds()
    assert not d.get_state().inputs_v.any()  # reconcile: nothing was applied
    # 2) the board applied it and the reply was lost: GET_STATE shows it
    vb.set_faults(FaultConfig(drop_replies=1, commands=SETS))
    with pytest.raises(UnconfirmedCommandError):
        d.set_voltages([0, 1], [1.0, 2.0])
    assert vb.command_counts[Command.SET_INPUTS] == 2
    st = d.get_state()
    assert st.inputs_v[:2].tolist() == [1.0, 2.0] and st.energised
    d.safe_state()
    assert vb.is_safe


@pytest.mark.parametrize("kind", ["drop", "garble", "truncate", "crc-reply", "timeout"])
def test_a_pulse_whose_reply_is_lost_is_reconciled_by_last_reply(kind: str) -> None:
    """A lost PULSE reply: LAST_REPLY says whether the board executed that request.

    Reference: a second virtual board with the same seed gets the same pulses without a
    fault; the faulted board must end with the same conductances (the train applied
    exactly once) and the driver must report the same applied counts. ``timeout`` loses
    the request itself: LAST_REPLY shows it never ran, so it is sent again, once.
    """
    ref, hit = Board(seed=3), Board(seed=3)
    try:
        cps, counts = [0, 1, 2], [20, -20, 5]
        want = ref.d.pulse_many(cps, counts, 1.0, 1e-6)
        hit.vb.set_faults(FaultConfig(rules=(FaultRule(kind, "PULSE"),)))
        got = hit.d.pulse_many(cps, counts, 1.0, 1e-6)
        assert got.applied.tolist() == want.applied.tolist() == counts
        assert got.status.tolist() == want.status.tolist()
        np.testing.assert_array_equal(hit.vb.bench.board.network.g_flat,
                                      ref.vb.bench.board.network.g_flat)
        text = " | ".join(m for _, m in hit.events)
        if kind == "timeout":  # the request was lost before the board saw it
            assert hit.vb.command_counts[Command.PULSE] == 2
            assert "LAST_REPLY shows the board never executed it" in text, text
        else:
            assert hit.vb.command_counts[Command.PULSE] == 1
            assert "LAST_REPLY shows the board executed it" in text, text
        assert hit.vb.command_counts[Command.LAST_REPLY] == 1
    finally:
        ref.close()
        hit.close()


def test_last_reply_after_a_restart_and_after_a_busy_reply() -> None:
    """LAST_REPLY: nothing kept after a restart; an error reply is kept like any reply."""
    vb = VirtualBoard(OPTS, seed=0)
    try:
        def ask(seq: int, req: Any) -> Any:
            sends = vb.respond(decode_frame(encode_request(seq, req)))
            return decode_reply(decode_frame(sends[-1][1]), req.COMMAND)

        assert ask(1, LastReply()).frame is None  # nothing answered since start
        vb.set_faults(FaultConfig(rules=(FaultRule("busy", "PULSE"),)))
        with pytest.raises(BoardError, match="BUSY"):
            ask(2, Pulse(np.array([0]), np.array([3]), 1.0, 1e-6))
        kept = ask(3, LastReply()).frame
        assert kept is not None and kept.seq == 2 and kept.is_error
        with pytest.raises(BoardError, match="BUSY"):
            decode_reply(kept, Command.PULSE)
        ask(4, Identify())  # idempotent requests are not kept
        assert ask(5, LastReply()).frame.seq == 2
        vb.set_faults(FaultConfig(rules=(FaultRule("reboot", "SET_INPUTS"),)))
        assert vb.respond(decode_frame(encode_request(6, SetInputs(np.array([0]),
                                                                   np.array([0.1]))))) == []
        assert ask(7, LastReply()).frame is None  # the restart forgot it
    finally:
        vb.close()


def test_a_pulse_with_a_damaged_reply_on_a_board_without_last_reply_is_unconfirmed(
    board: Board,
) -> None:
    """A board that answers LAST_REPLY with UNKNOWN_COMMAND: the host cannot tell.

    The PULSE is not resent; re-reading the conductances shows it was applied.
    """
    d, vb = board.d, board.vb
    g0 = d.read_conductance([0, 1], 0.2)
    vb.set_faults(FaultConfig(
        garble_replies=1, commands=frozenset({Command.PULSE}),
        rules=(FaultRule("unknown-command", "LAST_REPLY", count=None),)))
    with pytest.raises(UnconfirmedCommandError, match="PULSE"):
        d.pulse_many([0, 1], [30, 30], 1.0, 1e-6)
    assert vb.command_counts[Command.PULSE] == 1
    g1 = d.read_conductance([0, 1], 0.2)
    true = vb.bench.board.network.g_flat[:2]
    np.testing.assert_allclose(g1, true, rtol=0.06)  # 1 % read noise
    assert np.all(g1 > g0)  # the pulses were applied: the reconciliation shows it


def test_a_compliance_trip_on_pulses_stops_and_leaves_the_board_safe(board: Board) -> None:
    d, vb = board.d, board.vb
    d.set_voltages([0], [1.0])
    vb.set_faults(FaultConfig(compliance_after_pulses=4))
    with pytest.raises(ComplianceTripError) as ei:
        d.pulse_many([0, 1, 2], [3, -3, 3], 1.0, 1e-6)
    rep = ei.value.report
    assert rep is not None and rep.aborted
    assert rep.applied.tolist() == [3, -1, 0]
    assert rep.status.tolist() == [PulseStatus.OK, PulseStatus.COMPLIANCE, PulseStatus.SKIPPED]
    assert "crosspoint 1" in str(ei.value)
    assert vb.is_safe and not d.is_energised()
    # the role method follows the role contract: fewer pulses returned, not raised
    assert d.pulse(5, 1.0, 1e-6, 10) == 4
    assert any("compliance" in m for k, m in board.events if k == "warning")


def test_a_compliance_trip_on_set_raises_and_the_board_is_safe(board: Board) -> None:
    board.d.set_voltages([0], [1.0])
    board.vb.set_faults(FaultConfig(compliance_on_set=1))  # the next SET_* trips
    with pytest.raises(ComplianceTripError, match="safe state"):
        board.d.set_voltages([1], [2.0])
    assert board.vb.is_safe and not board.d.is_energised()
    assert board.d.get_state().inputs_v[1] == 0.0  # nothing of the tripped SET applied


def test_nan_and_overrange_readings_are_flagged(board: Board) -> None:
    board.vb.set_faults(FaultConfig(nan_channels=frozenset({1}),
                                    overrange_channels=frozenset({4})))
    m = board.d.read_mean(np.arange(6), 8)
    assert np.isnan(m.mean_v[[1, 4]]).all() and np.isfinite(m.mean_v[[0, 2, 3, 5]]).all()
    assert m.flags.tolist() == [0, 1, 0, 0, 1, 0]
    s, f, _ = board.d.read_voltages([1, 0], 3)
    assert np.isnan(s[:, 0]).all() and (f[:, 0] == SampleFlag.OVERRANGE).all()
    assert np.isfinite(s[:, 1]).all() and not f[:, 1].any()


def test_a_board_that_stops_answering_fails_clearly_and_ends_safe() -> None:
    b = Board(retry=RetryPolicy(attempts=2, backoff_s=0.01))
    try:
        b.d.set_voltages([0, 1], [1.0, 1.0])
        b.vb.set_faults(FaultConfig(stop_after_frames=0))
        t0 = time.monotonic()
        with pytest.raises(BoardTimeoutError, match=r"READ_NODES.*2 attempt"):
            b.d.read_mean([0], 4)
        with pytest.raises(UnconfirmedCommandError) as ei:
            b.d.set_voltages([0], [0.5])
        assert not ei.value.resynchronised
        assert time.monotonic() - t0 < 10.0  # bounded: no hang (busy CPU: room to spare)
        # the driver cannot confirm the safe state over a dead link; closing says so,
        # and the closed connection puts the board in its safe state
        with pytest.raises(BoardTimeoutError):
            b.d.close()
        assert not b.d.transport.is_open
        assert wait_until(lambda: b.vb.disconnects == 1) and b.vb.is_safe
    finally:
        b.vb.close()


def test_pulse_counts_are_the_board_reported_ones_on_the_wire() -> None:
    """A PULSE reply that disagrees in length is a protocol error, not a silent truncation."""
    script = [
        (IDENT_TX, IDENT_RX),
        (encode_request(2, _pulse([1, 2], [1, 1])),
         encode_reply(2, Command.PULSE, PulseReply(False, [1], [0]))),
        (encode_request(3, _read_g([1, 2])),
         encode_reply(3, Command.READ_CONDUCTANCE, ReadConductanceReply([1e-5]))),
    ]
    d, port = scripted_driver(script)
    with pytest.raises(HwloopError, match="expected 2"):
        d.pulse_many([1, 2], [1, 1], 1.0, 1e-6)
    with pytest.raises(HwloopError, match="expected 2"):
        d.read_conductance([1, 2], 0.2)
    port.assert_done()


def _pulse(cp: list[int], c: list[int]) -> Any:
    from hwloop.board_protocol import Pulse

    return Pulse(cp, c, 1.0, 1e-6)


def _read_g(cp: list[int]) -> Any:
    from hwloop.board_protocol import ReadConductance

    return ReadConductance(cp, 0.2)
