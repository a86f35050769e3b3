"""A board that replays a session file and checks every command against it.

:class:`ReplayDevice` implements the whole Device contract (:mod:`hwloop.device`)
from a :class:`hwloop.sessionlog.SessionFile`. It serves the recorded readings
step by step and phase by phase, and compares every operation the protocol
commands with what the recording says was commanded:

* ``apply_inputs`` starts the next recorded step, after checking the step's stored
  samples and inputs against the CRC-32 in its index row (a record altered after it was
  written is never served: the first such step is named); the voltages, cast to
  float32 (the stored precision), must equal the recorded ``inputs_v`` exactly;
* ``apply_nudge`` moves to the next nudged phase; the signed beta must equal the
  recorded ``betas_s`` exactly, the targets (V, float32) exactly, the currents of
  a current nudge (A) to within the tolerance below (exact by default);
* ``read_nodes(n)`` serves the next ``n`` recorded samples of the phase (in the
  stored type, V); a phase must be read completely (in one call, or in chunks
  summing to the recorded count when the run sampled to an SEM target) before the
  next phase starts; a summary-mode file serves each phase as one sample, the
  recorded mean, and must be read in one call;
* ``program_deltas`` / ``program_pulses``: the first programming call of a step
  is compared with the recorded ``update_g_s`` (when logged) and the rows of
  ``/programming/records`` (edges, requested changes, open-loop pulse counts);
  ``set_bias_currents`` must change the biases by the recorded ``update_b_a``.

A mismatch raises :class:`ReplayDivergence` with a one-line message naming the
step, the operation, and recorded versus received values.

Precision. The session file stores the readings in the board's own type, so a
replay of an unchanged protocol reproduces every requested change bit for bit and
the default comparison is exact (after casting to the stored float32). ``rtol``
accepts, in addition, differences up to ``rtol`` times the largest recorded value
of the layer (for files whose readings were rounded when stored, or to compare
across protocol versions); :attr:`ReplayDevice.stats` says how close they were.

What the board does (which conductances hit a bound, pulse counts actually
applied, achieved conductances) comes from the recording: the returned
:class:`ProgramResult` reproduces the recorded programming outcome, and
:meth:`ReplayDevice.read_conductances` returns conductances tracked from the first
checkpoint (``conductances_s``) by the programmed changes, clipped at the device
bounds (recorded achieved conductances are used where the file has them).
Write-verify runs (records with a target conductance) are checked on their first
programming call of each step (addressed edges among the recorded ones; requested
changes against ``update_g_s`` for the edges not cut at a bound); the verify
iterations after it are served from the recorded achieved conductances and are
not checked call by call (the file does not record them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop import device as dv
from hwloop.errors import ConfigError, HwloopError, UnsupportedError
from hwloop.sessionlog import SessionError, SessionFile, StepBlock

__all__ = [
    "DEFAULT_RTOL",
    "Comparison",
    "ReplayDevice",
    "ReplayDivergence",
    "ReplayStats",
    "compare_values",
]

Array = NDArray[np.floating]

DEFAULT_RTOL = 0.0
"""Default tolerance of requested changes, as a fraction of the layer's largest value.

0: bit-identical after casting to float32 (the readings are stored exactly, so an
unchanged protocol reproduces its updates exactly). Files written before readings
were stored in the board's own type (float64 samples rounded to float32) need a
tolerance: their replayed updates moved by up to 3e-3 of the layer's largest in a
low-noise, small-beta emulator run (1e-4 typically); 1e-2 is safe for them.
"""

# /programming/records "reason" code of an edge cut at a bound (protocols.programming.Reason)
_REASON_AT_BOUND = 1

_EPS64 = float(np.finfo(np.float64).eps)


class ReplayDivergence(HwloopError):  # noqa: N818 - the name the CLI and tests use
    """A replayed operation differs from the recording (or runs past its end).

    Attributes:
        step: the recorded step (global step number) where it happened, or -1.
        operation: the Device method (``apply_inputs``, ``apply_nudge (phase p)``,
            ``read_nodes (phase p)``, ``program_deltas``, ``program_pulses``,
            ``set_bias_currents``), ``programming`` (a step left unprogrammed),
            ``checkpoint`` (state after a step), ``update`` (the optimiser's update,
            checked by ``hwloop replay``).
    """

    def __init__(self, message: str, *, step: int = -1, operation: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.operation = operation


@dataclass
class ReplayStats:
    """How closely the replayed requests matched the recording.

    Attributes:
        steps_started: recorded steps started (``apply_inputs`` calls).
        steps_completed: steps whose phases, programming and bias change were all
            replayed and checked.
        values_checked: requested changes compared (conductance, bias, current).
        values_inexact: of those, how many were not bit-identical in float32.
        max_rel_deviation: largest ``|received - recorded|`` over the layer's
            largest recorded value among the inexact ones (0 when all were exact).
        checkpoints_checked: checkpoints whose conductances were compared.
        max_conductance_drift_s: largest ``|tracked - recorded|`` conductance at a
            checkpoint, S (storage rounding on an exact board; read noise and the
            nominal pulse model elsewhere).
    """

    steps_started: int = 0
    steps_completed: int = 0
    values_checked: int = 0
    values_inexact: int = 0
    max_rel_deviation: float = 0.0
    checkpoints_checked: int = 0
    max_conductance_drift_s: float = 0.0

    def add(self, cmp: Comparison) -> None:
        """Count one comparison."""
        self.values_checked += cmp.checked
        self.values_inexact += cmp.inexact
        self.max_rel_deviation = max(self.max_rel_deviation, cmp.max_rel_deviation)


@dataclass(eq=False)
class _Step:
    """The replay cursor within one recorded step."""

    step: int
    epoch: int
    batch: int
    n_examples: int
    data: dict[str, Any]
    readings: list[dv.NodeReading]
    counts: NDArray[np.int32]
    rows: NDArray[np.void]
    phase: int = 0
    served: list[int] = field(default_factory=list)
    program_calls: int = 0
    biases_set: bool = False


def _verify_rows(rows: NDArray[np.void]) -> bool:
    """True when programming records carry target conductances (write-verify)."""
    return bool(len(rows)) and bool(np.any(np.isfinite(np.asarray(rows["target_s"]))))


def _fmt_index(flat: int, shape: tuple[int, ...]) -> str:
    if len(shape) <= 1:
        return str(flat)
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]"


def _groups(desc: dv.BoardDescription) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Layer number of every edge and of every bias source (0 for a non-layered board)."""
    edge_group = np.zeros(desc.n_edges, dtype=np.int64)
    bias_group = np.zeros(len(desc.bias_nodes), dtype=np.int64)
    if desc.layers is not None:
        pos = {int(n): i for i, n in enumerate(desc.bias_nodes)}
        for k, blk in enumerate(desc.layers):
            edge_group[blk.edge_offset : blk.edge_offset + blk.n_edges] = k
            for n in blk.dst:
                if int(n) in pos:
                    bias_group[pos[int(n)]] = k
    return edge_group, bias_group


