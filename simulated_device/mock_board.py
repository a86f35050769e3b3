"""``MockBoard``: a scriptable board without physics, for testing protocol code.

In the manner of ophyd-async's mock backends, the mock records every call made to
it (:attr:`MockBoard.calls`) and serves the readings it is told to serve, so a test
of protocol code (an EP step, a programmer, a command) can assert exactly what the
protocol commanded and in which order, and feed it chosen readings, without a
solver. It implements the whole Device contract: limits are checked before
anything is "applied" (with the same checks as every backend), the safe state is
real (sources zero, nudges released), conductances live in a bounded array that
programming changes exactly (``program_deltas``) or in whole pulses
(``program_pulses``, with ``pulse_step_s > 0``).

Readings, in order of precedence:

1. scripted readings (:meth:`MockBoard.script_readings`): a queue of arrays, each
   served by one :meth:`~MockBoard.read_nodes` call (``(batch, n_nodes)``: every
   sample equals it; ``(n_samples, batch, n_nodes)``: exactly those samples);
2. a response function (:meth:`MockBoard.set_response`): called with the present
   :class:`MockState`, it returns ``(batch, n_nodes_total)`` voltages of every node,
   V, served as every sample;
3. otherwise: input nodes read the applied inputs, every other node 0 V.

Time is a counter: each settle advances it by ``settle_time_s`` and each sample by
``sample_time_s``, so timestamps increase as on a bench.

Registered as backend ``mock`` (``hwloop backends mock``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop import device as dv
from hwloop.board_base import BoardBase, check_pulse_budget
from hwloop.errors import ConfigError, UnsupportedError
from hwloop.layered import describe_layered, parse_arch
from hwloop.plugins import Option, backend

Array = NDArray[np.floating]


@dataclass(frozen=True, eq=False)
class MockCall:
    """One recorded call: the method's name and its arguments (arrays copied)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class MockState:
    """What a response function sees.

    Attributes:
        desc: the board description.
        inputs_v: ``(batch, n_inputs)`` applied inputs, V.
        nudge: the applied nudge (``None``: released).
        conductances_s: ``(n_edges,)`` present conductances, S (read-only copy).
        biases_a: bias currents, A (read-only copy).
    """

    desc: dv.BoardDescription
    inputs_v: Array
    nudge: dv.Nudge | None
    conductances_s: Array
    biases_a: Array


Response = Callable[[MockState], Array]


def _copy(v: Any) -> Any:
    return np.array(v, copy=True) if isinstance(v, np.ndarray) else v


