"""One EP training step as data: a short tuple of typed steps.

Because the plan is data it can be printed (:func:`format_plan`), checked
against a board's safety limits before anything is applied (:func:`dry_run`),
and its execution order tested exactly without hardware. :mod:`protocols.engine`
runs a plan against any :class:`hwloop.device.Device`.

A centered-EP step::

    ApplyInputs -> Settle -> Measure(free) -> ApplyNudge(-beta) -> Settle -> Measure(1)
    -> ApplyNudge(+beta) -> Settle -> Measure(2) -> ReleaseNudge -> ComputeUpdate
    -> Program

A run builds its plan once; a random-sign estimator's sign is data of each step,
applied by the engine to every nudge and coefficient
(:func:`protocols.engine.run_step`, ``sign``). What happens with the finished
step (session file, progress, monitors) is up to the observers of
:class:`protocols.training.Trainer`, not part of the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from hwloop.device import (
    BoardDescription,
    CurrentNudge,
    ResistiveNudge,
    check_inputs_within_limits,
    check_nudge_within_limits,
)
from hwloop.errors import ConfigError, LimitError
from protocols.estimators import Stencil

NudgeKind = Literal["resistive", "current"]


@dataclass(frozen=True)
class ApplyInputs:
    """Set the input sources to the batch's input voltages."""


@dataclass(frozen=True)
class Settle:
    """Wait for the network to settle (``None``: the board's default time), s."""

    settle_time_s: float | None = None


@dataclass(frozen=True)
class Measure:
    """Read the free nodes of phase ``phase``.

    Attributes:
        phase: index into the step's phases (0 = free).
        n_samples: samples per example (>= 1); with ``sem_target_v`` the first chunk.
        sem_target_v: stop sampling once every node's standard error is below
            this, V (``None``: exactly ``n_samples``).
        max_samples: most samples per example when ``sem_target_v`` is set.
    """

    phase: int
    n_samples: int
    sem_target_v: float | None = None
    max_samples: int = 1


@dataclass(frozen=True)
class ApplyNudge:
    """Nudge the outputs toward the targets with strength ``beta_s`` (signed), S.

    ``beta_s`` may be complex on a board with ``supports_complex_nudge`` (Cauchy
    points; :func:`dry_run` refuses it elsewhere).

    ``kind="resistive"``: a conductance beta to each target voltage;
    ``kind="current"``: inject ``beta * (y - v_free)`` into each output (first
    order equivalent, docs/physics.md §3.2; needs the free phase measured first).
    """

    phase: int
    beta_s: float | complex
    kind: NudgeKind


@dataclass(frozen=True)
class DriveSinusoid:
    """Drive the output pull ``beta(t) = r cos(2 pi f t)``; record the nodes sampled in time.

    The reading of phase ``phase`` holds ``n_periods * samples_per_period`` samples
    per example, uniformly in phase over whole periods (lock-in estimation,
    :mod:`protocols.lockin`; needs a board with ``drive_sinusoid``).

    Attributes:
        phase: index of the reading.
        amplitude_s: drive amplitude ``r``, S.
        frequency_hz: drive frequency, Hz.
        n_periods: periods sampled (>= 1).
        samples_per_period: samples per period.
        settle_periods: periods driven before sampling (>= 0).
    """

    phase: int
    amplitude_s: float
    frequency_hz: float
    n_periods: int
    samples_per_period: int
    settle_periods: int = 1


@dataclass(frozen=True)
class ReleaseNudge:
    """Remove the nudge."""


@dataclass(frozen=True)
class ComputeUpdate:
    """Combine the phases with the stencil coefficients into a gradient, then an update.

    Attributes:
        phases: the phase measured for each stencil entry.
        coeffs: the stencil coefficient of each entry, 1/S (complex for a Cauchy
            stencil: the estimate is then ``Re sum c_i f_i``).
    """

    phases: tuple[int, ...]
    coeffs: tuple[float | complex, ...]


