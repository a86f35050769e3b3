"""EP gradient estimators as linear stencils over nudged phases.

Every estimator here measures ``f(beta_i) = dE/dtheta`` at a few nudged
equilibria ``s_{beta_i}`` and combines them linearly::

    grad_hat = sum_i c_i * f(beta_i)

(physics doc section 3). So an estimator is just the list of nudges to apply
(:class:`Stencil`: nudge strengths ``beta_i`` and coefficients ``c_i``); the
update code never needs to know which estimator produced it. ``beta_i = 0``
is the free phase.

* one-sided: ``(f(beta) - f(0)) / beta`` -- bias O(beta);
* centered: ``(f(beta) - f(-beta)) / (2 beta)`` -- bias O(beta^2), the default
  (Laborieux et al. 2021; the DRN code's default);
* random-sign: one-sided with the sign of beta drawn per step from the run's
  generator -- unbiased at O(beta) in expectation only.

A training run builds its step plan once, from the estimator's stencil at
``+beta``; a random sign is data of each step (:meth:`Estimator.draw_sign`),
which the engine applies to every nudge and coefficient
(:meth:`Stencil.signed`, the mirrored stencil).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from hwloop.errors import ConfigError

EstimatorName = Literal["centered", "one-sided", "random-sign"]
ESTIMATORS: tuple[EstimatorName, ...] = ("centered", "one-sided", "random-sign")


@dataclass(frozen=True)
class Stencil:
    """Nudges of one EP step and how to combine what is measured there.

    Attributes:
        betas_s: signed nudge strength of each nudged phase, S (0 means free).
        coeffs: coefficient of each phase in the gradient estimate, 1/S.
    """

    betas_s: tuple[float, ...]
    coeffs: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.betas_s) != len(self.coeffs) or not self.betas_s:
            raise ConfigError("a stencil needs one coefficient per nudge")
        if abs(sum(self.coeffs)) > 1e-9 * max(abs(c) for c in self.coeffs):
            raise ConfigError("stencil coefficients must sum to 0 (a constant has no gradient)")

    @property
    def needs_free_phase(self) -> bool:
        """True if the free equilibrium enters the estimate."""
        return 0.0 in self.betas_s

    def signed(self, sign: float) -> Stencil:
        """The mirrored stencil for ``sign = -1`` (every nudge and coefficient negated)."""
        if sign == 1.0:
            return self
        return Stencil(
            tuple(b * sign for b in self.betas_s), tuple(c * sign for c in self.coeffs)
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


@dataclass(frozen=True)
class OneSided:
    """``(f(beta) - f(0)) / beta``."""

    name: str = "one-sided"
    random_sign: bool = False

    def stencil(self, beta_s: float, rng: np.random.Generator | None = None) -> Stencil:
        """Free phase and one nudge of ``+beta``."""
        return Stencil((0.0, beta_s), (-1.0 / beta_s, 1.0 / beta_s))

    def draw_sign(self, rng: np.random.Generator) -> float:
        """Always +1 (draws nothing)."""
        return 1.0


@dataclass(frozen=True)
class Centered:
    """``(f(beta) - f(-beta)) / (2 beta)``."""

    name: str = "centered"
    random_sign: bool = False

    def stencil(self, beta_s: float, rng: np.random.Generator | None = None) -> Stencil:
        """Nudges of ``-beta`` then ``+beta`` (the DRN code's order)."""
        return Stencil((-beta_s, beta_s), (-0.5 / beta_s, 0.5 / beta_s))

    def draw_sign(self, rng: np.random.Generator) -> float:
        """Always +1 (draws nothing)."""
        return 1.0


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


def make_estimator(name: str) -> Estimator:
    """The estimator called ``name`` (one of :data:`ESTIMATORS`)."""
    if name == "centered":
        return Centered()
    if name == "one-sided":
        return OneSided()
    if name == "random-sign":
        return RandomSign()
    raise ConfigError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
