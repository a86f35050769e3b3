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
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from hwloop.device import CurrentNudge, Device, NodeReading, Nudge, ResistiveNudge
from hwloop.errors import ConfigError
from protocols.holomorphic import board_couplings, stencil_gradient
from protocols.optim import Update
from protocols.plan import (
    ApplyInputs,
    ApplyNudge,
    ComputeUpdate,
    Measure,
    Program,
    ReleaseNudge,
    Settle,
    Step,
)
from protocols.programming import ProgramReport, Reason
from protocols.updates import Gradient, ep_gradient

Array = NDArray[np.floating]


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
    betas_s: dict[int, float] = field(default_factory=dict)
    nudges: dict[int, Nudge] = field(default_factory=dict)
    gradient: Gradient | None = None
    update: Update | None = None
    programming: ProgramReport | None = None
    n_pulses: int = 0
    n_bound_hits: int = 0
    sign: float = 1.0
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
        """``(batch, n_free)`` mean voltages measured in ``phase``, V."""
        return np.asarray(self.readings[phase].mean_v)


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
) -> StepRecord:
    """Execute one step plan on ``device`` for a batch.

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

    Returns:
        The record of the step.
    """
    desc = device.describe()
    out_pos = np.searchsorted(desc.free_nodes, desc.output_nodes)
    directed = board_couplings(desc) is not None
    rec = StepRecord(sign=sign, inputs_v=v_inputs, targets_v=targets_v)
    for step in plan:
        if isinstance(step, ApplyInputs):
            device.apply_inputs(v_inputs)
        elif isinstance(step, Settle):
            device.settle(step.settle_time_s)
        elif isinstance(step, Measure):
            rec.readings[step.phase] = measure(device, step)
            rec.betas_s.setdefault(step.phase, 0.0)
        elif isinstance(step, ApplyNudge):
            beta = step.beta_s * sign
            nudge: Nudge
            if step.kind == "resistive":
                nudge = ResistiveNudge(beta, targets_v)
            else:
                if 0 not in rec.readings:
                    raise ConfigError("a current nudge needs the free phase measured first")
                v_free_out = rec.mean_v(0)[:, out_pos]
                nudge = CurrentNudge(beta * (targets_v - v_free_out))
            device.apply_nudge(nudge)
            rec.nudges[step.phase] = nudge
            rec.betas_s[step.phase] = beta
        elif isinstance(step, ReleaseNudge):
            device.apply_nudge(None)
        elif isinstance(step, ComputeUpdate):
            if learner is None:
                raise ConfigError("this plan computes updates: give the engine a learner")
            phases = [rec.mean_v(p) for p in step.phases]
            coeffs = step.coeffs if sign == 1.0 else tuple(c * sign for c in step.coeffs)
            if directed:  # separate forward/backward arrays: each gets its local update
                rec.gradient = stencil_gradient(
                    desc, v_inputs, rec.mean_v(0), phases, coeffs, dtype=dtype
                )
            else:
                rec.gradient = ep_gradient(desc, v_inputs, phases, coeffs, dtype=dtype)
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
