"""``NonReciprocalBoard``: the Device contract on the non-reciprocal network emulator.

The board owns a :class:`~simulated_device.nonreciprocal.NonReciprocalNet`.
Nudges may be complex (``supports_complex_nudge=True``): every element law is
holomorphic, so the fixed point exists for complex ``beta`` inside the
analyticity radius of ``u*(beta)`` and a complex read returns complex samples
(read noise is added to the real and to the imaginary part independently).

Node order: inputs, each hidden layer, outputs, ground (last). Edge order: the
couplings of :attr:`NonReciprocalNet.couplings` (``fwd 0, fwd 1, bwd 1, ...``),
each a dense block from its driver layer to its receiver layer (row-major
``(n_src, n_dst)``, see :class:`hwloop.device.LayerBlock`). A forward and a
backward edge join the same two nodes; ``desc.info["couplings"]`` gives each
block's kind, drive (voltage) gain and current gain, which is what a local
learning rule needs (docs/estimators.md §2.1).

Programming is by conductance deltas only (``pulse_step_s = 0``); each
programmed device gets independent write noise ``delta * (1 + write_noise *
xi)``, so forward and backward partners drift apart under identical requests.

Emulator-only extras (not part of the Device contract; protocol code reaches
them structurally, never by import): :meth:`free_state`, :meth:`last_converged`,
:meth:`exact_gradient`, :meth:`exact_nudge_response`, :meth:`adjoint_error`,
:meth:`loss`, :meth:`jacobian`, the bench-style :meth:`clamp_node_currents`
(what clamped-probe homeostasis measures), and the time-domain pair :meth:`relaxation_time_s`
and :meth:`drive_sinusoid` (every free node has a capacitance ``node_capacitance_f``
to ground, so the network relaxes as ``C du/dt = F(u)``; the fixed-point reads
above are its steady state).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop import device as dv
from hwloop.errors import ConfigError, LimitError, UnsupportedError
from hwloop.layered import dense_block, layer_starts, layered_nodes
from hwloop.plugins import Option, backend
from simulated_device import nonreciprocal as nr
from simulated_device.drn import parse_arch
from simulated_device.held_sources import HeldSources

Array = NDArray[np.floating]
CArray = NDArray[np.floating] | NDArray[np.complexfloating]


def _describe(net: nr.NonReciprocalNet, limits: dv.SafetyLimits, info: dict[str, object]) -> (
    dv.BoardDescription
):
    names, roles, clamps = layered_nodes(net.sizes)
    starts = layer_starts(net.sizes)
    blocks, pairs, couplings = [], [], []
    off = 0
    for c in net.couplings:
        block, p = dense_block(starts, c.src_layer, c.dst_layer, off, np.int64)
        blocks.append(block)
        pairs.append(p)
        off += len(p)
        couplings.append(
            {"kind": c.kind, "drive_gain": c.drive_gain, "current_gain": c.current_gain}
        )
    return dv.BoardDescription(
        name="emulated non-reciprocal network",
        backend="nonreciprocal",
        node_names=tuple(names),
        node_roles=tuple(roles),
        node_clamps=tuple(clamps),
        edge_nodes=np.concatenate(pairs),
        g_min_s=0.0,
        g_max_s=float("inf"),
        limits=limits,
        supports_complex_nudge=True,
        layers=tuple(blocks),
        bias_nodes=np.arange(starts[1], starts[-1], dtype=np.int64),
        deterministic=info.get("read_noise_v") == 0.0,
        info={**info, "couplings": couplings},
    )


class NonReciprocalBoard(HeldSources):
    """A numerical non-reciprocal layered network behind the Device contract.

    Args:
        net: the network (its ``g_flat`` is the board's conductance buffer).
        rng: the run's generator (read and write noise).
        read_noise_v: standard deviation of each node-voltage sample, V (>= 0;
            for complex states, of the real and of the imaginary part).
        write_noise: relative standard deviation of each programmed change (>= 0).
        limits: safety limits (default: generous simulation-unit limits).
        settle_time_s: simulated time per settle, s.
        sample_time_s: simulated time per sample of one example, s.
        tol_a: Newton residual tolerance (relative, see :func:`nonreciprocal.solve`).
        node_capacitance_f: capacitance of every free node to ground, F (> 0); sets
            the relaxation time constants of :meth:`drive_sinusoid`.
    """

    _complex_nudges = True  # current or resistive nudges, complex values allowed

    def __init__(
        self,
        net: nr.NonReciprocalNet,
        rng: np.random.Generator,
        *,
        read_noise_v: float = 0.0,
        write_noise: float = 0.0,
        limits: dv.SafetyLimits | None = None,
        settle_time_s: float = 1e-3,
        sample_time_s: float = 1e-4,
        tol_a: float = 1e-13,
        node_capacitance_f: float = 1e-6,
    ) -> None:
        if not (np.isfinite(read_noise_v) and read_noise_v >= 0):
            raise ConfigError(f"read_noise_v = {read_noise_v} must be a finite number >= 0 V")
        if not (np.isfinite(write_noise) and write_noise >= 0):
            raise ConfigError(f"write_noise = {write_noise} must be a finite number >= 0")
        if not (np.isfinite(node_capacitance_f) and node_capacitance_f > 0):
            raise ConfigError(
                f"node_capacitance_f = {node_capacitance_f} must be a positive number of F"
            )
        self._c_node_f = float(node_capacitance_f)
        self._net = net
        self._rng = rng
        self._sigma = float(read_noise_v)
        self._write_noise = float(write_noise)
        self._limits = limits if limits is not None else dv.SafetyLimits(
            v_input_max_v=1e4,
            i_nudge_max_a=1e3,
            beta_max_s=1e3,
            v_target_max_v=1e4,
            compliance_a=1e9,
        )
        self._settle_time_s = float(settle_time_s)
        self._sample_time_s = float(sample_time_s)
        self._tol_a = float(tol_a)
        self._desc = _describe(
            net,
            self._limits,
            {
                "layer_sizes": list(net.sizes),
                "read_noise_v": self._sigma,
                "write_noise": self._write_noise,
                "diode_i_s_a": net.i_s_a,
                "diode_v_t_v": net.v_t_v,
                "node_capacitance_f": self._c_node_f,
            },
        )
        self._free = self._desc.free_nodes
        self._clock_s = 0.0
        self._v_in: Array | None = None
        self._nudge: dv.Nudge | None = None
        self._state: CArray | None = None
        self._free_state: Array | None = None
        self._converged: NDArray[np.bool_] | None = None
        self._free_converged: NDArray[np.bool_] | None = None
        self._dirty = True
        self._closed = False
        self._pulses_used = 0  # programmed by conductance deltas, never by pulses

    # ---------------------------------------------------------------- Describable
    @property
    def network(self) -> nr.NonReciprocalNet:
        """The underlying network (emulator only)."""
        return self._net

    # ---------------------------------------------------------------- Biasable
    def apply_inputs(self, v_inputs: Array) -> None:
        """Set the input sources, ``(batch, n_inputs)`` V (checked against the limits)."""
        v = self._checked_inputs(v_inputs, np.float64)
        if self._v_in is None or self._v_in.shape != v.shape:
            self._nudge = None
        self._v_in = v
        self._free_state = None
        self._dirty = True

    def set_bias_currents(self, i_bias_a: Array) -> None:
        """Set the bias current of every free node, A."""
        self._check_open()
        b = np.asarray(i_bias_a, dtype=np.float64)
        if b.shape != self._net.biases_a.shape or not np.all(np.isfinite(b)):
            raise ConfigError(f"bias currents must be finite with shape {self._net.biases_a.shape}")
        if float(np.max(np.abs(b), initial=0.0)) > self._limits.i_nudge_max_a:
            raise LimitError(
                f"bias current exceeds i_nudge_max_a={self._limits.i_nudge_max_a:.6g} A"
            )
        self._net.biases_a[:] = b
        self._free_state = None
        self._dirty = True

    def read_bias_currents(self) -> Array:
        """The bias currents as set, A (a copy)."""
        return np.array(self._net.biases_a)

    # ---------------------------------------------------------------- Settleable
    def settle(self, settle_time_s: float | None = None) -> None:
        """Solve the fixed point under the present inputs, nudge and conductances.

        Nudged solves start from the free fixed point (DR-5); examples whose
        Newton iteration did not converge are reported by :meth:`last_converged`.
        """
        wait_s = self._settle_time(settle_time_s)
        self._solve()
        self._clock_s += wait_s

    def _nudging(self) -> nr.Nudging | None:
        n = self._nudge
        if n is None:
            return None
        if isinstance(n, dv.ResistiveNudge):
            beta = n.beta_s
            b: complex = complex(beta) if isinstance(beta, complex) else float(beta)
            return nr.Nudging(b, np.asarray(n.targets_v, dtype=np.float64))
        assert isinstance(n, dv.CurrentNudge)
        return nr.Nudging(0.0, None, np.asarray(n.currents_a))

    def _ensure_free(self) -> Array:
        if self._v_in is None:
            raise ConfigError("apply inputs before settling or reading the board")
        if self._free_state is None:
            r = nr.solve(self._net, self._v_in, None, tol_a=self._tol_a)
            self._free_state = np.asarray(r.u.real)
            self._free_converged = r.converged
        return self._free_state

    def _solve(self) -> None:
        if not self._dirty and self._state is not None:
            return
        u0 = self._ensure_free()
        assert self._v_in is not None
        if self._nudge is None:
            self._state = u0
            self._converged = self._free_converged
        else:
            r = nr.solve(self._net, self._v_in, self._nudging(), start=u0, tol_a=self._tol_a)
            self._state = r.u
            self._converged = r.converged
        self._dirty = False

    # ---------------------------------------------------------------- Readable
    def _sample(self, idx: NDArray[np.integer], n: int) -> dv.NodeReading:
        """``n`` reads of nodes ``idx`` of the solved state, with Gaussian read noise, V."""
        assert self._v_in is not None and self._state is not None
        batch = self._v_in.shape[0]
        full = np.zeros((batch, self._desc.n_nodes), dtype=self._state.dtype)
        full[:, : self._net.n_inputs] = self._v_in
        full[:, self._net.n_inputs : self._net.n_inputs + self._net.n_free] = self._state
        v_true = full[:, idx]
        samples: CArray = np.broadcast_to(v_true, (n, *v_true.shape)).copy()
        if self._sigma > 0:
            samples = samples + self._sigma * self._rng.standard_normal(samples.shape)
            if np.iscomplexobj(v_true):
                samples = samples + 1j * self._sigma * self._rng.standard_normal(samples.shape)
        stamps = self._sample_stamps(batch, n)
        self._clock_s += batch * n * self._sample_time_s
        return dv.NodeReading(
            samples_v=samples,
            timestamps_s=stamps,
            flags=np.zeros(samples.shape, dtype=np.uint8),
            nodes=idx,
        )

    # ---------------------------------------------------------------- conductances
    def read_conductances(self, edges: NDArray[np.integer] | None = None) -> Array:
        """The conductances, S (exact)."""
        self._check_open()
        g = self._net.g_flat
        return np.array(g if edges is None else g[self._check_edges(edges)])

    def _check_edges(self, edges: NDArray[np.integer]) -> NDArray[np.int64]:
        e = np.asarray(edges, dtype=np.int64)
        n = self._desc.n_edges
        if e.ndim != 1 or (e.size and (e.min() < 0 or e.max() >= n)):
            raise ConfigError(f"edge indices must be a 1-D array in 0..{n - 1}")
        if len(np.unique(e)) != len(e):
            raise ConfigError("each edge may appear once per programming call")
        return e

    def program_pulses(
        self, edges: NDArray[np.integer], pulses: NDArray[np.integer]
    ) -> dv.ProgramResult:
        """Not available: this emulator is programmed by conductance deltas.

        The arguments are validated first (a malformed call is a ``ConfigError``).
        """
        self._check_open()
        e = self._check_edges(edges)
        p = np.asarray(pulses)
        if p.shape != e.shape or not np.issubdtype(p.dtype, np.integer):
            raise ConfigError("pulses must be an integer array with one count per edge")
        raise UnsupportedError(
            "the non-reciprocal emulator has no pulse granularity; use program_deltas"
        )

    def program_deltas(
        self, edges: NDArray[np.integer] | None, delta_g_s: Array
    ) -> dv.ProgramResult:
        """Change conductances by ``delta_g_s`` (with write noise), S; cut at 0 S."""
        self._check_open()
        d = np.asarray(delta_g_s, dtype=np.float64)
        e = None if edges is None else self._check_edges(edges)
        want = (self._desc.n_edges,) if e is None else e.shape
        if d.shape != want:
            raise ConfigError(f"delta_g_s must have shape {want}")
        if not np.all(np.isfinite(d)):
            raise ConfigError("requested conductance changes contain NaN or inf")
        idx: slice | NDArray[np.int64] = slice(None) if e is None else e
        g0 = np.array(self._net.g_flat[idx])
        done = d
        if self._write_noise > 0:
            done = d * (1.0 + self._write_noise * self._rng.standard_normal(d.shape))
        g1 = g0 + done
        status = np.where(g1 < 0.0, dv.ProgramStatus.AT_MIN, dv.ProgramStatus.OK).astype(np.int8)
        g1 = np.maximum(g1, 0.0)
        self._net.g_flat[idx] = g1
        self._free_state = None
        self._dirty = True
        zeros = np.zeros(d.shape, dtype=np.int64)
        return dv.ProgramResult(
            edges=e,
            requested_pulses=zeros,
            applied_pulses=zeros,
            requested_delta_s=d,
            g_before_s=g0 if e is not None else np.zeros(0),
            g_after_s=g1 if e is not None else np.zeros(0),
            status=status,
            pulse_amplitude_v=0.0,
            pulse_width_s=0.0,
        )

    # ---------------------------------------------------------------- safety
    def _inputs_zeroed(self) -> None:
        """The safe state zeroed the inputs: drop their free fixed point."""
        self._free_state = None

    # ---------------------------------------------------------------- emulator-only
    def free_state(self) -> Array:
        """``(batch, n_free)`` exact free fixed point, V."""
        return np.array(self._ensure_free())

    def last_converged(self) -> NDArray[np.bool_]:
        """``(batch,)`` whether the last settle's Newton solve converged per example."""
        self._solve()
        assert self._converged is not None
        return np.array(self._converged)

    def loss(self, targets_v: Array) -> float:
        """``mean_batch 1/2 sum_o (v_o - y_o)^2`` at the free fixed point, V^2."""
        return nr.loss(self._net, self._ensure_free(), np.asarray(targets_v, dtype=np.float64))

    def exact_gradient(self, targets_v: Array) -> tuple[Array, Array]:
        """Exact ``(dL/dg per edge, dL/db per bias node)`` by implicit differentiation."""
        u0 = self._ensure_free()
        assert self._v_in is not None
        return nr.exact_gradient(self._net, self._v_in, u0, np.asarray(targets_v, dtype=float))

    def exact_nudge_response(self, targets_v: Array) -> Array:
        """Exact ``du*/dbeta`` at ``beta = 0`` for a resistive nudge, ``(batch, n_free)``, V/S."""
        return nr.nudge_response(self._net, self._ensure_free(), np.asarray(targets_v, float))

    def adjoint_error(self, targets_v: Array) -> Array:
        """The true error vector ``J^-T dL/du``, ``(batch, n_free)``, V/S."""
        return nr.adjoint(self._net, self._ensure_free(), np.asarray(targets_v, float))

    def jacobian(self) -> Array:
        """``dF/du`` at the free fixed point, ``(batch, n_free, n_free)``, S."""
        return np.asarray(nr.jacobian(self._net, self._ensure_free()))

    def clamp_node_currents(self, v_free: Array) -> Array:
        """Clamp every free node to ``v_free`` and read the net currents into them, A.

        ``(batch, n_free)`` in and out; the present inputs apply, no nudge. The
        result is ``F(v_free)``: zero at the free fixed point. No current noise is
        modelled. The board's state is unchanged afterwards.
        """
        self._check_open()
        if self._v_in is None:
            raise ConfigError("apply inputs before clamping the nodes")
        v = np.asarray(v_free, dtype=np.float64)
        shape = (self._v_in.shape[0], self._net.n_free)
        if v.shape != shape or not np.all(np.isfinite(v)):
            raise ConfigError(f"clamp voltages must be finite with shape {shape}")
        if float(np.max(np.abs(v), initial=0.0)) > self._limits.v_input_max_v:
            raise LimitError(
                f"clamp voltage exceeds v_input_max_v={self._limits.v_input_max_v:.6g} V"
            )
        self._clock_s += self._settle_time_s
        return np.asarray(np.real(nr.vector_field(self._net, v, self._v_in)))

    def relaxation_time_s(self, amplitude_s: float = 0.0) -> float:
        """Slowest relaxation time around the free fixed point of the present inputs, s.

        With ``amplitude_s = r > 0`` the slowest over the resistive nudges ``-r, 0, r``
        (linearised at the free fixed point); a :class:`ConfigError` when one of them
        makes the network unstable.
        """
        r = abs(float(amplitude_s))
        betas = (0.0,) if r == 0 else (-r, 0.0, r)
        return nr.relaxation_time(self._net, self._ensure_free(), self._c_node_f, betas)

    def drive_sinusoid(
        self,
        targets_v: Array,
        amplitude_s: float,
        frequency_hz: float,
        n_periods: int,
        samples_per_period: int,
        settle_periods: int = 1,
    ) -> dv.NodeReading:
        """Drive the output pull ``beta(t) = r cos(2 pi f t)`` and sample the free nodes.

        The network starts at its free fixed point at ``t = 0`` (the beginning of
        a period), is driven for ``settle_periods`` whole periods to let the
        switch-on transient decay, then sampled ``samples_per_period`` times per
        period, uniformly in phase (sample ``m`` at phase ``2 pi m / S``), for
        ``n_periods`` periods. Each sample carries the board's read noise. The nudge
        is released afterwards.

        Args:
            targets_v: ``(batch, n_outputs)`` targets of the pull, V.
            amplitude_s: ``r``, S (> 0, at most the board's ``beta_max_s``).
            frequency_hz: drive frequency, Hz (> 0).
            n_periods: periods sampled (>= 1).
            samples_per_period: samples per period (>= 4).
            settle_periods: whole periods driven before sampling (>= 0).

        Returns:
            A reading whose sample axis is time: ``samples_v`` has shape
            ``(n_periods * samples_per_period, batch, n_free)``; ``timestamps_s``
            are the board clock at each sample.
        """
        self._check_open()
        r, f = float(amplitude_s), float(frequency_hz)
        if not (np.isfinite(r) and r > 0):
            raise ConfigError(f"sinusoid amplitude {amplitude_s} S must be a positive number")
        if r > self._limits.beta_max_s:
            raise LimitError(f"sinusoid amplitude {r:.6g} S exceeds beta_max_s="
                             f"{self._limits.beta_max_s:.6g} S; lower it")
        if not (np.isfinite(f) and f > 0):
            raise ConfigError(f"drive frequency {frequency_hz} Hz must be a positive number")
        for name, val, lo in (("n_periods", n_periods, 1),
                              ("samples_per_period", samples_per_period, 4),
                              ("settle_periods", settle_periods, 0)):
            if int(val) != val or val < lo:
                raise ConfigError(f"{name} = {val} must be an integer >= {lo}")
        u0 = self._ensure_free()
        assert self._v_in is not None
        y = np.asarray(targets_v, dtype=np.float64)
        dv.check_nudge_within_limits(dv.ResistiveNudge(r, y), self._limits, self._v_in.shape[0],
                                  self._net.n_outputs, complex_ok=False)
        period = 1.0 / f
        m = int(n_periods) * int(samples_per_period)
        t = period * (int(settle_periods) + np.arange(m) / int(samples_per_period))
        q = nr.drive_sinusoid(self._net, self._v_in, y, r, 2 * np.pi * f, t,
                              capacitance_f=self._c_node_f, start=u0)
        if self._sigma > 0:
            q = q + self._sigma * self._rng.standard_normal(q.shape)
        batch = self._v_in.shape[0]
        stamps = np.broadcast_to((self._clock_s + t)[:, None], (m, batch)).copy()
        self._clock_s += float(t[-1]) + period / int(samples_per_period)
        self._nudge = None
        self._dirty = True
        return dv.NodeReading(
            samples_v=q,
            timestamps_s=stamps,
            flags=np.zeros(q.shape, dtype=np.uint8),
            nodes=self._free,
        )


NONRECIPROCAL_OPTIONS = (
    Option("arch", "str", "layer sizes, inputs first (at least one hidden layer)",
           default="10-10-10-10-3"),
    Option("weight_gain", "float", "initial conductance scale", unit="1", default=3.0,
           min=0.0, min_exclusive=True),
    Option("asymmetry", "float", "log-normal mismatch of each backward device from its "
           "forward partner at initialisation (0: reciprocal)", unit="1", default=0.0,
           min=0.0, max=10.0),
    Option("asymmetry_mean_one", "bool", "scale that mismatch to mean 1 (exp(s xi - s^2/2)) "
           "instead of median 1, so it changes directions but not the mean feedback",
           default=False),
    Option("fwd_gain", "float", "forward voltage gain of the amplifiers between hidden layers",
           unit="1", default=1.0, min=0.0, min_exclusive=True, max=1e3),
    Option("bwd_gain", "float", "backward current gain of those amplifiers", unit="1",
           default=1.0, min=0.0, min_exclusive=True, max=1e3),
    Option("i_s_a", "float", "diode saturation current", unit="A", default=0.05, min=0.0,
           min_exclusive=True),
    Option("v_t_v", "float", "diode thermal voltage", unit="V", default=0.2, min=0.0,
           min_exclusive=True),
    Option("read_noise_v", "float", "Gaussian read noise per sample", unit="V", default=0.0,
           min=0.0, max=1.0),
    Option("write_noise", "float", "relative standard deviation of each programmed change",
           unit="1", default=0.0, min=0.0, max=10.0),
    Option("node_capacitance_f", "float", "capacitance of every free node to ground (sets "
           "the lock-in relaxation times)", unit="F", default=1e-6, min=0.0,
           min_exclusive=True),
)
"""Options of the ``nonreciprocal`` backend (``hwloop backends nonreciprocal``)."""


@backend(NONRECIPROCAL_OPTIONS)
def make_nonreciprocal_board(
    options: Mapping[str, Any], rng: np.random.Generator
) -> NonReciprocalBoard:
    """A non-reciprocal layered network with amplifiers (holomorphic and lock-in EP).

    Backend factory for the ``nonreciprocal`` entry point; ``options`` are checked
    against :data:`NONRECIPROCAL_OPTIONS` (defaults filled in) before this runs.
    """
    sizes = parse_arch(str(options["arch"]))
    if len(sizes) < 3:
        raise ConfigError("the nonreciprocal board needs at least one hidden layer; "
                          "pass an arch like 10-10-3")

    def num(key: str) -> float:
        return float(options[key])

    net = nr.initialise(
        sizes,
        rng,
        weight_gain=num("weight_gain"),
        asymmetry=num("asymmetry"),
        fwd_gain=num("fwd_gain"),
        bwd_gain=num("bwd_gain"),
        i_s_a=num("i_s_a"),
        v_t_v=num("v_t_v"),
        mean_one=bool(options["asymmetry_mean_one"]),
    )
    return NonReciprocalBoard(
        net,
        rng,
        read_noise_v=num("read_noise_v"),
        write_noise=num("write_noise"),
        node_capacitance_f=num("node_capacitance_f"),
    )
