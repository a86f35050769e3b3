"""EP gradient estimators as linear stencils over nudged phases.

Every estimator here measures ``f(beta_i) = dE/dtheta`` at a few nudged
equilibria ``s_{beta_i}`` and combines them linearly::

    grad_hat = sum_i c_i * f(beta_i)

(docs/physics.md §3). So an estimator is just the list of nudges to apply
(:class:`Stencil`: nudge strengths ``beta_i`` and coefficients ``c_i``); the
update code never needs to know which estimator produced it. ``beta_i = 0``
is the free phase.

* one-sided: ``(f(beta) - f(0)) / beta`` -- bias O(beta);
* centered: ``(f(beta) - f(-beta)) / (2 beta)`` -- bias O(beta^2), the default
  (Laborieux et al. 2021; the DRN code's default);
* random-sign: one-sided with the sign of beta drawn per step from the run's
  generator -- unbiased at O(beta) in expectation only;
* four-point: ``[f(-r) - 8 f(-r/2) + 8 f(r/2) - f(r)] / (6 r)`` -- bias O(beta^4)
  (the five-point derivative rule with step r/2; four nudged phases).
* cauchy-N: ``Re (1/N) sum_k f(beta_k) / beta_k`` over ``beta_k = r e^{2 pi i k/N}``
  -- bias O(r^N) (docs/estimators.md §3.2); complex nudges, so only on a board
  with ``supports_complex_nudge``; ``floor(N/2)`` nudged phases plus ``+r``.

A training run builds its step plan once, from the estimator's stencil at
``+beta``; a random sign is data of each step (:meth:`Estimator.draw_sign`),
which the engine applies to every nudge and coefficient
(:meth:`Stencil.signed`, the mirrored stencil).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from hwloop.errors import ConfigError

EstimatorName = Literal["centered", "one-sided", "random-sign", "four-point"]
ESTIMATORS: tuple[EstimatorName, ...] = ("centered", "one-sided", "random-sign", "four-point")


@dataclass(frozen=True)
class Stencil:
    """Nudges of an EP estimate and how to combine what is measured there.

    One type for every estimator: the training estimators below, the multi-point
    and Cauchy estimators (:func:`protocols.holomorphic.make_stencil`) and the
    lock-in's quasi-static equivalent (:func:`protocols.lockin.lockin_stencil`).
    The estimate is ``Re sum_i c_i f(beta_i)``.

    Attributes:
        betas_s: signed nudge strength of each phase, S (0 means free; complex
            for Cauchy points, which need ``supports_complex_nudge``).
        coeffs: coefficient of each phase in the estimate, 1/S (complex with
            complex nudges).
        name: the estimator's name ("" when built by hand).
        radius_s: the largest ``|beta|``, S (0: computed from ``betas_s``).
        order: bias order ``p`` (bias ``c a_{p+1} r^p``, with ``f = sum a_m beta^m``).
        bias_coef: ``c`` in that bias (dimensionless).
        variance_factor: ``V`` in the variance ``V sigma^2 / (M r^2)`` for ``M``
            samples split equally over the points (dimensionless; NaN if not stated).
    """

    betas_s: tuple[complex, ...]
    coeffs: tuple[complex, ...]
    name: str = ""
    radius_s: float = 0.0
    order: int = 1
    bias_coef: float = 1.0
    variance_factor: float = float("nan")

    def __post_init__(self) -> None:
        if len(self.betas_s) != len(self.coeffs) or not self.betas_s:
            raise ConfigError("a stencil needs one coefficient per nudge")
        if abs(complex(sum(self.coeffs)).real) > 1e-9 * max(abs(c) for c in self.coeffs):
            raise ConfigError("stencil coefficients must sum to 0 (a constant has no gradient)")
        if self.radius_s == 0.0:
            object.__setattr__(self, "radius_s", float(max(abs(b) for b in self.betas_s)))

    @property
    def needs_free_phase(self) -> bool:
        """True if the free equilibrium enters the estimate."""
        return 0.0 in self.betas_s

    @property
    def is_complex(self) -> bool:
        """True if any nudge is complex (needs ``supports_complex_nudge``)."""
        return any(complex(b).imag != 0 for b in self.betas_s)

    @property
    def real_betas_s(self) -> tuple[float, ...]:
        """The nudges as real numbers, S.

        Raises:
            ConfigError: a complex stencil (its estimate needs complex nudges).
        """
        if self.is_complex:
            raise ConfigError(f"the {self.name or 'given'} stencil has complex nudges")
        return tuple(float(complex(b).real) for b in self.betas_s)

    @property
    def real_coeffs(self) -> tuple[float, ...]:
        """The coefficients as real numbers, 1/S (see :attr:`real_betas_s`)."""
        if self.is_complex or any(complex(c).imag != 0 for c in self.coeffs):
            raise ConfigError(f"the {self.name or 'given'} stencil has complex coefficients")
        return tuple(float(complex(c).real) for c in self.coeffs)

    @property
    def n_solves(self) -> int:
        """Number of nudged equilibria (the free phase is always measured anyway)."""
        return sum(1 for b in self.betas_s if b != 0)

    def signed(self, sign: float) -> Stencil:
        """The mirrored stencil for ``sign = -1`` (every nudge and coefficient negated)."""
        if sign == 1.0:
            return self
        return replace(
            self,
            betas_s=tuple(b * sign for b in self.betas_s),
            coeffs=tuple(c * sign for c in self.coeffs),
        )

    def scaled(self, q: float) -> Stencil:
        """The same stencil at radius ``q r`` (nudges times q, coefficients over q)."""
        return replace(
            self,
            betas_s=tuple(b * q for b in self.betas_s),
            coeffs=tuple(c / q for c in self.coeffs),
            radius_s=self.radius_s * q,
        )


class Estimator(Protocol):
    """Chooses the nudges of one step."""

    @property
    def name(self) -> str:
        """The estimator's name."""
        ...

    @property
    def random_sign(self) -> bool:
        """True if each step draws the sign of its nudges (:meth:`draw_sign`)."""
        ...

    def stencil(self, beta_s: float, rng: np.random.Generator | None = None) -> Stencil:
        """The nudges for one step with nudge size ``beta_s`` (> 0), S.

        With ``rng`` a random-sign estimator draws the sign (:meth:`draw_sign`);
        without, every estimator gives its stencil at ``+beta_s``.
        """
        ...

    def draw_sign(self, rng: np.random.Generator) -> float:
        """The sign of this step's nudges, +1.0 or -1.0 (fixed-sign estimators draw nothing)."""
        ...


