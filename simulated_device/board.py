"""``EmulatedBoard``: the Device contract implemented on the DRN emulator.

The board owns a :class:`~simulated_device.drn.DRN` whose conductances live in
the flat buffer of a :class:`~simulated_device.device_models.DeviceArray`, so
programming pulses change what the solver sees in place. Reads add the device
model's read noise; every random draw comes from the one generator passed in.

Node order on the board: input nodes, then each hidden layer, then the output
nodes, then ground (last). Edge order: layer after layer, each ``(n_l,
n_{l+1})`` block row-major (see :class:`hwloop.device.LayerBlock`).

Time is simulated: a clock advances by ``settle_time_s`` per settle (or the wait
asked for), by ``sample_time_s`` per sample, by ``pulse_time_s`` per programming
pulse and by :meth:`EmulatedBoard.wait`, so timestamps look like a bench's
(docs/devices.md §5: about 2 ms per host-looped layer read). Drift (the
write model's power law, ``g = g_prog ((t + t0)/t0)**-nu`` since each device's last
write) acts on that clock for every device: each advance drifts the conductances
and the next read settles the network anew.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop import device as dv
from hwloop.board_base import check_pulse_budget
from hwloop.errors import ConfigError
from hwloop.layered import default_g_scale_s, describe_layered
from hwloop.plugins import Option, backend
from simulated_device.device_models import (
    PRESET_SOURCES,
    PRESETS,
    DeviceArray,
    DeviceModel,
    get_preset,
)
from simulated_device.drn import DRN, parse_arch
from simulated_device.held_sources import HeldSources

Array = NDArray[np.floating]


def _describe_drn(
    net: DRN,
    model: DeviceModel,
    limits: dv.SafetyLimits,
    name: str,
    info: dict[str, object],
    g_scale_s: float = 1.0,
) -> dv.BoardDescription:
    # the layout is shared with the real board (hwloop.layered), so a board file and its
    # emulator twin describe the same network node for node and edge for edge
    return describe_layered(
        net.layer_sizes,
        name=name,
        backend="emulator",
        g_min_s=model.write.g_min_s,
        g_max_s=model.write.g_max_s,
        limits=limits,
        v_read_range_v=model.read.adc_range_v,
        pulse_step_s=model.write.nominal_step_s,
        g_scale_s=g_scale_s,
        info=info,
        sample_dtype=np.dtype(net.dtype).newbyteorder("<").str,
        deterministic=(model.read.sigma_v == 0.0 and model.read.relative == 0.0
                       and model.read.slow_v == 0.0),
    )


class EmulatedBoard(HeldSources):
    """A numerical DRN board behind the Device contract.

    Args:
        net: the network; its ``g_flat`` buffer becomes the device array's buffer.
        model: device model (read noise, write model).
        rng: the run's random generator (device-to-device draws happen here).
        limits: safety limits; default: generous limits sized to the network
            (inputs up to 10 kV in simulation units, see :func:`default_limits`).
        n_sweeps: block-coordinate-descent sweeps per settle (>= 1) when ``tol_v`` is None.
        tol_v: if set, settle to this largest per-sweep change, V.
        warm_start: start each free-phase settle from the previous equilibrium
            when the batch size is unchanged (as the published training code does);
            nudged settles always start from the last free equilibrium.
        settle_time_s: simulated time per settle, s (>= 0).
        sample_time_s: simulated time per sample of one example, s (>= 0).
        pulse_time_s: simulated time per programming pulse, s (>= 0; pulses are
            applied one after another).
        name: board name in its description.
        g_scale_s: conductance standing for 1 simulation unit, S (see
            :attr:`hwloop.device.BoardDescription.g_scale_s`).
    """

    def __init__(
        self,
        net: DRN,
        model: DeviceModel,
        rng: np.random.Generator,
        *,
        limits: dv.SafetyLimits | None = None,
        n_sweeps: int = 4,
        tol_v: float | None = None,
        warm_start: bool = True,
        settle_time_s: float = 1e-3,
        sample_time_s: float = 2e-3,
        pulse_time_s: float = 1e-6,
        name: str = "emulated DRN",
        g_scale_s: float = 1.0,
    ) -> None:
        if n_sweeps < 1:
            raise ConfigError(f"n_sweeps={n_sweeps} must be >= 1")
        if tol_v is not None and not tol_v > 0:
            raise ConfigError(f"tol_v={tol_v} must be > 0")
        if settle_time_s < 0 or sample_time_s < 0 or pulse_time_s < 0:
            raise ConfigError("settle_time_s, sample_time_s and pulse_time_s must be >= 0")
        model.write.validate()
        self._net = net
        self._model = model
        self._rng = rng
        self._devices = DeviceArray(model.write, net.g_flat.copy(), rng, out=net.g_flat)
        net.weights_changed()
        self._limits = limits if limits is not None else default_limits(net)
        self._n_sweeps = int(n_sweeps)
        self._tol_v = tol_v
        self._warm = bool(warm_start)
        self._settle_time_s = float(settle_time_s)
        self._sample_time_s = float(sample_time_s)
        self._pulse_time_s = float(pulse_time_s)
        self._drifts = model.write.drift_nu > 0 or model.write.drift_nu_d2d > 0
        self._desc = _describe_drn(
            net,
            model,
            self._limits,
            name,
            {
                "device_model": model.name,
                "layer_sizes": list(net.layer_sizes),
                "dtype": str(net.dtype),
                "n_sweeps": n_sweeps,
                "tol_v": tol_v,
            },
            g_scale_s=g_scale_s,
        )
        self._node_layer = np.concatenate(
            [np.full(n, k) for k, n in enumerate(net.layer_sizes)] + [np.array([-1])]
        )
        starts = np.concatenate([[0], np.cumsum(net.layer_sizes)])
        self._node_pos = np.concatenate([np.arange(n) for n in net.layer_sizes] + [np.array([0])])
        self._starts = starts
        self._free = self._desc.free_nodes
        # the free nodes are the free layers in order: a read of all of them is one concat
        self._free_is_state = bool(np.array_equal(self._free, np.arange(starts[1], starts[-1])))
        self._clock_s = 0.0
        self._pulses_used = 0
        self._v_in: Array | None = None
        self._proj: Array | None = None
        self._nudge: dv.Nudge | None = None
        self._state: list[Array] | None = None
        self._free_state: list[Array] | None = None  # free equilibrium of the present inputs
        self._last_free: list[Array] | None = None  # last free equilibrium (warm start)
        self._dirty = True
        self._closed = False

    # ---------------------------------------------------------------- Describable
    @property
    def network(self) -> DRN:
        """The underlying network (emulator only; protocols must not use it)."""
        return self._net

    @property
    def model(self) -> DeviceModel:
        """The device model (read noise and write model) the board was built with."""
        return self._model

    @property
    def devices(self) -> DeviceArray:
        """The device array (emulator only)."""
        return self._devices

    @property
    def clock_s(self) -> float:
        """Simulated time since creation, s."""
        return self._clock_s

    # ---------------------------------------------------------------- Biasable
    def apply_inputs(self, v_inputs: Array) -> None:
        """Set the input sources, ``(batch, n_inputs)`` V (checked against the limits first)."""
        v = self._checked_inputs(v_inputs, self._net.dtype)
        if self._v_in is None or self._v_in.shape[0] != v.shape[0]:
            self._state = None
            self._free_state = None
            self._last_free = None
            if self._nudge is not None:
                self._nudge = None  # a nudge sized for another batch cannot stay applied
        self._v_in = v
        self._proj = None
        self._free_state = None
        self._dirty = True

    def _check_nudge(self, nudge: dv.Nudge) -> None:
        """A negative resistive beta must keep the network stable (DRN.check_beta)."""
        if isinstance(nudge, dv.ResistiveNudge) and np.real(nudge.beta_s) < 0:
            self._net.check_beta(float(np.real(nudge.beta_s)))

    def set_bias_currents(self, i_bias_a: Array) -> None:
        """Set the bias current of every hidden and output node, A."""
        self._check_open()
        b = dv.check_biases_within_limits(i_bias_a, self._limits, len(self._net.b_flat))
        self._net.b_flat[:] = b
        self._dirty = True

    def read_bias_currents(self) -> Array:
        """The bias currents as set, A (a copy)."""
        return np.array(self._net.b_flat, dtype=np.float64)

    # ---------------------------------------------------------------- Settleable
    def settle(self, settle_time_s: float | None = None) -> None:
        """Solve for the equilibrium under the present inputs, nudge and conductances."""
        # the wait happens first (the devices drift during it), then the network is settled
        self._advance(self._settle_time(settle_time_s))
        self._solve()

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass on the board's clock (the devices drift), s (>= 0)."""
        self._check_open()
        if not (np.isfinite(seconds) and seconds >= 0):
            raise ConfigError(f"wait of {seconds} s must be a finite time >= 0 s")
        self._advance(float(seconds))

    def _advance(self, dt_s: float) -> None:
        """Advance the clock by ``dt_s`` s; drift acts on every device over that time."""
        self._clock_s += dt_s
        if self._drifts and dt_s > 0:
            self._devices.advance_time(dt_s)
            self._net.weights_changed()
            self._proj = None
            self._free_state = None
            self._dirty = True

    def _solve(self) -> None:
        if self._v_in is None:
            raise ConfigError("apply inputs before settling or reading the board")
        if not self._dirty and self._state is not None:
            return
        nudge = self._nudge
        if nudge is None:
            start = self._last_free if self._warm else None
        else:
            start = self._free_state if self._free_state is not None else self._state
        kwargs: dict[str, Any] = {}
        if isinstance(nudge, dv.ResistiveNudge):
            kwargs = {"beta_s": float(np.real(nudge.beta_s)), "targets_v": nudge.targets_v}
        elif isinstance(nudge, dv.CurrentNudge):
            kwargs = {"nudge_currents_a": np.asarray(nudge.currents_a, dtype=np.float64)}
        if self._proj is None:
            self._proj = self._net.project_inputs(self._v_in)
        kwargs["projection"] = self._proj
        if self._tol_v is None:
            V, _ = self._net.relax(self._v_in, start, n_sweeps=self._n_sweeps, **kwargs)
        else:
            V, _ = self._net.relax(self._v_in, start, tol_v=self._tol_v, **kwargs)
        self._state = V
        if nudge is None:
            self._free_state = V
            self._last_free = V
        self._dirty = False

    # ---------------------------------------------------------------- Readable
    def node_voltages(self) -> Array:
        """``(batch, n_nodes)`` exact voltages of every node (emulator only), V."""
        self._solve()
        assert self._v_in is not None and self._state is not None
        batch = self._v_in.shape[0]
        return np.concatenate(
            [self._v_in, *self._state, np.zeros((batch, 1), self._net.dtype)], axis=1
        )

    def _sample(self, idx: NDArray[np.integer], n_samples: int) -> dv.NodeReading:
        """``n_samples`` reads of nodes ``idx`` of the solved state, with the model's read noise."""
        assert self._v_in is not None and self._state is not None
        v_true = self._gather(idx)
        samples, flags = self._model.read.sample(v_true, n_samples, self._rng)
        batch = v_true.shape[0]
        comp = self._compliance(batch)
        if comp.any():
            flags[:, comp, :] |= np.uint8(dv.SampleFlag.COMPLIANCE)
        stamps = self._sample_stamps(batch, n_samples)
        # the samples are of the settled state; the devices drift over the read's duration
        self._advance(batch * n_samples * self._sample_time_s)
        # the readings come in the board's arithmetic type (a float32 board's "ADC" gives
        # float32 samples, which the session log then stores exactly)
        return dv.NodeReading(
            samples_v=samples.astype(self._net.dtype, copy=False),
            timestamps_s=stamps.astype(np.float64),
            flags=flags,
            nodes=idx,
        )

    def _gather(self, idx: NDArray[np.integer]) -> Array:
        assert self._v_in is not None and self._state is not None
        if idx is self._free and self._free_is_state:
            return np.concatenate(self._state, axis=1, dtype=np.float64)
        layers = [self._v_in, *self._state]
        batch = self._v_in.shape[0]
        out = np.zeros((batch, len(idx)), dtype=np.float64)
        lay = self._node_layer[idx]
        pos = self._node_pos[idx]
        for k, arr in enumerate(layers):
            sel = lay == k
            if sel.any():
                out[:, sel] = arr[:, pos[sel]]
        return out

    def _compliance(self, batch: int) -> NDArray[np.bool_]:
        """Examples in which an input source would exceed its current compliance."""
        assert self._v_in is not None and self._state is not None
        c = self._limits.compliance_a
        swing = float(np.max(np.abs(self._v_in), initial=0.0)) + float(
            np.max(np.abs(self._state[0]), initial=0.0)
        )
        # |I_i| <= rows_i * swing <= (total conductance of the input block) * swing, and that
        # total is at most the sum of the first free layer's denominators (already cached)
        if self._net.first_layer_conductance() * swing <= c:
            return np.zeros(batch, dtype=bool)
        rows = self._net.input_row_sums()
        vmax = np.max(np.abs(self._state[0]), axis=1, keepdims=True)
        bound = rows * (np.abs(self._v_in) + vmax)  # |I_i| <= this, cheaply
        suspect = np.any(bound > c, axis=1)
        hit = np.zeros(batch, dtype=bool)
        if suspect.any():
            s = np.flatnonzero(suspect)
            cur = self._net.source_currents(self._v_in[s], [st[s] for st in self._state])
            hit[s] = np.any(np.abs(cur) > c, axis=1)
        return hit

    # ---------------------------------------------------------------- conductances
    def read_conductances(self, edges: NDArray[np.integer] | None = None) -> Array:
        """One read of the conductances (with the model's read noise), S."""
        self._check_open()
        idx = None if edges is None else self._check_edges(edges)
        return np.asarray(self._devices.read(idx, self._rng), dtype=np.float64)

    def _check_edges(self, edges: NDArray[np.integer]) -> NDArray[np.int64]:
        e = np.asarray(edges, dtype=np.int64)
        if e.ndim != 1:
            raise ConfigError("edge indices must be a 1-D array")
        n = self._desc.n_edges
        if e.size and (e.min() < 0 or e.max() >= n):
            raise ConfigError(f"edge indices must lie in 0..{n - 1}")
        return e

    def program_pulses(
        self, edges: NDArray[np.integer], pulses: NDArray[np.integer]
    ) -> dv.ProgramResult:
        """Apply signed pulse counts to edges (limits checked before any pulse)."""
        self._check_open()
        e = self._check_edges(edges)
        p = np.asarray(pulses)
        if p.shape != e.shape or not np.issubdtype(p.dtype, np.integer):
            raise ConfigError("pulses must be an integer array with one count per edge")
        if len(np.unique(e)) != len(e):
            raise ConfigError("each edge may appear once per programming call")
        check_pulse_budget(p, self._pulses_used, self._limits)
        g0, g1, status = self._devices.apply_pulses(e, p.astype(np.int64), self._rng)
        return self._after_program(
            e, p.astype(np.int64), p.astype(np.int64), np.full(len(e), np.nan), g0, g1, status
        )

    def program_deltas(
        self, edges: NDArray[np.integer] | None, delta_g_s: Array
    ) -> dv.ProgramResult:
        """Request conductance changes, S (open loop through the nominal update model).

        ``edges=None`` programs every edge (``delta_g_s`` of length ``n_edges``).
        """
        self._check_open()
        d = np.asarray(delta_g_s)
        if edges is None:
            if d.shape != (self._desc.n_edges,):
                raise ConfigError(
                    f"delta_g_s must have shape ({self._desc.n_edges},) for all edges"
                )
            e = None
        else:
            e = self._check_edges(edges)
            if d.shape != e.shape:
                raise ConfigError("delta_g_s must have one value per edge")
            if len(np.unique(e)) != len(e):
                raise ConfigError("each edge may appear once per programming call")
        if not np.all(np.isfinite(d)):
            raise ConfigError("requested conductance changes contain NaN or inf")
        if not self._devices.model.is_continuous:
            check_pulse_budget(self._devices.pulses_for_delta(d), self._pulses_used, self._limits)
        req, g0, g1, status = self._devices.apply_deltas(e, d, self._rng)
        return self._after_program(e, req, req, d, g0, g1, status)

    def _after_program(
        self,
        e: NDArray[np.int64] | None,
        requested: NDArray[np.int64],
        applied: NDArray[np.int64],
        delta: Array,
        g0: Array,
        g1: Array,
        status: NDArray[np.int8],
    ) -> dv.ProgramResult:
        if not self._devices.model.is_continuous:
            applied = np.where(status == dv.ProgramStatus.NO_CHANGE, 0, applied).astype(np.int64)
            n_pulses = int(np.abs(applied).sum())
            self._pulses_used += n_pulses
            self._advance(n_pulses * self._pulse_time_s)  # one pulse after another
        self._net.weights_changed()
        self._proj = None
        self._free_state = None
        self._dirty = True
        return dv.ProgramResult(
            edges=e,
            requested_pulses=requested,
            applied_pulses=applied,
            requested_delta_s=delta,
            g_before_s=g0,
            g_after_s=g1,
            status=np.asarray(status, dtype=np.int8),
            pulse_amplitude_v=1.0,
            pulse_width_s=self._pulse_time_s,
        )

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self, max_batch: int) -> dict[str, NDArray[Any]]:
        """Everything that makes the next results of this board, as fixed-shape arrays.

        With the board rebuilt from the same options and seed (which fixes the
        device-to-device draws) and the run's generator restored,
        :meth:`restore_state` makes the board continue bit for bit.

        Args:
            max_batch: rows of the warm-start buffer (the run's batch size); a warm
                start of another batch size is dropped, as the board itself does
                when the batch size changes.
        """
        n_free = len(self._free)
        warm = np.zeros((max_batch, n_free), dtype=self._net.dtype)
        rows = -1
        if self._last_free is not None:
            lf = np.concatenate(self._last_free, axis=1)
            if lf.shape[0] <= max_batch:
                rows = lf.shape[0]
                warm[:rows] = lf
        out: dict[str, NDArray[Any]] = {
            f"board/{k}": v for k, v in self._devices.state_arrays().items()
        }
        out["board/biases_a"] = np.array(self._net.b_flat)
        out["board/warm_start_v"] = warm
        v_rows = -1 if self._v_in is None else self._v_in.shape[0]
        out["board/scalars"] = np.array(
            [self._clock_s, self._pulses_used, rows, v_rows], dtype=np.float64
        )
        return out

    def restore_state(self, state: Mapping[str, NDArray[Any]]) -> None:
        """Restore :meth:`checkpoint_state` (the board must be built as the original)."""
        self._check_open()
        dev = {k[len("board/") :]: np.asarray(v) for k, v in state.items()
               if k.startswith("board/") and k[len("board/") :] not in
               ("biases_a", "warm_start_v", "scalars")}
        self._devices.load_state_arrays(dev)
        self._net.b_flat[:] = state["board/biases_a"]
        clock, pulses, rows, v_rows = (float(x) for x in state["board/scalars"])
        self._clock_s, self._pulses_used = clock, int(pulses)
        self._last_free = None
        if rows >= 0:
            warm = np.asarray(state["board/warm_start_v"])[: int(rows)].astype(self._net.dtype)
            cuts = np.cumsum(self._net.layer_sizes[1:])[:-1]
            self._last_free = [np.ascontiguousarray(a) for a in np.split(warm, cuts, axis=1)]
        self._v_in = (
            None if v_rows < 0
            else np.zeros((int(v_rows), self._net.n_inputs), dtype=self._net.dtype)
        )
        self._nudge = None
        self._proj = None
        self._state = None
        self._free_state = None
        self._net.weights_changed()
        self._dirty = True

    # ---------------------------------------------------------------- safety
    def _inputs_zeroed(self) -> None:
        """The safe state zeroed the inputs: drop their projection and free state."""
        self._proj = None
        self._free_state = None


