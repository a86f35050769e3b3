"""The Device contract: small typed protocols and frozen result types.

Every backend (the emulator in ``simulated_device``, the real board in
``instruments``, the replay board in ``hwloop``) implements the same protocols,
so protocol code in ``protocols`` runs unchanged on any of them.

Conventions
-----------
* SI units everywhere: volts (``_v``), amperes (``_a``), siemens (``_s`` after a
  conductance name such as ``g_min_s``), seconds (``_s`` after a time such as
  ``timestamps_s``). The emulator identifies the dimensionless units of the
  published DRN simulations with volts and siemens (docs/physics.md §7.1:
  the equations are homogeneous, so any scale maps onto a bench).
* Everything that depends on the example is batched: arrays carry a leading
  ``batch`` axis. The emulator solves a batch at once; a real board loops over
  the examples inside each call.
* Node and edge indices refer to :attr:`BoardDescription.node_names` and to the
  rows of :attr:`BoardDescription.edge_nodes`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import ConfigError

FloatArray = NDArray[np.floating]
IntArray = NDArray[np.integer]


def index_or_slice(idx: IntArray) -> slice | IntArray:
    """A contiguous ascending index array as a slice; any other array unchanged."""
    idx = np.asarray(idx)
    if idx.size and int(idx[-1]) - int(idx[0]) + 1 == idx.size and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _frozen(a: IntArray) -> IntArray:
    a.setflags(write=False)
    return a


class NodeRole(enum.StrEnum):
    """What a node of the board is for."""

    INPUT = "input"
    """Driven by a voltage source (an input of the network)."""
    HIDDEN = "hidden"
    """Free node, usually clamped by a diode (an activation)."""
    OUTPUT = "output"
    """Free node whose voltage is the network's prediction; nudges act here."""
    GROUND = "ground"
    """The 0 V reference."""


class Clamp(enum.StrEnum):
    """Diode clamp of a free node against ground (the DRN activations)."""

    NONE = "none"
    NON_NEGATIVE = "ge0"
    """Ideal diode from ground (anode) to the node (cathode): v >= 0."""
    NON_POSITIVE = "le0"
    """Ideal diode from the node (anode) to ground (cathode): v <= 0."""


class SampleFlag(enum.IntFlag):
    """Per-sample status bits of a node-voltage read."""

    OK = 0
    OVERRANGE = 1
    """The value was outside the converter's range (the sample is clamped to it)."""
    COMPLIANCE = 2
    """A source hit its current compliance while the sample was taken."""


@dataclass(frozen=True)
class SafetyLimits:
    """Limits checked before anything is applied to a board.

    A request beyond any limit raises :class:`hwloop.errors.LimitError` and
    applies nothing: limits reject, they never clip.

    Attributes:
        v_input_max_v: largest |voltage| an input source may be set to, V (> 0).
        i_nudge_max_a: largest |current| a current nudge may inject, A (> 0).
        beta_max_s: largest |beta| of a resistive-pull nudge, S (> 0).
        v_target_max_v: largest |target voltage| of a resistive-pull nudge, V (> 0).
        pulse_amplitude_max_v: largest |programming pulse amplitude|, V (> 0).
        pulse_width_max_s: longest programming pulse, s (> 0).
        max_pulses_per_call: most pulses one programming call may apply to one edge (>= 1).
        max_pulses_per_run: most pulses over the life of the board object (>= 1).
        compliance_a: current compliance of the sources, A (> 0).
    """

    v_input_max_v: float = 10.0
    i_nudge_max_a: float = 1.0e-3
    beta_max_s: float = 1.0e-3
    v_target_max_v: float = 10.0
    pulse_amplitude_max_v: float = 3.0
    pulse_width_max_s: float = 1.0e-3
    max_pulses_per_call: int = 1000
    max_pulses_per_run: int = 10**12
    compliance_a: float = 1.0e-2

    def __post_init__(self) -> None:
        for name in (
            "v_input_max_v",
            "i_nudge_max_a",
            "beta_max_s",
            "v_target_max_v",
            "pulse_amplitude_max_v",
            "pulse_width_max_s",
            "compliance_a",
        ):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"safety limit {name}={value!r} must be a positive number")
        if self.max_pulses_per_call < 1 or self.max_pulses_per_run < 1:
            raise ConfigError("safety limits max_pulses_per_call/run must be >= 1")


