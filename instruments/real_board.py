"""``RealBoard``: the Device contract on instruments, as a board file wires them.

This module's one concern is the Device methods. A :class:`RealBoard` is built from
a board file (:mod:`instruments.board_file`); its instruments are opened through
their kinds, identified and checked by :mod:`instruments.board_open` (outputs
found on are ramped down and put in the safe state before anything else), and
faults, events and the safe state of every instrument are handled by
:mod:`instruments.board_faults`. The network's nodes and edges are mapped to
instrument channels and crosspoints by the file's wiring, with its calibration
applied to every level sent and every reading; instruments are driven only
through the role protocols of :mod:`instruments.roles`.

Batches are looped over inside each call (a bench has one set of sources):

* :meth:`~RealBoard.apply_inputs` checks and stores the batch, and
  :meth:`~RealBoard.apply_nudge` the nudge currents (resistive nudges are not
  supported: a current source per output is what the roles offer);
* :meth:`~RealBoard.read_nodes` runs, per example, "set the sources of the
  example, wait the settle time, read N samples of the free nodes"; input nodes
  (no meter channel) read back the level their source was set to;
* :meth:`~RealBoard.program_pulses` and :meth:`~RealBoard.program_deltas` send
  pulse counts to the crosspoints (one bulk call on the serial board), deltas
  being converted with the nominal step of the board file.

Safety: every request is checked against the board file's limits before
anything is applied (the ``hwloop.device.check_*`` helpers) and each level again
right before it is written; nothing is clipped. A reading outside the plausible
band of the board file (or not finite) and more compliance trips than the board
file tolerates abort with :class:`hwloop.errors.LimitError`; any instrument fault
puts every instrument in its safe state before the error propagates. Transport
retries and warnings, safety actions, and (per ``log_exchanges``) the wire-level
exchanges around each fault are reported as ``(kind, message)`` events to the
sink set with :meth:`~RealBoard.set_event_sink` (``hwloop train`` connects it to
the session log; events from before that are buffered and delivered then).

Units: V, A, S, s. Timestamps: s since the board object was created, host
monotonic clock, spaced as the instrument's own sample times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop import device as dv
from hwloop.board_base import BoardBase, check_pulse_budget
from hwloop.errors import ConfigError, HwloopError, LimitError, UnsupportedError
from hwloop.layered import describe_layered, parse_arch
from hwloop.plugins import Option, backend
from instruments.board_faults import EventLog, EventSink, Faults
from instruments.board_file import BoardFile, load_board_file
from instruments.board_open import (
    BoardInstrument,
    Opener,
    check_wiring,
    configure,
    go_safe_on_connect,
)
from instruments.roles import BulkCrosspointRole, ComplianceTripError, SourceComplianceRole

__all__ = ["EventSink", "RealBoard", "make_real_board"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_COMPLIANCE = np.uint8(dv.SampleFlag.COMPLIANCE)
_SOURCE_ROLES = ("inputs", "nudges", "biases")
_SET_ATTEMPTS = 3
"""Sends of a source setting whose reply was lost and whose read-back shows it not applied."""


# --------------------------------------------------------------------------- the board


class RealBoard(BoardBase):
    """The Device contract on the instruments of a board file (see the module docstring).

    Args:
        board_file: the validated board file.

    Raises:
        ConfigError: the wiring does not fit the instruments (channel counts).
        HwloopError: an instrument cannot be opened or does not answer (everything
            opened so far is put safe and closed again).
    """

    def __init__(self, board_file: BoardFile) -> None:
        self._bf = bf = board_file
        self._t0 = time.monotonic()
        self._log = EventLog(bf.board)
        self._closed = False
        self._compliance_trips = 0
        self._pulses_used = 0
        self._last_stamp = -np.inf
        self._settle_pending = False
        self._settle_s = bf.board.settle_time_s
        net = bf.network
        self._v_in: FloatArray | None = None
        self._nudge_a: FloatArray | None = None
        self._on: dict[str, FloatArray | None] = dict.fromkeys(_SOURCE_ROLES)
        self._inst: dict[str, BoardInstrument] = {}
        self._faults = Faults(self._inst, bf.roles, self._log, after_safe=self._sources_off)
        opener = Opener(bf, self._log.exchange, self._event)
        try:
            for name, spec in bf.instruments.items():
                self._inst[name] = opener.open(spec)
                self._event("info", f"connected {self._inst[name].label}: "
                            f"{self._inst[name].identity}")
            check_wiring(bf, self._inst)
            energised = go_safe_on_connect(bf, self._inst, self._event)
            configure(bf.safety.limits, self._inst)
        except BaseException:
            for inst in self._inst.values():
                with contextlib.suppress(Exception):
                    inst.opened.device.close()
            raise
        lim = bf.safety.limits
        with_biases = bf.roles.biases is not None
        meter = self._inst[bf.roles.meter]
        info: dict[str, object] = {
            "board_file": bf.path,
            "board_file_sha256": bf.sha256,
            "device_model": "physical board (board file)",
            "layer_sizes": list(net.sizes),
            # what identifies the bench (stable across connections, so a resumed run can
            # check it is on the same board); addresses and connect-time findings are events
            "instruments": {
                n: {"kind": i.spec.kind, "identity": i.identity} for n, i in self._inst.items()
            },
            "roles": {r: getattr(bf.roles, r) for r in ("inputs", "nudges", "biases", "meter",
                                                        "crosspoints")},
            "settle_time_s": bf.board.settle_time_s,
            "pulse": {"amplitude_v": bf.pulse.amplitude_v, "width_s": bf.pulse.width_s,
                      "step_s": bf.pulse.step_s, "read_v": bf.pulse.read_v},
            "reading_band_v": list(bf.safety.reading_band_v),
            "max_compliance_trips": bf.safety.max_compliance_trips,
        }
        self.energised_on_connect: list[str] = energised
        """Instruments whose outputs were on when the board connected (ramped down)."""
        self._desc = describe_layered(
            net.sizes,
            name=bf.board.name,
            backend="board",
            g_min_s=net.g_min_s,
            g_max_s=net.g_max_s,
            limits=lim,
            v_read_range_v=meter.opened.v_read_range_v,
            pulse_step_s=bf.pulse.step_s,
            g_scale_s=net.g_scale_s,
            with_biases=with_biases,
            info=info,
        )
        self._free = self._desc.free_nodes
        self._bias_a = np.zeros(len(self._desc.bias_nodes))
        self._free_pos = np.full(self._desc.n_nodes, -1, dtype=np.int64)
        self._free_pos[self._free] = np.arange(len(self._free))
        self._in_pos = np.full(self._desc.n_nodes, -1, dtype=np.int64)
        self._in_pos[self._desc.input_nodes] = np.arange(len(self._desc.input_nodes))
        self._compliance_watch = self._sources_to_watch()
        self._faults.safe_confirmed = True

    # ------------------------------------------------------------------ events and faults
    def set_event_sink(self, sink: EventSink | None) -> None:
        """Send events to ``sink(kind, message)`` (buffered ones first); ``None`` detaches.

        Kinds: ``"retry"``, ``"warning"`` (transport), ``"safety"`` (limits, faults,
        safe-state actions), ``"info"`` (connections, wire-level exchanges).
        """
        self._log.set_sink(sink)

    @property
    def events(self) -> list[tuple[str, str]]:
        """Every event since the board was created, oldest first (at most 2000)."""
        return self._log.events

    def _event(self, kind: str, message: str) -> None:
        self._log.event(kind, message)

    def _sources_off(self) -> None:
        """Every instrument was just put safe: no source level is applied any more."""
        self._on = dict.fromkeys(_SOURCE_ROLES)

    # ------------------------------------------------------------------ Describable
    @property
    def board_file(self) -> BoardFile:
        """The board file the board was built from."""
        return self._bf

    @property
    def compliance_trips(self) -> int:
        """Compliance trips seen so far."""
        return self._compliance_trips

    # ------------------------------------------------------------------ Biasable
    def apply_inputs(self, v_inputs: FloatArray) -> None:
        """Check and store the input voltages of a batch, ``(batch, n_inputs)`` V.

        Nothing is written here: each example's levels go out when it is read.

        Raises:
            LimitError: beyond ``v_input_max_v`` (nothing stored).
        """
        self._check_open()
        dv.check_inputs_within_limits(v_inputs, self._desc.limits, len(self._desc.input_nodes))
        v = np.array(v_inputs, dtype=np.float64, copy=True)
        if self._v_in is not None and self._v_in.shape[0] != v.shape[0]:
            self._nudge_a = None  # a nudge sized for another batch cannot stay applied
        self._v_in = v

    def apply_nudge(self, nudge: dv.Nudge | None) -> None:
        """Check and store a current nudge (``None`` releases it at once).

        Raises:
            LimitError: beyond ``i_nudge_max_a`` / ``beta_max_s``; nothing applied.
            UnsupportedError: a resistive nudge (or a complex one).
        """
        self._check_open()
        if nudge is None:
            self._nudge_a = None
            on = self._on["nudges"]
            if on is not None and np.any(on):
                zero = np.zeros(len(self._desc.output_nodes))
                with self._faults.guard("releasing the nudge"), contextlib.suppress(
                    _RetryExampleError
                ):  # a compliance trip here already switched every source off
                    self._faults.confirm(self._write("nudges", zero))
            return
        dv.check_nudge_for_inputs(
            nudge, self._desc.limits, self._v_in, len(self._desc.output_nodes), complex_ok=False
        )
        if isinstance(nudge, dv.ResistiveNudge):
            raise UnsupportedError(
                "this board has current sources on its outputs, not switched pull resistors: "
                "resistive nudges are not supported; use --nudge current"
            )
        assert isinstance(nudge, dv.CurrentNudge)
        self._nudge_a = np.array(np.real(nudge.currents_a), dtype=np.float64)

    def set_bias_currents(self, i_bias_a: FloatArray) -> None:
        """Set the bias currents, A, one per ``bias_nodes`` entry (written with the next example).

        Raises:
            ConfigError: wrong shape or not finite.
            LimitError: beyond ``i_bias_max_a`` of the board file.
        """
        self._check_open()
        b = np.asarray(i_bias_a, dtype=np.float64)
        if b.shape != self._bias_a.shape:
            raise ConfigError(f"bias currents must have shape {self._bias_a.shape}, got {b.shape}")
        if not np.all(np.isfinite(b)):
            raise ConfigError("bias currents contain NaN or inf")
        self._check_level("biases", b)
        self._bias_a = b.copy()

    def read_bias_currents(self) -> FloatArray:
        """The bias currents as set, A (a copy; they are re-applied after a safe state)."""
        return self._bias_a.copy()

    # ------------------------------------------------------------------ Settleable
    def settle(self, settle_time_s: float | None = None) -> None:
        """Set the wait used after each example's sources are set, s (None: the board file's)."""
        self._check_open()
        if settle_time_s is not None and not (np.isfinite(settle_time_s) and settle_time_s >= 0):
            raise ConfigError(f"settle_time_s={settle_time_s} must be >= 0")
        if self._v_in is None:
            raise ConfigError("apply inputs before settling or reading the board")
        self._settle_s = self._bf.board.settle_time_s if settle_time_s is None else settle_time_s
        self._settle_pending = True

    # ------------------------------------------------------------------ writes
    def _check_level(self, role: str, levels: FloatArray) -> None:
        lim = self._desc.limits
        peak = float(np.max(np.abs(levels), initial=0.0))
        if role == "inputs":
            if peak > lim.v_input_max_v:
                raise LimitError(
                    f"input voltage {peak:.6g} V exceeds the limit v_input_max_v="
                    f"{lim.v_input_max_v:.6g} V; nothing was written"
                )
        elif role == "nudges" and peak > lim.i_nudge_max_a:
            raise LimitError(
                f"nudge current {peak:.6g} A exceeds i_nudge_max_a={lim.i_nudge_max_a:.6g} A; "
                "nothing was written"
            )
        elif role == "biases" and peak > self._bf.safety.i_bias_max_a:
            raise LimitError(
                f"bias current {peak:.6g} A exceeds i_bias_max_a="
                f"{self._bf.safety.i_bias_max_a:.6g} A; nothing was written"
            )

    def _set_levels(self, inst: BoardInstrument, role: str, channels: IntArray,
                    setpoints: FloatArray) -> None:
        """Send one source role's setpoints through its role driver."""
        roles = inst.roles
        if role == "inputs":
            assert roles.inputs is not None
            self._faults.call(inst, roles.inputs.set_voltages, channels, setpoints)
            return
        source = roles.nudges if role == "nudges" else roles.biases
        assert source is not None
        self._faults.call(inst, source.set_currents, channels, setpoints)

    def _write(self, role: str, levels: FloatArray) -> BoardInstrument:
        """Write one role's levels (checked again here; calibration applied)."""
        from instruments.transport import UnconfirmedCommandError

        self._check_level(role, levels)
        bf = self._bf
        cal = bf.calibration
        gain, off = {
            "inputs": (cal.input_gain, cal.input_offset_v),
            "nudges": (cal.nudge_gain, cal.nudge_offset_a),
            "biases": (cal.bias_gain, cal.bias_offset_a),
        }[role]
        setpoints = (levels - off) / gain
        name = getattr(bf.roles, role)
        assert name is not None
        inst = self._inst[name]
        ch = getattr(bf.wiring, role)
        self._faults.safe_confirmed = False
        for attempt in range(1, _SET_ATTEMPTS + 1):
            try:
                self._set_levels(inst, role, ch, setpoints)
                break
            except ComplianceTripError as exc:
                self._on = dict.fromkeys(_SOURCE_ROLES)  # the board went to its safe state
                self._trip(f"{inst.label}: {exc}")
                raise _RetryExampleError from None
            except UnconfirmedCommandError as exc:
                # a lost, BUSY or silent reply: read the levels back and reconcile
                read_levels = inst.opened.read_levels
                if read_levels is None or not exc.resynchronised:
                    raise
                have = self._faults.call(inst, read_levels).levels[role]
                if np.array_equal(have[ch], setpoints):
                    self._event("warning", f"{inst.label}: {exc.command.name} was not "
                                "confirmed, but GET_STATE shows it applied; continuing")
                    break
                if attempt == _SET_ATTEMPTS:
                    raise
                self._event("retry", f"{inst.label}: {exc.command.name} was not confirmed and "
                            "GET_STATE shows it not applied; sending it again (attempt "
                            f"{attempt + 1} of {_SET_ATTEMPTS})")
        self._on[role] = levels.copy()
        return inst

    def _trip(self, what: str) -> None:
        self._compliance_trips += 1
        n, most = self._compliance_trips, self._bf.safety.max_compliance_trips
        self._event("safety", f"compliance trip {n} (of at most {most}): {what}")
        if n > most:
            raise LimitError(
                f"compliance tripped {n} times (the board file allows {most}): last {what}; "
                "the run is aborted: check the wiring, the devices and the levels"
            )

    def _apply_example(self, b: int) -> None:
        """Set the sources for example ``b`` (only what changed) and wait the settle time."""
        assert self._v_in is not None
        bf = self._bf
        changed = False
        while True:  # a compliance trip switches every source off: set them all again
            # (the trips are counted; past the board file's allowance _trip raises)
            try:
                want: dict[str, FloatArray] = {"inputs": self._v_in[b]}
                want["nudges"] = (
                    np.zeros(len(self._desc.output_nodes)) if self._nudge_a is None
                    else self._nudge_a[b]
                )
                if bf.roles.biases is not None:
                    want["biases"] = self._bias_a
                written: dict[str, BoardInstrument] = {}
                for role, levels in want.items():
                    on = self._on[role]
                    if on is None or not np.array_equal(on, levels):
                        inst = self._write(role, levels)
                        written[inst.name] = inst
                        changed = True
                for inst in written.values():
                    self._faults.confirm(inst)
                break
            except _RetryExampleError:
                continue
        if (changed or self._settle_pending) and self._settle_s > 0:
            time.sleep(self._settle_s)

    # ------------------------------------------------------------------ Readable
    def read_nodes(
        self, n_samples: int = 1, nodes: NDArray[np.integer] | None = None
    ) -> dv.NodeReading:
        """Read ``n_samples`` samples per example: per example set sources, settle, read.

        Free nodes are read through the meter (calibration applied); input nodes read
        back the level their source was set to; ground reads 0 V.

        Raises:
            ConfigError: bad arguments or no inputs applied.
            LimitError: a reading outside the board file's plausible band or not finite,
                or too many compliance trips (the board is put in its safe state).
        """
        self._check_open()
        if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
            raise ConfigError(f"n_samples={n_samples} must be an integer >= 1")
        n = int(n_samples)
        idx = np.asarray(self._free if nodes is None else nodes, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= self._desc.n_nodes)):
            raise ConfigError(f"node indices must lie in 0..{self._desc.n_nodes - 1}")
        if self._v_in is None:
            raise ConfigError("apply inputs before settling or reading the board")
        batch = self._v_in.shape[0]
        fpos = self._free_pos[idx]
        metered = np.flatnonzero(fpos >= 0)
        ipos = self._in_pos[idx]
        inputs_at = np.flatnonzero(ipos >= 0)
        meter_inst = self._inst[self._bf.roles.meter]
        channels = self._bf.wiring.meter[fpos[metered]]
        gain = self._bf.calibration.meter_gain[fpos[metered]]
        offset = self._bf.calibration.meter_offset_v[fpos[metered]]
        samples = np.zeros((n, batch, idx.size))
        flags = np.zeros((n, batch, idx.size), dtype=np.uint8)
        stamps = np.zeros((n, batch))
        with self._faults.guard("read_nodes"):
            for b in range(batch):
                self._apply_example(b)
                t_host = time.monotonic() - self._t0
                if metered.size:
                    meter = meter_inst.roles.meter
                    assert meter is not None
                    raw, fl, ts = self._faults.call(meter_inst, meter.read_voltages, channels, n)
                    v = gain * np.asarray(raw, dtype=np.float64) + offset
                    fl = np.asarray(fl, dtype=np.uint8)
                    if self._sources_in_compliance():
                        fl = fl | _COMPLIANCE  # the readings were taken with a source limited
                    self._check_readings(v, fl, idx[metered], channels, b)
                    samples[:, b, metered] = v
                    flags[:, b, metered] = fl
                    rel = np.asarray(ts, dtype=np.float64) - float(ts[0])
                else:
                    rel = np.zeros(n)
                if inputs_at.size:
                    samples[:, b, inputs_at] = self._v_in[b, ipos[inputs_at]]
                rel = np.maximum.accumulate(rel) + np.arange(n) * 1e-9  # strictly increasing
                start = max(t_host, self._last_stamp + 1e-9)
                stamps[:, b] = start + rel
                self._last_stamp = float(stamps[-1, b])
            self._settle_pending = False
        return dv.NodeReading(samples_v=samples, timestamps_s=stamps, flags=flags, nodes=idx)

    def _sources_to_watch(self) -> list[tuple[BoardInstrument, SourceComplianceRole, IntArray]]:
        """Sources whose compliance the meter does not see: on another instrument."""
        bf = self._bf
        chans: dict[str, list[IntArray]] = {}
        drivers: dict[str, SourceComplianceRole] = {}
        for role in _SOURCE_ROLES:
            name = getattr(bf.roles, role)
            drv = None if name is None else getattr(self._inst[name].roles, role)
            if name != bf.roles.meter and isinstance(drv, SourceComplianceRole):
                assert name is not None
                drivers.setdefault(name, drv)
                chans.setdefault(name, []).append(getattr(bf.wiring, role))
        return [(self._inst[n], drivers[n], np.unique(np.concatenate(chans[n])))
                for n in drivers]

    def _sources_in_compliance(self) -> bool:
        """Query the sources the meter does not see; report those in compliance."""
        found = False
        for inst, drv, ch in self._compliance_watch:
            comp = np.asarray(self._faults.call(inst, drv.source_compliance, ch), dtype=bool)
            if comp.any():
                found = True
                self._event("safety", f"{inst.label}: source channel(s) "
                            f"{ch[comp].tolist()} in compliance during the reading")
        return found

    def _check_readings(self, v: FloatArray, fl: NDArray[np.uint8], nodes: IntArray,
                        channels: IntArray, b: int) -> None:
        lo, hi = self._bf.safety.reading_band_v
        bad = ~np.isfinite(v) | (v < lo) | (v > hi)
        if bad.any():
            s, j = (int(x[0]) for x in np.nonzero(bad))
            flag = dv.SampleFlag(int(fl[s, j]))
            raise LimitError(
                f"node {self._desc.node_names[nodes[j]]} (meter channel {int(channels[j])}) read "
                f"{v[s, j]:.6g} V{f' (flagged {flag.name})' if flag else ''} in example {b}, "
                f"outside the plausible band [{lo:g}, {hi:g}] V of the board file; the run is "
                "aborted: check the wiring, the input gain and the meter range"
            )
        if np.any(fl & _COMPLIANCE):
            j = int(np.nonzero(fl & _COMPLIANCE)[1][0])
            self._trip(f"a source was in compliance while node "
                       f"{self._desc.node_names[nodes[j]]} was read (example {b})")

    # ------------------------------------------------------------------ conductances
    def _check_edges(self, edges: NDArray[np.integer]) -> IntArray:
        e = np.asarray(edges)
        if e.ndim != 1 or (e.size and not np.issubdtype(e.dtype, np.integer)):
            raise ConfigError("edge indices must be a 1-D integer array")
        e = e.astype(np.int64)
        n = self._desc.n_edges
        if e.size and (e.min() < 0 or e.max() >= n):
            raise ConfigError(f"edge indices must lie in 0..{n - 1}")
        return e

    def read_conductances(self, edges: NDArray[np.integer] | None = None) -> FloatArray:
        """One read of the conductances at the board file's read voltage, S (None: all edges)."""
        self._check_open()
        e = np.arange(self._desc.n_edges) if edges is None else self._check_edges(edges)
        v = self._bf.pulse.read_v
        if abs(v) > self._bf.safety.v_read_max_v:  # checked at load; again before the write
            raise LimitError(f"read voltage {v:g} V exceeds v_read_max_v")
        inst = self._inst[self._bf.roles.crosspoints]
        cps = self._bf.wiring.crosspoints[e]
        with self._faults.guard("read_conductances"):
            cross = inst.roles.crosspoints
            assert cross is not None
            g = self._faults.call(inst, cross.read_conductance, cps, v)
        return np.asarray(g, dtype=np.float64)

    def _check_budget(self, counts: IntArray) -> None:
        check_pulse_budget(counts, self._pulses_used, self._desc.limits,
                           "max_pulses_per_step", " of the board file")

    def _pulse(self, e: IntArray, counts: IntArray) -> tuple[IntArray, NDArray[np.int8]]:
        """Apply signed pulse counts; (applied, ProgramStatus codes). Budget already checked."""
        from hwloop.board_protocol import PulseStatus

        p = self._bf.pulse
        lim = self._desc.limits
        if p.amplitude_v > lim.pulse_amplitude_max_v or p.width_s > lim.pulse_width_max_s:
            raise LimitError("pulse amplitude or width beyond the board file's limits")
        applied = np.zeros(e.size, dtype=np.int64)
        codes = dv.ProgramStatus
        status = np.where(counts == 0, codes.NO_CHANGE, codes.OK).astype(np.int8)
        nz = np.flatnonzero(counts)
        if nz.size == 0:
            return applied, status
        inst = self._inst[self._bf.roles.crosspoints]
        cps = self._bf.wiring.crosspoints[e]
        cross = inst.roles.crosspoints
        assert cross is not None
        self._faults.safe_confirmed = False
        if isinstance(cross, BulkCrosspointRole):  # a capability: many crosspoints per call
            todo = nz
            while todo.size:
                try:
                    rep = self._faults.call(inst, cross.pulse_many, cps[todo], counts[todo],
                                            p.amplitude_v, p.width_s)
                except ComplianceTripError as exc:
                    assert exc.report is not None
                    rep = exc.report
                    self._on = dict.fromkeys(_SOURCE_ROLES)
                    applied[todo] += rep.applied
                    self._pulses_used += rep.total_pulses
                    st = np.asarray(rep.status)
                    # the tripping crosspoint keeps its partial count; the skipped ones are resent
                    tripped = todo[st == PulseStatus.COMPLIANCE]
                    self._trip(f"{inst.label}: PULSE stopped at crosspoint "
                               f"{int(cps[tripped[0]]) if tripped.size else '?'}")
                    todo = todo[st == PulseStatus.SKIPPED]
                    continue
                applied[todo] += rep.applied
                self._pulses_used += rep.total_pulses
                st = np.asarray(rep.status)
                bound = (st == dv.ProgramStatus.AT_MAX) | (st == dv.ProgramStatus.AT_MIN)
                status[todo[bound]] = st[bound]
                break
        else:
            for j in nz:
                c = int(counts[j])
                amp = p.amplitude_v if c > 0 else -p.amplitude_v
                done = int(self._faults.call(inst, cross.pulse, int(cps[j]), amp, p.width_s,
                                             abs(c)))
                applied[j] = done if c > 0 else -done
                self._pulses_used += done
                if done < abs(c):
                    self._trip(f"{inst.label}: pulse train on crosspoint {int(cps[j])} stopped "
                               f"after {done} of {abs(c)} pulses")
        return applied, status

    def program_pulses(
        self, edges: NDArray[np.integer], pulses: NDArray[np.integer]
    ) -> dv.ProgramResult:
        """Apply signed pulse counts to edges (limits checked before any pulse).

        Returns:
            What was done: applied counts (fewer after a compliance trip), statuses
            (``AT_MAX``/``AT_MIN`` as the board reports them), conductances unknown (NaN).
        """
        self._check_open()
        e = self._check_edges(edges)
        p = np.asarray(pulses)
        if p.shape != e.shape or (p.size and not np.issubdtype(p.dtype, np.integer)):
            raise ConfigError("pulses must be an integer array with one count per edge")
        if np.unique(e).size != e.size:
            raise ConfigError("each edge may appear once per programming call")
        counts = p.astype(np.int64)
        self._check_budget(counts)
        with self._faults.guard("program_pulses"):
            applied, status = self._pulse(e, counts)
        nan = np.full(e.size, np.nan)
        return dv.ProgramResult(
            edges=e,
            requested_pulses=counts,
            applied_pulses=applied,
            requested_delta_s=nan,
            g_before_s=nan.copy(),
            g_after_s=nan.copy(),
            status=status,
            pulse_amplitude_v=self._bf.pulse.amplitude_v,
            pulse_width_s=self._bf.pulse.width_s,
        )

    def program_deltas(
        self, edges: NDArray[np.integer] | None, delta_g_s: FloatArray
    ) -> dv.ProgramResult:
        """Request conductance changes, S: rounded to pulses of the nominal step (open loop).

        ``edges=None`` addresses every edge in board order.
        """
        self._check_open()
        d = np.asarray(delta_g_s, dtype=np.float64)
        if edges is None:
            if d.shape != (self._desc.n_edges,):
                raise ConfigError(
                    f"delta_g_s must have shape ({self._desc.n_edges},) for all edges"
                )
            e = np.arange(self._desc.n_edges)
        else:
            e = self._check_edges(edges)
            if d.shape != e.shape:
                raise ConfigError("delta_g_s must have one value per edge")
            if np.unique(e).size != e.size:
                raise ConfigError("each edge may appear once per programming call")
        if not np.all(np.isfinite(d)):
            raise ConfigError("requested conductance changes contain NaN or inf")
        counts = np.rint(d / self._bf.pulse.step_s).astype(np.int64)
        self._check_budget(counts)
        with self._faults.guard("program_deltas"):
            applied, status = self._pulse(e, counts)
        known = np.full(e.size, np.nan) if edges is not None else np.zeros(0)
        return dv.ProgramResult(
            edges=None if edges is None else e,
            requested_pulses=counts,
            applied_pulses=applied,
            requested_delta_s=d,
            g_before_s=known,
            g_after_s=known.copy(),
            status=status,
            pulse_amplitude_v=self._bf.pulse.amplitude_v,
            pulse_width_s=self._bf.pulse.width_s,
        )

    # ------------------------------------------------------------------ safety
    def safe_state(self) -> None:
        """Every instrument to its safe state (sources first); release the nudge. Idempotent.

        Raises:
            HwloopError: an instrument could not confirm it (not raised again after a
                fault that was already reported: the first error is the one to see).
        """
        self._nudge_a = None
        if self._v_in is not None:
            self._v_in = np.zeros_like(self._v_in)
        if self._closed:
            return
        f = self._faults
        failed = f.all_safe()
        if failed:
            report = "safe state NOT confirmed for " + "; ".join(failed)
            if report != f.unsafe_report:  # once per distinct report
                self._event("safety", report)
            f.unsafe_report = report
            if not f.faulted:
                f.faulted = True
                raise HwloopError(
                    "the safe state could not be confirmed for " + "; ".join(failed)
                    + "; switch the outputs off by hand"
                )

    @property
    def is_safe(self) -> bool:
        """True when every instrument confirmed its safe state and nothing is commanded."""
        return (
            self._faults.safe_confirmed
            and self._nudge_a is None
            and (self._v_in is None or not np.any(self._v_in))
        )

    def close(self) -> None:
        """Go to the safe state and release every instrument. Idempotent."""
        if self._closed:
            return
        err: HwloopError | None = None
        try:
            self.safe_state()
        except HwloopError as exc:
            err = exc
        self._closed = True
        self._faults.close_all()
        self._log.set_sink(None)
        if err is not None:
            raise err