class MockBoard(BoardBase):
    """A Device that records calls and serves scripted readings (see the module docstring).

    Args:
        desc: the description it presents (topology, bounds, limits, capabilities).
        g_init_s: ``(n_edges,)`` initial conductances, S, within the bounds.
        pulse_step_s: conductance change of one pulse, S (0: pulses are refused, as
            on a board programmed by deltas only).
        settle_time_s: counter advance per settle, s (>= 0).
        sample_time_s: counter advance per sample, s (> 0).
    """

    def __init__(
        self,
        desc: dv.BoardDescription,
        g_init_s: Array,
        *,
        pulse_step_s: float = 0.0,
        settle_time_s: float = 1e-3,
        sample_time_s: float = 1e-4,
    ) -> None:
        g = np.array(g_init_s, dtype=np.float64)
        if g.shape != (desc.n_edges,):
            raise ConfigError(f"g_init_s must have shape ({desc.n_edges},), got {g.shape}")
        if np.any(g < desc.g_min_s) or np.any(g > desc.g_max_s):
            raise ConfigError("g_init_s must lie within the description's bounds")
        if not (settle_time_s >= 0 and sample_time_s > 0):
            raise ConfigError("settle_time_s must be >= 0 s and sample_time_s > 0 s")
        self._desc = desc
        self._g = g
        self._step = float(pulse_step_s)
        self._settle_time_s = float(settle_time_s)
        self._sample_time_s = float(sample_time_s)
        self._bias = np.zeros(len(desc.bias_nodes))
        self._inputs: Array | None = None
        self._nudge: dv.Nudge | None = None
        self._script: deque[Array] = deque()
        self._response: Response | None = None
        self._clock_s = 0.0
        self._pulses_used = 0
        self._closed = False
        self.calls: list[MockCall] = []
        """Every Device call, in order (arguments copied)."""

    # ------------------------------------------------------------------ scripting
    def script_readings(self, *readings: Array) -> None:
        """Queue readings; each is served by one ``read_nodes`` call, in order."""
        for r in readings:
            a = np.asarray(r, dtype=np.float64)
            if a.ndim not in (2, 3):
                raise ConfigError("a scripted reading is (batch, n_nodes) or "
                                  "(n_samples, batch, n_nodes)")
            self._script.append(a)

    def set_response(self, response: Response | None) -> None:
        """Serve ``response(state)`` (every node's voltage, V) when no reading is queued."""
        self._response = response

    def calls_named(self, name: str) -> list[MockCall]:
        """The recorded calls of method ``name``, in order."""
        return [c for c in self.calls if c.name == name]

    def _record(self, name: str, **args: Any) -> None:
        self.calls.append(MockCall(name, {k: _copy(v) for k, v in args.items()}))

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("the mock board is closed; open a new one")

    @property
    def clock_s(self) -> float:
        """Counter time since creation, s."""
        return self._clock_s

    # ------------------------------------------------------------------ Device
    def apply_inputs(self, v_inputs: Array) -> None:
        """Check the inputs against shape and limits, then hold them."""
        self._record("apply_inputs", v_inputs=v_inputs)
        self._check_open()
        dv.check_inputs_within_limits(v_inputs, self._desc.limits, len(self._desc.input_nodes))
        v = np.array(v_inputs, dtype=np.float64)
        if self._inputs is not None and self._inputs.shape[0] != v.shape[0]:
            self._nudge = None
        self._inputs = v

    def apply_nudge(self, nudge: dv.Nudge | None) -> None:
        """Check the nudge (capabilities, shape, limits), then hold it."""
        self._record("apply_nudge", nudge=nudge)
        self._check_open()
        if nudge is not None:
            if self._inputs is None:
                raise ConfigError("apply inputs before applying a nudge (the batch size is "
                                  "unknown)")
            if isinstance(nudge, dv.ResistiveNudge) and not self._desc.supports_resistive_nudge:
                raise UnsupportedError("this mock board takes current nudges only; use "
                                       "--nudge current")
            dv.check_nudge_within_limits(nudge, self._desc.limits, self._inputs.shape[0],
                                      len(self._desc.output_nodes),
                                      complex_ok=self._desc.supports_complex_nudge)
        self._nudge = nudge

    def set_bias_currents(self, i_bias_a: Array) -> None:
        """Check and hold the bias currents, A."""
        self._record("set_bias_currents", i_bias_a=i_bias_a)
        self._check_open()
        b = dv.check_biases_within_limits(i_bias_a, self._desc.limits, len(self._bias))
        self._bias = b.copy()

    def read_bias_currents(self) -> Array:
        """The bias currents as set, A (a copy)."""
        return self._bias.copy()

    def settle(self, settle_time_s: float | None = None) -> None:
        """Advance the counter (nothing to solve)."""
        self._record("settle", settle_time_s=settle_time_s)
        self._check_open()
        if settle_time_s is not None and not settle_time_s >= 0:
            raise ConfigError(f"settle_time_s={settle_time_s} must be >= 0")
        self._clock_s += self._settle_time_s if settle_time_s is None else float(settle_time_s)

    def read_nodes(self, n_samples: int = 1, nodes: NDArray[np.integer] | None = None
                   ) -> dv.NodeReading:
        """Serve the next scripted reading, else the response, else inputs / 0 V."""
        self._record("read_nodes", n_samples=n_samples, nodes=nodes)
        self._check_open()
        if n_samples < 1:
            raise ConfigError(f"n_samples={n_samples} must be >= 1")
        if self._inputs is None:
            raise ConfigError("apply inputs before reading the board")
        idx = self._desc.free_nodes if nodes is None else np.asarray(nodes, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._desc.n_nodes):
            raise ConfigError(f"node index out of range 0..{self._desc.n_nodes - 1}")
        batch = self._inputs.shape[0]
        if self._script:
            s = self._script.popleft()
            samples = np.broadcast_to(s, (n_samples, *s.shape)) if s.ndim == 2 else s
            if samples.shape != (n_samples, batch, len(idx)):
                raise ConfigError(
                    f"scripted reading of shape {s.shape} does not fit a read of {n_samples} "
                    f"sample(s) x batch {batch} x {len(idx)} nodes")
        else:
            full = np.zeros((batch, self._desc.n_nodes))
            full[:, self._desc.input_nodes] = self._inputs
            if self._response is not None:
                full = np.asarray(self._response(self.state()), dtype=np.float64)
            samples = np.broadcast_to(full[:, idx], (n_samples, batch, len(idx)))
        t0 = self._clock_s
        stamps = t0 + self._sample_time_s * (1 + np.arange(n_samples * batch)).reshape(
            n_samples, batch)
        self._clock_s = float(stamps[-1, -1])
        dtype = np.dtype(self._desc.sample_dtype)
        return dv.NodeReading(samples_v=np.array(samples, dtype=dtype), timestamps_s=stamps,
                           flags=np.zeros(samples.shape, dtype=np.uint8), nodes=idx.copy())

    def state(self) -> MockState:
        """The present state, as a response function sees it."""
        inputs = self._inputs if self._inputs is not None else np.zeros(
            (0, len(self._desc.input_nodes)))
        return MockState(self._desc, inputs.copy(), self._nudge, self._g.copy(),
                         self._bias.copy())

    def read_conductances(self, edges: NDArray[np.integer] | None = None) -> Array:
        """The present conductances, S (exact)."""
        self._record("read_conductances", edges=edges)
        self._check_open()
        return self._g.copy() if edges is None else self._g[self._edges(edges)]

    def _edges(self, edges: NDArray[np.integer]) -> NDArray[np.int64]:
        e = np.asarray(edges, dtype=np.int64)
        if e.ndim != 1 or (e.size and (e.min() < 0 or e.max() >= self._desc.n_edges)):
            raise ConfigError(f"edge indices must be a 1-D array in 0..{self._desc.n_edges - 1}")
        if len(np.unique(e)) != len(e):
            raise ConfigError("edge indices must not repeat")
        return e

    def _apply(self, e: NDArray[np.int64], target: Array, req_p: NDArray[np.int64],
               req_d: Array) -> dv.ProgramResult:
        before = self._g[e].copy()
        after = np.clip(target, self._desc.g_min_s, self._desc.g_max_s)
        status = np.full(len(e), dv.ProgramStatus.OK, dtype=np.int8)
        status[target > self._desc.g_max_s] = dv.ProgramStatus.AT_MAX
        status[target < self._desc.g_min_s] = dv.ProgramStatus.AT_MIN
        status[after == before] = np.where(
            status[after == before] == dv.ProgramStatus.OK, dv.ProgramStatus.NO_CHANGE,
            status[after == before])
        self._g[e] = after
        applied = (np.rint((after - before) / self._step).astype(np.int64) if self._step > 0
                   else np.zeros(len(e), dtype=np.int64))
        self._pulses_used += int(np.abs(applied).sum())
        lim = self._desc.limits
        return dv.ProgramResult(edges=e, requested_pulses=req_p, applied_pulses=applied,
                             requested_delta_s=req_d, g_before_s=before, g_after_s=after.copy(),
                             status=status, pulse_amplitude_v=lim.pulse_amplitude_max_v,
                             pulse_width_s=lim.pulse_width_max_s)

    def program_deltas(self, edges: NDArray[np.integer] | None, delta_g_s: Array
                       ) -> dv.ProgramResult:
        """Change the conductances by ``delta_g_s`` exactly (clipped at the bounds, flagged)."""
        self._record("program_deltas", edges=edges, delta_g_s=delta_g_s)
        self._check_open()
        e = np.arange(self._desc.n_edges) if edges is None else self._edges(edges)
        d = np.asarray(delta_g_s, dtype=np.float64)
        if d.shape != e.shape or not np.all(np.isfinite(d)):
            raise ConfigError(f"delta_g_s must be {len(e)} finite values")
        req = (np.rint(d / self._step).astype(np.int64) if self._step > 0
               else np.zeros(len(e), dtype=np.int64))
        return self._apply(e, self._g[e] + d, req, d.copy())

    def program_pulses(self, edges: NDArray[np.integer], pulses: NDArray[np.integer]
                       ) -> dv.ProgramResult:
        """Move each edge by whole pulses of ``pulse_step_s`` (limits checked first)."""
        self._record("program_pulses", edges=edges, pulses=pulses)
        self._check_open()
        if self._step == 0:
            raise UnsupportedError("this mock board has no pulse granularity "
                                   "(pulse_step_s = 0); program deltas instead")
        e = self._edges(edges)
        p = np.asarray(pulses, dtype=np.int64)
        if p.shape != e.shape:
            raise ConfigError(f"pulses must have shape {e.shape}, got {p.shape}")
        check_pulse_budget(p, self._pulses_used, self._desc.limits)
        return self._apply(e, self._g[e] + p * self._step, p.copy(),
                           np.full(len(e), np.nan))

    def safe_state(self) -> None:
        """Sources to zero, nudge released (idempotent)."""
        self._record("safe_state")
        if self._inputs is not None:
            self._inputs = np.zeros_like(self._inputs)
        self._nudge = None
        self._bias = np.zeros_like(self._bias)

    @property
    def is_safe(self) -> bool:
        """True when every source is at zero and no nudge is applied."""
        inputs_off = self._inputs is None or not np.any(self._inputs)
        return inputs_off and self._nudge is None and not np.any(self._bias)

    def close(self) -> None:
        """Safe state, then refuse further commands (idempotent)."""
        if not self._closed:
            self.safe_state()
            self._record("close")
        self._closed = True