class _FixedSign:
    """``draw_sign`` of an estimator whose nudges always have the sign of ``beta``."""

    def draw_sign(self, rng: np.random.Generator) -> float:
        """Always +1 (draws nothing)."""
        return 1.0


@dataclass(frozen=True)
class OneSided(_FixedSign):
    """``(f(beta) - f(0)) / beta``."""

    name: str = "one-sided"
    random_sign: bool = False

    def stencil(self, beta_s: float, rng: np.random.Generator | None = None) -> Stencil:
        """Free phase and one nudge of ``+beta``."""
        return Stencil((0.0, beta_s), (-1.0 / beta_s, 1.0 / beta_s))


@dataclass(frozen=True)
class Centered(_FixedSign):
    """``(f(beta) - f(-beta)) / (2 beta)``."""

    name: str = "centered"
    random_sign: bool = False

    def stencil(self, beta_s: float, rng: np.random.Generator | None = None) -> Stencil:
        """Nudges of ``-beta`` then ``+beta`` (the DRN code's order)."""
        return Stencil((-beta_s, beta_s), (-0.5 / beta_s, 0.5 / beta_s))


@dataclass(frozen=True)
class RandomSign:
    """One-sided with a random sign per step (draws one value from ``rng``)."""

    name: str = "random-sign"
    random_sign: bool = True

    def stencil(self, beta_s: float, rng: np.random.Generator | None = None) -> Stencil:
        """Free phase and one nudge of ``s*beta``, ``s = +/-1`` drawn from ``rng`` (+1 without)."""
        base = Stencil((0.0, beta_s), (-1.0 / beta_s, 1.0 / beta_s))
        return base if rng is None else base.signed(self.draw_sign(rng))

    def draw_sign(self, rng: np.random.Generator) -> float:
        """+1 or -1 with equal probability (one value from ``rng``)."""
        return 1.0 if rng.random() < 0.5 else -1.0


