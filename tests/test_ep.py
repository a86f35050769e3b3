"""EP estimates against finite differences of the loss at equilibrium, and their bias order."""

from __future__ import annotations

import numpy as np
import pytest

from hwloop.plugins import open_board
from protocols.engine import run_step
from protocols.estimators import Centered, OneSided, RandomSign, Stencil
from protocols.plan import build_step_plan
from protocols.updates import ep_gradient, output_cost
from simulated_device.board import EmulatedBoard
from simulated_device.drn import pixels_to_inputs
from tests.board_helpers import central_difference

ARCH = "40-16-10"


def make_board(seed: int = 0) -> EmulatedBoard:
    board = open_board("emulator", {"arch": ARCH, "tol_v": 1e-14, "dtype": "float64"},
                       np.random.default_rng(seed))
    assert isinstance(board, EmulatedBoard)
    rng = np.random.default_rng(seed + 100)
    board.set_bias_currents(rng.normal(0, 0.02, len(board.describe().bias_nodes)))
    # keep every node attached so the loss is smooth almost everywhere
    board.program_deltas(None, np.full(board.describe().n_edges, 0.02))
    return board


def batch(seed: int = 1, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 20)) * (rng.uniform(size=(n, 20)) < 0.6)
    y = np.eye(10)[rng.integers(0, 10, n)]
    return pixels_to_inputs(x, 20.0), y


def loss(board: EmulatedBoard, v_in: np.ndarray, y: np.ndarray) -> float:
    board.apply_nudge(None)
    board.apply_inputs(v_in)
    board.settle()
    out = board.read_nodes(1, nodes=board.describe().output_nodes).mean_v
    return float(output_cost(out, y).mean())


def finite_difference(board: EmulatedBoard, v_in: np.ndarray, y: np.ndarray, h: float = 1e-6):
    net = board.network

    def weights_changed() -> None:
        net.weights_changed()
        board._free_state = None
        board._dirty = True

    def biases_changed() -> None:
        board._dirty = True

    def cost() -> float:
        return loss(board, v_in, y)

    g_fd = central_difference(net.g_flat, cost, h, weights_changed)
    b_fd = central_difference(net.b_flat, cost, h, biases_changed)
    board._dirty = True
    return g_fd, b_fd


def ep_estimate(board: EmulatedBoard, stencil: Stencil, v_in: np.ndarray, y: np.ndarray):
    plan = build_step_plan(stencil)
    plan = tuple(s for s in plan if type(s).__name__ not in ("ComputeUpdate", "Program"))
    rec = run_step(plan, board, v_in, y, learner=None)
    phases = []
    for beta in stencil.betas_s:
        ph = next(p for p, b in rec.betas_s.items() if b == beta)
        phases.append(rec.mean_v(ph))
    return ep_gradient(board.describe(), v_in, phases, stencil.coeffs)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def reference():
    board = make_board()
    v_in, y = batch()
    return board, v_in, y, finite_difference(board, v_in, y)


def test_centered_ep_matches_finite_differences(reference) -> None:
    board, v_in, y, (g_fd, b_fd) = reference
    grad = ep_estimate(board, Centered().stencil(0.01, np.random.default_rng(0)), v_in, y)
    assert rel_err(grad.g, g_fd) < 1e-3
    assert rel_err(grad.b, b_fd) < 1e-3
    # and element-wise where the gradient is not tiny
    big = np.abs(g_fd) > 1e-3 * np.abs(g_fd).max()
    assert np.max(np.abs(grad.g[big] - g_fd[big]) / np.abs(g_fd[big])) < 2e-2


def test_bias_order_one_sided_linear_centered_quadratic(reference) -> None:
    board, v_in, y, (g_fd, _) = reference
    betas = np.array([0.4, 0.2, 0.1, 0.05])
    err_one = [rel_err(ep_estimate(board, OneSided().stencil(b, None), v_in, y).g, g_fd)
               for b in betas]
    err_cen = [rel_err(ep_estimate(board, Centered().stencil(b, None), v_in, y).g, g_fd)
               for b in betas]
    slope_one = np.polyfit(np.log(betas), np.log(err_one), 1)[0]
    slope_cen = np.polyfit(np.log(betas), np.log(err_cen), 1)[0]
    assert 0.8 < slope_one < 1.2, slope_one
    assert 1.7 < slope_cen < 2.3, slope_cen
    assert all(c < o for c, o in zip(err_cen, err_one, strict=True))


def test_random_sign_is_unbiased_at_first_order_on_average(reference) -> None:
    board, v_in, y, (g_fd, _) = reference
    beta = 0.05
    plus = ep_estimate(board, Stencil((0.0, beta), (-1 / beta, 1 / beta)), v_in, y).g
    minus = ep_estimate(board, Stencil((0.0, -beta), (1 / beta, -1 / beta)), v_in, y).g
    one_sided = rel_err(plus, g_fd)
    average = rel_err(0.5 * (plus + minus), g_fd)
    assert average < 0.2 * one_sided
    rng = np.random.default_rng(3)
    signs = [RandomSign().stencil(beta, rng).betas_s[1] for _ in range(2000)]
    assert abs(np.mean(np.sign(signs))) < 0.1  # 2000 fair coin flips: |mean| < 0.1 at > 5 sigma


def test_descent_step_lowers_the_loss(reference) -> None:
    board, v_in, y, _ = reference
    grad = ep_estimate(board, Centered().stencil(0.01, None), v_in, y)
    before = loss(board, v_in, y)
    lr = 0.05 / np.abs(grad.g).max()
    board.program_deltas(None, -lr * grad.g)
    after = loss(board, v_in, y)
    board.program_deltas(None, lr * grad.g)  # undo for the other tests
    assert after < before