MOCK_OPTIONS = (
    Option("arch", "str", "layer sizes, inputs first", default="16-8-4"),
    Option("g_min_s", "float", "lowest conductance", unit="S", default=0.0, min=0.0),
    Option("g_max_s", "float", "highest conductance", unit="S", default=1.0, min=0.0,
           min_exclusive=True),
    Option("g_init_s", "float", "initial conductance of every edge (unset: mid-range)",
           unit="S", min=0.0),
    Option("pulse_step_s", "float", "conductance change of one pulse (0: deltas only)",
           unit="S", default=0.0, min=0.0),
    Option("resistive_nudge", "bool", "accept resistive nudges", default=True),
    Option("dtype", "str", "sample type", default="float64", choices=("float64", "float32")),
)
"""Options of the ``mock`` backend (``hwloop backends mock``)."""


@backend(MOCK_OPTIONS)
def make_mock_board(options: Mapping[str, Any], rng: np.random.Generator) -> MockBoard:
    """A scriptable board without physics: records every call, serves scripted readings."""
    del rng  # the mock draws nothing
    sizes = parse_arch(str(options["arch"]))
    lo, hi = float(options["g_min_s"]), float(options["g_max_s"])
    if not hi > lo:
        raise ConfigError(f"backend mock: g_max_s = {hi:g} S must be above g_min_s = {lo:g} S")
    g0 = options.get("g_init_s")
    g_init = 0.5 * (lo + hi) if g0 is None else float(g0)
    if not lo <= g_init <= hi:
        raise ConfigError(f"backend mock: g_init_s = {g_init:g} S must lie in [{lo:g}, {hi:g}] S")
    desc = describe_layered(
        sizes, name="mock board", backend="mock", g_min_s=lo, g_max_s=hi,
        limits=dv.SafetyLimits(v_input_max_v=10.0, i_nudge_max_a=1.0, beta_max_s=10.0),
        pulse_step_s=float(options["pulse_step_s"]),
        sample_dtype="<f4" if options["dtype"] == "float32" else "<f8",
        deterministic=True, supports_resistive_nudge=bool(options["resistive_nudge"]),
        info={"mock": True},
    )
    return MockBoard(desc, np.full(desc.n_edges, g_init),
                     pulse_step_s=float(options["pulse_step_s"]))


__all__ = ["MockBoard", "MockCall", "MockState", "make_mock_board"]
