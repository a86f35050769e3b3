"""The DRN block-coordinate-descent solver against an independent QP reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.optimize import lsq_linear

from hwloop.errors import ConfigError
from simulated_device.drn import DRN, n_excitatory, parse_arch, pixels_to_inputs


def qp_reference(
    net: DRN, v_in: np.ndarray, beta: float = 0.0, y: np.ndarray | None = None
) -> list[np.ndarray]:
    """Solve min 1/2 v'Hv - f'v under the diode bounds with scipy's BVLS, per example.

    The free nodes' Hessian H is the weighted Laplacian restricted to them; the
    Cholesky factor turns the QP into a bounded least-squares problem that BVLS
    (an active-set method) solves exactly.
    """
    sizes = net.layer_sizes
    free = sizes[1:]
    n = sum(free)
    offs = np.concatenate([[0], np.cumsum(free)])
    H = np.zeros((n, n))
    for k, w in enumerate(net.weights):
        w = w.astype(np.float64)
        if k == 0:
            H[offs[0] : offs[1], offs[0] : offs[1]] += np.diag(w.sum(axis=0))
        else:
            a = slice(offs[k - 1], offs[k])
            b = slice(offs[k], offs[k + 1])
            H[a, a] += np.diag(w.sum(axis=1))
            H[b, b] += np.diag(w.sum(axis=0))
            H[a, b] -= w
            H[b, a] -= w.T
    if beta:
        o = slice(offs[-2], offs[-1])
        H[o, o] += beta * np.eye(free[-1])
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    for k in range(len(free) - 1):
        h = n_excitatory(free[k])
        lo[offs[k] : offs[k] + h] = 0.0
        hi[offs[k] + h : offs[k + 1]] = 0.0
    L = np.linalg.cholesky(H)
    out = []
    for b in range(v_in.shape[0]):
        f = net.b_flat.astype(np.float64).copy()
        f[offs[0] : offs[1]] += v_in[b] @ net.weights[0].astype(np.float64)
        if beta:
            f[offs[-2] : offs[-1]] += beta * y[b]
        rhs = scipy.linalg.solve_triangular(L, f, lower=True)
        res = lsq_linear(L.T, rhs, bounds=(lo, hi), method="bvls", tol=1e-15, lsmr_tol=None)
        out.append(res.x)
    v = np.array(out)
    return [v[:, offs[k] : offs[k + 1]] for k in range(len(free))]


def random_net(sizes: tuple[int, ...], seed: int, bias_scale: float = 0.05) -> DRN:
    rng = np.random.default_rng(seed)
    net = DRN.initialise(sizes, rng)
    net.b_flat[:] = rng.normal(0.0, bias_scale, size=net.b_flat.shape)
    # avoid nodes with no conductance at all (the QP needs them attached)
    net.g_flat[:] += 1e-3
    net.weights_changed()
    return net


def mnist_like(rng: np.random.Generator, batch: int, pixels: int) -> np.ndarray:
    x = rng.uniform(0, 1, size=(batch, pixels))
    return x * (rng.uniform(size=x.shape) < 0.19)


@pytest.mark.parametrize("sizes", [(16, 6, 3), (20, 8, 6, 4), (12, 10, 6, 6, 2), (40, 30, 10)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_cd_matches_qp_reference(sizes: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    net = random_net(sizes, seed)
    v_in = pixels_to_inputs(mnist_like(rng, 5, sizes[0] // 2), 10.0)
    V, stats = net.relax(v_in, tol_v=1e-14, max_sweeps=100_000)
    ref = qp_reference(net, v_in)
    err = max(float(np.max(np.abs(a - b))) for a, b in zip(V, ref, strict=True))
    assert err <= 1e-9, (err, stats)


@pytest.mark.parametrize("beta", [0.5, -0.2, 2.0])
def test_nudged_equilibrium_matches_qp_reference(beta: float) -> None:
    sizes = (30, 12, 8, 5)
    rng = np.random.default_rng(7)
    net = random_net(sizes, 3)
    v_in = pixels_to_inputs(mnist_like(rng, 4, 15), 20.0)
    y = np.eye(5)[rng.integers(0, 5, size=4)]
    V, _ = net.relax(v_in, beta_s=beta, targets_v=y, tol_v=1e-14, max_sweeps=100_000)
    ref = qp_reference(net, v_in, beta, y)
    err = max(float(np.max(np.abs(a - b))) for a, b in zip(V, ref, strict=True))
    assert err <= 1e-9


def test_kkt_conditions_hold_at_the_solution() -> None:
    sizes = (24, 10, 10, 4)
    rng = np.random.default_rng(11)
    net = random_net(sizes, 5)
    v_in = pixels_to_inputs(mnist_like(rng, 6, 12), 15.0)
    V, _ = net.relax(v_in, tol_v=1e-14, max_sweeps=100_000)
    layers = [v_in, *V]
    for k in range(1, len(layers)):
        # net current into node from resistors and its bias source; must be 0 at free nodes
        i_in = layers[k - 1] @ net.weights[k - 1] - layers[k] * net.weights[k - 1].sum(axis=0)
        if k < len(layers) - 1:
            w = net.weights[k]
            i_in += layers[k + 1] @ w.T - layers[k] * w.sum(axis=1)
        i_in += net.biases[k - 1]
        scale = 1e-12 * max(1.0, float(np.abs(v_in).max()))
        if k == len(layers) - 1:
            assert np.max(np.abs(i_in)) < scale
            continue
        h = n_excitatory(layers[k].shape[1])
        exc, inh = layers[k][:, :h], layers[k][:, h:]
        assert exc.min() >= 0 and inh.max() <= 0
        # unclamped nodes: zero net current; clamped ones: the diode carries the
        # excess current in its forward direction (>= 0)
        free_exc = exc > 0
        free_inh = inh < 0
        assert np.all(np.abs(i_in[:, :h][free_exc]) < scale)
        assert np.all(np.abs(i_in[:, h:][free_inh]) < scale)
        # at v = 0 the diode from ground conducts into the node only if resistors pull it down
        assert np.all(i_in[:, :h][~free_exc] <= scale)
        assert np.all(i_in[:, h:][~free_inh] >= -scale)


def test_four_sweeps_converge_on_drn_1h_like_network() -> None:
    """docs/physics.md §2.2: 4 asynchronous sweeps land within ~1e-10 V of the fixed point."""
    rng = np.random.default_rng(0)
    net = DRN.initialise((1568, 1024, 10), rng)
    v_in = pixels_to_inputs(mnist_like(rng, 4, 784), 480.0)
    v4, _ = net.relax(v_in, n_sweeps=4)
    vinf, stats = net.relax(v_in, tol_v=1e-13, max_sweeps=200)
    assert stats.max_change_v < 1e-13
    assert np.max(np.abs(v4[-1] - vinf[-1])) < 1e-8


def test_float32_agrees_with_float64() -> None:
    rng = np.random.default_rng(3)
    net64 = DRN.initialise((1568, 100, 10), rng)
    net32 = DRN(net64.layer_sizes, net64.g_flat.astype(np.float32), net64.b_flat.astype(np.float32))
    v_in = pixels_to_inputs(mnist_like(rng, 8, 784), 100.0)
    a, _ = net64.relax(v_in, n_sweeps=4)
    b, _ = net32.relax(v_in, n_sweeps=4)
    assert b[-1].dtype == np.float32
    rel = np.max(np.abs(a[-1] - b[-1])) / np.max(np.abs(a[-1]))
    assert rel < 1e-4


def test_paired_input_shortcut_equals_full_product() -> None:
    rng = np.random.default_rng(4)
    net = DRN.initialise((40, 12, 3), rng)
    x = mnist_like(rng, 3, 20)
    paired = pixels_to_inputs(x, 50.0)
    unpaired = paired.copy()
    unpaired[:, 20:] *= 0.5  # breaks the +/- symmetry: the full product is used
    for v_in in (paired, unpaired):
        got, _ = net.relax(v_in, tol_v=1e-14, max_sweeps=10_000)
        assert np.max(np.abs(got[-1] - qp_reference(net, v_in)[-1])) < 1e-9


def test_warm_start_reaches_the_same_equilibrium_faster() -> None:
    rng = np.random.default_rng(5)
    net = random_net((30, 20, 5), 6)
    v_in = pixels_to_inputs(mnist_like(rng, 2, 15), 30.0)
    cold, s_cold = net.relax(v_in, tol_v=1e-13, max_sweeps=10_000)
    warm, s_warm = net.relax(v_in, state=cold, tol_v=1e-13, max_sweeps=10_000)
    assert s_warm.sweeps < s_cold.sweeps
    assert np.max(np.abs(warm[-1] - cold[-1])) < 1e-12


def test_energy_is_minimal_at_equilibrium() -> None:
    rng = np.random.default_rng(8)
    net = random_net((20, 10, 4), 9)
    v_in = pixels_to_inputs(mnist_like(rng, 3, 10), 10.0)
    V, _ = net.relax(v_in, tol_v=1e-14, max_sweeps=100_000)
    e0 = net.energy(v_in, V)
    for _ in range(20):
        P = [v + rng.normal(0, 1e-3, v.shape) for v in V]
        h = n_excitatory(10)
        P[0][:, :h] = np.maximum(P[0][:, :h], 0)
        P[0][:, h:] = np.minimum(P[0][:, h:], 0)
        assert np.all(net.energy(v_in, P) >= e0 - 1e-12)


def test_negative_beta_that_breaks_convexity_is_rejected() -> None:
    net = DRN.initialise((8, 4, 2), np.random.default_rng(0))
    v_in = np.zeros((1, 8))
    with pytest.raises(ConfigError, match="non-positive"):
        net.relax(v_in, beta_s=-1e6, targets_v=np.zeros((1, 2)))


@pytest.mark.parametrize("text", ["", "1568", "1568-x-10", "10--3", "5-0-2"])
def test_bad_architecture_strings_are_rejected(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_arch(text)


def test_macs_per_example() -> None:
    net = DRN.initialise((1568, 100, 10), np.random.default_rng(0))
    assert net.macs_per_example(4) == 784 * 100 + 4 * 2 * 100 * 10


def reference_sweeps(net: DRN, v_in: np.ndarray, n_sweeps: int) -> list[np.ndarray]:
    """Plain transcription of the pseudo-code of docs/physics.md §2.3, no caching or folding."""
    L = net.n_free_layers
    V = [np.zeros((v_in.shape[0], n)) for n in net.layer_sizes[1:]]
    layers_in = [v_in, *V]
    for _ in range(n_sweeps):
        for parity in (0, 1):
            for k in range(parity, L, 2):
                below = v_in if k == 0 else V[k - 1]
                num = below @ net.weights[k] + net.biases[k]
                den = net.weights[k].sum(axis=0).copy()
                if k + 1 < L:
                    num = num + V[k + 1] @ net.weights[k + 1].T
                    den = den + net.weights[k + 1].sum(axis=1)
                new = num / den
                if k + 1 < L:
                    h = n_excitatory(new.shape[1])
                    new[:, :h] = np.maximum(new[:, :h], 0)
                    new[:, h:] = np.minimum(new[:, h:], 0)
                V[k] = new
    del layers_in
    return V


@pytest.mark.parametrize("sizes", [(16, 6, 3), (20, 8, 6, 4), (12, 10, 6, 6, 2)])
@pytest.mark.parametrize("n_sweeps", [1, 2, 4])
def test_fixed_sweep_count_matches_the_plain_algorithm(
    sizes: tuple[int, ...], n_sweeps: int
) -> None:
    rng = np.random.default_rng(21)
    net = random_net(sizes, 4)
    v_in = pixels_to_inputs(mnist_like(rng, 3, sizes[0] // 2), 10.0)
    got, _ = net.relax(v_in, n_sweeps=n_sweeps)
    ref = reference_sweeps(net, v_in, n_sweeps)
    for a, b in zip(got, ref, strict=True):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-13)
