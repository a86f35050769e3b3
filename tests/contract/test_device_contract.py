"""The Device contract: every backend must pass this suite unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwloop.device import (
    BoardDescription,
    CurrentNudge,
    Device,
    NodeReading,
    NodeRole,
    ProgramResult,
    ProgramStatus,
    ResistiveNudge,
)
from hwloop.errors import ConfigError, LimitError, UnsupportedError


def _inputs(desc: BoardDescription, batch: int, seed: int = 0, frac: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(desc.input_nodes)
    return rng.uniform(-frac, frac, size=(batch, n)) * min(desc.limits.v_input_max_v, 10.0)


def _settled_read(board: Device, n: int = 1) -> NodeReading:
    board.settle()
    return board.read_nodes(n)


def test_is_a_device(board: Device) -> None:
    assert isinstance(board, Device)


def test_description_is_consistent(board: Device) -> None:
    d = board.describe()
    assert d is board.describe()
    roles = set(d.node_roles)
    assert {NodeRole.INPUT, NodeRole.OUTPUT} <= roles
    assert d.edge_nodes.shape == (d.n_edges, 2)
    assert 0 <= d.g_min_s < d.g_max_s
    if d.layers is not None:
        assert sum(b.n_edges for b in d.layers) == d.n_edges
        for b in d.layers:
            block = d.edge_nodes[b.edge_offset : b.edge_offset + b.n_edges]
            assert np.array_equal(block[:, 0], np.repeat(b.src, len(b.dst)))
            assert np.array_equal(block[:, 1], np.tile(b.dst, len(b.src)))
    json.dumps(d.summary())  # JSON-able


def test_read_returns_every_raw_sample(board: Device) -> None:
    d = board.describe()
    board.apply_inputs(_inputs(d, batch=3))
    r = _settled_read(board, n=5)
    n_free = len(d.free_nodes)
    assert r.samples_v.shape == (5, 3, n_free)
    assert r.flags.shape == (5, 3, n_free) and r.flags.dtype == np.uint8
    assert r.timestamps_s.shape == (5, 3)
    assert np.array_equal(r.nodes, d.free_nodes)
    stamps = np.sort(r.timestamps_s.ravel())
    assert np.all(np.diff(stamps) > 0), "every sample has its own time"
    assert r.mean_v.shape == (3, n_free) and r.sem_v.shape == (3, n_free)
    later = board.read_nodes(1)
    assert later.timestamps_s.min() > r.timestamps_s.max()


def test_reads_of_chosen_nodes(board: Device) -> None:
    d = board.describe()
    v = _inputs(d, batch=2)
    board.apply_inputs(v)
    board.settle()
    r = board.read_nodes(1, nodes=d.input_nodes[:3])
    # inputs read back what was applied (within read noise)
    tol = 0.0 if board_is_exact(board) else 0.05 * np.abs(v).max() + 1e-3
    assert np.allclose(r.mean_v, v[:, :3], atol=tol)


def board_is_exact(board: Device) -> bool:
    return board.describe().info.get("device_model") == "ideal"


def test_bad_read_arguments(board: Device) -> None:
    d = board.describe()
    board.apply_inputs(_inputs(d, 1))
    with pytest.raises(ConfigError):
        board.read_nodes(0)
    with pytest.raises(ConfigError):
        board.read_nodes(1, nodes=np.array([d.n_nodes + 5]))


def test_inputs_beyond_limits_are_rejected_and_nothing_changes(board: Device) -> None:
    d = board.describe()
    v = _inputs(d, batch=2)
    board.apply_inputs(v)
    before = _settled_read(board)
    bad = v.copy()
    bad[0, 0] = 2 * d.limits.v_input_max_v
    with pytest.raises(LimitError):
        board.apply_inputs(bad)
    with pytest.raises(ConfigError):
        board.apply_inputs(v[:, :-1])
    with pytest.raises(ConfigError):
        board.apply_inputs(np.full_like(v, np.nan))
    after = _settled_read(board)
    if board_is_exact(board):
        assert np.array_equal(before.samples_v, after.samples_v)
    else:
        assert np.allclose(before.mean_v, after.mean_v, atol=0.05 * np.abs(v).max() + 1e-3)


def test_resistive_nudge_pulls_outputs_toward_targets(board: Device, backend: str) -> None:
    from .conftest import NO_RESISTIVE_NUDGE

    d = board.describe()
    if backend in NO_RESISTIVE_NUDGE:
        n_out = len(d.output_nodes)
        board.apply_inputs(_inputs(d, batch=2))
        with pytest.raises(UnsupportedError, match="--nudge current"):
            board.apply_nudge(ResistiveNudge(0.1 * d.limits.beta_max_s, np.zeros((2, n_out))))
        pytest.skip(f"{backend}: no resistive nudges (current sources on the outputs)")
    board.apply_inputs(_inputs(d, batch=4, seed=1))
    free = _settled_read(board, 4)
    out = np.searchsorted(d.free_nodes, d.output_nodes)
    y = free.mean_v[:, out] + 1.0
    beta = min(d.limits.beta_max_s, 1.0)
    board.apply_nudge(ResistiveNudge(beta_s=beta, targets_v=y))
    nudged = _settled_read(board, 4)
    gap_free = np.abs(free.mean_v[:, out] - y)
    gap_nudged = np.abs(nudged.mean_v[:, out] - y)
    assert np.all(gap_nudged < gap_free)
    board.apply_nudge(None)
    released = _settled_read(board, 4)
    if board_is_exact(board):
        assert np.allclose(released.mean_v, free.mean_v, atol=1e-9)


def test_current_nudge_raises_outputs(board: Device) -> None:
    d = board.describe()
    board.apply_inputs(_inputs(d, batch=2, seed=2))
    free = _settled_read(board, 4)
    out = np.searchsorted(d.free_nodes, d.output_nodes)
    # 0.1 in simulation units: 0.1 V across the conductance scale g_scale_s
    i = np.full((2, len(d.output_nodes)), min(d.limits.i_nudge_max_a, 0.1 * d.g_scale_s))
    board.apply_nudge(CurrentNudge(currents_a=i))
    up = _settled_read(board, 4)
    assert np.all(up.mean_v[:, out] > free.mean_v[:, out])


def test_nudges_beyond_limits_or_capability_are_rejected(board: Device) -> None:
    d = board.describe()
    board.apply_inputs(_inputs(d, batch=2))
    n_out = len(d.output_nodes)
    with pytest.raises(LimitError):
        board.apply_nudge(ResistiveNudge(2 * d.limits.beta_max_s, np.zeros((2, n_out))))
    with pytest.raises(LimitError):
        board.apply_nudge(CurrentNudge(np.full((2, n_out), 2 * d.limits.i_nudge_max_a)))
    with pytest.raises(ConfigError):
        board.apply_nudge(CurrentNudge(np.zeros((3, n_out))))
    if not d.supports_complex_nudge:
        with pytest.raises(UnsupportedError):
            board.apply_nudge(ResistiveNudge(0.1 + 0.1j, np.zeros((2, n_out))))


def test_conductances_within_bounds(board: Device) -> None:
    d = board.describe()
    g = board.read_conductances()
    assert g.shape == (d.n_edges,)
    assert np.all(np.isfinite(g))
    if board_is_exact(board):
        assert g.min() >= d.g_min_s and g.max() <= d.g_max_s
    sub = board.read_conductances(np.array([0, d.n_edges - 1]))
    assert sub.shape == (2,)


def test_pulses_move_conductances_and_report_what_was_done(board: Device) -> None:
    d = board.describe()
    edges = np.arange(min(6, d.n_edges))
    pulses = np.array([3, -3, 1, -1, 0, 5])[: len(edges)]
    if d.pulse_step_s == 0:
        with pytest.raises(UnsupportedError):
            board.program_pulses(edges, pulses)
        return
    g0 = board.read_conductances(edges)
    res = board.program_pulses(edges, pulses)
    assert isinstance(res, ProgramResult)
    assert np.array_equal(res.edges, edges)
    assert np.array_equal(res.requested_pulses, pulses)
    assert res.applied_pulses.shape == pulses.shape
    assert np.all(np.abs(res.applied_pulses) <= np.abs(pulses))
    assert res.status[pulses == 0].tolist() == [ProgramStatus.NO_CHANGE] * int((pulses == 0).sum())
    # on average, potentiating pulses raise and depressing pulses lower the conductance
    # (a single noisy device may move the wrong way); check with many edges
    many = np.arange(min(200, d.n_edges))
    mid = 0.5 * (d.g_min_s + d.g_max_s)
    board.program_deltas(many, mid - board.read_conductances(many))  # start mid-range
    before = board.read_conductances(many)
    signs = np.where(many % 2 == 0, 4, -4)
    board.program_pulses(many, signs)
    after = board.read_conductances(many)
    step = d.pulse_step_s
    assert np.mean(after[signs > 0] - before[signs > 0]) > step
    assert np.mean(after[signs < 0] - before[signs < 0]) < -step
    del g0


def test_deltas_are_applied_open_loop(board: Device) -> None:
    d = board.describe()
    edges = np.arange(min(4, d.n_edges))
    g0 = board.read_conductances(edges)
    span = d.g_max_s - d.g_min_s if np.isfinite(d.g_max_s) else 0.01
    delta = np.array([0.05, -0.05, 0.0, 0.02])[: len(edges)] * span
    res = board.program_deltas(edges, delta)
    assert np.array_equal(res.requested_delta_s, delta)
    if board_is_exact(board):
        expect = np.clip(g0 + delta, d.g_min_s, d.g_max_s)
        assert np.allclose(board.read_conductances(edges), expect, rtol=0, atol=1e-15)


def test_pulse_limits_are_checked_before_any_pulse(board: Device) -> None:
    d = board.describe()
    edges = np.arange(3)
    g0 = board.read_conductances(edges)
    too_many = np.array([1, 1, d.limits.max_pulses_per_call + 1])
    with pytest.raises((LimitError, UnsupportedError)):
        board.program_pulses(edges, too_many)
    g1 = board.read_conductances(edges)
    if board_is_exact(board):
        assert np.array_equal(g0, g1)
    with pytest.raises(ConfigError):
        board.program_pulses(np.array([0, 0]), np.array([1, 1]))
    with pytest.raises(ConfigError):
        board.program_pulses(np.array([d.n_edges]), np.array([1]))


def test_programming_changes_the_equilibrium(board: Device) -> None:
    d = board.describe()
    board.apply_inputs(_inputs(d, batch=1, seed=3))
    before = _settled_read(board, 8).mean_v
    span = d.g_max_s - d.g_min_s if np.isfinite(d.g_max_s) else 0.5
    edges = np.arange(d.n_edges)
    board.program_deltas(edges, np.full(d.n_edges, 0.1 * span))
    after = _settled_read(board, 8).mean_v
    assert not np.allclose(before, after)


def test_bias_currents_round_trip(board: Device) -> None:
    d = board.describe()
    b = np.linspace(-1e-3, 1e-3, len(d.bias_nodes))
    board.set_bias_currents(b)
    assert np.allclose(board.read_bias_currents(), b)
    with pytest.raises(ConfigError):
        board.set_bias_currents(b[:-1])


def test_safe_state_is_idempotent_and_zeroes_sources(board: Device) -> None:
    d = board.describe()
    board.apply_inputs(_inputs(d, batch=2))
    board.apply_nudge(CurrentNudge(np.zeros((2, len(d.output_nodes)))))
    assert not board.is_safe
    board.safe_state()
    assert board.is_safe
    board.safe_state()
    assert board.is_safe
    r = board.read_nodes(1, nodes=d.input_nodes)
    tol = 0.0 if board_is_exact(board) else 1e-3
    assert np.all(np.abs(r.mean_v) <= tol)


def test_close_is_idempotent_and_leaves_safe_state(board: Device) -> None:
    d = board.describe()
    board.apply_inputs(_inputs(d, batch=1))
    board.close()
    board.close()
    assert board.is_safe
    with pytest.raises(ConfigError):
        board.apply_inputs(_inputs(d, batch=1))


def test_same_seed_gives_the_same_board_and_reads(backend: str) -> None:
    from .conftest import BACKENDS, HARDWARE, REPLAY, REPLAY_SKIPS

    if backend == HARDWARE:
        pytest.skip("a real board's reads are not reproducible from a seed")
    if backend == REPLAY:
        pytest.skip(REPLAY_SKIPS)

    reads = []
    for _ in range(2):
        b = BACKENDS[backend](np.random.default_rng(99))
        d = b.describe()
        b.apply_inputs(_inputs(d, batch=2))
        b.settle()
        reads.append((b.read_conductances(), b.read_nodes(3).samples_v))
        b.close()
    assert np.array_equal(reads[0][0], reads[1][0])
    assert np.array_equal(reads[0][1], reads[1][1])