def default_limits(net: DRN) -> dv.SafetyLimits:
    """Limits for an emulated network in simulation units.

    The published DRNs use input gains up to 4000 (docs/physics.md §5.1), so the
    emulator admits inputs up to 1e4 V; nudges and biases up to 1e3 A / S;
    pulses as the realistic bench defaults (docs/devices.md §6).
    """
    return dv.SafetyLimits(
        v_input_max_v=1e4,
        i_nudge_max_a=1e3,
        beta_max_s=1e3,
        v_target_max_v=1e4,
        pulse_amplitude_max_v=3.0,
        pulse_width_max_s=1e-3,
        max_pulses_per_call=10_000,
        max_pulses_per_run=10**15,
        compliance_a=1e9,
    )


READ_OPTIONS = (
    Option("read_noise_v", "float", "additive Gaussian read noise per sample", unit="V",
           min=0.0, max=1.0),
    Option("read_noise_relative", "float", "read noise relative to |v| per sample", unit="1",
           min=0.0, max=1.0),
    Option("read_noise_slow_v", "float", "slow read noise: drawn once per node per read, "
           "shared by its repeat samples (averaging does not reduce it)", unit="V",
           min=0.0, max=1.0),
    Option("adc_bits", "int", "node converter resolution (0: no quantisation)", unit="bit",
           min=0, max=32),
    Option("adc_range_v", "float", "node converter full scale (inf: no range)", unit="V",
           min=0.0, min_exclusive=True, allow_inf=True),
)
"""Emulator options that set a field of the preset's read noise
(:class:`~simulated_device.read_noise.ReadNoise`); unset: the preset's value."""

