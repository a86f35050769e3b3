"""Emulator-specific behaviour of EmulatedBoard (beyond the Device contract)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwloop.device import CurrentNudge, ResistiveNudge, SampleFlag
from hwloop.errors import ConfigError
from hwloop.plugins import open_board
from simulated_device.board import EmulatedBoard, default_limits
from simulated_device.device_models import get_preset
from simulated_device.drn import DRN, pixels_to_inputs


def inputs(batch: int, gain: float = 100.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(batch, 784)) * (rng.uniform(size=(batch, 784)) < 0.19)
    return pixels_to_inputs(x, gain)


def test_read_noise_statistics_at_the_board() -> None:
    sigma = 5e-5
    board = open_board("emulator", {"arch": "1568-100-10", "read_noise_v": sigma},
                       np.random.default_rng(0))
    board.apply_inputs(inputs(4))
    board.settle()
    r = board.read_nodes(400)
    exact = board.node_voltages()[:, board.describe().free_nodes]
    dev = r.samples_v - exact[None]
    # 400 x 4 x 110 draws: the sample std is within 2 % of sigma (> 10 standard errors)
    assert abs(dev.std() / sigma - 1) < 0.02
    assert abs(dev.mean()) < 5 * sigma / np.sqrt(dev.size)
    # averaging N samples: sigma / sqrt(N)
    means = r.samples_v.reshape(40, 10, 4, -1).mean(axis=1) - exact[None]
    assert abs(means.std() / (sigma / np.sqrt(10)) - 1) < 0.05


def test_nudged_settles_restart_from_the_free_equilibrium() -> None:
    """With few sweeps the answer depends on the start: +beta after -beta must equal +beta
    straight after the free phase (the published protocol)."""
    a = open_board("emulator", {"arch": "1568-100-10", "n_sweeps": 1}, np.random.default_rng(0))
    b = open_board("emulator", {"arch": "1568-100-10", "n_sweeps": 1}, np.random.default_rng(0))
    v = inputs(2)
    y = np.eye(10)[[3, 7]]
    for board in (a, b):
        board.apply_inputs(v)
        board.settle()
    a.apply_nudge(ResistiveNudge(-1.0, y))
    a.settle()
    a.apply_nudge(ResistiveNudge(1.0, y))
    a.settle()
    b.apply_nudge(ResistiveNudge(1.0, y))
    b.settle()
    assert np.array_equal(a.read_nodes(1).samples_v, b.read_nodes(1).samples_v)


def test_new_inputs_or_conductances_invalidate_the_cached_solution() -> None:
    board = open_board("emulator", {"arch": "1568-100-10", "tol_v": 1e-13, "dtype": "float64"},
                       np.random.default_rng(1))
    assert isinstance(board, EmulatedBoard)
    v = inputs(3)
    board.apply_inputs(v)
    board.settle()
    first = board.read_nodes(1).mean_v
    board.program_deltas(None, np.full(board.describe().n_edges, 1e-3))
    board.settle()
    second = board.read_nodes(1).mean_v
    ref, _ = board.network.relax(v, tol_v=1e-13, max_sweeps=10_000)
    assert not np.allclose(first, second)
    assert np.allclose(second[:, -10:], ref[-1], atol=1e-10)
    board.apply_inputs(v * 0.5)
    board.settle()
    ref_half, _ = board.network.relax(v * 0.5, tol_v=1e-13, max_sweeps=10_000)
    assert np.allclose(board.read_nodes(1).mean_v[:, -10:], ref_half[-1], atol=1e-10)


def test_compliance_is_flagged_when_a_source_exceeds_it() -> None:
    net = DRN.initialise((1568, 100, 10), np.random.default_rng(0))
    limits = dataclasses.replace(default_limits(net), compliance_a=1.0)
    board = EmulatedBoard(net, get_preset("ideal"), np.random.default_rng(0), limits=limits)
    v = inputs(3)
    v[1] = 0.0  # example 1: no drive, no current
    board.apply_inputs(v)
    board.settle()
    r = board.read_nodes(2)
    cur = net.source_currents(v, board._state)
    over = np.any(np.abs(cur) > 1.0, axis=1)
    assert over[0] and not over[1]
    flagged = np.any(r.flags & SampleFlag.COMPLIANCE, axis=(0, 2))
    assert np.array_equal(flagged, over)


def test_adc_overrange_is_flagged_on_the_realistic_preset() -> None:
    board = open_board("emulator", {"arch": "16-8-4", "preset": "reram"}, np.random.default_rng(0))
    d = board.describe()
    board.apply_inputs(np.full((1, 16), 5.0))
    board.apply_nudge(CurrentNudge(np.full((1, 4), 1e-2)))  # drives outputs far beyond +/-10 V
    board.settle()
    r = board.read_nodes(3)
    out = np.searchsorted(d.free_nodes, d.output_nodes)
    assert np.all(r.flags[:, :, out] & SampleFlag.OVERRANGE)
    assert np.all(np.abs(r.samples_v[:, :, out]) <= d.v_read_range_v)


def test_timestamps_advance_with_the_simulated_clock() -> None:
    board = open_board("emulator", {"arch": "16-8-4"}, np.random.default_rng(0))
    assert isinstance(board, EmulatedBoard)
    board.apply_inputs(np.zeros((2, 16)))
    board.settle(0.5)
    r = board.read_nodes(3)
    assert r.timestamps_s.min() > 0.5
    assert np.allclose(np.diff(np.sort(r.timestamps_s.ravel())), 2e-3)
    assert board.clock_s == pytest.approx(0.5 + 6 * 2e-3)


@pytest.mark.parametrize("opts", [{"arch": "16-x-4"}, {"dtype": "float16"}, {"preset": "nope"},
                                  {"colour": "red"}, {"read_noise_v": -1.0}, {"n_sweeps": 0}])
def test_bad_emulator_options_are_rejected(opts: dict) -> None:
    with pytest.raises(ConfigError):
        open_board("emulator", opts, np.random.default_rng(0))