@dataclass(frozen=True)
class Program:
    """Apply the update to the board's conductances and bias sources."""


Step = (
    ApplyInputs
    | Settle
    | Measure
    | ApplyNudge
    | DriveSinusoid
    | ReleaseNudge
    | ComputeUpdate
    | Program
)


def build_step_plan(
    stencil: Stencil,
    *,
    nudge_kind: NudgeKind = "resistive",
    n_samples: int = 1,
    sem_target_v: float | None = None,
    max_samples: int | None = None,
    settle_time_s: float | None = None,
) -> tuple[Step, ...]:
    """The plan of one EP training step for ``stencil``.

    The free phase is always measured (it gives the prediction, the cost and
    the reference for current nudges); each nonzero beta of the stencil adds a
    nudged phase, numbered from 1 in stencil order. A complex stencil (Cauchy) gives
    complex nudges and coefficients; :func:`dry_run` refuses them on a board without
    ``supports_complex_nudge``.
    """
    if n_samples < 1:
        raise ConfigError(f"samples = {n_samples} must be >= 1")
    if sem_target_v is not None and not sem_target_v > 0:
        raise ConfigError(f"sem target = {sem_target_v} must be > 0 V")
    cap = max_samples if max_samples is not None else n_samples
    if cap < n_samples:
        raise ConfigError(f"max samples = {cap} must be >= samples = {n_samples}")

    def measure(phase: int) -> Measure:
        return Measure(phase, n_samples, sem_target_v, cap)

    steps: list[Step] = [ApplyInputs(), Settle(settle_time_s), measure(0)]
    phase = 0
    used: list[int] = []
    coeffs: tuple[float | complex, ...]
    betas: tuple[float | complex, ...]
    if stencil.is_complex:  # Cauchy: complex nudges, Re sum c_i f_i
        coeffs, betas = tuple(stencil.coeffs), tuple(stencil.betas_s)
    else:
        coeffs, betas = stencil.real_coeffs, stencil.real_betas_s
    for beta in betas:
        if beta == 0.0:
            used.append(0)
            continue
        phase += 1
        used.append(phase)
        steps += [ApplyNudge(phase, beta, nudge_kind), Settle(settle_time_s), measure(phase)]
    steps += [ReleaseNudge(), ComputeUpdate(tuple(used), coeffs), Program()]
    return tuple(steps)


def measurement_plan(
    betas_s: tuple[float | complex, ...],
    *,
    nudge_kind: NudgeKind = "resistive",
    n_samples: int = 1,
    free: bool = True,
    release_each: bool = False,
) -> tuple[Step, ...]:
    """A plan that only measures: the free phase (if ``free``), then one phase per nudge.

    Phase ``k`` (from 1) is measured at ``betas_s[k-1]`` (real or complex, S; zeros
    are skipped and keep their number); the nudge is released at the end (after
    every nudged phase with ``release_each``), and before the free phase. No
    update, no programming.
    """
    steps: list[Step] = []
    if free:
        steps += [ReleaseNudge(), ApplyInputs(), Settle(), Measure(0, n_samples, None, n_samples)]
    for k, beta in enumerate(betas_s, start=1):
        if beta == 0:
            continue
        steps += [ApplyNudge(k, beta, nudge_kind), Settle(), Measure(k, n_samples, None, n_samples)]
        if release_each:
            steps.append(ReleaseNudge())
    if not (release_each and steps):
        steps.append(ReleaseNudge())
    return tuple(steps)


def phase_betas(plan: tuple[Step, ...]) -> dict[int, float | complex]:
    """Phase index -> signed beta, S (0 for the free phase)."""
    out: dict[int, float | complex] = {0: 0.0}
    for s in plan:
        if isinstance(s, ApplyNudge):
            out[s.phase] = s.beta_s
    return out


