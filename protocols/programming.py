"""Conductance programming: open loop, or write-verify.

* Open loop: the requested change becomes a pulse count through the board's
  nominal update model (``pulse_step_s`` from its description), rounded to the
  nearest count or stochastically (with the run's generator); what rounding
  leaves over is carried to the next step so small updates are not lost. A
  board without pulse granularity (the ideal emulator) takes the deltas as they
  are.
* Write-verify (docs/devices.md §4): an edge whose accumulated change
  exceeds the tolerance (one nominal pulse step by default) is read, pulsed toward
  its target and re-read until within tolerance or out of iterations; what is left
  between target and the last read is carried to the next step, so small updates
  add up; a device that does not respond is given up on. Each edge's record says
  how many pulses it took, whether it converged, why it stopped and what it carries.

Nothing is clipped silently: a target beyond the device bounds is saturated at
the bound and marked ``AT_BOUND``; more pulses than the per-step cap are
capped and marked ``PULSE_CAP``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from hwloop.device import Device, ProgramResult, ProgramStatus
from hwloop.errors import ConfigError, LimitError
from protocols.optim import Update

Array = NDArray[np.floating]


class Reason(enum.IntEnum):
    """Why programming of an edge ended the way it did."""

    CONVERGED = 0
    """Within tolerance (write-verify) or applied as requested (open loop)."""
    AT_BOUND = 1
    """The target lay beyond the device bound; programmed to the bound."""
    MAX_ITERATIONS = 2
    """Write-verify ran out of iterations before reaching the tolerance."""
    NO_RESPONSE = 3
    """The device did not move under pulses (stuck): given up."""
    PULSE_CAP = 4
    """The pulse count was capped at the per-step maximum."""
    SKIPPED = 5
    """The change was below the programming threshold (carried to the next step)."""


@dataclass(frozen=True, eq=False)
class ProgramReport:
    """What programming did in one step.

    Attributes:
        mode: ``"open-loop"`` or ``"write-verify"``.
        edges: ``(k,)`` edges addressed, or ``None`` when every edge was
            programmed in one dense call (``k = n_edges``, board order).
        requested_delta_s: ``(k,)`` change asked for by the optimiser, S.
        target_s: ``(k,)`` target conductance, S (NaN when not known: open loop).
        achieved_s: ``(k,)`` conductance after programming as the board reports
            or last read it, S (NaN when unknown; empty for a dense call).
        pulses: ``(k,)`` signed total pulses applied per edge.
        reason: ``(k,)`` :class:`Reason` codes (``converged`` derives from it).
        iterations: write-verify iterations used (1 for open loop).
        bias_delta_a: ``(n_bias,)`` bias current changes applied, A.
    """

    mode: str
    edges: NDArray[np.int64] | None
    requested_delta_s: Array
    target_s: Array
    achieved_s: Array
    pulses: NDArray[np.int64]
    reason: NDArray[np.int8]
    iterations: int
    bias_delta_a: Array
    counts: dict[str, int] = field(default_factory=dict)
    residual_s: Array | None = None
    """``(k,)`` change carried to the next step per addressed edge, S (write-verify:
    target minus the last verify read; ``None`` where not recorded)."""

    @property
    def converged(self) -> NDArray[np.bool_]:
        """``(k,)`` True where the edge ended within tolerance / as asked."""
        return np.asarray(self.reason == Reason.CONVERGED)

    @property
    def total_pulses(self) -> int:
        """Pulses applied in the step."""
        if self.pulses.strides == (0,):  # a broadcast zero: continuous programming
            return 0
        return int(np.abs(self.pulses).sum())


def _reason_counts(
    reason: NDArray[np.int8], only: tuple[Reason, ...] | None = None
) -> dict[str, int]:
    """Number of edges per reason.

    ``only``: the non-converged reasons that can occur (a cheaper count for
    large dense calls); ``None`` counts every code.
    """
    n_other = int(np.count_nonzero(reason))
    counts = {Reason.CONVERGED: reason.size - n_other}
    if n_other:
        if only is not None and len(only) == 1:
            counts[only[0]] = n_other
        else:
            full = np.bincount(reason.view(np.uint8), minlength=len(Reason))
            counts.update({r: int(full[r.value]) for r in Reason if r != Reason.CONVERGED})
    return {r.name.lower(): int(c) for r, c in counts.items() if c}


def _checked_biases(device: Device, b_delta: Array) -> Array | None:
    """The new bias currents, checked against the limits before anything is programmed.

    Raises:
        LimitError: a bias current would exceed the board's current limit (nothing applied).
        ConfigError: NaN or inf in the change.
    """
    if not b_delta.size or not np.any(b_delta):
        return None
    if not np.all(np.isfinite(b_delta)):
        raise ConfigError("the bias update contains NaN or inf; lower the learning rate")
    new = device.read_bias_currents() + b_delta
    lim = device.describe().limits.i_nudge_max_a
    peak = float(np.max(np.abs(new)))
    if peak > lim:
        raise LimitError(
            f"bias current {peak:.6g} A would exceed the limit {lim:.6g} A; lower the bias "
            "learning rate or raise the limit (nothing was programmed)"
        )
    return np.asarray(new)


def _status_to_reason(status: NDArray[np.int8]) -> NDArray[np.int8]:
    """Device statuses to reasons: AT_MAX/AT_MIN become AT_BOUND, the rest CONVERGED."""
    assert (ProgramStatus.AT_MAX.value, ProgramStatus.AT_MIN.value, Reason.AT_BOUND.value) == (
        1,
        2,
        1,
    )
    # codes 1 and 2 are the bounds: (code - 1) mod 256 < 2 in two cheap int8 passes
    bound = (status.view(np.uint8) - np.uint8(1)) < 2
    return bound.view(np.int8)


class _CarriesResidual:
    """What rounding or a threshold left for the next step, saved in checkpoints."""

    _residual: Array | None

    def state(self, n_edges: int) -> dict[str, Array]:
        """The carried residual as fixed-shape arrays (for checkpoints)."""
        has = self._residual is not None
        res = np.zeros(n_edges) if self._residual is None else np.asarray(self._residual)
        return {"residual_s": np.array(res, dtype=np.float64), "has_residual": np.array([has])}

    def load_state(self, state: dict[str, Array]) -> None:
        """Restore :meth:`state`."""
        self._residual = (
            np.array(state["residual_s"], dtype=np.float64)
            if bool(np.asarray(state["has_residual"])[0])
            else None
        )


@dataclass
class OpenLoopProgrammer(_CarriesResidual):
    """Open-loop programming through the nominal update model.

    Args:
        rounding: ``"nearest"`` or ``"stochastic"`` pulse rounding.
        carry_residual: keep what rounding (or the threshold) left over for the next step.
        min_delta_s: changes smaller than this are not programmed this step, S (>= 0).
        max_pulses: cap on pulses per edge per step (within the board's limit).
    """

    rounding: Literal["nearest", "stochastic"] = "nearest"
    carry_residual: bool = True
    min_delta_s: float = 0.0
    max_pulses: int = 100
    _residual: Array | None = field(default=None, repr=False)

    mode = "open-loop"

    def program(self, device: Device, update: Update, rng: np.random.Generator) -> ProgramReport:
        """Apply ``update`` to ``device``; return what was done."""
        desc = device.describe()
        b_delta = np.asarray(update.delta_b_a)
        new_bias = _checked_biases(device, b_delta)
        step = desc.pulse_step_s
        delta = np.asarray(update.delta_g_s)
        want = delta if self._residual is None else delta + self._residual
        n = desc.n_edges
        if step == 0:
            if self.min_delta_s > 0:
                sel = np.flatnonzero(np.abs(want) >= self.min_delta_s)
                res = device.program_deltas(sel, want[sel])
                edges = sel
                reason_all = np.full(n, Reason.SKIPPED, dtype=np.int8)
                reason_all[sel] = _status_to_reason(res.status)
                if self.carry_residual:
                    left = want.copy()
                    left[sel] = 0.0
                    self._residual = left
                reason = reason_all[sel]
            else:
                res = device.program_deltas(None, want)
                edges = None
                reason = _status_to_reason(res.status)
                self._residual = None
            k = n if edges is None else len(edges)
            pulses = np.broadcast_to(np.int64(0), (k,))
            achieved = res.g_after_s
            req = delta if edges is None else delta[edges]
        else:
            x = want / step
            if self.rounding == "stochastic":
                lo = np.floor(x)
                counts = lo + (rng.random(x.shape) < (x - lo))
            else:
                counts = np.rint(x)
            if self.min_delta_s > 0:
                counts[np.abs(want) < self.min_delta_s] = 0
            capped = np.abs(counts) > self.max_pulses
            n_pulses = np.clip(counts, -self.max_pulses, self.max_pulses).astype(np.int64)
            edges = np.flatnonzero(n_pulses)
            res = device.program_pulses(edges, n_pulses[edges])
            if self.carry_residual:  # only once the pulses went out
                self._residual = want - n_pulses * step
            pulses = np.asarray(res.applied_pulses, dtype=np.int64)
            achieved = res.g_after_s
            reason = _status_to_reason(res.status)
            reason[capped[edges]] = Reason.PULSE_CAP
            req = delta[edges]
        if new_bias is not None:
            device.set_bias_currents(new_bias)
        return ProgramReport(
            mode=self.mode,
            edges=None if edges is None else np.asarray(edges, dtype=np.int64),
            requested_delta_s=req,
            target_s=np.broadcast_to(np.float64(np.nan), (len(reason),)),
            achieved_s=achieved,
            pulses=pulses,
            reason=reason,
            iterations=1,
            bias_delta_a=b_delta,
            counts=_reason_counts(
                reason, (Reason.AT_BOUND,) if step == 0 and self.min_delta_s == 0 else None
            ),
        )


DEFAULT_TOLERANCE_STEPS = 1.0
"""Default write-verify window, in nominal pulse steps (a pulsed device can land no
closer than about half a step; one step leaves room for its cycle-to-cycle noise)."""

CONTINUOUS_TOLERANCE = 1e-6
"""Default window on a device without pulse granularity, as a fraction of the board's
conductance scale ``g_scale_s`` (its deltas are applied exactly)."""

IDLE_STEPS_WARNING = 100
"""Consecutive steps that ask for changes but program nothing before the run is warned."""


def default_tolerance_s(pulse_step_s: float, g_scale_s: float) -> float:
    """The write-verify window sized from the device, S.

    ``DEFAULT_TOLERANCE_STEPS`` nominal pulse steps on a pulsed device; on a continuous
    one (``pulse_step_s == 0``) ``CONTINUOUS_TOLERANCE * g_scale_s``.
    """
    if pulse_step_s > 0:
        return DEFAULT_TOLERANCE_STEPS * pulse_step_s
    return CONTINUOUS_TOLERANCE * g_scale_s


@dataclass
class WriteVerifyProgrammer(_CarriesResidual):
    """Read, pulse, re-read until each edge is within tolerance of its target.

    Each edge keeps what it was asked for and has not yet been given (its residual,
    saved in checkpoints): the optimiser's requested change is added to it every
    step, and only an edge whose accumulated change exceeds the tolerance is read
    and programmed (a smaller change could not be resolved by a verify read and
    would be dropped). After programming, the difference between the target and the
    last verify read is carried as the new residual, so small updates add up over
    steps exactly as in open loop. Edges at a bound carry nothing beyond the bound,
    and an unresponsive (stuck) edge's residual is dropped.

    Args:
        tolerance_s: acceptance window around the target, S (> 0); ``None``: sized
            from the device at the first step (:func:`default_tolerance_s`: one
            nominal pulse step, or ``1e-6 g_scale_s`` on a continuous device).
        max_iterations: verify rounds before giving up (>= 1).
        max_pulses_per_iteration: pulse cap per edge per round (>= 1).
        min_delta_s: changes smaller than this (or than the tolerance) are carried
            over, not programmed, S (>= 0).
        patience: rounds with pulses but no movement (< 10 % of a nominal step)
            after which a device is declared unresponsive.
        verify_reads: conductance reads averaged per verify.
        warn: called once with a one-line message when the configuration makes
            updates vanish (``IDLE_STEPS_WARNING`` consecutive steps that requested
            changes but programmed no edge).
        refresh_every: ``0`` (default): each addressed edge's target is its read
            conductance plus its accumulated change. ``N >= 1``: the programmer holds
            every edge's *intended* conductance (the board's first read plus every
            change asked for since), verifies addressed edges against it, so a
            device that drifted since its last write is pulled back, and every
            ``N`` steps re-reads every edge and re-programs those that left the
            window (a refresh pass against drift).
    """

    tolerance_s: float | None = None
    max_iterations: int = 20
    max_pulses_per_iteration: int = 10
    min_delta_s: float = 0.0
    patience: int = 3
    verify_reads: int = 1
    warn: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    refresh_every: int = 0
    _residual: Array | None = field(default=None, repr=False)
    _g_known: Array | None = field(default=None, repr=False)
    """Held targets only: ``(n_edges,)`` each edge's last read conductance, S; the
    intended conductance is this plus the residual."""
    _steps: int = field(default=0, repr=False)
    _idle_steps: int = field(default=0, repr=False)
    _warned: bool = field(default=False, repr=False)

    mode = "write-verify"

    def __post_init__(self) -> None:
        if self.tolerance_s is not None and not self.tolerance_s > 0:
            raise ConfigError(
                f"write-verify tolerance = {self.tolerance_s} S must be > 0; give a window "
                "of at least one pulse step or leave it unset (sized from the device)"
            )
        if self.max_iterations < 1 or self.max_pulses_per_iteration < 1 or self.verify_reads < 1:
            raise ConfigError(
                "write-verify iterations, pulses per iteration and reads must be >= 1"
            )
        if self.refresh_every < 0:
            raise ConfigError(
                f"write-verify refresh_every = {self.refresh_every} must be >= 0 steps "
                "(0: no held targets, no refresh)"
            )

    def state(self, n_edges: int) -> dict[str, Array]:
        """Residual, and with held targets the last reads and the step count."""
        out = super().state(n_edges)
        if self.refresh_every > 0:
            known = self._g_known
            out["g_known_s"] = np.zeros(n_edges) if known is None else known.copy()
            out["has_g_known"] = np.array([known is not None])
            out["steps"] = np.array([self._steps], dtype=np.int64)
        return out

    def load_state(self, state: dict[str, Array]) -> None:
        """Restore :meth:`state`."""
        super().load_state(state)
        if self.refresh_every > 0:
            has = bool(np.asarray(state["has_g_known"])[0])
            self._g_known = np.array(state["g_known_s"], dtype=np.float64) if has else None
            self._steps = int(np.asarray(state["steps"])[0])

    def _read(self, device: Device, edges: NDArray[np.int64]) -> Array:
        acc = device.read_conductances(edges)
        for _ in range(self.verify_reads - 1):
            acc = acc + device.read_conductances(edges)
        return np.asarray(acc / self.verify_reads, dtype=np.float64)

    def _note_idle(self, asked: bool, programmed: int, tol: float) -> None:
        """Count steps that asked for changes but programmed nothing; warn once."""
        self._idle_steps = self._idle_steps + 1 if asked and programmed == 0 else 0
        if self._idle_steps >= IDLE_STEPS_WARNING and not self._warned:
            self._warned = True
            if self.warn is not None:
                self.warn(
                    f"write-verify programmed no edge in {self._idle_steps} steps: every "
                    f"accumulated change is below the tolerance {tol:.3g} S; raise the "
                    "learning rate or lower the tolerance (--wv-tolerance)"
                )

    def program(self, device: Device, update: Update, rng: np.random.Generator) -> ProgramReport:
        """Apply ``update`` to ``device`` with verification; return what was done."""
        desc = device.describe()
        b_delta = np.asarray(update.delta_b_a)
        new_bias = _checked_biases(device, b_delta)
        step = desc.pulse_step_s
        tol = (
            self.tolerance_s
            if self.tolerance_s is not None
            else default_tolerance_s(step, desc.g_scale_s)
        )
        delta = np.asarray(update.delta_g_s, dtype=np.float64)
        want = delta if self._residual is None else delta + self._residual
        thresh = max(self.min_delta_s, tol)
        hold = self.refresh_every > 0
        if hold and self._g_known is None:  # the intended state starts as the board's
            self._g_known = self._read(device, np.arange(desc.n_edges, dtype=np.int64))
        self._steps += 1
        if hold and self._steps % self.refresh_every == 0:
            edges = np.arange(desc.n_edges, dtype=np.int64)  # refresh: verify every edge
        else:
            edges = np.flatnonzero(np.abs(want) > thresh)
        residual = want.copy()  # edges not addressed carry everything
        k = len(edges)
        g = self._read(device, edges)
        if self._g_known is not None:  # against the held target: drift is undone too
            target = self._g_known[edges] + want[edges]
        else:
            target = g + want[edges]
        reason = np.full(k, Reason.CONVERGED, dtype=np.int8)
        beyond = (target > desc.g_max_s) | (target < desc.g_min_s)
        target = np.clip(target, desc.g_min_s, desc.g_max_s)
        pulses = np.zeros(k, dtype=np.int64)
        still = np.zeros(k, dtype=np.int64)
        gave_up = np.zeros(k, dtype=bool)
        it = 0
        for it in range(1, self.max_iterations + 1):
            err = target - g
            active = np.flatnonzero((np.abs(err) > tol) & ~gave_up)
            if active.size == 0:
                it -= 1
                break
            e = edges[active]
            if step == 0:
                device.program_deltas(e, err[active])
            else:
                p = np.clip(
                    np.rint(err[active] / step),
                    -self.max_pulses_per_iteration,
                    self.max_pulses_per_iteration,
                ).astype(np.int64)
                p[p == 0] = np.sign(err[active][p == 0]).astype(np.int64)
                res: ProgramResult = device.program_pulses(e, p)
                pulses[active] += res.applied_pulses
            g_new = self._read(device, e)
            moved = np.abs(g_new - g[active]) >= 0.1 * max(step, tol)
            still[active] = np.where(moved, 0, still[active] + 1)
            gave_up[active] |= still[active] >= self.patience
            g[active] = g_new
        err = target - g
        converged = np.abs(err) <= tol
        reason[~converged] = Reason.MAX_ITERATIONS
        reason[~converged & gave_up] = Reason.NO_RESPONSE
        reason[beyond] = Reason.AT_BOUND
        carried = np.where(reason == Reason.NO_RESPONSE, 0.0, err)
        residual[edges] = carried
        self._residual = residual
        if self._g_known is not None:
            self._g_known[edges] = g
        self._note_idle(bool(np.any(want)), k, tol)
        if new_bias is not None:
            device.set_bias_currents(new_bias)
        return ProgramReport(
            mode=self.mode,
            edges=edges.astype(np.int64),
            requested_delta_s=delta[edges],
            target_s=target,
            achieved_s=g,
            pulses=pulses,
            reason=reason,
            iterations=it,
            bias_delta_a=b_delta,
            counts=_reason_counts(reason),
            residual_s=carried,
        )


Programmer = OpenLoopProgrammer | WriteVerifyProgrammer
