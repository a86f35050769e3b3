"""Sinusoidal nudging with lock-in demodulation, time-domain emulator (docs/estimators.md §7)."""

from __future__ import annotations

import numpy as np
import pytest

from hwloop.errors import ConfigError, UnsupportedError
from hwloop.plugins import open_board
from protocols.holomorphic import choose_beta
from protocols.lockin import (
    QuasiStaticError,
    SinusoidalDrive,
    demodulate,
    lockin_estimate,
    lockin_stencil,
)
from simulated_device import nonreciprocal as nr
from tests.board_helpers import settled_nonreciprocal


def test_driven_network_matches_the_linear_response_at_finite_frequency() -> None:
    """Independent reference: the phasor ``U = r (i omega C - J)^-1 dF/dbeta``.

    At omega tau = 0.3 the response lags visibly; a small amplitude keeps the
    nonlinear terms (relative ~ r) below the tolerance.
    """
    board, v_in, y = settled_nonreciprocal(asymmetry=0.4, fwd_gain=1.2, bwd_gain=0.8)
    net, u0 = board.network, board.free_state()
    c_f = 1e-6
    tau = nr.relaxation_time(net, u0, c_f)
    assert tau == pytest.approx(board.relaxation_time_s(), rel=1e-12)
    omega, r, spp = 0.3 / tau, 1e-4, 32
    t = (2 * np.pi / omega) * (4 + np.arange(2 * spp) / spp)  # after 4 periods of transient
    q = nr.drive_sinusoid(net, v_in, y, r, omega, t, capacitance_f=c_f, start=u0)
    theta = 2 * np.pi * np.arange(2 * spp) / spp
    x1 = 2 * np.mean(q * np.cos(theta)[:, None, None], axis=0)
    y1 = 2 * np.mean(q * np.sin(theta)[:, None, None], axis=0)
    J = nr.jacobian(net, u0)
    dfdb = np.zeros_like(u0)
    out = net.layer_slice(len(net.sizes) - 1)
    dfdb[:, out] = y - u0[:, out]
    n = u0.shape[1]
    phasor = np.linalg.solve(1j * omega * c_f * np.eye(n) - J, r * dfdb[..., None])[..., 0]
    # u(t) = Re(U e^{i omega t}) = Re U cos - Im U sin
    np.testing.assert_allclose(x1, phasor.real, atol=2e-3 * np.abs(phasor).max())
    np.testing.assert_allclose(y1, -phasor.imag, atol=2e-3 * np.abs(phasor).max())
    assert np.linalg.norm(y1) / np.linalg.norm(x1) > 0.1  # the lag is really there


@pytest.mark.parametrize(("harmonics", "order", "radii"),
                         [(1, 2, (0.1, 0.2, 0.4)), (3, 4, (0.4, 0.7, 1.0))])