_READ_FIELDS = {"read_noise_v": "sigma_v", "read_noise_relative": "relative",
                "read_noise_slow_v": "slow_v",
                "adc_bits": "adc_bits", "adc_range_v": "adc_range_v"}

WRITE_OPTIONS = (
    Option("g_min_s", "float", "lowest device conductance (mean bound)", unit="S", min=0.0,
           max=1.0),
    Option("g_max_s", "float", "highest device conductance (mean bound; inf: unbounded "
           "continuous device)", unit="S", min=0.0, min_exclusive=True, allow_inf=True),
    Option("n_states", "float", "pulse states over the range (0: continuous device, "
           "programmed by deltas only)", unit="1", min=0.0, max=1e9),
    Option("bound_mode", "str", "update law at the bounds", choices=("hard", "soft")),
    Option("c2c", "float", "cycle-to-cycle std of each pulse's step, relative to the step",
           unit="1", min=0.0, max=10.0),
    Option("d2d", "float", "device-to-device std of the mean step, relative", unit="1",
           min=0.0, max=10.0),
    Option("up_down", "float", "up/down asymmetry: up steps x(1 + a), down x(1 - a)",
           unit="1", min=-1.0, min_exclusive=True, max=1.0, max_exclusive=True),
    Option("up_down_d2d", "float", "device-to-device std of the asymmetry", unit="1",
           min=0.0, max=1.0),
    Option("bounds_d2d", "float", "device-to-device relative std of the bounds", unit="1",
           min=0.0, max=1.0),
    Option("write_noise", "float", "persistent-vs-apparent write noise, fraction of the range",
           unit="1", min=0.0, max=1.0),
    Option("stuck_fraction", "float", "probability that a device is stuck", unit="1",
           min=0.0, max=1.0),
    Option("g_read_relative", "float", "conductance read noise, relative, fresh every read",
           unit="1", min=0.0, max=1.0),
    Option("drift_nu", "float", "power-law drift exponent: g = g_prog ((t + t0)/t0)^-nu",
           unit="1", min=0.0, max=1.0),
    Option("drift_t0_s", "float", "drift reference time t0", unit="s", min=0.0,
           min_exclusive=True, max=1e9),
    Option("drift_nu_d2d", "float", "device-to-device std of the drift exponent (absolute)",
           unit="1", min=0.0, max=1.0),
)
"""Emulator options that set a field of the preset's write model
(:class:`~simulated_device.write_model.WriteModel`); unset: the preset's value."""