@dataclass(frozen=True, eq=False)
class LayerBlock:
    """A dense block of edges between two consecutive layers of a layered board.

    Edges ``edge_offset .. edge_offset + len(src) * len(dst)`` connect
    ``src[i]`` to ``dst[j]`` in row-major order (edge ``edge_offset + i *
    len(dst) + j``), so a block's conductances reshape to a ``(len(src),
    len(dst))`` matrix without copying.
    """

    src: IntArray
    dst: IntArray
    edge_offset: int

    @property
    def n_edges(self) -> int:
        """Number of edges in the block."""
        return int(len(self.src) * len(self.dst))

    @functools.cached_property
    def src_index(self) -> slice | IntArray:
        """``src`` as a slice when it is a contiguous range (views instead of gathers)."""
        return index_or_slice(self.src)

    @functools.cached_property
    def dst_index(self) -> slice | IntArray:
        """``dst`` as a slice when it is a contiguous range."""
        return index_or_slice(self.dst)


@dataclass(frozen=True, eq=False)
class BoardDescription:
    """Static description of a board: topology, bounds, limits, capabilities.

    Attributes:
        name: human-readable board name.
        backend: name of the backend entry point that made the board.
        node_names: one name per node.
        node_roles: one :class:`NodeRole` per node.
        node_clamps: one :class:`Clamp` per node (``NONE`` for inputs and outputs).
        edge_nodes: ``(n_edges, 2)`` endpoint node indices of each conductive crosspoint.
        g_min_s: lowest programmable conductance, S (>= 0).
        g_max_s: highest programmable conductance, S (> g_min_s; may be ``inf``).
        limits: the board's safety limits.
        supports_complex_nudge: True when nudges may be complex (holomorphic emulator).
        layers: dense layer blocks when the board is layered (``None`` otherwise).
        bias_nodes: nodes that carry a trainable bias current source.
        v_read_range_v: full-scale range of the node-voltage converter, V (``inf``: none).
        pulse_step_s: nominal conductance change of one programming pulse at
            mid-range, S; 0 when the board has no pulse granularity and is programmed
            by conductance deltas only (the ideal emulator).
        g_scale_s: the conductance that stands for 1 in the published (dimensionless)
            simulation units, S. The DRN equations are homogeneous (docs/physics.md §7.1),
            so published hyper-parameters carry over with ``beta * g_scale_s`` and
            learning rates ``* g_scale_s**2``; 1.0 for the ideal emulator.
        sample_dtype: exact NumPy dtype string of the node-voltage samples the board
            returns (``"<f4"`` or ``"<f8"``); a session file stores samples in it.
        deterministic: True when reads carry no noise (one read of a phase is exact;
            repeat reads give the same value), e.g. a noise-free emulator.
        supports_resistive_nudge: True when the board can apply a
            :class:`ResistiveNudge` (switched pull conductances to target voltages);
            boards with current sources on their outputs take :class:`CurrentNudge` only.
        info: free-form JSON-able metadata (instrument identities, model, firmware...).
    """

    name: str
    backend: str
    node_names: tuple[str, ...]
    node_roles: tuple[NodeRole, ...]
    node_clamps: tuple[Clamp, ...]
    edge_nodes: IntArray
    g_min_s: float
    g_max_s: float
    limits: SafetyLimits
    supports_complex_nudge: bool = False
    layers: tuple[LayerBlock, ...] | None = None
    bias_nodes: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    v_read_range_v: float = float("inf")
    pulse_step_s: float = 0.0
    g_scale_s: float = 1.0
    sample_dtype: str = "<f8"
    deterministic: bool = False
    supports_resistive_nudge: bool = True
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sample_dtype not in ("<f4", "<f8"):
            raise ConfigError(
                f"board description: sample_dtype {self.sample_dtype!r} must be '<f4' or '<f8'"
            )
        n = len(self.node_names)
        if len(self.node_roles) != n or len(self.node_clamps) != n:
            raise ConfigError("board description: node_names, node_roles, node_clamps differ")
        edges = np.asarray(self.edge_nodes)
        if edges.ndim != 2 or edges.shape[1] != 2:
            raise ConfigError("board description: edge_nodes must have shape (n_edges, 2)")
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ConfigError("board description: an edge refers to a node that does not exist")
        if not (self.g_min_s >= 0 and self.g_max_s > self.g_min_s):
            raise ConfigError(
                "board description: need 0 <= g_min_s < g_max_s, "
                f"got {self.g_min_s}, {self.g_max_s}"
            )

    @functools.cached_property
    def _role_codes(self) -> NDArray[np.int8]:
        order = list(NodeRole)
        return np.array([order.index(r) for r in self.node_roles], dtype=np.int8)

    def nodes_with_role(self, role: NodeRole) -> IntArray:
        """Indices of the nodes with ``role``, in board order (a new array)."""
        return np.flatnonzero(self._role_codes == list(NodeRole).index(role)).astype(np.int64)

    @functools.cached_property
    def input_nodes(self) -> IntArray:
        """Indices of the input nodes (voltage-source driven); do not modify."""
        return _frozen(self.nodes_with_role(NodeRole.INPUT))

    @functools.cached_property
    def hidden_nodes(self) -> IntArray:
        """Indices of the hidden nodes; do not modify."""
        return _frozen(self.nodes_with_role(NodeRole.HIDDEN))

    @functools.cached_property
    def output_nodes(self) -> IntArray:
        """Indices of the output nodes; do not modify."""
        return _frozen(self.nodes_with_role(NodeRole.OUTPUT))

    @functools.cached_property
    def input_index(self) -> slice | IntArray:
        """:attr:`input_nodes` as a slice when contiguous."""
        return index_or_slice(self.input_nodes)

    @functools.cached_property
    def free_index(self) -> slice | IntArray:
        """:attr:`free_nodes` as a slice when contiguous."""
        return index_or_slice(self.free_nodes)

    @functools.cached_property
    def input_mask(self) -> NDArray[np.bool_]:
        """``(n_nodes,)`` True at input nodes; do not modify."""
        m = np.zeros(self.n_nodes, dtype=bool)
        m[self.input_nodes] = True
        m.setflags(write=False)
        return m

    @functools.cached_property
    def free_nodes(self) -> IntArray:
        """Hidden and output nodes, in board order: the nodes a read returns by default."""
        return _frozen(np.union1d(self.hidden_nodes, self.output_nodes).astype(np.int64))

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.node_names)

    @property
    def n_edges(self) -> int:
        """Number of conductive crosspoints."""
        return int(np.asarray(self.edge_nodes).shape[0])

    def summary(self) -> dict[str, object]:
        """A JSON-able summary (counts, bounds, limits, capabilities)."""
        return {
            "name": self.name,
            "backend": self.backend,
            "n_nodes": self.n_nodes,
            "n_inputs": len(self.input_nodes),
            "n_hidden": len(self.hidden_nodes),
            "n_outputs": len(self.output_nodes),
            "n_edges": self.n_edges,
            "n_biases": len(self.bias_nodes),
            "layered": self.layers is not None,
            "g_min_s": self.g_min_s,
            "g_max_s": self.g_max_s,
            "supports_complex_nudge": self.supports_complex_nudge,
            "pulse_step_s": self.pulse_step_s,
            "g_scale_s": self.g_scale_s,
            "limits": {k: getattr(self.limits, k) for k in self.limits.__dataclass_fields__},
            "info": self.info,
        }


