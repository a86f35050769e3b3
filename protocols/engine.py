"""Runs an EP step plan against any Device.

The engine executes the typed steps of :mod:`protocols.plan` in order and
collects everything that happened in a :class:`StepRecord` (every raw reading,
the nudges applied, the gradient, the update, the programming report, the pulses
and bound hits it counts). The learning rule and the programming strategy come
in as a :class:`Learner`. The training layer (:meth:`protocols.training.Trainer.step`)
adds the examples, loss, accuracy and timing to the same record and hands it to
its observers (session file, resume verification, progress bar).

The gradient: on a board whose description lists directed couplings
(``desc.info["couplings"]``: separate forward and backward arrays, e.g. the
``nonreciprocal`` emulator) every block gets its own local update from the
stencil's error vector (:func:`protocols.holomorphic.stencil_gradient`); on
every other board each edge is one reciprocal resistor
(:func:`protocols.updates.ep_gradient`, unchanged).

The engine does not put the board in its safe state: the caller's session
does that on every exit path (see :mod:`protocols.training`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, cast, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from hwloop.device import (
    BoardDescription,
    CurrentNudge,
    Device,
    NodeReading,
    Nudge,
    ResistiveNudge,
)
from hwloop.errors import ConfigError
from protocols.optim import Update
from protocols.plan import (
    ApplyInputs,
    ApplyNudge,
    ComputeUpdate,
    DriveSinusoid,
    Measure,
    NudgeKind,
    Program,
    ReleaseNudge,
    Settle,
    Step,
    measurement_plan,
)
from protocols.programming import ProgramReport, Reason
from protocols.updates import Gradient, board_couplings, ep_gradient, stencil_gradient

Array = NDArray[np.floating]


@runtime_checkable
class ReportsConvergence(Protocol):
    """A board that can say whether its last settle converged (the emulators)."""

    def last_converged(self) -> NDArray[np.bool_]:
        """``(batch,)`` True where the last settle reached the steady state."""
        ...


@runtime_checkable
class SinusoidalDrive(Protocol):
    """A board that can drive a sinusoidal output pull and sample the nodes in time."""

    def relaxation_time_s(self, amplitude_s: float = 0.0) -> float:
        """Slowest relaxation time around the present free fixed point, s.

        With ``amplitude_s = r > 0``: the slowest over the nudges ``-r, 0, +r`` (the
        drive's extremes); raises :class:`~hwloop.errors.ConfigError` when the network
        is unstable at one of them.
        """
        ...

    def drive_sinusoid(
        self,
        targets_v: Array,
        amplitude_s: float,
        frequency_hz: float,
        n_periods: int,
        samples_per_period: int,
        settle_periods: int = 1,
    ) -> NodeReading:
        """Drive ``beta(t) = r cos(2 pi f t)`` and return the free nodes sampled in time."""
        ...


class Learner(Protocol):
    """Turns a gradient into an update and applies it to the board."""

    def update(self, gradient: Gradient) -> Update:
        """The parameter changes for this gradient (the optimiser step)."""
        ...

    def program(self, device: Device, update: Update) -> ProgramReport:
        """Apply the changes to the board."""
        ...


@dataclass(eq=False)
class StepRecord:
    """Everything one EP step measured and did.

    The engine fills the measurement and learning part; a training step
    (:meth:`protocols.training.Trainer.step`) adds the batch, the cost and the timing.

    Attributes:
        readings: phase -> every raw sample of the free nodes.
        betas_s: phase -> signed nudge strength, S (0 for free).
        nudges: phase -> the nudge object applied.
        gradient: the gradient estimate (None until ComputeUpdate ran).
        update: the requested parameter changes.
        programming: what programming did.
        n_pulses: pulses applied by programming (0 without a Program step).
        n_bound_hits: edges whose requested change was cut at a device bound.
        sign: the sign applied to every nudge and stencil coefficient (+1 or -1).
        converged: phase -> whether every example's settle before that reading
            converged (only when the engine was asked to track it).
        executed: the steps run, in order.
        inputs_v: ``(batch, n_inputs)`` input voltages applied, V.
        targets_v: ``(batch, n_outputs)`` target output voltages, V.
        step: number of the step in the run, from 0 (training only; -1 otherwise).
        epoch, batch: epoch (from 0) and mini-batch within it (training only).
        examples: ``(batch,)`` training-set indices of the examples (training only).
        cost_sum_v2: free-phase output cost summed over the batch, V^2.
        n_correct: examples whose free-phase output argmax is the label.
        t_start_unix_s: wall-clock start of the step, s since the epoch.
        duration_s: wall time of the step, s.
    """

    readings: dict[int, NodeReading] = field(default_factory=dict)
    betas_s: dict[int, float | complex] = field(default_factory=dict)
    nudges: dict[int, Nudge] = field(default_factory=dict)
    gradient: Gradient | None = None
    update: Update | None = None
    programming: ProgramReport | None = None
    n_pulses: int = 0
    n_bound_hits: int = 0
    sign: float = 1.0
    converged: dict[int, bool] = field(default_factory=dict)
    executed: list[Step] = field(default_factory=list)
    inputs_v: Array | None = None
    targets_v: Array | None = None
    step: int = -1
    epoch: int = 0
    batch: int = 0
    examples: NDArray[np.integer] | None = None
    cost_sum_v2: float = float("nan")
    n_correct: int = 0
    t_start_unix_s: float = 0.0
    duration_s: float = 0.0
    _means: dict[int, Array] = field(default_factory=dict, repr=False)

    @property
    def n_examples(self) -> int:
        """Examples in the batch."""
        return 0 if self.inputs_v is None else int(self.inputs_v.shape[0])

    @property
    def loss(self) -> float:
        """Mean free-phase output cost per example, V^2 (NaN before it is computed)."""
        return self.cost_sum_v2 / self.n_examples if self.n_examples else float("nan")

    @property
    def accuracy(self) -> float:
        """Fraction of the batch classified right by the free-phase outputs."""
        return self.n_correct / self.n_examples if self.n_examples else float("nan")

    def mean_v(self, phase: int) -> Array:
        """``(batch, n_free)`` mean voltages measured in ``phase``, V (read-only; computed once).

        One sample is its own mean (the same values as averaging, without the pass).
        """
        m = self._means.get(phase)
        if m is None:
            s = self.readings[phase].samples_v
            m = s[0] if s.shape[0] == 1 else np.asarray(s.mean(axis=0))
            self._means[phase] = m
        return m


@dataclass(frozen=True, eq=False)
class Prepared:
    """What the engine derives from a board's description, once per run.

    Attributes:
        desc: the board's description.
        out_pos: positions of the output nodes among the free nodes.
        directed: True when the board lists directed couplings (local rule per block).
    """

    desc: BoardDescription
    out_pos: NDArray[np.intp]
    directed: bool

    @classmethod
    def of(cls, device: Device) -> Prepared:
        """Prepare for ``device`` (its description must not change while it is used)."""
        desc = device.describe()
        return cls(
            desc,
            np.searchsorted(desc.free_nodes, desc.output_nodes),
            board_couplings(desc) is not None,
        )


def measure(device: Device, step: Measure) -> NodeReading:
    """Read ``step.n_samples`` samples per example.

    With an SEM target, keep reading chunks of that size until every node's
    standard error is below it or ``max_samples`` is reached.
    """
    r = device.read_nodes(step.n_samples)
    if step.sem_target_v is None:
        return r
    parts = [r]
    total = step.n_samples
    while total < step.max_samples:
        merged = _merge(parts) if len(parts) > 1 else r
        if total >= 2 and float(np.max(merged.sem_v)) < step.sem_target_v:
            return merged
        chunk = min(step.n_samples, step.max_samples - total)
        parts.append(device.read_nodes(max(chunk, 1)))
        total += max(chunk, 1)
    return _merge(parts) if len(parts) > 1 else r


def _merge(parts: list[NodeReading]) -> NodeReading:
    return NodeReading(
        samples_v=np.concatenate([p.samples_v for p in parts], axis=0),
        timestamps_s=np.concatenate([p.timestamps_s for p in parts], axis=0),
        flags=np.concatenate([p.flags for p in parts], axis=0),
        nodes=parts[0].nodes,
    )


def run_step(
    plan: tuple[Step, ...],
    device: Device,
    v_inputs: Array,
    targets_v: Array,
    learner: Learner | None,
    *,
    sign: float = 1.0,
    dtype: np.dtype[np.floating] | type[np.floating] = np.float64,
    v_free_out: Array | None = None,
    track_convergence: bool = False,
    prepared: Prepared | None = None,
) -> StepRecord:
    """Execute one step plan (or any measurement plan) on ``device`` for a batch.

    Args:
        plan: the steps (see :func:`protocols.plan.build_step_plan`).
        device: any Device.
        v_inputs: ``(batch, n_inputs)`` input voltages, V.
        targets_v: ``(batch, n_outputs)`` target output voltages, V.
        learner: optimiser + programmer; ``None`` stops after measuring (the
            ComputeUpdate and Program steps then raise).
        sign: +1.0, or -1.0 to mirror the plan's stencil (every nudge and
            coefficient negated): a random-sign estimator's draw for this step.
        dtype: arithmetic precision of the gradient.
        v_free_out: ``(batch, n_outputs)`` free-phase output voltages for current
            nudges, V, when the plan does not measure the free phase itself.
        track_convergence: record per measured phase whether the settle before it
            converged (``device`` must implement :class:`ReportsConvergence`).
        prepared: :meth:`Prepared.of` the device, when the caller runs many steps.

    Returns:
        The record of the step.
    """
    prep = Prepared.of(device) if prepared is None else prepared
    desc, out_pos, directed = prep.desc, prep.out_pos, prep.directed
    rec = StepRecord(sign=sign, inputs_v=v_inputs, targets_v=targets_v)
    for step in plan:
        if isinstance(step, ApplyInputs):
            device.apply_inputs(v_inputs)
        elif isinstance(step, Settle):
            device.settle(step.settle_time_s)
        elif isinstance(step, Measure):
            rec.readings[step.phase] = measure(device, step)
            rec.betas_s.setdefault(step.phase, 0.0)
            if track_convergence:
                done = cast(ReportsConvergence, device).last_converged()
                rec.converged[step.phase] = bool(np.all(done))
        elif isinstance(step, ApplyNudge):
            beta: float | complex = step.beta_s * sign
            if isinstance(beta, complex) and beta.imag == 0:
                beta = beta.real
            nudge: Nudge
            if step.kind == "resistive":
                nudge = ResistiveNudge(beta, targets_v)
            else:
                if v_free_out is None:
                    if 0 not in rec.readings:
                        raise ConfigError("a current nudge needs the free phase measured first")
                    v_free_out = rec.mean_v(0)[:, out_pos]
                nudge = CurrentNudge(beta * (targets_v - v_free_out))
            device.apply_nudge(nudge)
            rec.nudges[step.phase] = nudge
            rec.betas_s[step.phase] = beta
        elif isinstance(step, ReleaseNudge):
            device.apply_nudge(None)
        elif isinstance(step, DriveSinusoid):
            rec.readings[step.phase] = cast(SinusoidalDrive, device).drive_sinusoid(
                targets_v, step.amplitude_s, step.frequency_hz, step.n_periods,
                step.samples_per_period, step.settle_periods,
            )
            rec.betas_s[step.phase] = step.amplitude_s
        elif isinstance(step, ComputeUpdate):
            if learner is None:
                raise ConfigError("this plan computes updates: give the engine a learner")
            phases = [rec.mean_v(p) for p in step.phases]
            coeffs = step.coeffs if sign == 1.0 else tuple(c * sign for c in step.coeffs)
            # separate forward/backward arrays, or complex (Cauchy) phases: the local rule
            # from the error vector Re sum c_i v_i (DR-49)
            if directed or any(isinstance(c, complex) for c in coeffs):
                rec.gradient = stencil_gradient(
                    desc, v_inputs, rec.mean_v(0), phases, coeffs, dtype=dtype
                )
            else:
                real = tuple(float(np.real(c)) for c in coeffs)
                rec.gradient = ep_gradient(desc, v_inputs, phases, real, dtype=dtype)
            rec.update = learner.update(rec.gradient)
        elif isinstance(step, Program):
            if learner is None or rec.update is None:
                raise ConfigError("programming needs a computed update first")
            rec.programming = report = learner.program(device, rec.update)
            rec.n_pulses = report.total_pulses
            rec.n_bound_hits = report.counts.get(Reason.AT_BOUND.name.lower(), 0)
        else:  # pragma: no cover - the Step union is closed
            raise ConfigError(f"unknown plan step {step!r}")
        rec.executed.append(step)
    return rec


def free_phase(
    device: Device, v_inputs: Array, n_samples: int = 1, *, nodes: NDArray[np.integer] | None = None
) -> NodeReading:
    """Release any nudge, apply ``v_inputs`` (V), settle, read ``n_samples`` samples.

    The free phase of every measurement outside a training step (evaluation,
    estimators, planner, characterisation); ``nodes``: read only these (default:
    every free node).
    """
    device.apply_nudge(None)
    device.apply_inputs(v_inputs)
    device.settle()
    if nodes is None:
        return device.read_nodes(n_samples)
    return device.read_nodes(n_samples, nodes=nodes)


def nudged_phases(
    device: Device,
    betas_s: tuple[float | complex, ...],
    targets_v: Array,
    *,
    nudge_kind: NudgeKind = "resistive",
    n_samples: int = 1,
    v_free_out: Array | None = None,
    release_each: bool = False,
) -> tuple[list[NodeReading | None], bool]:
    """Measure the nudged equilibria at ``betas_s`` (S, real or complex; 0 is skipped).

    The inputs are the ones applied (after :func:`free_phase`); the nudge is
    released at the end.

    Args:
        device: any board (complex betas need ``supports_complex_nudge``).
        betas_s: the nudges, S.
        targets_v: ``(batch, n_outputs)`` target voltages, V.
        nudge_kind: ``"resistive"`` or ``"current"`` (then ``v_free_out`` is needed).
        n_samples: samples per phase per example.
        v_free_out: ``(batch, n_outputs)`` free output voltages for current nudges, V.
        release_each: release the nudge after every phase (else only at the end).

    Returns:
        One reading per beta (``None`` for a zero beta) and whether every settle
        converged (True on a board that does not report it).
    """
    plan = measurement_plan(
        betas_s, nudge_kind=nudge_kind, n_samples=n_samples, free=False,
        release_each=release_each,
    )
    track = isinstance(device, ReportsConvergence)
    rec = run_step(
        plan, device, np.empty((0, 0)), targets_v, None, v_free_out=v_free_out,
        track_convergence=track,
    )
    readings = [rec.readings.get(k) for k in range(1, len(betas_s) + 1)]
    return readings, all(rec.converged.values())