_WRITE_FIELDS = {o.name: o.name for o in WRITE_OPTIONS} | {"g_read_relative": "read_relative"}

EMULATOR_OPTIONS = (
    Option("arch", "str", "layer sizes, inputs first, e.g. 1568-100-10", default="1568-100-10"),
    Option("preset", "str", "device model: a packaged preset (" + ", ".join(PRESETS)
           + ") or a preset file path (as hwloop characterize writes)", default="ideal",
           normalise=lambda v: str(Path(v).expanduser().resolve()) if v not in PRESETS and (
               v.endswith(".toml") or "/" in v or Path(v).is_file()) else v),
    Option("dtype", "str", "arithmetic (and sample) precision of the solver",
           default="float64", choices=("float64", "float32")),
    Option("weight_gain", "float", "initial conductance scale (published DRN initialisation)",
           unit="1", default=1.0, min=0.0, min_exclusive=True),
    Option("n_sweeps", "int", "coordinate-descent sweeps per settle (unset: 4, plus one per "
           "hidden layer after the first, as published)", unit="1", min=1, max=10_000),
    Option("tol_v", "float", "settle until the largest per-sweep change is below this "
           "(unset: a fixed number of sweeps)", unit="V", min=0.0, min_exclusive=True),
    Option("warm_start", "bool", "start each free settle from the last free equilibrium",
           default=True),
    Option("noise_model", "path", "noise-model file written by hwloop characterize (its "
           "preset and read noise, unless given here too)"),
    Option("settle_time_s", "float", "board time per settle", unit="s", default=1e-3,
           min=0.0, max=1e6),
    Option("sample_time_s", "float", "board time per sample of one example", unit="s",
           default=2e-3, min=0.0, max=1e6),
    Option("pulse_time_s", "float", "board time per programming pulse", unit="s",
           default=1e-6, min=0.0, max=1e3),
    *READ_OPTIONS,
    *WRITE_OPTIONS,
)
"""Options of the ``emulator`` backend (``hwloop backends emulator`` lists them)."""