@dataclass(frozen=True, eq=False)
class CurrentNudge:
    """Nudge by currents injected into the output nodes.

    Attributes:
        currents_a: ``(batch, n_outputs)`` current into each output node, A.
            Complex values only on backends with ``supports_complex_nudge``.
    """

    currents_a: NDArray[np.floating] | NDArray[np.complexfloating]


@dataclass(frozen=True, eq=False)
class ResistiveNudge:
    """Nudge by a conductance ``beta_s`` from every output node to a target voltage.

    Adds ``beta * C`` with ``C = 1/2 sum_o (v_o - y_o)^2`` to the circuit energy
    (docs/physics.md §3.2). Exact for beta >= 0 with a physical resistor; a negative
    (or complex) beta is only possible on the emulator or with active circuitry.

    Attributes:
        beta_s: pull conductance, S (real, or complex on capable backends).
        targets_v: ``(batch, n_outputs)`` target voltages, V.
    """

    beta_s: float | complex
    targets_v: FloatArray


Nudge = CurrentNudge | ResistiveNudge


@dataclass(frozen=True, eq=False)
class NodeReading:
    """All raw samples of one node-voltage read.

    Attributes:
        samples_v: ``(n_samples, batch, n_nodes)`` every raw sample, V.
        timestamps_s: ``(n_samples, batch)`` time of each sample, s since the
            board object was created (monotonic clock; the emulator's is simulated).
        flags: ``(n_samples, batch, n_nodes)`` :class:`SampleFlag` bits.
        nodes: ``(n_nodes,)`` board indices of the nodes read.
    """

    samples_v: NDArray[np.floating] | NDArray[np.complexfloating]
    timestamps_s: FloatArray
    flags: NDArray[np.uint8]
    nodes: IntArray

    @property
    def n_samples(self) -> int:
        """Number of repeat samples."""
        return int(self.samples_v.shape[0])

    @property
    def mean_v(self) -> NDArray[np.floating] | NDArray[np.complexfloating]:
        """``(batch, n_nodes)`` sample mean, V."""
        return np.asarray(self.samples_v.mean(axis=0))

    @property
    def sem_v(self) -> FloatArray:
        """``(batch, n_nodes)`` standard error of the mean, V (0 for one sample)."""
        n = self.n_samples
        if n < 2:
            return np.zeros(self.samples_v.shape[1:], dtype=np.float64)
        s = self.samples_v
        if np.iscomplexobj(s):
            var = s.real.var(axis=0, ddof=1) + s.imag.var(axis=0, ddof=1)
        else:
            var = s.var(axis=0, ddof=1)
        return np.asarray(np.sqrt(var / n))

    @property
    def any_flagged(self) -> bool:
        """True if any sample carries a status flag."""
        return bool(np.any(self.flags))


