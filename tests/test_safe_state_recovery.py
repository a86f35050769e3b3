"""Safe state when the link misbehaves: reconnect and command it before giving up.

Faults come from the virtual benches' own injection hooks (``FaultConfig`` of the
virtual serial board, ``Faults`` of each virtual SCPI instrument). Every test checks
the instrument's state on the virtual side (what the hardware would show), not only
what the host believes.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from hwloop.board_protocol import FRAME_OVERHEAD, Command, ReadConductance
from hwloop.errors import HwloopError, LimitError
from instruments.board_faults import RECONNECT_ATTEMPTS
from instruments.transport import BoardTimeoutError, TransportError
from instruments.visa_transport import InstrumentTimeoutError
from simulated_device.virtual_board import FaultConfig
from tests.board_helpers import open_scpi, open_serial, scpi_board_text, serial_board_text
from tests.procs import wait_until

ARCH = "16-8-4"
N_IN = 16


def inputs(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=(batch, N_IN))


def read_once(board: Any, v_inputs: np.ndarray) -> None:
    """Apply ``v_inputs`` (V), settle and read the nodes once (the sources are then on)."""
    board.apply_inputs(v_inputs)
    board.settle()
    board.read_nodes(1)


def events(board: object) -> str:
    return " | ".join(f"{k}: {m}" for k, m in board.events)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- serial board

def test_serial_read_that_fails_every_attempt_still_ends_in_a_commanded_safe_state() -> None:
    board, vb = open_serial(3, ARCH, read_noise_v=0.0, timeout_s=0.2, retry_attempts=2)
    try:
        board.apply_inputs(inputs())
        board.settle()
        vb.set_faults(FaultConfig(commands=frozenset({Command.READ_NODES}), silent=1000))
        with pytest.raises(BoardTimeoutError, match="no valid reply to READ_NODES"):
            board.read_nodes(1)
        # the board still answers IDENTIFY and SAFE_STATE: the host commanded the safe state
        # over the live link (no disconnect happened: the board's own rule did not act)
        assert vb.is_safe and vb.disconnects == 0
        text = events(board)
        assert "reconnecting on a live connection (attempt 1 of" in text, text
        assert "reconnected (attempt 1) and confirmed its safe state" in text, text
        assert "NOT confirmed" not in text
    finally:
        board.close()


def test_serial_board_that_never_answers_again_is_reported_on_one_uncut_line() -> None:
    board, vb = open_serial(3, ARCH, read_noise_v=0.0, timeout_s=0.15, retry_attempts=2)
    try:
        read_once(board, inputs())
        vb.set_faults(FaultConfig(stop_after_frames=0))
        with pytest.raises(TransportError):
            board.read_nodes(1)
        text = events(board)
        assert text.count("reconnecting on a") == RECONNECT_ATTEMPTS, text
        assert "reconnecting on a fresh connection (attempt 2 of" in text
        unsafe = [m for k, m in board.events if "safe state NOT confirmed" in m]
        assert len(unsafe) == 1, text
        msg = unsafe[0]
        assert "\n" not in msg and f"not answering after {RECONNECT_ATTEMPTS} reconnection" in msg
        # the transport's own advice is kept whole, not cut mid-word
        assert "check the cable, the port and the board's power" in msg, msg
        assert msg.endswith("its link is closed on close()"), msg
    finally:
        board.close()  # raises nothing more: the fault was already reported
    assert wait_until(lambda: vb.is_safe, 10.0)  # the board's own go-safe-on-disconnect rule


@pytest.mark.parametrize("fault", ["busy", "silent"])
def test_a_set_command_that_was_not_applied_is_reconciled_and_sent_again(fault: str) -> None:
    board, vb = open_serial(4, ARCH, read_noise_v=0.0, timeout_s=0.2)
    try:
        v = inputs(1, seed=2)
        board.apply_inputs(v)
        board.settle()
        ref = board.read_nodes(1).mean_v
        board.apply_inputs(np.zeros_like(v))
        board.settle()
        board.read_nodes(1)
        sets = frozenset({Command.SET_INPUTS})
        vb.set_faults(FaultConfig(commands=sets, busy_replies=1) if fault == "busy"
                      else FaultConfig(commands=sets, silent=1))
        board.apply_inputs(v)
        board.settle()
        got = board.read_nodes(1).mean_v
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)  # the levels did arrive
        text = events(board)
        assert "GET_STATE shows it not applied; sending it again (attempt 2 of 3)" in text, text
        assert vb.command_counts[Command.SET_INPUTS] >= 3  # 0 V, the lost one, the resend
    finally:
        board.close()
    assert vb.is_safe


def test_a_lost_read_conductance_reply_is_noticed_after_the_work_not_the_transfer() -> None:
    # 9600 baud: the full reply (160 edges x 8 bytes) takes 1.3 s on the line; a lost one
    # is noticed once the board's planned work is over, and the read is retried
    text = serial_board_text(ARCH, timeout_s=0.2).replace(
        "retry_backoff_s = 0.0", "retry_backoff_s = 0.0\nbaudrate = 9600")
    board, vb = open_serial(4, ARCH, read_noise_v=0.0, text=text)
    try:
        g0 = board.read_conductances()
        vb.set_faults(FaultConfig(commands=frozenset({Command.READ_CONDUCTANCE}), silent=1))
        g = board.read_conductances()
        np.testing.assert_allclose(g, g0, rtol=0.1)  # read noise only: the retry answered
        n = g.size
        work = n * vb.info.g_read_time_s
        request = len(ReadConductance(np.arange(n), 0.2).payload())
        first_byte_s = 0.2 + work + 10.0 * (request + FRAME_OVERHEAD) / 9600
        full_s = first_byte_s + 10.0 * (8 * n + 4 + FRAME_OVERHEAD) / 9600
        retry = [m for k, m in board.events if k == "retry" and "READ_CONDUCTANCE" in m]
        assert retry, events(board)
        found = re.search(r"within ([0-9.e+-]+) s", retry[0])
        assert found is not None, retry[0]
        waited = float(found.group(1))
        assert waited == pytest.approx(first_byte_s, rel=2e-3), (waited, first_byte_s)
        assert full_s - waited > 1.0  # the old deadline included the reply's 1.3 s transfer
    finally:
        board.close()


# --------------------------------------------------------------------------- SCPI bench

def _fast_scpi_text() -> str:
    # short VISA timeouts so a lost reply is noticed quickly
    return scpi_board_text(ARCH).replace('visa_library = "@py" }',
                                         'visa_library = "@py", timeout_s = 0.5 }')


def test_scpi_smu_that_loses_two_replies_is_reconnected_and_switched_off() -> None:
    board, bench = open_scpi(6, ARCH, text=_fast_scpi_text())
    try:
        read_once(board, inputs())
        assert not bench.is_safe  # sources on
        bench.faults("smu").drop_replies = 2  # the query and its *IDN? resynchronisation
        with pytest.raises(InstrumentTimeoutError):
            read_once(board, inputs(2, seed=5))
        assert bench.is_safe, "the SMU outputs were left on"
        text = events(board)
        assert "'smu' (keithley2600" in text and "reconnected (attempt" in text, text
    finally:
        board.close()


def test_scpi_instrument_that_never_answers_leaves_the_others_safe_and_says_so() -> None:
    board, bench = open_scpi(6, ARCH, text=_fast_scpi_text())
    try:
        read_once(board, inputs())
        bench.faults("daq").dead = True
        with pytest.raises(InstrumentTimeoutError):
            board.read_nodes(1)
        assert bench.is_safe  # the SMUs are off and no relay is closed: the DAQ sources nothing
        unsafe = [m for k, m in board.events if "safe state NOT confirmed" in m]
        assert len(unsafe) == 1 and "'daq' (daq6510" in unsafe[0], events(board)
        assert f"not answering after {RECONNECT_ATTEMPTS} reconnection attempts" in unsafe[0]
        assert "'smu'" not in unsafe[0] and "'crossbar'" not in unsafe[0]
    finally:
        bench.faults("daq").dead = False
        board.close()


def test_scpi_source_compliance_is_seen_when_a_separate_meter_reads_the_nodes() -> None:
    board, bench = open_scpi(6, ARCH)
    try:
        read_once(board, inputs(4))
        assert board.compliance_trips == 0
        bench.faults("smu").compliance = {bench.smu_channels[0]}
        with pytest.raises(LimitError, match="compliance tripped 4 times"):
            board.read_nodes(1)
        text = events(board)
        assert "source channel(s) [0] in compliance during the reading" in text, text
        assert bench.is_safe
    finally:
        bench.faults("smu").compliance = set()
        board.close()


@pytest.mark.parametrize("slow", [False, True], ids=["lost-replies", "late-reply"])
def test_scpi_matrix_link_fault_mid_route_ends_with_every_relay_open(slow: bool) -> None:
    board, bench = open_scpi(6, ARCH, text=_fast_scpi_text())
    try:
        board.read_conductances(np.array([0, 1]))
        f = bench.faults("matrix")
        if slow:
            f.slow_replies, f.slow_delay_s = 1, 1.5  # later than the 0.5 s timeout
        else:
            f.drop_replies = 2
        with pytest.raises(HwloopError):
            board.read_conductances(np.arange(8))
        assert bench.closed_crosspoints() == ()
        assert bench.is_safe
        assert "reconnected (attempt" in events(board), events(board)
    finally:
        board.close()
