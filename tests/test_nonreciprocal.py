"""The non-reciprocal network emulator: physics, exact gradient, Device behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from hwloop.device import Device, ResistiveNudge
from hwloop.errors import ConfigError, UnsupportedError
from hwloop.plugins import open_board
from simulated_device import nonreciprocal as nr
from simulated_device.nonreciprocal_board import NonReciprocalBoard
from tests.board_helpers import central_difference

SIZES = (5, 6, 4, 3)


def _net(seed: int, **kw: float) -> nr.NonReciprocalNet:
    net = nr.initialise(SIZES, np.random.default_rng(seed), **kw)
    net.biases_a[:] = np.random.default_rng(seed + 1).normal(0, 0.05, net.n_free)
    return net


def _data(seed: int, batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, SIZES[0])), 0.3 * rng.normal(size=(batch, SIZES[-1]))


def test_reciprocal_case_is_the_gradient_system() -> None:
    net = _net(0)
    assert net.is_reciprocal()
    v_in, y = _data(1)
    u0 = nr.solve(net, v_in).u.real
    # F = -dE/du everywhere (central differences of the co-content)
    u = u0 + 0.05 * np.random.default_rng(2).normal(size=u0.shape)
    F = nr.vector_field(net, u, v_in)
    h = 1e-6
    grad = np.empty_like(u)
    for k in range(u.shape[1]):
        du = np.zeros_like(u)
        du[:, k] = h
        grad[:, k] = (nr.energy(net, u + du, v_in) - nr.energy(net, u - du, v_in)) / (2 * h)
    np.testing.assert_allclose(F, -grad, rtol=1e-7, atol=1e-9)
    # the fixed point is the energy minimum: symmetric, negative definite Jacobian
    J = nr.jacobian(net, u0)
    np.testing.assert_allclose(J, np.swapaxes(J, 1, 2), atol=1e-14)
    assert np.all(np.linalg.eigvalsh(J) < 0)
    # so the EP response equals the adjoint: no asymmetry bias
    np.testing.assert_allclose(nr.nudge_response(net, u0, y), nr.adjoint(net, u0, y), rtol=1e-10)


def test_nonreciprocal_case_has_an_asymmetric_jacobian() -> None:
    net = _net(0, asymmetry=0.5, fwd_gain=1.3, bwd_gain=0.7)
    assert not net.is_reciprocal()
    v_in, y = _data(1)
    u0 = nr.solve(net, v_in).u.real
    J = nr.jacobian(net, u0)
    assert np.abs(J - np.swapaxes(J, 1, 2)).max() > 0.05
    e, lam = nr.nudge_response(net, u0, y), nr.adjoint(net, u0, y)
    assert np.linalg.norm(e - lam) > 0.05 * np.linalg.norm(lam)


@pytest.mark.parametrize("kw", [{}, {"asymmetry": 0.5, "fwd_gain": 1.3, "bwd_gain": 0.7}])
def test_implicit_gradient_matches_central_differences(kw: dict[str, float]) -> None:
    net = _net(3, **kw)
    v_in, y = _data(4)
    res = nr.solve(net, v_in)
    assert res.converged.all()
    u0 = res.u.real
    g, b = nr.exact_gradient(net, v_in, u0, y)

    def loss() -> float:
        return nr.loss(net, nr.solve(net, v_in, start=u0).u.real, y)

    fd_g = central_difference(net.g_flat, loss, 1e-5)
    fd_b = central_difference(net.biases_a, loss, 1e-5)
    assert np.linalg.norm(fd_g - g) / np.linalg.norm(g) < 1e-6
    assert np.linalg.norm(fd_b - b) / np.linalg.norm(b) < 1e-6


def test_complex_nudges_solve_holomorphically() -> None:
    net = _net(5, asymmetry=0.3, fwd_gain=1.2, bwd_gain=0.9)
    v_in, y = _data(6)
    u0 = nr.solve(net, v_in).u.real
    beta = 0.4 * np.exp(1j * 0.7)
    up = nr.solve(net, v_in, nr.Nudging(beta, y), start=u0)
    um = nr.solve(net, v_in, nr.Nudging(np.conj(beta), y), start=u0)
    assert up.converged.all() and um.converged.all()
    np.testing.assert_allclose(um.u, np.conj(up.u), atol=1e-13)  # real network: conjugate pair
    # complex-step derivative (docs/estimators.md §3.4) is the exact nudge response
    h = 1e-20
    # (tol 0: keep iterating, the tiny imaginary residual is below any tolerance)
    cs = nr.solve(net, v_in, nr.Nudging(1j * h, y), start=u0, tol_a=0.0, max_iter=4).u.imag / h
    np.testing.assert_allclose(cs, nr.nudge_response(net, u0, y), rtol=1e-9, atol=1e-14)


def _board(**opts: object) -> NonReciprocalBoard:
    b = open_board("nonreciprocal", {"arch": "5-6-4-3", **opts}, np.random.default_rng(7))
    assert isinstance(b, NonReciprocalBoard)
    return b


def test_board_implements_the_device_contract() -> None:
    board = _board(asymmetry=0.2, read_noise_v=1e-3)
    assert isinstance(board, Device)
    desc = board.describe()
    assert desc.supports_complex_nudge and desc.backend == "nonreciprocal"
    assert len(desc.info["couplings"]) == len(desc.layers or ())  # type: ignore[arg-type]
    v_in, y = _data(8)
    board.apply_inputs(v_in)
    board.settle()
    free = board.read_nodes(4000)
    assert free.samples_v.shape == (4000, 3, 13)
    assert abs(float(np.std(free.samples_v - board.free_state())) - 1e-3) < 5e-5
    board.apply_nudge(ResistiveNudge(0.5j, y))
    board.settle()
    r = board.read_nodes(2)
    assert np.iscomplexobj(r.samples_v) and board.last_converged().all()
    board.apply_nudge(None)
    board.settle()
    np.testing.assert_allclose(board.read_nodes(1).samples_v.imag if np.iscomplexobj(
        board.read_nodes(1).samples_v) else 0.0, 0.0)
    with pytest.raises(UnsupportedError):
        board.program_pulses(np.array([0]), np.array([1]))
    board.safe_state()
    assert board.is_safe
    board.close()
    with pytest.raises(ConfigError):
        board.settle()


def test_write_noise_makes_forward_and_backward_drift_apart() -> None:
    board = _board(write_noise=0.3)
    net = board.network
    assert net.is_reciprocal()
    desc = board.describe()
    n = desc.n_edges
    for _ in range(5):
        board.program_deltas(None, np.full(n, 0.01))
    assert not net.is_reciprocal(rtol=1e-3)
    wf, wb = net.forward(1), net.backward(1)
    assert np.abs(wb - wf.T).max() > 1e-3
    # a request beyond zero is cut at the bound and reported
    res = board.program_deltas(np.array([0]), np.array([-10.0]))
    assert res.status[0] == 2 and board.read_conductances(np.array([0]))[0] == 0.0


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        open_board("nonreciprocal", {"nonsense": 1}, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        open_board("nonreciprocal", {"arch": "4-3"}, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        open_board("nonreciprocal", {"read_noise_v": -1}, np.random.default_rng(0))


def test_a_floating_node_is_a_one_line_circuit_error() -> None:
    """A hidden node cut off from every coupling with its diode off has no fixed point."""
    from hwloop.errors import CircuitError

    net = nr.initialise((3, 2, 2), np.random.default_rng(0))
    net.g_flat[:] = 0.0  # nothing conducts
    net.biases_a[:] = 1e-3
    # start where every diode is far off: its derivative underflows to exactly 0
    start = 300.0 * np.where(net.diode_sign == 0, 1.0, net.diode_sign)[None, :]
    with pytest.raises(CircuitError, match="singular"):
        nr.solve(net, np.ones((1, 3)), start=start)