class ProgramStatus(enum.IntEnum):
    """Outcome of programming one edge."""

    OK = 0
    AT_MAX = 1
    """The device reached its upper bound: less change was done than requested."""
    AT_MIN = 2
    """The device reached its lower bound: less change was done than requested."""
    NO_CHANGE = 3
    """The request rounded to zero pulses (below the device's step granularity)."""


@dataclass(frozen=True, eq=False)
class ProgramResult:
    """What a programming call did, edge by edge.

    Attributes:
        edges: ``(k,)`` edge indices programmed, or ``None`` for a dense call that
            addressed every edge in board order (``k = n_edges``).
        requested_pulses: ``(k,)`` signed pulse counts asked for (derived from the
            requested deltas in delta mode).
        applied_pulses: ``(k,)`` signed pulse counts actually applied.
        requested_delta_s: ``(k,)`` conductance change asked for, S (NaN in pulse mode).
        g_before_s: ``(k,)`` conductance before, S (NaN when the board cannot know;
            empty for a dense call, where only statuses come back).
        g_after_s: ``(k,)`` conductance after, S (NaN when unknown; empty for a dense call).
        status: ``(k,)`` :class:`ProgramStatus` codes.
        pulse_amplitude_v: amplitude of the pulses, V (signed by polarity per pulse).
        pulse_width_s: width of the pulses, s.
    """

    edges: IntArray | None
    requested_pulses: IntArray
    applied_pulses: IntArray
    requested_delta_s: FloatArray
    g_before_s: FloatArray
    g_after_s: FloatArray
    status: NDArray[np.int8]
    pulse_amplitude_v: float
    pulse_width_s: float

    @property
    def total_pulses(self) -> int:
        """Total number of pulses applied."""
        return int(np.abs(self.applied_pulses).sum())


# ---------------------------------------------------------------------------
# The protocols. A backend implements all of them; code asks only for what it uses.
# ---------------------------------------------------------------------------


@runtime_checkable
class Describable(Protocol):
    """Knows its static description."""

    def describe(self) -> BoardDescription:
        """Return the board's description (cheap; the same object every call)."""
        ...


@runtime_checkable
class Biasable(Protocol):
    """Sources that set the operating point: inputs, nudges, bias currents."""

    def apply_inputs(self, v_inputs: FloatArray) -> None:
        """Set the input sources.

        Args:
            v_inputs: ``(batch, n_inputs)`` voltages, V, within
                ``limits.v_input_max_v``. The batch size set here is the batch of
                every following read.

        Raises:
            LimitError: a value exceeds the limit; nothing was applied.
        """
        ...

    def apply_nudge(self, nudge: Nudge | None) -> None:
        """Apply a nudge to the outputs (``None`` releases it).

        Raises:
            LimitError: beyond ``i_nudge_max_a`` / ``beta_max_s``; nothing applied.
            UnsupportedError: complex nudge on a backend that cannot do it.
        """
        ...

    def set_bias_currents(self, i_bias_a: FloatArray) -> None:
        """Set the bias current sources, A, one per ``bias_nodes`` entry."""
        ...

    def read_bias_currents(self) -> FloatArray:
        """Return the bias currents as set, A."""
        ...


