"""Sinusoidal nudging with lock-in demodulation (docs/estimators.md §7).

Instead of a few static nudges, the output pull follows ``beta(t) = r cos(omega t)``
and the free-node voltages ``q(t)`` are sampled uniformly in phase over whole
periods. Demodulating at the odd harmonics,

    X_k = (2/M) sum_m q_m cos(k theta_m),   Y_k = (2/M) sum_m q_m sin(k theta_m),

gives the nudge response by the Chebyshev identity (exact for a quasi-static,
analytic response ``f(beta)``)::

    du*/dbeta ~ (X_1 - 3 X_3 + 5 X_5 - ...) / r         (harmonics up to K)

=========  ========  ============  =====
harmonics  bias p    bias coef c   V
=========  ========  ============  =====
1          2         3/4           2
1, 3       4         -5/16         20
1, 3, 5    6         7/64          70
=========  ========  ============  =====

(bias ``c a_{p+1} r^p``, variance ``V sigma^2 / (M r^2)`` for ``M`` samples of
read-noise ``sigma``; both need at least ``2K + 3`` samples per period). The free
state is measured separately, not taken from the time average (which is biased by
``a_2 r^2 / 2``).

**Quasi-static condition.** A network with node capacitances follows the drive
with a lag: the in-phase part is ``chi(0) [1 + O((omega tau)^2)]`` and a
quadrature part ``O(omega tau)`` appears (``tau`` the slowest relaxation time).
The protocol therefore (1) asks the board for ``tau`` (the slowest over the
nudges ``-r, 0, +r``) and chooses the frequency from the requested ``omega tau``
(refusing above ``max_omega_tau``, default 0.1, about 1 % in-phase error for one
pole), and (2) measures the
quadrature-to-in-phase ratio ``|Y_1| / |X_1|`` (noise-corrected) and refuses the
estimate when it exceeds ``max_quadrature``.

Boards reach this through the structural protocol
:class:`protocols.engine.SinusoidalDrive` (the engine runs the drive as a
:class:`protocols.plan.DriveSinusoid` step);
only the non-reciprocal emulator implements it (a bench needs an arbitrary
waveform source on the nudge and a digitiser on the nodes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hwloop.device import Device
from hwloop.errors import ConfigError, UnsupportedError
from protocols.engine import SinusoidalDrive as SinusoidalDrive
from protocols.engine import free_phase, run_step
from protocols.estimators import Stencil
from protocols.holomorphic import Estimate, estimate_from_response
from protocols.plan import DriveSinusoid

Array = NDArray[np.floating]

HARMONICS: dict[int, tuple[int, float, float]] = {
    1: (2, 0.75, 2.0),
    3: (4, -5.0 / 16.0, 20.0),
    5: (6, 7.0 / 64.0, 70.0),
}
"""Highest harmonic K -> (bias order p, bias coefficient c, variance factor V)."""


class QuasiStaticError(ConfigError):
    """The drive is too fast for the network to follow it quasi-statically."""


def _check_sampling(harmonics: int, samples_per_period: int) -> None:
    """K in 1, 3, 5 and at least 2K + 3 samples per period.

    With fewer, the harmonics ``S - k`` alias onto the demodulated ones and the
    bias order and coefficient of :data:`HARMONICS` no longer hold (for example
    K = 1 with S = 4 has coefficient 1 instead of 3/4).
    """
    if harmonics not in HARMONICS:
        raise ConfigError(f"lock-in harmonics K = {harmonics} must be one of 1, 3, 5")
    s = samples_per_period
    if isinstance(s, bool) or int(s) != s or s < 2 * harmonics + 3:
        raise ConfigError(
            f"lock-in samples per period = {s} must be an integer >= 2K + 3 = "
            f"{2 * harmonics + 3} for K = {harmonics}; raise it"
        )


def lockin_stencil(radius_s: float, harmonics: int, samples_per_period: int) -> Stencil:
    """The quasi-static equivalent of the sampled lock-in over one period.

    Nudges ``r cos theta_m`` with the demodulation weights
    ``(2 / (S r)) sum_k (-1)^((k-1)/2) k cos(k theta_m)``; with the order, bias
    coefficient and variance factor of :data:`HARMONICS` (so
    :func:`protocols.holomorphic.choose_beta` applies to it).
    """
    _check_sampling(harmonics, samples_per_period)
    r = float(radius_s)
    if not (math.isfinite(r) and r > 0):
        raise ConfigError(f"lock-in amplitude {radius_s} S must be a positive number")
    s = int(samples_per_period)
    theta = 2 * np.pi * np.arange(s) / s
    w = np.zeros(s)
    for k in range(1, harmonics + 1, 2):
        w += (-1) ** ((k - 1) // 2) * k * np.cos(k * theta)
    w *= 2.0 / (s * r)
    p, c, v = HARMONICS[harmonics]
    return Stencil(
        tuple(complex(r * np.cos(t)) for t in theta), tuple(complex(x) for x in w),
        f"lockin-{harmonics}", r, p, c, v,
    )


@dataclass(frozen=True)
class Demodulated:
    """Lock-in outputs of one drive.

    Attributes:
        error: ``(batch, n_free)`` estimate of ``du*/dbeta``, V/S.
        x1: ``(batch, n_free)`` in-phase first-harmonic amplitude, V.
        y1: ``(batch, n_free)`` quadrature first-harmonic amplitude, V.
        noise_v: read-noise std per sample from the scatter across periods, V (NaN
            with one period).
        n_samples: samples per node, ``M``.
    """

    error: Array
    x1: Array
    y1: Array
    noise_v: float
    n_samples: int


def demodulate(
    samples_v: Array, samples_per_period: int, radius_s: float, harmonics: int
) -> Demodulated:
    """Demodulate ``(M, ...)`` samples taken at phases ``2 pi m / S`` over whole periods.

    The read noise is estimated from the scatter of each phase's samples across the
    periods (the steady-state response repeats exactly every period, so whatever
    differs between periods is noise); it needs at least two periods (NaN otherwise).
    """
    q = np.asarray(samples_v, dtype=np.float64)
    s = int(samples_per_period)
    _check_sampling(harmonics, s)
    m = q.shape[0]
    if m == 0 or m % s:
        raise ConfigError(f"{m} samples are not a whole number of periods of {s} samples")
    theta = 2 * np.pi * np.arange(m) / s
    extra = (1,) * (q.ndim - 1)

    def proj(fn: np.ufunc, k: int) -> Array:
        return np.asarray((2.0 / m) * np.sum(q * fn(k * theta).reshape(m, *extra), axis=0))

    e = np.zeros(q.shape[1:])
    for k in range(1, harmonics + 1, 2):
        e += (-1) ** ((k - 1) // 2) * k * proj(np.cos, k)
    e /= float(radius_s)
    periods = m // s
    noise = float("nan")
    if periods >= 2:
        by_phase = q.reshape(periods, s, -1)
        noise = float(np.sqrt(np.mean(np.var(by_phase, axis=0, ddof=1))))
    return Demodulated(e, proj(np.cos, 1), proj(np.sin, 1), noise, m)


@dataclass(frozen=True, eq=False)
class LockinEstimate:
    """A lock-in estimate with its quasi-static diagnostics.

    Attributes:
        estimate: the gradient estimate and its bias and variance diagnostics
            (``estimate.stencil`` is the quasi-static equivalent stencil).
        frequency_hz: drive frequency used, Hz.
        tau_s: the board's slowest relaxation time, s.
        omega_tau: ``2 pi f tau`` (dimensionless).
        quadrature_ratio: ``|Y_1| / |X_1|`` over all nodes and examples, with the
            noise contribution to ``|Y_1|`` removed; about ``omega tau`` for one
            pole, 0 for a quasi-static response.
        noise_v: read noise per sample from the scatter across periods, V (NaN with
            one period).
        n_samples: samples per node per drive.
    """

    estimate: Estimate
    frequency_hz: float
    tau_s: float
    omega_tau: float
    quadrature_ratio: float
    noise_v: float
    n_samples: int


def _quadrature_ratio(d: Demodulated) -> float:
    x2 = float(np.sum(d.x1**2))
    y2 = float(np.sum(d.y1**2))
    if math.isfinite(d.noise_v):
        y2 = max(y2 - d.y1.size * 2.0 * d.noise_v**2 / d.n_samples, 0.0)
    return math.sqrt(y2 / x2) if x2 > 0 else float("nan")


def lockin_estimate(
    device: Device,
    v_inputs: Array,
    targets_v: Array,
    radius_s: float,
    *,
    harmonics: int = 1,
    omega_tau: float = 0.05,
    n_periods: int = 2,
    samples_per_period: int = 16,
    settle_periods: int = 1,
    free_samples: int = 1,
    bias_check: bool = True,
    max_omega_tau: float = 0.1,
    max_quadrature: float = 0.1,
) -> LockinEstimate:
    """Estimate ``du*/dbeta`` and the parameter gradient by sinusoidal nudging.

    Args:
        device: a board that implements :class:`SinusoidalDrive`.
        v_inputs: ``(batch, n_inputs)`` input voltages, V.
        targets_v: ``(batch, n_outputs)`` target output voltages, V.
        radius_s: drive amplitude ``r``, S.
        harmonics: highest odd harmonic ``K`` used (1, 3 or 5).
        omega_tau: drive angular frequency times the board's slowest relaxation
            time (> 0, at most ``max_omega_tau``); sets the frequency.
        n_periods: periods sampled per drive (>= 1; >= 2 for the noise and variance
            diagnostics).
        samples_per_period: samples per period (>= 2K + 3).
        settle_periods: periods driven before sampling (>= 0).
        free_samples: samples of the separately measured free phase (>= 1).
        bias_check: drive again at ``r / 2`` for a Richardson bias estimate.
        max_omega_tau: the largest ``omega tau`` accepted before driving.
        max_quadrature: the largest measured quadrature ratio accepted.

    Raises:
        UnsupportedError: the board cannot drive a sinusoid.
        QuasiStaticError: ``omega_tau`` above ``max_omega_tau``, or a measured
            quadrature ratio above ``max_quadrature``.
        ConfigError: other bad arguments.
    """
    if not isinstance(device, SinusoidalDrive):
        raise UnsupportedError(
            f"backend {device.describe().backend!r} cannot drive a sinusoidal nudge (no "
            "drive_sinusoid); use a static estimator such as centered"
        )
    if not (math.isfinite(omega_tau) and omega_tau > 0):
        raise ConfigError(f"omega_tau = {omega_tau} must be a positive number")
    if omega_tau > max_omega_tau:
        raise QuasiStaticError(
            f"omega_tau = {omega_tau:g} exceeds the quasi-static limit {max_omega_tau:g} "
            f"(in-phase error ~ (omega tau)^2); lower omega_tau"
        )
    if int(free_samples) != free_samples or free_samples < 1:
        raise ConfigError(f"free_samples = {free_samples} must be an integer >= 1")
    stencil = lockin_stencil(radius_s, harmonics, samples_per_period)
    desc = device.describe()
    r0 = free_phase(device, v_inputs, int(free_samples))
    v_free = np.asarray(np.real(r0.mean_v), dtype=np.float64)
    tau = float(device.relaxation_time_s(stencil.radius_s))
    if not (math.isfinite(tau) and tau > 0):
        raise ConfigError(f"the board reported a relaxation time of {tau} s; need > 0")
    freq = omega_tau / (2 * math.pi * tau)
    targets = np.asarray(targets_v, dtype=np.float64)

    def drive(r: float) -> Demodulated:
        plan = (DriveSinusoid(1, r, freq, n_periods, samples_per_period, settle_periods),)
        reading = run_step(plan, device, v_inputs, targets, None).readings[1]
        d = demodulate(np.asarray(reading.samples_v), samples_per_period, r, harmonics)
        ratio = _quadrature_ratio(d)
        if ratio > max_quadrature:
            raise QuasiStaticError(
                f"the quadrature/in-phase ratio {ratio:.3g} exceeds {max_quadrature:g}: the "
                f"network does not follow the drive at {freq:.4g} Hz; lower omega_tau"
            )
        return d

    d = drive(stencil.radius_s)
    drives = 1
    var_e = np.full_like(d.error, 2.0 * d.noise_v**2 / (d.n_samples * stencil.radius_s**2)
                         * sum(k * k for k in range(1, harmonics + 1, 2)))
    bias_e: Array | None = None
    ratio = _quadrature_ratio(d)
    if bias_check:
        d2 = drive(stencil.radius_s / 2)
        drives += 1
        # the finite-amplitude part (Richardson) plus the finite-frequency part, which
        # does not depend on r: a single pole scales the in-phase part by
        # 1 / (1 + (omega tau)^2), and omega tau is about the quadrature ratio
        bias_e = (d.error - d2.error) / (1.0 - 0.5**stencil.order)
        if math.isfinite(ratio):
            bias_e = bias_e - ratio**2 * d.error
    est = estimate_from_response(desc, v_inputs, v_free, stencil, d.error, var_e, bias_e,
                                 n_settles=drives)
    return LockinEstimate(est, freq, tau, omega_tau, ratio, d.noise_v, d.n_samples)
