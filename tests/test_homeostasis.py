"""Jacobian homeostasis on the non-reciprocal emulator (docs/estimators.md §4, §4.2)."""

from __future__ import annotations

import numpy as np

from simulated_device import homeostasis as hs
from simulated_device import nonreciprocal as nr

SIZES = (5, 6, 5, 3)


def _setup(**kw: float) -> tuple[nr.NonReciprocalNet, np.ndarray, np.ndarray]:
    net = nr.initialise(SIZES, np.random.default_rng(0), weight_gain=3.0, **kw)
    v_in = np.random.default_rng(1).normal(size=(3, SIZES[0]))
    return net, v_in, nr.solve(net, v_in).u.real


def test_reciprocal_network_has_no_homeostatic_loss() -> None:
    net, _v_in, u0 = _setup()
    assert abs(hs.homeostatic_loss(net, u0)) < 1e-14
    assert np.abs(hs.homeostatic_gradient(net, u0)).max() < 1e-14
    assert hs.symmetry_ratio(net, u0) == 1.0


def test_loss_is_twice_the_antisymmetric_norm_and_probes_estimate_it() -> None:
    net, v_in, u0 = _setup(asymmetry=0.5, fwd_gain=1.3, bwd_gain=0.7)
    J = nr.jacobian(net, u0)
    a = (J - np.swapaxes(J, 1, 2)) / 2
    exact = hs.homeostatic_loss(net, u0)
    assert exact > 0
    np.testing.assert_allclose(exact, 2 * np.mean(np.sum(a * a, axis=(1, 2))) / net.n_free)
    est = hs.probe_loss(net, u0, v_in, np.random.default_rng(2), n_probes=400)
    assert abs(est - exact) < 0.1 * exact


def test_exact_gradient_matches_finite_differences_and_probes() -> None:
    net, _v_in, u0 = _setup(asymmetry=0.5, fwd_gain=1.3, bwd_gain=0.7)
    g = hs.homeostatic_gradient(net, u0)
    h = 1e-6
    fd = np.empty_like(g)
    for k in range(len(g)):
        old = net.g_flat[k]
        net.g_flat[k] = old + h
        lp = hs.homeostatic_loss(net, u0)
        net.g_flat[k] = old - h
        lm = hs.homeostatic_loss(net, u0)
        net.g_flat[k] = old
        fd[k] = (lp - lm) / (2 * h)
    assert np.linalg.norm(fd - g) / np.linalg.norm(g) < 1e-6
    n_in = SIZES[0] * SIZES[1]
    assert not np.any(g[:n_in])  # input couplings do not enter J
    pg = hs.probe_gradient(net, u0, np.random.default_rng(3), n_probes=3000)
    assert np.linalg.norm(pg - g) / np.linalg.norm(g) < 0.15


def test_homeostatic_descent_restores_functional_symmetry() -> None:
    net, v_in, u0 = _setup(asymmetry=0.6, fwd_gain=1.3, bwd_gain=0.7)
    loss0, sym0 = hs.homeostatic_loss(net, u0), hs.symmetry_ratio(net, u0)
    for _ in range(200):
        net.g_flat -= 0.5 * hs.homeostatic_gradient(net, u0)
        np.maximum(net.g_flat, 0.0, out=net.g_flat)
    assert hs.homeostatic_loss(net, u0) < 1e-3 * loss0
    assert hs.symmetry_ratio(net, u0) > max(sym0, 0.99)
    # the relaxed network's EP response now matches the true error vector
    u1 = nr.solve(net, v_in, start=u0).u.real
    y = np.zeros((3, SIZES[-1]))
    e, lam = nr.nudge_response(net, u1, y), nr.adjoint(net, u1, y)
    assert np.linalg.norm(e - lam) < 0.05 * np.linalg.norm(lam)