def test_bias_order_in_the_amplitude(harmonics: int, order: int,
                                     radii: tuple[float, ...]) -> None:
    board, v_in, y = settled_nonreciprocal(asymmetry=0.4, fwd_gain=1.2, bwd_gain=0.8)
    ref = board.exact_nudge_response(y)
    errs = []
    for r in radii:
        est = lockin_estimate(board, v_in, y, r, harmonics=harmonics, omega_tau=1e-3,
                              n_periods=1, bias_check=False).estimate
        errs.append(float(np.linalg.norm(est.error - ref) / np.linalg.norm(ref)))
    slope = np.polyfit(np.log(radii), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, (harmonics, slope, errs)


def test_quasi_static_limit_and_measured_quadrature() -> None:
    board, v_in, y = settled_nonreciprocal()
    ref = board.exact_nudge_response(y)
    le = lockin_estimate(board, v_in, y, 0.05, omega_tau=0.05)
    # a sum of modes, each with quadrature/in-phase omega tau_i <= omega tau
    assert 0.2 * 0.05 < le.quadrature_ratio <= 0.05
    assert le.frequency_hz == pytest.approx(0.05 / (2 * np.pi * le.tau_s))
    rel = np.linalg.norm(le.estimate.error - ref) / np.linalg.norm(ref)
    assert rel < 2 * 0.05**2 + 1e-3  # in-phase error O((omega tau)^2) plus the r^2 bias
    with pytest.raises(QuasiStaticError, match="lower omega_tau"):
        lockin_estimate(board, v_in, y, 0.05, omega_tau=0.5)
    # allowed past the a-priori limit, the measured lag still refuses it
    with pytest.raises(QuasiStaticError, match="quadrature/in-phase ratio"):
        lockin_estimate(board, v_in, y, 0.05, omega_tau=0.5, max_omega_tau=1.0)


def test_variance_diagnostic_and_noise_estimate_match_the_scatter() -> None:
    board, v_in, y = settled_nonreciprocal(read_noise_v=1e-4)
    runs = [lockin_estimate(board, v_in, y, 0.1, omega_tau=0.01, n_periods=2,
                            bias_check=False) for _ in range(40)]
    errors = np.stack([r.estimate.error for r in runs])
    scatter = errors.std(axis=0, ddof=1).mean()
    predicted = np.sqrt(runs[0].estimate.error_var).mean()
    # 40 repeats: the std of a std is about 1/sqrt(2*39) = 11 %, averaged over nodes less
    assert scatter == pytest.approx(predicted, rel=0.15)
    noise = np.mean([r.noise_v for r in runs])
    assert noise == pytest.approx(1e-4, rel=0.05)
    # V = 2 for the first harmonic: var = 2 sigma^2 / (M r^2), M = 2 periods x 16
    assert predicted == pytest.approx(np.sqrt(2 * 1e-8 / (32 * 0.01)), rel=0.1)
    # one period: no noise estimate, so no variance diagnostic (rather than a wrong one)
    one = lockin_estimate(board, v_in, y, 0.1, omega_tau=0.01, n_periods=1, bias_check=False)
    assert np.isnan(one.noise_v) and np.all(np.isnan(one.estimate.error_var))


def test_demodulation_recovers_the_chebyshev_derivative_exactly() -> None:
    """f(beta) = a1 beta + a3 beta^3: harmonics 1+3 give a1 exactly, harmonic 1 alone
    carries the 3/4 a3 r^2 bias in the table of docs/estimators.md §5."""
    a1, a3, r, s = 2.0, 5.0, 0.3, 16
    theta = 2 * np.pi * np.arange(2 * s) / s
    beta = r * np.cos(theta)
    q = (a1 * beta + a3 * beta**3)[:, None]
    d1 = demodulate(q, s, r, 1)
    d3 = demodulate(q, s, r, 3)
    assert d3.error[0] == pytest.approx(a1, rel=1e-12)
    assert d1.error[0] - a1 == pytest.approx(0.75 * a3 * r**2, rel=1e-12)
    assert d1.noise_v == pytest.approx(0.0, abs=1e-12)


def test_stencil_equivalent_and_beta_choice() -> None:
    st = lockin_stencil(0.2, 1, 16)
    assert (st.order, st.bias_coef, st.variance_factor) == (2, 0.75, 2.0)
    f = np.array([0.7 * b.real - 3.0 * b.real**3 for b in st.betas_s])
    assert sum(w.real * v for w, v in zip(st.coeffs, f, strict=True)) == pytest.approx(
        0.7 - 0.75 * 3.0 * 0.2**2, rel=1e-12)
    # docs/estimators.md §6, K = 1: r* = (16 sigma^2 / (9 a3^2 M))^(1/6); Richardson bias at r
    sigma, m, a3 = 1e-3, 64, 1.0
    r0 = 0.1
    bias = 0.75 * a3 * r0**2
    got = choose_beta(lockin_stencil(r0, 1, 16), sigma, m, bias, 10.0)
    assert got == pytest.approx((16 * sigma**2 / (9 * a3**2 * m)) ** (1 / 6), rel=1e-6)


def test_boards_without_a_sinusoidal_drive_are_refused() -> None:
    board = open_board("emulator", {"arch": "6-4-3"}, np.random.default_rng(0))
    assert not isinstance(board, SinusoidalDrive)
    assert isinstance(settled_nonreciprocal()[0], SinusoidalDrive)
    with pytest.raises(UnsupportedError, match="cannot drive a sinusoidal nudge"):
        lockin_estimate(board, np.zeros((1, 6)), np.zeros((1, 3)), 0.1)


def test_too_few_samples_per_period_and_unstable_nudges_are_refused() -> None:
    board, v_in, y = settled_nonreciprocal()
    # K = 1 needs 5 samples per period: with 4 the third harmonic aliases onto the first
    with pytest.raises(ConfigError, match="2K \\+ 3 = 5"):
        lockin_estimate(board, v_in, y, 0.1, samples_per_period=4)
    with pytest.raises(ConfigError, match="2K \\+ 3 = 9"):
        lockin_stencil(0.1, 3, 8)
    # a pull of -r adds +r to the outputs' diagonal: large enough, no relaxation at all
    tau0 = board.relaxation_time_s()
    assert board.relaxation_time_s(0.5) > tau0  # the negative half-cycle is slower
    with pytest.raises(ConfigError, match="unstable under a nudge of -"):
        lockin_estimate(board, v_in, y, 100.0)


def test_bias_diagnostic_includes_the_finite_frequency_error() -> None:
    """At omega tau = 0.05 and a small amplitude the error is the lag's (r-independent);
    the Richardson part alone would miss it, the reported bias follows it."""
    board, v_in, y = settled_nonreciprocal()
    ref = board.exact_nudge_response(y)
    le = lockin_estimate(board, v_in, y, 0.01, harmonics=3, omega_tau=0.05)
    err = le.estimate.error - ref
    bias = le.estimate.bias_error
    assert bias is not None
    assert np.linalg.norm(bias) == pytest.approx(np.linalg.norm(err), rel=0.5)
    assert float(np.sum(bias * err)) > 0  # same direction