@runtime_checkable
class Settleable(Protocol):
    """Waits for the network to reach its steady state."""

    def settle(self, settle_time_s: float | None = None) -> None:
        """Wait until the network has settled (bench: a wait; emulator: a solve).

        Args:
            settle_time_s: time to wait, s (>= 0); ``None`` uses the board default.
        """
        ...


@runtime_checkable
class Readable(Protocol):
    """Reads node voltages with repeat sampling."""

    def read_nodes(self, n_samples: int = 1, nodes: IntArray | None = None) -> NodeReading:
        """Read node voltages ``n_samples`` times per example.

        Args:
            n_samples: repeat samples per example (>= 1).
            nodes: board node indices; ``None`` reads all hidden and output nodes.
        """
        ...


@runtime_checkable
class ConductanceReadable(Protocol):
    """Reads the conductances of the crosspoints."""

    def read_conductances(self, edges: IntArray | None = None) -> FloatArray:
        """Return one read of the conductances, S (``None``: all edges)."""
        ...


@runtime_checkable
class Programmable(Protocol):
    """Changes conductances with programming pulses."""

    def program_pulses(self, edges: IntArray, pulses: IntArray) -> ProgramResult:
        """Apply signed pulse counts (+ potentiates, - depresses) to ``edges``.

        Raises:
            LimitError: more pulses than ``max_pulses_per_call`` or than the run's
                remaining budget; nothing was applied.
            UnsupportedError: the board has no pulse granularity
                (``pulse_step_s == 0``); program deltas instead.
        """
        ...

    def program_deltas(self, edges: IntArray | None, delta_g_s: FloatArray) -> ProgramResult:
        """Request conductance changes, S, and return what was done.

        The board converts them to pulses through its nominal update model
        (open loop); a board without pulse granularity applies them directly.
        ``edges=None`` addresses every edge in board order (``delta_g_s`` then
        has one value per edge), which lets a board use a dense fast path.
        """
        ...


@runtime_checkable
class SafeStateful(Protocol):
    """Can put the hardware in its safe state."""

    def safe_state(self) -> None:
        """Zero all sources, release nudges, stop pulsing.

        Idempotent; never raises for a board that is already safe.
        """
        ...

    @property
    def is_safe(self) -> bool:
        """True when the board is in its safe state."""
        ...


@runtime_checkable
class Closable(Protocol):
    """Owns resources (instrument sessions, ports) that must be released."""

    def close(self) -> None:
        """Go to the safe state and release every resource. Idempotent."""
        ...


@runtime_checkable
class Device(
    Describable,
    Biasable,
    Settleable,
    Readable,
    ConductanceReadable,
    Programmable,
    SafeStateful,
    Closable,
    Protocol,
):
    """Everything a training protocol needs from a board."""


@runtime_checkable
class Checkpointable(Protocol):
    """A backend whose whole state can be saved and restored exactly (the emulator).

    Real boards do not implement it: after a crash their conductances are re-read,
    since the device, not the log, is the truth.
    """

    def checkpoint_state(self, max_batch: int) -> dict[str, NDArray[Any]]:
        """Fixed-shape arrays (names start with ``board/``) holding the full state."""
        ...

    def restore_state(self, state: Mapping[str, NDArray[Any]]) -> None:
        """Restore :meth:`checkpoint_state` on a board built with the same options and seed."""
        ...


