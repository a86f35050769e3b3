"""The SCPI/TSP drivers through pyvisa-py against the virtual bench on 127.0.0.1.

Every instrument is opened as ``TCPIP::127.0.0.1::PORT::SOCKET`` with the ``@py``
backend; the virtual instruments sit on a :class:`BenchNetwork`, so readings can be
compared with its noise-free voltages and conductances.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import pyvisa

from hwloop.device import SampleFlag
from instruments.daq6510 import DAQ6510
from instruments.keithley707b import Keithley707B, SwitchedCrosspoints
from instruments.keithley2600 import Keithley2600
from instruments.visa_transport import (
    InstrumentStateError,
    InstrumentTimeoutError,
    InstrumentWriteError,
    VisaTransport,
)
from simulated_device.bench_network import BenchNetwork
from simulated_device.virtual_scpi import VirtualScpiBench, crosspoint_spec, smu_channel_names

pytest.importorskip("pyvisa_py")

SIGMA_V = 1e-4  # read noise of the bench network, V
LSB_V = 2 * 10.0 / 2**16  # the reram preset's 16-bit converter on +-10 V


@dataclass
class Rig:
    bench: VirtualScpiBench
    net: BenchNetwork
    smu: Keithley2600
    daq: DAQ6510
    matrix: Keithley707B
    xsmu: Keithley2600
    cross: SwitchedCrosspoints
    events: list[tuple[str, str, str]]


@pytest.fixture
def rig() -> Iterator[Rig]:
    net = BenchNetwork(
        {"arch": "4-3-2", "preset": "reram", "read_noise_v": SIGMA_V}, np.random.default_rng(7)
    )
    events: list[tuple[str, str, str]] = []
    with VirtualScpiBench(net) as bench:
        rm = pyvisa.ResourceManager("@py")

        def connect(name: str) -> VisaTransport:
            return VisaTransport.open(
                bench.resources[name],
                resource_manager=rm,
                name=name,
                timeout_s=0.5,
                resync_timeout_s=0.5,
                backoff_s=0.01,
                on_event=lambda k, m: events.append((name, k, m)),
            )

        smu = Keithley2600(connect("smu"), bench.smu_channels, nplc=0.01)
        daq = DAQ6510(connect("daq"), bench.daq_channels, nplc=0.01)
        matrix = Keithley707B(connect("matrix"))
        xsmu = Keithley2600(connect("xsmu"), ("smua",), nplc=0.01)
        cross = SwitchedCrosspoints(matrix, xsmu.channel(0), bench.crosspoint_routes)
        r = Rig(bench, net, smu, daq, matrix, xsmu, cross, events)
        try:
            assert not any(d.is_energised() for d in (smu, daq, matrix, xsmu))
            yield r
            for d in (smu, daq, matrix, xsmu):
                d.safe_state()
            assert not any(d.is_energised() for d in (smu, daq, matrix, xsmu))
            assert bench.is_safe
        finally:
            for d in (smu, daq, matrix, xsmu):
                d.close()
            rm.close()


def test_virtual_bench_layout() -> None:
    assert smu_channel_names(5) == ("smua", "smub", "node[2].smua", "node[2].smub", "node[3].smua")
    assert [crosspoint_spec(e) for e in (0, 11, 12, 95, 96)] == [
        "1A01",
        "1A12",
        "1B01",
        "1H12",
        "2A01",
    ]


def test_inputs_set_and_nodes_read_within_noise(rig: Rig) -> None:
    v_in = np.array([0.8, -0.6, 0.4, 0.1])
    rig.smu.configure(current_limit_a=0.01, voltage_limit_v=10.0, nplc=0.01)
    rig.smu.set_voltages(np.arange(4), v_in)
    assert rig.smu.is_energised()
    desc = rig.net.desc
    assert np.array_equal(rig.net.inputs_v, v_in)
    n = 25
    samples, flags, stamps = rig.daq.read_voltages(np.arange(len(rig.bench.daq_channels)), n)
    true = rig.bench.with_lock(rig.net.true_voltages)[desc.free_nodes]
    assert samples.shape == (n, len(desc.free_nodes)) and not flags.any()
    assert np.all(np.abs(samples.mean(axis=0) - true) < 4 * SIGMA_V / np.sqrt(n) + LSB_V)
    assert np.all(np.diff(stamps) > 0)
    # current nudges on the output nodes move the free nodes
    n_out = len(desc.output_nodes)
    out_ch = np.arange(4, 4 + n_out)
    rig.smu.set_currents(out_ch, np.full(n_out, 2e-6))
    assert rig.smu.is_energised()  # a query: the writes before it have been executed
    assert np.all(rig.net.nudge_a == 2e-6)
    moved = rig.bench.with_lock(rig.net.true_voltages)[desc.free_nodes]
    assert np.max(np.abs(moved - true)) > 10 * SIGMA_V
    samples, flags, _ = rig.daq.read_voltages(np.arange(len(rig.bench.daq_channels)), n)
    assert np.all(np.abs(samples.mean(axis=0) - moved) < 4 * SIGMA_V / np.sqrt(n) + LSB_V)
    # the SMU measures the node it drives
    sv, sf, _ = rig.smu.read_voltages(out_ch, n)
    assert np.all(np.abs(sv.mean(axis=0) - moved[-n_out:]) < 4 * SIGMA_V / np.sqrt(n) + LSB_V)
    assert not sf.any()


def test_pulse_and_read_conductance(rig: Rig) -> None:
    edges = np.arange(6)
    g_true = rig.net.board.network.g_flat[edges].astype(np.float64).copy()
    g = rig.cross.read_conductance(edges, 0.2)
    assert np.allclose(g, g_true, rtol=0.05)
    applied = [rig.cross.pulse(int(e), 1.0, 1e-4, 20) for e in edges]
    assert applied == [20] * 6
    g_after = rig.net.board.network.g_flat[edges].astype(np.float64)
    assert np.any(g_after > g_true * 1.05)  # potentiated (a few devices may be stuck)
    assert np.allclose(rig.cross.read_conductance(edges, 0.2), g_after, rtol=0.05)
    assert rig.matrix.closed_channels() == ()  # a query: ordered after the open


def test_single_route_guard_on_the_virtual_matrix(rig: Rig) -> None:
    rig.matrix.close_channels(["1A01"])
    g_before = rig.net.board.network.g_flat.copy()
    with pytest.raises(InstrumentStateError, match="only one route may be closed"):
        rig.cross.pulse(3, 1.0, 1e-4, 5)
    assert np.array_equal(rig.net.board.network.g_flat, g_before)
    assert rig.bench.closed_crosspoints() == ("1A01",)


def test_compliance_trip_stops_pulses_and_flags_reads(rig: Rig) -> None:
    rig.bench.faults("xsmu").compliance_after_pulses = 2
    assert rig.cross.pulse(0, -1.0, 1e-4, 10) == 2
    rig.smu.set_voltages(np.array([0]), np.array([0.5]))
    rig.bench.faults("smu").compliance = {"smua"}
    _, flags, _ = rig.smu.read_voltages(np.array([0, 1]), 3)
    assert np.all(flags[:, 0] == SampleFlag.COMPLIANCE) and not flags[:, 1].any()


def test_overrange_and_nan_readings(rig: Rig) -> None:
    ch = rig.bench.daq_channels
    f = rig.bench.faults("daq")
    f.overrange_channels = {ch[0]}
    f.nan_channels = {ch[2]}
    v, flags, _ = rig.daq.read_voltages(np.arange(4), 2)
    assert np.isnan(v[:, [0, 2]]).all() and np.isfinite(v[:, [1, 3]]).all()
    assert np.all(flags[:, [0, 2]] == SampleFlag.OVERRANGE) and not flags[:, [1, 3]].any()


@pytest.mark.parametrize("fault", ["drop", "garble", "slow"])
def test_transient_faults_end_in_a_bounded_retry(rig: Rig, fault: str) -> None:
    f = rig.bench.faults("daq")
    if fault == "drop":
        f.drop_replies = 1
    elif fault == "garble":
        f.garble_replies = 1
    else:
        f.slow_replies, f.slow_delay_s = 1, 1.4  # later than the 1 s timeout of the scan
    rig.events.clear()
    t0 = time.monotonic()
    v, _, _ = rig.daq.read_voltages(np.arange(3), 2)  # first reply: ":INIT;*OPC?"
    assert v.shape == (2, 3) and np.isfinite(v).all()
    assert time.monotonic() - t0 < 5.0
    kinds = [k for name, k, _ in rig.events if name == "daq"]
    assert kinds.count("retry") == 1 and "warning" in kinds


def test_dropped_reply_of_an_idempotent_query_is_retried(rig: Rig) -> None:
    rig.bench.faults("smu").drop_replies = 1
    rig.events.clear()
    assert not rig.smu.is_energised()
    kinds = [k for name, k, _ in rig.events if name == "smu"]
    assert kinds.count("retry") == 1


def test_dead_instrument_gives_a_clear_error(rig: Rig) -> None:
    rig.bench.faults("smu").dead = True
    t0 = time.monotonic()
    with pytest.raises(
        InstrumentTimeoutError, match="smu: no answer to \\*IDN\\? after a device clear"
    ):
        rig.smu.is_energised()
    assert time.monotonic() - t0 < 3.0
    rig.bench.faults("smu").dead = False


def test_pulse_that_loses_its_reply_is_not_retried(rig: Rig) -> None:
    rig.bench.faults("xsmu").drop_replies = 1
    g_before = rig.net.board.network.g_flat.copy()
    with pytest.raises(InstrumentWriteError, match="not retried"):
        rig.cross.pulse(2, 1.0, 1e-4, 7)
    # the pulses did happen once (the instrument executed the chunk), never twice
    changed = np.flatnonzero(rig.net.board.network.g_flat != g_before)
    assert set(changed.tolist()) <= {2}
    assert rig.matrix.closed_channels() == ()  # the route was opened again


def test_round_trip_over_loopback(rig: Rig, record_property: pytest.RecordProperty) -> None:
    t = rig.daq.transport
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        t.query("*IDN?")
    rtt = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(50):
        rig.daq.read_voltages(np.arange(5), 1)
    per_read = (time.perf_counter() - t0) / 50
    record_property("query_round_trip_s", rtt)
    record_property("daq_read_5ch_s", per_read)
    assert rtt < 0.02 and per_read < 0.05


def test_hwloop_2400_driver_on_the_virtual_2400(rig: Rig) -> None:
    from instruments.keithley2400 import Keithley2400 as K2400Driver

    rm = pyvisa.ResourceManager("@py")
    t = VisaTransport.open(
        rig.bench.resources["k2400"], resource_manager=rm, name="k2400", timeout_s=1.0,
        resync_timeout_s=0.5, backoff_s=0.01,
    )
    k = K2400Driver(t, nplc=0.1)
    try:
        assert not k.is_energised()
        k.configure(current_limit_a=1e-3, voltage_limit_v=21, nplc=0.1)
        rig.matrix.close_channels(["1A01"])  # edge 0 to the crosspoint SMUs
        # a query orders the close before the 2400's reading: the two instruments are
        # separate connections, and a write returns before the matrix executes it
        assert rig.matrix.closed_channels() == ("1A01",)
        g0 = float(rig.net.board.network.g_flat[0])
        assert k.measure_current_at(0.1) == pytest.approx(0.1 * g0, rel=0.05)
        applied = k.pulse_voltage(1.0, 2e-3, 5)
        assert applied == 5
        assert float(rig.net.board.network.g_flat[0]) != g0  # the routed device moved
        rig.bench.faults("k2400").compliance_after_pulses = 2
        assert k.pulse_voltage(-1.0, 2e-3, 6) == 2  # stops counting at compliance
        k.set_voltages(np.array([0]), np.array([0.2]))
        v, flags, _ = k.read_voltages(np.array([0]), 3)
        assert np.allclose(v, 0.2) and flags.shape == (3, 1)
        k.safe_state()
        assert not k.is_energised()
        rig.matrix.safe_state()
        assert rig.matrix.closed_channels() == ()  # a query: ordered after the open
        assert rig.bench.is_safe
    finally:
        k.close()  # (the resource manager is shared with the fixture, which closes it)


def test_the_2400_as_the_crossbars_pulsing_smu_programs_and_reads_crosspoints() -> None:
    """The contract backend ``board-scpi-2400``: the 707B routes, hwloop's 2400 driver
    pulses and reads (the 2601B crosspoint SMU is switched off to prove it is unused)."""
    from tests.board_helpers import open_scpi

    board, bench = open_scpi(5, "4-3-2", crosspoint_smu="keithley2400")
    try:
        bench.faults("xsmu").dead = True  # any exchange with it would time out
        ident = board.describe().info["instruments"]["crossbar"]["identity"]  # type: ignore[index]
        assert "MODEL 2400" in ident.upper(), ident
        g = board.read_conductances()
        true = bench.with_lock(lambda: bench.network.board.network.g_flat.copy())
        np.testing.assert_allclose(g, true, rtol=0.05)  # Ohm's law at the read voltage
        res = board.program_pulses(np.array([0, 1]), np.array([20, -20]))
        assert res.applied_pulses.tolist() == [20, -20]
        after = bench.with_lock(lambda: bench.network.board.network.g_flat.copy())
        assert after[0] > true[0] and after[1] < true[1]
        np.testing.assert_array_equal(after[2:], true[2:])
    finally:
        board.close()
    assert bench.is_safe