def default_sweeps(sizes: tuple[int, ...] | list[int]) -> int:
    """Published coordinate-descent sweeps per settle: 4, plus one per extra hidden layer.

    Equals the published settings of every DRN in docs/physics.md §5.1 / §5.2 (4, 5, 6 sweeps
    for 1, 2, 3 hidden layers).
    """
    return 4 + max(0, len(sizes) - 3)


def device_model(options: Mapping[str, Any]) -> DeviceModel:
    """The preset of ``options`` with every read-noise and write-model option applied.

    The model's name records what changed (``reram+read_noise=0.0001V+c2c=0.1``).

    Raises:
        ConfigError: an unknown preset, or a combination the models refuse.
    """
    model = get_preset(str(options.get("preset") or "ideal"))
    read: dict[str, Any] = {}
    write: dict[str, Any] = {}
    suffix = ""
    for opt in (*READ_OPTIONS, *WRITE_OPTIONS):
        v = options.get(opt.name)
        if v is None:
            continue
        if opt.name == "read_noise_v":
            suffix += f"+read_noise={float(v):g}V"
        else:
            suffix += f"+{opt.name}={v:g}" if not isinstance(v, str) else f"+{opt.name}={v}"
        if opt.name in _READ_FIELDS:
            read[_READ_FIELDS[opt.name]] = None if opt.name == "adc_bits" and v == 0 else v
        else:
            write[_WRITE_FIELDS[opt.name]] = None if opt.name == "n_states" and v == 0 else v
    if not suffix:
        return model
    return dataclasses.replace(
        model,
        name=model.name + suffix,
        read=dataclasses.replace(model.read, **read),
        write=dataclasses.replace(model.write, **write),
    )


