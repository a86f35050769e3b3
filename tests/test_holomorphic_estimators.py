"""Multi-point and Cauchy EP estimators, non-reciprocal emulator (docs/estimators.md §3, §5)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest

from hwloop.device import Device
from hwloop.errors import ConfigError, UnsupportedError
from hwloop.plugins import open_board
from protocols.holomorphic import (
    choose_beta,
    estimate,
    make_stencil,
    optimal_radius,
)
from protocols.updates import local_gradient
from simulated_device.nonreciprocal_board import NonReciprocalBoard
from tests.board_helpers import settled_nonreciprocal


def _rel_err(board: NonReciprocalBoard, v_in: np.ndarray, y: np.ndarray, name: str, r: float,
             n: int = 4) -> float:
    est = estimate(board, v_in, y, make_stencil(name, r, n), bias_check=False)
    ref = board.exact_nudge_response(y)
    return float(np.linalg.norm(est.error - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize(
    ("name", "order", "radii"),
    [
        ("one-sided", 1, (1e-3, 4e-3, 1.6e-2)),
        ("centered", 2, (1e-2, 3e-2, 9e-2)),
        ("four-point", 4, (5e-2, 1e-1, 2e-1)),
        ("cauchy", 4, (5e-2, 1e-1, 2e-1)),
    ],
)
def test_bias_order_in_beta(name: str, order: int, radii: tuple[float, ...]) -> None:
    board, v_in, y = settled_nonreciprocal(asymmetry=0.4, fwd_gain=1.2, bwd_gain=0.8)
    errs = [_rel_err(board, v_in, y, name, r) for r in radii]
    slope = np.polyfit(np.log(radii), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.15, (name, slope, errs)


def test_cauchy_is_exact_at_finite_radius() -> None:
    board, v_in, y = settled_nonreciprocal(asymmetry=0.4, fwd_gain=1.2, bwd_gain=0.8)
    one_sided = _rel_err(board, v_in, y, "one-sided", 1.0)
    cauchy8 = _rel_err(board, v_in, y, "cauchy", 1.0, 8)
    assert one_sided > 0.1
    assert cauchy8 < one_sided / 30
    # inside the analyticity radius the aliasing error O(r^N) reaches round-off
    assert _rel_err(board, v_in, y, "cauchy", 0.1, 10) < 1e-12
    # N = 4 needs 3 solves (conjugate pairs), N = 2 is the centered rule
    assert make_stencil("cauchy", 1.0, 4).n_solves == 3
    assert _rel_err(board, v_in, y, "cauchy", 0.1, 2) == pytest.approx(
        _rel_err(board, v_in, y, "centered", 0.1), rel=1e-9)


def test_estimates_carry_bias_and_variance_diagnostics() -> None:
    board, v_in, y = settled_nonreciprocal(read_noise_v=1e-4)
    st = make_stencil("centered", 0.3)
    runs = [estimate(board, v_in, y, st, n_samples=8) for _ in range(40)]
    grads = np.array([r.grad_g for r in runs])
    predicted = np.mean([r.grad_var_g for r in runs], axis=0)
    ratio = grads.var(axis=0, ddof=1).sum() / predicted.sum()
    assert 0.6 < ratio < 1.6
    # Richardson bias estimate agrees with the true finite-nudge bias of the mean
    clean, v2, y2 = settled_nonreciprocal()
    e = estimate(clean, v2, y2, make_stencil("centered", 0.3))
    ref = clean.exact_nudge_response(y2)
    assert e.bias_error is not None
    true_bias = e.error - ref
    assert np.linalg.norm(e.bias_error - true_bias) < 0.1 * np.linalg.norm(true_bias)
    assert e.bias_norm > 0 and e.variance == 0.0


def test_local_rule_with_the_exact_response_is_the_ep_gradient() -> None:
    board, v_in, y = settled_nonreciprocal()  # reciprocal: EP gradient == true gradient
    g, b = local_gradient(board.describe(), v_in, board.free_state(), board.exact_nudge_response(y))
    gt, bt = board.exact_gradient(y)
    np.testing.assert_allclose(g, gt, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(b, bt, rtol=1e-9, atol=1e-14)


class _FailsComplexSolves:
    """A board whose complex-nudge settles report non-convergence."""

    def __init__(self, board: NonReciprocalBoard) -> None:
        self._b = board
        self._complex = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._b, name)

    def apply_nudge(self, nudge: Any) -> None:
        self._complex = nudge is not None and np.iscomplexobj(getattr(nudge, "beta_s", 0.0))
        self._b.apply_nudge(nudge)

    def last_converged(self) -> np.ndarray:
        ok = self._b.last_converged()
        return ok & (not self._complex)


def test_cauchy_falls_back_to_centered_when_complex_solves_fail() -> None:
    board, v_in, y = settled_nonreciprocal()
    dev = cast(Device, _FailsComplexSolves(board))
    est = estimate(dev, v_in, y, make_stencil("cauchy", 0.2, 6), bias_check=False)
    assert est.fell_back and est.stencil.name == "centered"
    ref = estimate(board, v_in, y, make_stencil("centered", 0.2), bias_check=False)
    np.testing.assert_allclose(est.error, ref.error, rtol=1e-12)


def test_complex_stencil_needs_a_capable_backend() -> None:
    board = open_board("emulator", {"arch": "6-4-3"}, np.random.default_rng(0))
    with pytest.raises(UnsupportedError):
        estimate(board, np.zeros((1, 6)), np.zeros((1, 3)), make_stencil("cauchy", 0.1, 4))


def test_choose_beta_reproduces_the_doc_table() -> None:
    # docs/estimators.md §6: Moebius response G = 1, sigma = 1e-3, M = 64
    sigma, m = 1e-3, 64
    assert optimal_radius(make_stencil("one-sided", 1), sigma, m, 1.0) == pytest.approx(
        0.0158, abs=1e-4)
    assert optimal_radius(make_stencil("centered", 1), sigma, m, 1.0) == pytest.approx(
        0.0445, abs=1e-4)
    assert optimal_radius(make_stencil("cauchy", 1, 4), sigma, m, 1.0) == pytest.approx(
        0.144, abs=1e-3)
    # from a measured bias at r = 0.2: a_3 = bias / r^2
    st = make_stencil("centered", 0.2)
    assert choose_beta(st, sigma, m, 0.04, 10.0) == pytest.approx(0.0445, abs=1e-4)
    assert choose_beta(st, sigma, m, 0.04, 0.01) == 0.01
    with pytest.raises(ConfigError):
        make_stencil("cauchy", 1.0, 1)
    with pytest.raises(ConfigError):
        make_stencil("five-point", 1.0)