class _RetryExampleError(Exception):
    """A compliance trip during a write: re-apply the example (internal)."""


REAL_BOARD_OPTIONS = (
    Option("board", "path", "board file (TOML): instruments, wiring, calibration, limits "
           "(examples in examples/boards/)", required=True),
    Option("arch", "str", "layer sizes; must equal the board file's [network] arch "
           "(unset: the board file's)"),
)
"""Options of the ``board`` backend (``hwloop backends board``)."""


def real_board_arch(options: Mapping[str, Any]) -> str | None:
    """The architecture a ``board`` option table trains: the board file's ``[network] arch``."""
    path = options.get("board")
    if not path:
        return None
    return load_board_file(Path(str(path))).network.arch


@backend(REAL_BOARD_OPTIONS, arch=real_board_arch)
def make_real_board(options: Mapping[str, Any], rng: np.random.Generator) -> RealBoard:
    """A real board: source-measure units, meters and switch matrices from a board file.

    Backend factory for the ``board`` entry point; ``options`` are checked against
    :data:`REAL_BOARD_OPTIONS` first. A bench draws no random numbers: ``rng`` is not
    used.

    Raises:
        ConfigError: a board-file error, or an ``arch`` that disagrees with it.
    """
    del rng
    bf = load_board_file(Path(str(options["board"])))
    arch = options.get("arch")
    if arch:
        sizes = parse_arch(str(arch))
        if sizes != bf.network.sizes:
            raise ConfigError(
                f"--arch {arch} disagrees with the board file {bf.path} (arch "
                f"{bf.network.arch}); drop --arch or pass --arch {bf.network.arch}"
            )
    board = RealBoard(bf)
    # current sources on the outputs, no switched pull resistors (apply_nudge refuses them)
    board._desc = dataclasses.replace(board._desc, supports_resistive_nudge=False)
    return board
