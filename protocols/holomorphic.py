"""Multi-point real and complex (Cauchy) EP estimators of the nudge response.

docs/estimators.md §3 and §5. Each estimator measures the steady-state
free-node voltages ``f(beta_k)`` at a few nudges and combines them linearly::

    e_hat = Re sum_k w_k f(beta_k)        ~ du*/dbeta at beta = 0, V/S

A :class:`protocols.estimators.Stencil` holds the nudges (S, complex for
Cauchy), the weights (its ``coeffs``, 1/S), the bias order ``p``, the bias
coefficient ``c`` (bias ``c a_{p+1} r^p``, with ``f = sum a_m beta^m``) and the
variance factor ``V`` (variance ``V sigma^2 / (M r^2)`` for ``M`` samples split
equally over the points):

=============  ====================  ===  =======  ======
estimator      nudges                p    c        V
=============  ====================  ===  =======  ======
one-sided      0, r                  1    1        4
centered       -r, +r                2    1        1
four-point     -r, -r/2, r/2, r      4    -1/4     14.4
cauchy N       r e^{2 pi i k/N}      N    1        1
=============  ====================  ===  =======  ======

The Cauchy rule is the discrete form of docs/estimators.md §3.2, ``e_N = (1/N) sum_k f(beta_k) /
beta_k`` with ``beta_k = r e^{2 pi i k / N}``; for a real network ``f(conj b) =
conj f(b)``, so only ``k = 0 .. floor(N/2)`` are solved, the conjugate pairs
with weight ``2/(N beta_k)`` and the real part taken (N=4: 3 solves). It needs a
board with ``supports_complex_nudge``; when a complex solve does not converge
it falls back to the centered rule at the same radius (docs/estimators.md §3.2).

The gradient then follows from a local rule (:func:`local_gradient`): for a
coupling from node ``p`` into node ``q`` whose receiver current is ``gamma g
(alpha v_p - v_q)``, ``dL/dg = -gamma mean_b[(alpha v_p - v_q) e_q]`` (docs/estimators.md §2.1,
physical toward-target sign convention: ``g = -(dF/dtheta)^T du*/dbeta``).
Boards without coupling gains in ``desc.info["couplings"]`` are reciprocal:
an edge is one resistor and ``dL/dg = -(v_p - v_q)(e_q - e_p)``, which is the
usual ``d/dbeta 1/2 dV^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hwloop.device import BoardDescription, Device
from hwloop.errors import ConfigError, UnsupportedError
from protocols.engine import free_phase, nudged_phases
from protocols.estimators import Cauchy, FourPoint, Stencil
from protocols.plan import NudgeKind
from protocols.updates import local_gradient, local_gradient_variance

Array = NDArray[np.floating]
CArray = NDArray[np.floating] | NDArray[np.complexfloating]

STENCILS: tuple[str, ...] = ("one-sided", "centered", "four-point", "cauchy")


def make_stencil(name: str, radius_s: float, n_points: int = 4) -> Stencil:
    """The stencil ``name`` (one of :data:`STENCILS`) with largest nudge ``radius_s``, S.

    Args:
        name: ``one-sided``, ``centered``, ``four-point`` or ``cauchy``.
        radius_s: ``r > 0``, S.
        n_points: ``N >= 2`` points on the circle (Cauchy only).

    Raises:
        ConfigError: unknown name, ``r <= 0`` or ``N < 2``.
    """
    r = float(radius_s)
    if not (math.isfinite(r) and r > 0):
        raise ConfigError(f"nudge radius beta = {radius_s} must be a positive number")
    if name == "one-sided":
        return Stencil((0.0, r), (-1.0 / r, 1.0 / r), name, r, 1, 1.0, 4.0)
    if name == "centered":
        return Stencil((-r, r), (-0.5 / r, 0.5 / r), name, r, 2, 1.0, 1.0)
    if name == "four-point":  # the training estimator's stencil
        return FourPoint().stencil(r)
    if name == "cauchy":
        return Cauchy(n_points).stencil(r)
    raise ConfigError(f"unknown estimator {name!r}; choose one of {', '.join(STENCILS)}")


# ---------------------------------------------------------------------- measuring
@dataclass(frozen=True, eq=False)
class Estimate:
    """An estimate of the nudge response and of the parameter gradient, with diagnostics.

    Attributes:
        stencil: the stencil actually used (after any fallback).
        v_free: ``(batch, n_free)`` measured free state, V.
        error: ``(batch, n_free)`` estimate of ``du*/dbeta``, V/S.
        error_var: ``(batch, n_free)`` variance of ``error`` from the sample
            scatter, (V/S)^2 (an upper bound for complex points).
        grad_g: ``(n_edges,)`` gradient estimate for every edge, V^2/S.
        grad_b: ``(n_bias,)`` gradient estimate for every bias source, V^2/A.
        grad_var_g: ``(n_edges,)`` variance of ``grad_g`` from the read noise, (V^2/S)^2.
        grad_var_b: ``(n_bias,)`` variance of ``grad_b``, (V^2/A)^2.
        bias_g: ``(n_edges,)`` Richardson estimate of the finite-nudge bias of
            ``grad_g`` (``None`` without a bias check), V^2/S.
        bias_b: the same for ``grad_b``, V^2/A.
        bias_error: ``(batch, n_free)`` Richardson bias estimate of ``error``, V/S.
        fell_back: True when complex solves failed and the centered rule was used.
        n_settles: nudged settles performed (bias check included).
    """

    stencil: Stencil
    v_free: Array
    error: Array
    error_var: Array
    grad_g: Array
    grad_b: Array
    grad_var_g: Array
    grad_var_b: Array
    bias_g: Array | None
    bias_b: Array | None
    bias_error: Array | None
    fell_back: bool
    n_settles: int

    @property
    def variance(self) -> float:
        """Total variance of the parameter gradient, sum over parameters, (V^2/S)^2."""
        return float(self.grad_var_g.sum() + self.grad_var_b.sum())

    @property
    def bias_norm(self) -> float:
        """Euclidean norm of the estimated bias of the parameter gradient (NaN if unknown)."""
        if self.bias_g is None or self.bias_b is None:
            return float("nan")
        return float(np.sqrt(np.sum(self.bias_g**2) + np.sum(self.bias_b**2)))


def _measure_points(
    device: Device,
    stencil: Stencil,
    targets_v: Array,
    v_free: Array,
    sem_free: Array,
    out_pos: NDArray[np.intp],
    n_samples: int,
    kind: NudgeKind,
) -> tuple[list[CArray], list[Array], bool]:
    """Mean and SEM of the free nodes at each stencil point; False if a solve failed."""
    readings, ok = nudged_phases(
        device, stencil.betas_s, targets_v, nudge_kind=kind, n_samples=n_samples,
        v_free_out=v_free[:, out_pos],
    )
    means: list[CArray] = []
    sems: list[Array] = []
    for r in readings:
        means.append(v_free if r is None else np.asarray(r.mean_v))
        sems.append(sem_free if r is None else r.sem_v)
    return means, sems, ok


def _combine(stencil: Stencil, means: list[CArray], sems: list[Array]) -> tuple[Array, Array]:
    e = sum(w * m for w, m in zip(stencil.coeffs, means, strict=True))
    var = sum(abs(w) ** 2 * s**2 for w, s in zip(stencil.coeffs, sems, strict=True))
    return np.asarray(np.real(e), dtype=np.float64), np.asarray(var, dtype=np.float64)


def estimate(
    device: Device,
    v_inputs: Array,
    targets_v: Array,
    stencil: Stencil,
    *,
    n_samples: int = 1,
    nudge_kind: str = "resistive",
    bias_check: bool = True,
) -> Estimate:
    """Measure ``du*/dbeta`` with ``stencil`` on ``device`` and form the local gradient.

    The free phase is always measured (it gives the presynaptic factor and the
    reference for current nudges). With ``bias_check`` the stencil is repeated at
    half the radius and the bias is estimated by Richardson extrapolation,
    ``(g(r) - g(r/2)) / (1 - 2^-p)``; it doubles the nudged settles. Under read
    noise the difference also carries the noise of both estimates, so at small
    ``r`` (noise-dominated) it overstates the bias; compare it with the variance.

    Args:
        device: any board (complex stencils need ``supports_complex_nudge``).
        v_inputs: ``(batch, n_inputs)`` input voltages, V.
        targets_v: ``(batch, n_outputs)`` target output voltages, V.
        stencil: from :func:`make_stencil`.
        n_samples: samples per phase per example (>= 1).
        nudge_kind: ``"resistive"`` (pull ``beta (y - v)``) or ``"current"``
            (inject ``beta (y - v_free)``).
        bias_check: also measure at ``r/2`` for the bias diagnostic.

    Raises:
        UnsupportedError: a complex stencil on a board without complex nudges.
        ConfigError: bad sample count or nudge kind.
    """
    if int(n_samples) != n_samples or n_samples < 1:
        raise ConfigError(f"samples = {n_samples} must be an integer >= 1")
    if nudge_kind not in ("resistive", "current"):
        raise ConfigError(f"nudge kind {nudge_kind!r} must be 'resistive' or 'current'")
    kind: NudgeKind = "resistive" if nudge_kind == "resistive" else "current"
    desc = device.describe()
    if stencil.is_complex and not desc.supports_complex_nudge:
        raise UnsupportedError(
            f"the {stencil.name} estimator needs complex nudges, which backend "
            f"{desc.backend!r} cannot apply; use centered or four-point"
        )
    targets = np.asarray(targets_v, dtype=np.float64)
    out_pos = np.searchsorted(desc.free_nodes, desc.output_nodes)
    r0 = free_phase(device, v_inputs, n_samples)
    v_free = np.asarray(np.real(r0.mean_v), dtype=np.float64)
    sem_free = r0.sem_v
    used = stencil
    means, sems, ok = _measure_points(
        device, stencil, targets, v_free, sem_free, out_pos, n_samples, kind
    )
    settles = stencil.n_solves
    fell_back = False
    if not ok and stencil.is_complex:
        used = make_stencil("centered", stencil.radius_s)
        means, sems, _ = _measure_points(
            device, used, targets, v_free, sem_free, out_pos, n_samples, kind
        )
        settles += used.n_solves
        fell_back = True
    e, var = _combine(used, means, sems)
    bias_e: Array | None = None
    if bias_check:
        half = used.scaled(0.5)
        m2, s2, ok2 = _measure_points(
            device, half, targets, v_free, sem_free, out_pos, n_samples, kind
        )
        settles += half.n_solves
        e2, _ = _combine(half, m2, s2)
        bias_e = (e - e2) / (1.0 - 0.5**used.order) if ok2 else np.full_like(e, np.nan)
    return estimate_from_response(
        desc, v_inputs, v_free, used, e, var, bias_e, fell_back=fell_back, n_settles=settles
    )


def estimate_from_response(
    desc: BoardDescription,
    v_inputs: Array,
    v_free: Array,
    stencil: Stencil,
    error: Array,
    error_var: Array,
    bias_error: Array | None,
    *,
    fell_back: bool = False,
    n_settles: int,
) -> Estimate:
    """Turn a measured nudge response into an :class:`Estimate` (the local rule).

    Shared by every estimator of ``du*/dbeta`` (point stencils, lock-in): the
    gradient, its read-noise variance and, given ``bias_error``, its bias follow
    from :func:`local_gradient` and :func:`local_gradient_variance`.
    """
    vin = np.asarray(v_inputs, dtype=np.float64)
    g, b = local_gradient(desc, vin, v_free, error)
    gv, bv = local_gradient_variance(desc, vin, v_free, error_var)
    bg: Array | None = None
    bb: Array | None = None
    if bias_error is not None:
        bg, bb = local_gradient(desc, vin, v_free, bias_error)
    return Estimate(stencil, v_free, error, error_var, g, b, gv, bv, bg, bb, bias_error,
                    fell_back, n_settles)


# ---------------------------------------------------------------------- choosing beta
def optimal_radius(
    stencil: Stencil, sigma_v: float, n_samples_total: int, a_next: float
) -> float:
    """The nudge radius minimising bias^2 + variance (docs/estimators.md §6), S.

    ``r* = [V sigma^2 / (p c^2 a^2 M)]^(1/(2p+2))`` with ``a = a_{p+1}``, the
    next Taylor coefficient of the response (V/S^(p+1)).

    Args:
        stencil: gives ``p``, ``c`` and ``V``.
        sigma_v: read noise per sample, V (>= 0).
        n_samples_total: ``M``, samples spent on one estimate over all points (>= 1).
        a_next: ``|a_{p+1}|``, V/S^(p+1) (0: no bias, the radius is unbounded).
    """
    if sigma_v < 0 or n_samples_total < 1:
        raise ConfigError("need sigma >= 0 V and at least one sample")
    a = abs(a_next)
    if a == 0:
        return float("inf")
    p, c, V = stencil.order, stencil.bias_coef, stencil.variance_factor
    return float((V * sigma_v**2 / (p * c**2 * a**2 * n_samples_total)) ** (1.0 / (2 * p + 2)))


def choose_training_beta(
    device: Device,
    stencil: Stencil,
    v_inputs: Array,
    targets_v: Array,
    n_samples: int,
    *,
    nudge_kind: str = "resistive",
    noise_samples: int = 8,
) -> tuple[float, float, float]:
    """The nudge radius a training run should use, from one batch measured on ``device``, S.

    The read noise per sample is the RMS over nodes of ``sqrt(n) * SEM`` of
    ``noise_samples`` free-phase reads; the bias is the RMS of the Richardson estimate of
    :func:`estimate` at the stencil's radius (its maximum; ``noise_samples`` per point),
    less its own read-noise floor in quadrature; :func:`choose_beta` gives the optimum
    for ``n_samples`` samples per phase, capped at that radius. Without noise the optimum
    is unbounded, and with a bias below the noise floor there is nothing to trade: the
    cap is returned in both cases.

    Args:
        device: the board (inputs and nudges are applied; the caller restores its state).
        stencil: the training estimator's stencil at the largest radius allowed, S.
        v_inputs: ``(batch, n_inputs)`` input voltages, V.
        targets_v: ``(batch, n_outputs)`` target voltages, V.
        n_samples: samples per phase in training (>= 1).
        nudge_kind: ``"resistive"`` or ``"current"``.
        noise_samples: free-phase samples for the noise estimate (>= 2).

    Returns:
        The radius (S), the read noise per sample (V) and the RMS bias at the cap (V/S).
    """
    m = max(int(noise_samples), 2)
    r0 = free_phase(device, v_inputs, m)
    sigma = float(np.sqrt(np.mean(np.asarray(r0.sem_v) ** 2) * r0.n_samples))
    est = estimate(device, v_inputs, targets_v, stencil, n_samples=m, nudge_kind=nudge_kind)
    bias_e = est.bias_error
    # the Richardson difference carries the noise of e(r) and of e(r/2) (4x the variance):
    # remove that floor in quadrature; what is left is the bias the noise lets one see
    floor = 5.0 * float(np.mean(est.error_var)) / (1.0 - 0.5**est.stencil.order) ** 2
    rms_bias = (float(np.sqrt(max(float(np.mean(bias_e**2)) - floor, 0.0)))
                if bias_e is not None else float("nan"))
    cap = stencil.radius_s
    if not (np.isfinite(rms_bias) and rms_bias > 0):
        return cap, sigma, rms_bias
    total = max(int(n_samples), 1) * max(stencil.n_solves, 1)
    return choose_beta(stencil, sigma, total, rms_bias, cap), sigma, rms_bias


def choose_beta(
    stencil: Stencil,
    sigma_v: float,
    n_samples_total: int,
    bias_at_radius: float,
    beta_max_s: float,
) -> float:
    """Choose the nudge size from measured noise and a bias estimate (docs/estimators.md §6).

    The bias measured at the stencil's radius ``r`` (e.g. the RMS of
    :attr:`Estimate.bias_error`) gives ``a_{p+1} = bias / (c r^p)``; the
    optimum radius follows from :func:`optimal_radius`, capped at ``beta_max_s``.

    Args:
        stencil: the estimator as used for the bias estimate.
        sigma_v: read noise per sample, V.
        n_samples_total: samples per estimate over all points.
        bias_at_radius: ``|bias|`` at ``stencil.radius_s``, V/S.
        beta_max_s: safety / analyticity cap, S (> 0).

    Returns:
        The nudge radius to use, S.
    """
    if not beta_max_s > 0:
        raise ConfigError(f"beta_max = {beta_max_s} must be > 0 S")
    r = stencil.radius_s
    a = abs(bias_at_radius) / (abs(stencil.bias_coef) * r**stencil.order)
    return float(min(optimal_radius(stencil, sigma_v, n_samples_total, a), beta_max_s))