@dataclass(frozen=True)
class Comparison:
    """Outcome of :func:`compare_values`.

    Attributes:
        message: the first mismatch beyond tolerance, one line ('' when none).
        checked: values compared.
        inexact: values not bit-identical after casting to the recorded type.
        max_rel_deviation: largest ``|received - recorded|`` over the group's largest
            recorded |value| among the inexact values within tolerance.
    """

    message: str
    checked: int
    inexact: int
    max_rel_deviation: float


def compare_values(
    what: str,
    unit: str,
    recorded: NDArray[Any],
    received: NDArray[Any],
    *,
    groups: NDArray[np.int64] | None = None,
    rtol: float = 0.0,
    atol: NDArray[np.float64] | float = 0.0,
    labels: NDArray[np.int64] | None = None,
) -> Comparison:
    """Compare received values with recorded ones (stored as float32 or float64).

    A value matches when it is bit-identical after casting to the recorded type,
    or when ``|received - recorded| <= rtol * scale + atol``, ``scale`` being the
    largest recorded |value| of its group (``groups``: group number per value,
    e.g. the layer; None: one group).

    Args:
        what: what a value is, for the message (``"requested change of edge"``).
        unit: its unit, for the message.
        recorded: the recorded values.
        received: the values to check (same shape).
        groups: group number of each value (flattened order).
        rtol: tolerance as a fraction of the group's largest recorded |value| (>= 0).
        atol: absolute tolerance, per value or one for all, in ``unit``.
        labels: the index printed for each value (default: its array index).
    """
    rec = np.asarray(recorded)
    if rec.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        rec = rec.astype(np.float64)
    got = np.asarray(np.real(received), dtype=np.float64)
    if got.shape != rec.shape:
        return Comparison(f"{what} has shape {got.shape}, the recording {rec.shape}",
                          int(rec.size), int(rec.size), 0.0)
    exact = got.astype(rec.dtype) == rec
    if bool(np.all(exact)):
        return Comparison("", int(rec.size), 0, 0.0)
    rec64 = rec.astype(np.float64)
    dev = np.abs(got - rec64)
    if groups is None:
        scale = np.full(rec.shape, float(np.max(np.abs(rec64), initial=0.0)))
    else:
        g = np.asarray(groups, dtype=np.int64).ravel()
        gmax = np.zeros(int(g.max(initial=0)) + 1)
        np.maximum.at(gmax, g, np.abs(rec64).ravel())
        scale = gmax[g].reshape(rec.shape)
    allowed = rtol * scale + atol
    inexact = ~exact
    bad = inexact & ~(dev <= allowed)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, dev / np.where(scale > 0, scale, 1.0), np.inf)
    ok_rel = rel[inexact & ~bad]
    max_rel = float(np.max(ok_rel)) if ok_rel.size else 0.0
    n_inexact = int(np.count_nonzero(inexact))
    if not bool(np.any(bad)):
        return Comparison("", int(rec.size), n_inexact, max_rel)
    flat = int(np.flatnonzero(bad.ravel())[0])
    where = _fmt_index(flat, rec.shape) if labels is None else str(int(labels.ravel()[flat]))
    tol = float(np.ravel(np.broadcast_to(allowed, rec.shape))[flat])
    u = f" {unit}" if unit else ""
    tol_txt = f" (tolerance {tol:.3g}{u})" if tol > 0 else ""
    n_bad = int(np.count_nonzero(bad))
    return Comparison(
        f"{what} {where} recorded {float(rec64.ravel()[flat]):.9g}{u}, received "
        f"{float(got.ravel()[flat]):.9g}{u}{tol_txt}; {n_bad} of {rec.size} value(s) differ",
        int(rec.size),
        n_inexact,
        max_rel,
    )