def format_plan(plan: tuple[Step, ...]) -> str:
    """A human-readable listing, one step per line."""
    lines = []
    for i, s in enumerate(plan, start=1):
        if isinstance(s, Settle):
            what = "settle" + ("" if s.settle_time_s is None else f" {s.settle_time_s:g} s")
        elif isinstance(s, Measure):
            name = "free" if s.phase == 0 else f"nudged #{s.phase}"
            what = f"measure {name} phase: {s.n_samples} sample(s) per example"
            if s.sem_target_v is not None:
                what += f", more until SEM < {s.sem_target_v:g} V (at most {s.max_samples})"
        elif isinstance(s, ApplyNudge):
            what = f"nudge #{s.phase}: {s.kind} pull, beta = {s.beta_s:+g} S"
        elif isinstance(s, ComputeUpdate):
            what = "compute local updates, coefficients " + ", ".join(
                f"{c:+g}" if not isinstance(c, complex) else f"{c:+.6g}" for c in s.coeffs)
        elif isinstance(s, DriveSinusoid):
            what = (
                f"drive #{s.phase}: sinusoidal pull, amplitude {s.amplitude_s:g} S at "
                f"{s.frequency_hz:g} Hz, {s.n_periods} x {s.samples_per_period} samples"
            )
        else:
            what = {
                ApplyInputs: "apply input voltages",
                ReleaseNudge: "release nudge",
                Program: "program conductances and biases",
            }[type(s)]
        lines.append(f"{i:2d}. {what}")
    return "\n".join(lines)


def dry_run(
    plan: tuple[Step, ...],
    desc: BoardDescription,
    v_inputs: NDArray[np.floating],
    targets_v: NDArray[np.floating],
    *,
    max_pulses_per_step: int | None = None,
    signs: tuple[float, ...] = (1.0,),
) -> None:
    """Check a plan against the board's limits before anything is applied.

    ``signs``: the nudge signs the plan will run with (``(-1.0, 1.0)`` for a
    random-sign estimator); every nudge is checked with each.

    Input voltages and resistive nudges are checked exactly. A current nudge
    ``beta * (y - v_free)`` is checked against its worst case, with ``|v_free|``
    bounded by the largest input magnitude (the node voltages of a passive
    resistive network lie within the range of its sources; bias currents can
    push them further, which the device re-checks when the nudge is applied).

    Raises:
        LimitError: the first limit the plan would exceed (nothing was applied).
        ConfigError: malformed plan or array shapes.
    """
    lim = desc.limits
    check_inputs_within_limits(v_inputs, lim, len(desc.input_nodes))
    batch, n_out = v_inputs.shape[0], len(desc.output_nodes)
    y = np.asarray(targets_v)
    if y.shape != (batch, n_out):
        raise ConfigError(f"targets must have shape ({batch}, {n_out}), got {y.shape}")
    v_bound = float(np.max(np.abs(v_inputs), initial=0.0))
    seen_free = False
    for s in plan:
        if isinstance(s, Measure):
            if s.n_samples < 1 or s.max_samples < s.n_samples:
                raise ConfigError(f"measure step of phase {s.phase} has bad sample counts")
            if s.phase == 0:
                seen_free = True
        elif isinstance(s, ApplyNudge):
            if s.kind == "resistive":
                for sign in signs:
                    check_nudge_within_limits(
                        ResistiveNudge(s.beta_s * sign, y), lim, batch, n_out,
                        desc.supports_complex_nudge,
                    )
            else:
                if not seen_free:
                    raise ConfigError("a current nudge needs the free phase measured before it")
                worst = abs(s.beta_s) * (np.abs(y) + v_bound)
                check_nudge_within_limits(
                    CurrentNudge(worst), lim, batch, n_out, desc.supports_complex_nudge
                )
        elif (
            isinstance(s, Program)
            and max_pulses_per_step is not None
            and max_pulses_per_step > lim.max_pulses_per_call
        ):
                raise LimitError(
                    f"the programmer may apply {max_pulses_per_step} pulses per edge per step, "
                    f"more than max_pulses_per_call={lim.max_pulses_per_call}; lower it"
                )