@dataclass(frozen=True)
class FourPoint(_FixedSign):
    """``[f(-r) - 8 f(-r/2) + 8 f(r/2) - f(r)] / (6 r)``: bias ``-r^4 a_5 / 4``."""

    name: str = "four-point"
    random_sign: bool = False

    def stencil(self, beta_s: float, rng: np.random.Generator | None = None) -> Stencil:
        """Nudges ``-r, -r/2, r/2, r`` (``r = beta_s``) with the five-point weights."""
        r = beta_s
        w = (1.0 / (6 * r), -8.0 / (6 * r), 8.0 / (6 * r), -1.0 / (6 * r))
        v = 4 * sum((x * r) ** 2 for x in w)  # variance factor, M samples over 4 points
        return Stencil((-r, -r / 2, r / 2, r), w, self.name, r, 4, -0.25, v)


@dataclass(frozen=True)
class Cauchy(_FixedSign):
    """The Cauchy N-point rule on the circle ``|beta| = r`` (complex nudges).

    ``e = Re (1/N) sum_k f(beta_k) / beta_k``, ``beta_k = r e^{2 pi i k/N}``; for a
    real network ``f(conj b) = conj f(b)``, so only ``k = 0 .. floor(N/2)`` are
    measured, the conjugate pairs with weight ``2/(N beta_k)`` (N=4: ``+r, i r, -r``).
    Bias order N, bias coefficient 1, variance factor 1.

    Attributes:
        n_points: ``N >= 2``.
    """

    n_points: int = 4
    random_sign: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.n_points, bool) or int(self.n_points) != self.n_points \
                or self.n_points < 2:
            raise ConfigError(f"Cauchy points N = {self.n_points} must be an integer >= 2")

    @property
    def name(self) -> str:
        """``cauchy-N``."""
        return f"cauchy-{self.n_points}"

    def stencil(self, beta_s: float, rng: np.random.Generator | None = None) -> Stencil:
        """The points ``r e^{2 pi i k/N}``, ``k = 0 .. floor(N/2)`` (``r = beta_s`` > 0, S)."""
        r, n = float(beta_s), int(self.n_points)
        betas: list[complex] = []
        weights: list[complex] = []
        for k in range(n // 2 + 1):
            if k == 0 or 2 * k == n:  # the real points +r and -r are their own conjugates
                x = r if k == 0 else -r
                betas.append(x)
                weights.append(1.0 / (n * x))
            else:
                b = complex(r * np.exp(2j * np.pi * k / n))
                betas.append(b)
                weights.append(2.0 / (n * b))
        return Stencil(tuple(betas), tuple(weights), self.name, r, n, 1.0, 1.0)


def is_complex_estimator(name: str) -> bool:
    """True for an estimator whose nudges are complex (``cauchy-N``)."""
    return name.startswith("cauchy")


def make_estimator(name: str) -> Estimator:
    """The estimator called ``name`` (one of :data:`ESTIMATORS`, or ``cauchy-N``, N >= 2)."""
    if name.startswith("cauchy-"):
        n = name.removeprefix("cauchy-")
        if not n.isdigit() or int(n) < 2:
            raise ConfigError(f"estimator {name!r}: give the Cauchy points as cauchy-N, N >= 2")
        return Cauchy(int(n))
    if name == "centered":
        return Centered()
    if name == "one-sided":
        return OneSided()
    if name == "random-sign":
        return RandomSign()
    if name == "four-point":
        return FourPoint()
    raise ConfigError(
        f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)} or cauchy-N"
    )