def check_inputs_within_limits(v_inputs: FloatArray, limits: SafetyLimits, n_inputs: int) -> None:
    """Validate input voltages against shape and limits before they are applied.

    Raises:
        ConfigError: wrong shape or non-finite values.
        LimitError: a value beyond ``limits.v_input_max_v``.
    """
    from hwloop.errors import LimitError

    v = np.asarray(v_inputs)
    if v.ndim != 2 or v.shape[1] != n_inputs:
        raise ConfigError(f"input voltages must have shape (batch, {n_inputs}), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ConfigError("input voltages contain NaN or inf; pass finite values")
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    if peak > limits.v_input_max_v:
        raise LimitError(
            f"input voltage {peak:.6g} V exceeds the limit v_input_max_v="
            f"{limits.v_input_max_v:.6g} V; lower the input gain or raise the limit"
        )


def check_biases_within_limits(
    i_bias_a: FloatArray, limits: SafetyLimits, n_biases: int
) -> NDArray[np.float64]:
    """Validate bias currents (A) against shape and ``i_nudge_max_a``; return them as float64.

    Raises:
        ConfigError: wrong shape or non-finite values.
        LimitError: a current beyond ``limits.i_nudge_max_a``.
    """
    from hwloop.errors import LimitError

    b = np.asarray(i_bias_a, dtype=np.float64)
    if b.shape != (n_biases,):
        raise ConfigError(f"bias currents must have shape ({n_biases},), got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ConfigError("bias currents contain NaN or inf")
    peak = float(np.max(np.abs(b), initial=0.0))
    if peak > limits.i_nudge_max_a:
        raise LimitError(
            f"bias current {peak:.6g} A exceeds i_nudge_max_a={limits.i_nudge_max_a:.6g} A"
        )
    return b


def check_nudge_for_inputs(
    nudge: Nudge,
    limits: SafetyLimits,
    v_inputs: NDArray[Any] | None,
    n_outputs: int,
    complex_ok: bool,
) -> None:
    """:func:`check_nudge_within_limits` for the batch of the applied inputs.

    Args:
        nudge: the nudge to check.
        limits: the board's safety limits.
        v_inputs: the applied ``(batch, n_inputs)`` input voltages, V (``None``: none yet).
        n_outputs: number of output nodes.
        complex_ok: the board takes complex-valued nudges.

    Raises:
        ConfigError: no inputs applied yet (the batch size is unknown), or as
            :func:`check_nudge_within_limits`.
    """
    if v_inputs is None:
        raise ConfigError("apply inputs before applying a nudge (the batch size is unknown)")
    check_nudge_within_limits(nudge, limits, v_inputs.shape[0], n_outputs, complex_ok)


def check_nudge_within_limits(
    nudge: Nudge, limits: SafetyLimits, batch: int, n_outputs: int, complex_ok: bool
) -> None:
    """Validate a nudge against shape, capability and limits before it is applied.

    Raises:
        ConfigError: wrong shape or non-finite values.
        UnsupportedError: complex values on a backend without complex nudges.
        LimitError: beyond ``i_nudge_max_a``, ``beta_max_s`` or ``v_target_max_v``.
    """
    from hwloop.errors import LimitError, UnsupportedError

    if isinstance(nudge, CurrentNudge):
        arr = np.asarray(nudge.currents_a)
        what = "nudge currents"
        values = [arr]
    elif isinstance(nudge, ResistiveNudge):
        arr = np.asarray(nudge.targets_v)
        what = "nudge targets"
        values = [arr, np.asarray(nudge.beta_s)]
    else:
        raise ConfigError(f"unknown nudge type {type(nudge).__name__}")
    if arr.shape != (batch, n_outputs):
        raise ConfigError(f"{what} must have shape ({batch}, {n_outputs}), got {arr.shape}")
    for a in values:
        if np.iscomplexobj(a) and not complex_ok:
            raise UnsupportedError(
                "this backend does not support complex-valued nudges; use a real beta "
                "or a holomorphic emulator backend"
            )
        if not np.all(np.isfinite(a)):
            raise ConfigError(f"{what} contain NaN or inf; pass finite values")
    if isinstance(nudge, CurrentNudge):
        peak = float(np.max(np.abs(arr))) if arr.size else 0.0
        if peak > limits.i_nudge_max_a:
            raise LimitError(
                f"nudge current {peak:.6g} A exceeds i_nudge_max_a={limits.i_nudge_max_a:.6g} A;"
                " lower beta or raise the limit"
            )
    else:
        assert isinstance(nudge, ResistiveNudge)
        if abs(nudge.beta_s) > limits.beta_max_s:
            raise LimitError(
                f"|beta| = {abs(nudge.beta_s):.6g} S exceeds beta_max_s={limits.beta_max_s:.6g} S;"
                " lower beta or raise the limit"
            )
        peak = float(np.max(np.abs(arr))) if arr.size else 0.0
        if peak > limits.v_target_max_v:
            raise LimitError(
                f"nudge target {peak:.6g} V exceeds v_target_max_v={limits.v_target_max_v:.6g} V"
            )