class ReplayDevice:
    """A Device that serves a session file's recording and checks every command.

    Args:
        session: the open session file (the caller keeps ownership and closes it).
        checkpoint: the checkpoint whose conductances and biases the tracked board
            state starts from; replay starts at its ``steps_done`` (default: the
            first, written before step 0).
        stop_step: replay steps before this one only (default: every complete
            step); starting one more step raises :class:`ReplayDivergence`.
        rtol: tolerance of requested changes, as a fraction of the largest recorded
            value of their layer (0: bit-identical float32); see the module docstring.
        require_programming: a step whose recording has open-loop programming records
            or a nonzero ``update_g_s`` must be programmed (True: open-loop protocols,
            which program every step; False for write-verify, which skips a step whose
            changes all lie within its tolerance).
    """

    def __init__(
        self,
        session: SessionFile,
        *,
        checkpoint: int = 0,
        stop_step: int | None = None,
        rtol: float = DEFAULT_RTOL,
        require_programming: bool = True,
    ) -> None:
        if not (np.isfinite(rtol) and rtol >= 0):
            raise ConfigError(f"replay tolerance rtol = {rtol} must be a number >= 0")
        self._sf = session
        self._desc = session.description
        self._rtol = float(rtol)
        self._require_programming = require_programming
        ck = session.checkpoint(checkpoint)
        for name in ("conductances_s", "biases_a"):
            if name not in ck.arrays:
                raise SessionError(
                    f"{session.path}: checkpoint {checkpoint} lacks {name}; the file is damaged "
                    "and cannot be replayed"
                )
        self._g = np.array(ck.arrays["conductances_s"], dtype=np.float64)
        self._b = np.array(ck.arrays["biases_a"], dtype=np.float64)
        if self._g.shape != (self._desc.n_edges,) or self._b.shape != (
            len(self._desc.bias_nodes),
        ):
            raise SessionError(
                f"{session.path}: checkpoint {checkpoint} does not fit the recorded board; "
                "the file is damaged"
            )
        # a board whose conductance reads are float32 values (no read noise) and that takes
        # deltas as they are tracks exactly up to its storage rounding: checkpoints are checked
        self._exact_board = session.description.pulse_step_s == 0 and bool(
            np.all(self._g.astype(np.float32) == self._g)
        )
        self._calls_since_sync = 0
        self.start_step = ck.steps_done
        end = session.steps_done if stop_step is None else int(stop_step)
        if not self.start_step <= end <= session.steps_done:
            raise ConfigError(
                f"replay stop step {end} must lie in {self.start_step}..{session.steps_done}"
            )
        self.stop_step = end
        self._next = self.start_step
        self._block: StepBlock | None = None
        self._block_steps = session.block_steps()
        self._cur: _Step | None = None
        self._edge_group, self._bias_group = _groups(self._desc)
        self._all_edges = np.arange(self._desc.n_edges, dtype=np.int64)
        self._all_edges.flags.writeable = False
        self._free = np.asarray(session.free_nodes, dtype=np.int64)
        self._summary = session.options.samples == "summary"
        self._inputs_live = False
        self._nudge: dv.Nudge | None = None
        self._closed = False
        self.stats = ReplayStats()

    # ------------------------------------------------------------------ helpers

    @property
    def step(self) -> int:
        """The recorded step being replayed (-1 before the first ``apply_inputs``)."""
        return -1 if self._cur is None else self._cur.step

    @property
    def next_step(self) -> int:
        """The recorded step the next ``apply_inputs`` starts."""
        return self._next

    def _where(self, st: _Step | None) -> str:
        if st is None:
            return "before the first step"
        return f"step {st.step} (epoch {st.epoch}, batch {st.batch})"

    def _diverge(self, operation: str, detail: str, st: _Step | None = None) -> ReplayDivergence:
        st = self._cur if st is None else st
        return ReplayDivergence(
            f"{self._where(st)}, {operation}: {detail}",
            step=-1 if st is None else st.step,
            operation=operation,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("the replay board is closed; open a new one")

    def _active(self, operation: str) -> _Step:
        self._check_open()
        if self._cur is None:
            raise self._diverge(
                operation, f"called before apply_inputs started a recorded step "
                f"(the recording starts at step {self.start_step})"
            )
        return self._cur

    def _compare(
        self,
        operation: str,
        what: str,
        unit: str,
        recorded: NDArray[Any],
        received: NDArray[Any],
        *,
        groups: NDArray[np.int64] | None = None,
        rtol: float | None = None,
        atol: NDArray[np.float64] | float = 0.0,
        labels: NDArray[np.int64] | None = None,
    ) -> None:
        """Raise a divergence unless ``received`` matches ``recorded`` (see :func:`compare_values`).

        ``rtol=None``: exact, and not counted in :attr:`stats` (inputs, targets).
        """
        cmp = compare_values(
            what, unit, recorded, received, groups=groups,
            rtol=0.0 if rtol is None else rtol, atol=atol, labels=labels,
        )
        if rtol is not None:
            self.stats.add(cmp)
        if cmp.message:
            raise self._diverge(operation, cmp.message)

    def _phases_done(self, next_op: str, st: _Step) -> None:
        """Every recorded phase was applied and read completely before ``next_op``."""
        last = len(st.counts) - 1
        if st.phase < last:
            raise self._diverge(
                "apply_nudge",
                f"the recording has {last} nudged phase(s), the replay applied {st.phase} "
                f"before {next_op}",
                st,
            )
        self._phase_read(next_op, st)

    def _phase_read(self, next_op: str, st: _Step) -> None:
        p = st.phase
        want = int(st.counts[p])
        if st.served[p] != want:
            raise self._diverge(
                f"read_nodes (phase {p})",
                f"{st.served[p]} of the {want} recorded sample(s) were read before {next_op}; "
                "read every recorded sample of a phase",
                st,
            )

    def _finish_step(self, next_op: str) -> None:
        st = self._cur
        if st is None:
            return
        self._phases_done(next_op, st)
        upd = st.data.get("update_g_s")
        must_program = (len(st.rows) > 0 and not _verify_rows(st.rows)) or (
            self._require_programming and upd is not None and bool(np.any(upd))
        )
        if must_program and st.program_calls == 0:
            raise self._diverge(
                "programming",
                f"the recording programmed conductances in this step, the replay went on to "
                f"{next_op} without programming",
                st,
            )
        if bool(np.any(st.data["update_b_a"])) and not st.biases_set:
            raise self._diverge(
                "set_bias_currents",
                f"the recording changed the bias currents in this step, the replay went on to "
                f"{next_op} without changing them",
                st,
            )
        self.stats.steps_completed += 1
        self._cur = None

    def check_checkpoint(self, conductances_s: Array, biases_a: Array) -> None:
        """Compare the tracked state with a checkpoint taken after the step under way.

        On a board that reads its conductances exactly (float32 values, no pulse
        model), the tracked conductances (S) and biases (A) must equal the recorded
        ones up to the board's float32 storage rounding of each programming call
        since the last check, and are then set to the recorded values; elsewhere
        (read noise, pulse boards) only the drift is noted in :attr:`stats`.

        Raises:
            ReplayDivergence: the programmed changes since the previous checkpoint differ.
        """
        st = self._active("checkpoint")
        g_rec = np.asarray(conductances_s, dtype=np.float64)
        b_rec = np.asarray(biases_a, dtype=np.float64)
        if g_rec.shape != self._g.shape or b_rec.shape != self._b.shape:
            raise self._diverge("checkpoint", "the checkpoint arrays do not fit the board", st)
        drift = float(np.max(np.abs(g_rec - self._g), initial=0.0))
        self.stats.max_conductance_drift_s = max(self.stats.max_conductance_drift_s, drift)
        if not self._exact_board:
            return
        self.stats.checkpoints_checked += 1
        k = 4 * (self._calls_since_sync + 1) * 2.0**-24
        for what, unit, rec, mine, groups in (
            ("conductance of edge", "S", g_rec, self._g, self._edge_group),
            ("bias current of source", "A", b_rec, self._b, self._bias_group),
        ):
            n_groups = int(groups.max(initial=0)) + 1
            scale = np.zeros(n_groups)
            np.maximum.at(scale, groups, np.maximum(np.abs(rec), np.abs(mine)))
            cmp = compare_values(what, unit, rec, mine, atol=k * scale[groups])
            if cmp.message:
                raise self._diverge(
                    "checkpoint",
                    f"{cmp.message} (tracked from the programmed changes since the previous "
                    "checkpoint)",
                    st,
                )
        self._g[:] = g_rec
        self._b[:] = b_rec
        self._calls_since_sync = 0

    def finish(self) -> None:
        """Check that the step under way was replayed completely (call after the last step).

        Raises:
            ReplayDivergence: phases not read, programming or bias change missing.
        """
        self._check_open()
        self._finish_step("finish")

    # ------------------------------------------------------------------ Describable

    def describe(self) -> dv.BoardDescription:
        """The recorded board description."""
        return self._desc

    # ------------------------------------------------------------------ Biasable

    def recorded(self, step: int) -> StepBlock:
        """The block of recorded steps that holds ``step`` (read in bulk, then served).

        Replay does no physics: reading the file is its cost, so the steps are read a
        block at a time (about :data:`hwloop.sessionlog.reader.BLOCK_BYTES`), one read
        per dataset, and each step's checksum is checked as it is served.
        """
        blk = self._block
        if blk is None or not blk.lo <= step < blk.hi:
            hi = max(step + 1, min(step + self._block_steps, self.stop_step))
            blk = self._block = self._sf.block(step, min(hi, self._sf.steps_done))
        return blk

    def apply_inputs(self, v_inputs: Array) -> None:
        """Start the next recorded step; the inputs (V) must be the recorded ones.

        Raises:
            ReplayDivergence: the previous step was incomplete, the recording ends,
                the step's stored samples and inputs fail their CRC-32 (the record was
                altered), or the inputs differ from the recorded ``inputs_v``
                (float32, exactly).
        """
        self._check_open()
        dv.check_inputs_within_limits(v_inputs, self._desc.limits, len(self._desc.input_nodes))
        self._finish_step("apply_inputs")
        s = self._next
        if s >= self.stop_step:
            what = (
                f"the recording ends after step {s - 1} ({self._sf.steps_done} complete steps)"
                if s >= self._sf.steps_done
                else f"the replay was limited to steps {self.start_step}..{self.stop_step - 1}"
            )
            raise ReplayDivergence(
                f"step {s}, apply_inputs: {what}; nothing more to replay",
                step=s,
                operation="apply_inputs",
            )
        blk = self.recorded(s)
        crc, recorded = blk.checksum(s)
        if crc != recorded:  # never serve a record that is not the one written
            raise ReplayDivergence(
                f"step {s}: the recorded samples and inputs do not match their checksum "
                f"(CRC-32 {crc:#010x}, recorded {recorded:#010x}): the file was altered or "
                "damaged after it was written; 'hwloop inspect --full' lists every such step",
                step=s,
                operation="checksum",
            )
        data = blk.step_data(s)
        idx = data["index"]
        counts = np.asarray(blk.n_samples(s), dtype=np.int32)
        st = _Step(
            step=s,
            epoch=int(idx["epoch"]),
            batch=int(idx["batch"]),
            n_examples=int(idx["n_examples"]),
            data=data,
            readings=blk.readings(s),
            counts=counts,
            rows=blk.programming(s),
            served=[0] * len(counts),
        )
        self._cur = st
        self._next = s + 1
        self.stats.steps_started += 1
        self._nudge = None
        self._inputs_live = False
        v = np.asarray(v_inputs)
        if v.shape[0] != st.n_examples:
            raise self._diverge(
                "apply_inputs",
                f"batch of {v.shape[0]} examples, the recording has {st.n_examples}",
            )
        self._compare("apply_inputs", "input voltage", "V", data["inputs_v"], v)
        self._inputs_live = True

    def apply_nudge(self, nudge: dv.Nudge | None) -> None:
        """Release the nudge (``None``) or start the next recorded nudged phase.

        Raises:
            ReplayDivergence: the previous phase was not read completely, no more
                nudged phases were recorded, or the beta (S), targets (V) or
                currents (A) differ from the recording.
        """
        self._check_open()
        if nudge is None:
            self._nudge = None
            return
        st = self._active("apply_nudge")
        dv.check_nudge_within_limits(
            nudge, self._desc.limits, st.n_examples, len(self._desc.output_nodes),
            self._desc.supports_complex_nudge,
        )
        self._phase_read("apply_nudge", st)
        last = len(st.counts) - 1
        if st.phase >= last:
            raise self._diverge(
                "apply_nudge", f"the recording has only {last} nudged phase(s) in this step"
            )
        st.phase += 1
        p = st.phase
        op = f"apply_nudge (phase {p})"
        kind = self._sf.layout.nudge_kind
        beta_rec = complex(st.data["betas_s"][p])  # real unless the run nudged complex
        values = st.data["nudge_values"][p]
        if isinstance(nudge, dv.ResistiveNudge):
            if kind != "resistive":
                raise self._diverge(op, f"the recording used a {kind} nudge, received resistive")
            beta = complex(nudge.beta_s)
            if beta != beta_rec:
                raise self._diverge(
                    op, f"beta recorded {_fmt(beta_rec)} S, received {_fmt(beta)} S"
                )
            self._compare(op, "target voltage", "V", np.real(values),
                          np.asarray(nudge.targets_v))
        elif isinstance(nudge, dv.CurrentNudge):
            if kind != "current":
                raise self._diverge(op, f"the recording used a {kind} nudge, received current")
            cur = np.asarray(nudge.currents_a)
            self._compare(op, "nudge current", "A", values.real, cur.real, rtol=self._rtol)
            if np.iscomplexobj(values) or np.iscomplexobj(cur):
                self._compare(op, "nudge current (imaginary part)", "A", np.imag(values),
                              np.imag(cur), rtol=self._rtol)
        else:
            raise ConfigError(f"unknown nudge type {type(nudge).__name__}")
        self._nudge = nudge

    def set_bias_currents(self, i_bias_a: Array) -> None:
        """Set the bias currents, A; the change must be the recorded ``update_b_a``.

        Raises:
            ReplayDivergence: outside a step, or the change differs from the recording.
        """
        st = self._active("set_bias_currents")
        b = np.asarray(i_bias_a, dtype=np.float64)
        if b.shape != self._b.shape:
            raise ConfigError(f"bias currents must have shape {self._b.shape}, got {b.shape}")
        if not np.all(np.isfinite(b)):
            raise ConfigError("bias currents contain NaN or inf")
        change = b - self._b
        # the protocol adds the change to what read_bias_currents returned: float64 rounding
        atol = 4 * _EPS64 * np.maximum(np.abs(b), np.abs(self._b))
        self._compare(
            "set_bias_currents", "change of bias source", "A", st.data["update_b_a"], change,
            groups=self._bias_group, rtol=self._rtol, atol=atol,
        )
        self._b = b.copy()
        st.biases_set = True

    def read_bias_currents(self) -> Array:
        """The bias currents as tracked from the first checkpoint, A (a copy)."""
        self._check_open()
        return self._b.copy()

    # ------------------------------------------------------------------ Settleable

    def settle(self, settle_time_s: float | None = None) -> None:
        """Nothing to wait for: the recording is already settled (``settle_time_s`` >= 0, s)."""
        self._check_open()
        if settle_time_s is not None and not settle_time_s >= 0:
            raise ConfigError(f"settle_time_s={settle_time_s} must be >= 0")

    # ------------------------------------------------------------------ Readable

    def read_nodes(
        self, n_samples: int = 1, nodes: NDArray[np.integer] | None = None
    ) -> dv.NodeReading:
        """Serve the next ``n_samples`` recorded samples (V) of the phase under way.

        Raises:
            ReplayDivergence: outside a step, more samples than recorded are asked
                for, or nodes other than the recorded free nodes.
        """
        st = self._active("read_nodes")
        p = st.phase
        op = f"read_nodes (phase {p})"
        if int(n_samples) != n_samples or n_samples < 1:
            raise ConfigError(f"n_samples={n_samples} must be an integer >= 1")
        n = int(n_samples)
        if not self._inputs_live:
            raise self._diverge(op, "the inputs are at 0 V (safe state); the recording is not")
        if p > 0 and self._nudge is None:
            raise self._diverge(op, "the nudge was released; the recording read this phase nudged")
        total = int(st.counts[p])
        k = st.served[p]
        if k + n > total:
            raise self._diverge(
                op,
                f"asked for {n} sample(s) after {k}, the recording has {total} in this phase",
            )
        cols: slice | NDArray[np.intp] = slice(None)
        if nodes is not None:
            want = np.asarray(nodes, dtype=np.int64)
            pos = np.searchsorted(self._free, want)
            pos = np.clip(pos, 0, max(len(self._free) - 1, 0))
            if want.ndim != 1 or not np.array_equal(self._free[pos], want):
                raise self._diverge(op, "only the free nodes were recorded; ask for those")
            cols = pos.astype(np.intp)
        r = st.readings[p]
        if self._summary:
            if k != 0 or n != total:
                raise self._diverge(
                    op,
                    f"the file keeps only the mean of the {total} samples of each phase "
                    f"(summary log); read them in one call, not {n} at a time",
                )
            sl = slice(0, 1)
        else:
            sl = slice(k, k + n)
        st.served[p] = k + n
        return dv.NodeReading(
            samples_v=np.array(r.samples_v[sl][:, :, cols]),
            timestamps_s=np.array(r.timestamps_s[sl], dtype=np.float64),
            flags=np.array(r.flags[sl][:, :, cols], dtype=np.uint8),
            nodes=self._free[cols] if nodes is not None else self._free.copy(),
        )

    # ------------------------------------------------------------------ ConductanceReadable

    def read_conductances(self, edges: NDArray[np.integer] | None = None) -> Array:
        """The conductances tracked from the checkpoint by the programmed changes, S."""
        self._check_open()
        if edges is None:
            return self._g.copy()
        return np.array(self._g[self._check_edges(edges)])

    def _check_edges(self, edges: NDArray[np.integer]) -> NDArray[np.int64]:
        e = np.asarray(edges, dtype=np.int64)
        n = self._desc.n_edges
        if e.ndim != 1 or (e.size and (e.min() < 0 or e.max() >= n)):
            raise ConfigError(f"edge indices must be a 1-D array in 0..{n - 1}")
        return e

    # ------------------------------------------------------------------ Programmable

    def _start_programming(self, operation: str) -> tuple[_Step, bool]:
        """The step, and True for its first programming call (the one that is checked)."""
        st = self._active(operation)
        first = st.program_calls == 0
        if first:
            self._phases_done(operation, st)
        st.program_calls += 1
        self._calls_since_sync += 1
        return st, first

    def _check_edge_set(self, operation: str, st: _Step, e: NDArray[np.int64]) -> None:
        """The edges of the first programming call against the recorded rows.

        Open loop, ``programming = "all"``: exactly the recorded edges, in order;
        ``"exceptions"``: every recorded edge among them. Write-verify, ``"all"``:
        a subset of the recorded edges (changes within the tolerance are not sent).
        """
        rows = st.rows
        if not len(rows):
            return
        rec_edges = np.asarray(rows["edge"], dtype=np.int64)
        all_rows = self._sf.options.programming == "all"
        n = self._desc.n_edges

        def outside(a: NDArray[np.int64], b: NDArray[np.int64]) -> NDArray[np.int64]:
            """Elements of ``a`` not in ``b`` (edge numbers; a mask, no sorting)."""
            mask = np.zeros(n, dtype=bool)
            mask[b] = True
            return a[~mask[a]]

        if _verify_rows(rows):
            extra = outside(e, rec_edges) if all_rows else np.zeros(0, dtype=np.int64)
            if extra.size:
                raise self._diverge(
                    operation,
                    f"edge {int(extra[0])} was addressed but has no programming record "
                    f"({extra.size} such edge(s))",
                    st,
                )
            return
        if all_rows:
            if len(e) != len(rec_edges):
                raise self._diverge(
                    operation,
                    f"{len(e)} edges addressed, the recording programmed {len(rec_edges)}",
                    st,
                )
            if not np.array_equal(e, rec_edges):
                i = int(np.flatnonzero(e != rec_edges)[0])
                raise self._diverge(
                    operation,
                    f"edge #{i} addressed is {int(e[i])}, the recording programmed "
                    f"{int(rec_edges[i])}",
                    st,
                )
            return
        missing = outside(rec_edges, e)
        if missing.size:
            raise self._diverge(
                operation,
                f"edge {int(missing[0])} has a programming record but was not addressed "
                f"({missing.size} such edge(s))",
                st,
            )

    def _row_lookup(
        self, st: _Step, e: NDArray[np.int64], *, every_edge: bool = False
    ) -> tuple[NDArray[np.bool_], NDArray[np.intp]]:
        """For each addressed edge: has it a record row, and which (the last, if several).

        ``every_edge``: ``e`` is ``0..n_edges-1``, looked up by scattering the rows.
        """
        rows = st.rows
        if not len(rows):
            return np.zeros(len(e), dtype=bool), np.zeros(len(e), dtype=np.intp)
        rec_edges = np.asarray(rows["edge"], dtype=np.int64)
        if (every_edge and rec_edges[0] >= 0 and rec_edges[-1] < len(e)
                and np.all(np.diff(rec_edges) > 0)):  # one row per edge, in order
            has = np.zeros(len(e), dtype=bool)
            row = np.zeros(len(e), dtype=np.intp)
            has[rec_edges] = True
            row[rec_edges] = np.arange(len(rec_edges))
            return has, row
        order = np.argsort(rec_edges, kind="stable")
        pos = np.searchsorted(rec_edges[order], e)
        pos = np.clip(pos, 0, len(order) - 1)
        has = rec_edges[order][pos] == e
        return has, order[pos].astype(np.intp)

    def _statuses(
        self, st: _Step, direction: Array, has: NDArray[np.bool_], row: NDArray[np.intp]
    ) -> NDArray[np.int8]:
        """Device statuses as recorded: a row at a bound is AT_MAX/AT_MIN by direction."""
        status = np.full(len(direction), dv.ProgramStatus.OK, dtype=np.int8)
        if has.any():
            reason = np.asarray(st.rows["reason"])[row]
            bound = has & (reason == _REASON_AT_BOUND)
            status[bound & (direction > 0)] = dv.ProgramStatus.AT_MAX
            status[bound & ~(direction > 0)] = dv.ProgramStatus.AT_MIN
        return status

    def _track(
        self, st: _Step, e: NDArray[np.int64] | None, new_g: Array, has: NDArray[np.bool_],
        row: NDArray[np.intp],
    ) -> Array:
        """Store the new conductances, S (recorded achieved values where the file has them)."""
        d = self._desc
        g = np.clip(new_g, d.g_min_s, d.g_max_s)
        if has.any():
            ach = np.asarray(st.rows["achieved_s"], dtype=np.float64)[row]
            use = has & np.isfinite(ach)
            g = np.where(use, ach, g)
        if e is None:
            self._g[:] = g
        else:
            self._g[e] = g
        return np.asarray(g)

    def program_deltas(
        self, edges: NDArray[np.integer] | None, delta_g_s: Array
    ) -> dv.ProgramResult:
        """Request conductance changes, S; the first call of a step is checked.

        The changes must match the recorded ``update_g_s`` (or, when updates were
        not logged, the ``requested_s`` of the programming records) and the
        addressed edges the recorded ones (see the module docstring for
        write-verify). Later calls in the same step (write-verify iterations) are
        tracked, not checked.

        Raises:
            ReplayDivergence: outside a step, before every phase was read, or a mismatch.
        """
        op = "program_deltas"
        st, first = self._start_programming(op)
        n = self._desc.n_edges
        d = np.asarray(delta_g_s, dtype=np.float64)
        e: NDArray[np.int64] | None
        if edges is None:
            if d.shape != (n,):
                raise ConfigError(f"delta_g_s must have shape ({n},) for all edges")
            e_all = self._all_edges
            e = None
        else:
            e_all = self._check_edges(edges)
            e = e_all
            if d.shape != e_all.shape:
                raise ConfigError("delta_g_s must have one value per edge")
        if not np.all(np.isfinite(d)):
            raise ConfigError("requested conductance changes contain NaN or inf")
        has, row = self._row_lookup(st, e_all, every_edge=e is None)
        g_before = self._g.copy() if e is None else self._g[e_all]
        if first:
            self._check_edge_set(op, st, e_all)
            verify = _verify_rows(st.rows)
            # write-verify asks for target - g: exact except where the target was cut at a
            # bound, and up to float64 rounding of g
            sel: NDArray[np.bool_] | slice = slice(None)  # every addressed edge
            atol: NDArray[np.float64] | float = 0.0
            if verify:
                reason = np.asarray(st.rows["reason"])[row]
                sel = ~(has & (reason == _REASON_AT_BOUND))
                atol = 4 * _EPS64 * np.abs(g_before[sel])
            upd = st.data.get("update_g_s")
            if upd is not None:
                rec = np.asarray(upd) if e is None else np.asarray(upd)[e_all]
                groups = self._edge_group if e is None else self._edge_group[e_all]
                self._compare(
                    op, "requested change of edge", "S", rec[sel], d[sel],
                    groups=groups[sel], rtol=self._rtol, atol=atol, labels=e_all[sel],
                )
            elif has.any() and not verify:
                req = np.asarray(st.rows["requested_s"])[row[has]]
                self._compare(
                    op, "requested change of edge", "S", req, d[has],
                    groups=self._edge_group[e_all[has]], rtol=self._rtol, labels=e_all[has],
                )
        g_after = self._track(st, e, g_before + d, has, row)
        status = self._statuses(st, d, has, row)
        zeros = np.zeros(len(e_all), dtype=np.int64)
        if e is None:
            empty = np.zeros(0)
            return dv.ProgramResult(
                edges=None, requested_pulses=zeros, applied_pulses=zeros, requested_delta_s=d,
                g_before_s=empty, g_after_s=empty, status=status,
                pulse_amplitude_v=0.0, pulse_width_s=0.0,
            )
        status[(d == 0) & (status == dv.ProgramStatus.OK)] = dv.ProgramStatus.NO_CHANGE
        return dv.ProgramResult(
            edges=e_all, requested_pulses=zeros, applied_pulses=zeros, requested_delta_s=d,
            g_before_s=g_before, g_after_s=g_after, status=status,
            pulse_amplitude_v=0.0, pulse_width_s=0.0,
        )

    def program_pulses(
        self, edges: NDArray[np.integer], pulses: NDArray[np.integer]
    ) -> dv.ProgramResult:
        """Apply signed pulse counts; the first call of a step is checked.

        The addressed edges must be the recorded ones and, for open-loop records,
        the counts the recorded pulses (an edge recorded with 0 applied pulses is
        served as ``NO_CHANGE``). Later calls in the same step (write-verify
        iterations) are tracked, not checked. The new conductances are the recorded
        achieved ones, or the nominal ``pulse_step_s`` per pulse where not recorded.

        Raises:
            UnsupportedError: the recorded board had no pulse granularity.
            ReplayDivergence: outside a step, before every phase was read, or a mismatch.
        """
        op = "program_pulses"
        if self._desc.pulse_step_s == 0:
            self._check_open()
            raise UnsupportedError(
                "the recorded board has no pulse granularity (pulse_step_s = 0); "
                "program deltas instead"
            )
        st, first = self._start_programming(op)
        e = self._check_edges(edges)
        p = np.asarray(pulses)
        if p.shape != e.shape or not np.issubdtype(p.dtype, np.integer):
            raise ConfigError("pulses must be an integer array with one count per edge")
        p = p.astype(np.int64)
        if first:
            self._check_edge_set(op, st, e)
        has, row = self._row_lookup(st, e)
        applied = p.copy()
        if has.any() and not _verify_rows(st.rows):
            rec_p = np.asarray(st.rows["pulses"], dtype=np.int64)[row]
            if first:
                bad = has & (rec_p != 0) & (rec_p != p)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise self._diverge(
                        op,
                        f"pulses on edge {int(e[i])} recorded {int(rec_p[i])}, received "
                        f"{int(p[i])}; {int(np.count_nonzero(bad))} of {len(e)} edge(s) differ",
                        st,
                    )
            applied = np.where(has, rec_p, p)
        g_before = self._g[e]
        g_after = self._track(st, e, g_before + applied * self._desc.pulse_step_s, has, row)
        status = self._statuses(st, p.astype(np.float64), has, row)
        status[(applied == 0) & (status == dv.ProgramStatus.OK)] = dv.ProgramStatus.NO_CHANGE
        return dv.ProgramResult(
            edges=e, requested_pulses=p, applied_pulses=applied,
            requested_delta_s=np.full(len(e), np.nan), g_before_s=g_before, g_after_s=g_after,
            status=status, pulse_amplitude_v=0.0, pulse_width_s=0.0,
        )

    # ------------------------------------------------------------------ SafeStateful, Closable

    def safe_state(self) -> None:
        """Release the nudge and mark the inputs as 0 V (idempotent; the cursor stays)."""
        self._nudge = None
        self._inputs_live = False

    @property
    def is_safe(self) -> bool:
        """True when no nudge is applied and the inputs are at 0 V."""
        return self._nudge is None and not self._inputs_live

    def close(self) -> None:
        """Go to the safe state; later calls other than ``close``/``safe_state`` fail.

        The session file stays open (its owner closes it).
        """
        self.safe_state()
        self._closed = True


def _fmt(beta: complex) -> str:
    """A recorded or commanded beta for a message, S (real ones as before)."""
    return f"{beta.real:+.9g}" if beta.imag == 0 else f"{beta:+.9g}"
