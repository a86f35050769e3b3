"""Runs an EP step plan against any Device.

The engine executes the typed steps of :mod:`protocols.plan` in order and
collects everything that happened in a :class:`StepRecord` (every raw reading,
the nudges applied, the gradient, the update, the programming report). The
learning rule and the programming strategy come in as a :class:`Learner`; the
checkpoint step hands the record to a callback (the session log).

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

from collections.abc import Callable
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
    Checkpoint,
    ComputeUpdate,
    Measure,
    Program,
    ReleaseNudge,
    Settle,
    Step,
)
from protocols.programming import ProgramReport
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

    Attributes:
        readings: phase -> every raw sample of the free nodes.
        betas_s: phase -> signed nudge strength, S (0 for free).
        nudges: phase -> the nudge object applied.
        gradient: the gradient estimate (None until ComputeUpdate ran).
        update: the requested parameter changes.
        programming: what programming did.
        executed: the steps run, in order.
    """

    readings: dict[int, NodeReading] = field(default_factory=dict)
    betas_s: dict[int, float] = field(default_factory=dict)
    nudges: dict[int, Nudge] = field(default_factory=dict)
    gradient: Gradient | None = None
    update: Update | None = None
    programming: ProgramReport | None = None
    executed: list[Step] = field(default_factory=list)

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
    checkpoint: Callable[[StepRecord], None] | None = None,
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
        checkpoint: called with the record at the Checkpoint step.
        dtype: arithmetic precision of the gradient.

    Returns:
        The record of the step.
    """
    desc = device.describe()
    out_pos = np.searchsorted(desc.free_nodes, desc.output_nodes)
    directed = board_couplings(desc) is not None
    rec = StepRecord()
    for step in plan:
        if isinstance(step, ApplyInputs):
            device.apply_inputs(v_inputs)
        elif isinstance(step, Settle):
            device.settle(step.settle_time_s)
        elif isinstance(step, Measure):
            rec.readings[step.phase] = measure(device, step)
            rec.betas_s.setdefault(step.phase, 0.0)
        elif isinstance(step, ApplyNudge):
            nudge: Nudge
            if step.kind == "resistive":
                nudge = ResistiveNudge(step.beta_s, targets_v)
            else:
                if 0 not in rec.readings:
                    raise ConfigError("a current nudge needs the free phase measured first")
                v_free_out = rec.mean_v(0)[:, out_pos]
                nudge = CurrentNudge(step.beta_s * (targets_v - v_free_out))
            device.apply_nudge(nudge)
            rec.nudges[step.phase] = nudge
            rec.betas_s[step.phase] = step.beta_s
        elif isinstance(step, ReleaseNudge):
            device.apply_nudge(None)
        elif isinstance(step, ComputeUpdate):
            if learner is None:
                raise ConfigError("this plan computes updates: give the engine a learner")
            phases = [rec.mean_v(p) for p in step.phases]
            if directed:  # separate forward/backward arrays: each gets its local update
                rec.gradient = stencil_gradient(
                    desc, v_inputs, rec.mean_v(0), phases, step.coeffs, dtype=dtype
                )
            else:
                rec.gradient = ep_gradient(desc, v_inputs, phases, step.coeffs, dtype=dtype)
            rec.update = learner.update(rec.gradient)
        elif isinstance(step, Program):
            if learner is None or rec.update is None:
                raise ConfigError("programming needs a computed update first")
            rec.programming = learner.program(device, rec.update)
        elif isinstance(step, Checkpoint):
            if checkpoint is not None:
                checkpoint(rec)
        else:  # pragma: no cover - the Step union is closed
            raise ConfigError(f"unknown plan step {step!r}")
        rec.executed.append(step)
    return rec