@backend(EMULATOR_OPTIONS, details=lambda: [f"preset {k}: {src}" for k, src in
                                            PRESET_SOURCES.items()])
def make_emulated_board(options: Mapping[str, Any], rng: np.random.Generator) -> EmulatedBoard:
    """The DRN emulator: exact steady state, configurable read noise and device models.

    Backend factory for the ``emulator`` entry point; ``options`` are checked against
    :data:`EMULATOR_OPTIONS` (defaults filled in) before this runs.
    """
    options = dict(options)
    if options.get("noise_model") is not None:
        from simulated_device.noise_model import emulator_options

        from_file, _ = emulator_options(str(options["noise_model"]))
        merged = {**from_file, **{k: v for k, v in options.items() if v is not None}}
        if "preset" in from_file and options.get("preset") not in (None, "ideal"):
            merged["preset"] = options["preset"]
        elif "preset" in from_file:
            merged["preset"] = from_file["preset"]
        merged.pop("noise_model")
        options = merged
    sizes = parse_arch(str(options.get("arch") or "1568-100-10"))
    dtype_name = str(options.get("dtype") or "float64")
    model = device_model(options)
    weight_gain = float(options.get("weight_gain") or 1.0)
    net = DRN.initialise(sizes, rng, weight_gain=weight_gain, dtype=np.dtype(dtype_name))
    lo, hi = model.write.g_min_s, model.write.g_max_s
    g_scale = 1.0
    if np.isfinite(hi):
        # One conductance scale for the whole network (the DRN is homogeneous in g, so a
        # common scale keeps the published network function): the widest published initial
        # range, [0, weight_gain/sqrt(smallest fan-in)], fills half the device range.
        g_scale = default_g_scale_s(sizes, lo, hi, weight_gain)
        scaled = net.g_flat.astype(np.float64) * g_scale + lo
        net.g_flat[:] = np.clip(scaled, lo, hi)  # float32 rounding only
        net.weights_changed()
    elif lo > 0:  # unbounded above: the published values, above the lower bound
        net.g_flat[:] = net.g_flat.astype(np.float64) + lo
        net.weights_changed()
    tol = options.get("tol_v")
    sweeps = options.get("n_sweeps")
    warm = options.get("warm_start")
    return EmulatedBoard(
        net,
        model,
        rng,
        n_sweeps=default_sweeps(sizes) if sweeps is None else int(sweeps),
        tol_v=None if tol is None else float(tol),
        warm_start=True if warm is None else bool(warm),
        g_scale_s=g_scale,
        settle_time_s=float(options.get("settle_time_s", 1e-3)),
        sample_time_s=float(options.get("sample_time_s", 2e-3)),
        pulse_time_s=float(options.get("pulse_time_s", 1e-6)),
    )
