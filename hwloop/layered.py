"""The node and edge layout of a layered DRN-style board, shared by every backend.

A layered board (the deep resistive networks of docs/physics.md §2) has the input
nodes, then each hidden layer, then the output nodes, then ground (last). Edges
run layer after layer, each ``(n_l, n_{l+1})`` block row-major (see
:class:`hwloop.device.LayerBlock`). Hidden nodes are diode-clamped: the first
``n - n // 2`` of a layer to ``v >= 0``, the rest to ``v <= 0``. Every hidden and
output node carries a bias current source.

The emulator (``simulated_device``) and the real board (``instruments``) both
build their :class:`~hwloop.device.BoardDescription` here, so a board file and
its emulator twin describe the same network node for node and edge for edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.device import BoardDescription, Clamp, LayerBlock, NodeRole, SafetyLimits
from hwloop.errors import ConfigError

__all__ = [
    "LayerSizes",
    "default_g_scale_s",
    "dense_block",
    "describe_layered",
    "layer_starts",
    "layered_nodes",
    "n_excitatory",
    "parse_arch",
]


class LayerSizes:
    """Node counts of a layered network from its ``sizes`` (inputs, hidden..., outputs).

    A mixin: the class (often a dataclass) provides the ``sizes`` attribute.
    """

    sizes: tuple[int, ...]

    @property
    def n_inputs(self) -> int:
        """Number of input nodes."""
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        """Number of output nodes."""
        return self.sizes[-1]

    @property
    def n_free(self) -> int:
        """Number of free (hidden and output) nodes."""
        return sum(self.sizes[1:])


def parse_arch(text: str) -> tuple[int, ...]:
    """Parse ``"1568-100-10"`` into layer sizes (input nodes, hidden..., outputs).

    Raises:
        ConfigError: fewer than two layers, or a size that is not a positive integer.
    """
    try:
        sizes = tuple(int(s) for s in str(text).strip().split("-"))
    except ValueError:
        raise ConfigError(
            f"architecture {text!r} is not of the form 1568-100-10 (sizes separated by '-')"
        ) from None
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ConfigError(f"architecture {text!r} needs at least two positive layer sizes")
    return sizes


def n_excitatory(n: int) -> int:
    """Number of nodes clamped to ``v >= 0`` in a hidden layer of ``n`` nodes."""
    return n - n // 2


def default_g_scale_s(
    sizes: Sequence[int], g_min_s: float, g_max_s: float, weight_gain: float = 1.0
) -> float:
    """The conductance standing for 1 simulation unit on devices in ``[g_min_s, g_max_s]``, S.

    The widest published initial range, ``[0, weight_gain / sqrt(smallest fan-in)]``,
    fills half the device range (the emulator's rule, DR-9); 1.0 for unbounded
    (ideal) devices.
    """
    if not math.isfinite(g_max_s):
        return 1.0
    s_max = float(weight_gain) / math.sqrt(min(sizes[:-1]))
    return 0.5 * (g_max_s - g_min_s) / s_max


def layered_nodes(sizes: Sequence[int]) -> tuple[list[str], list[NodeRole], list[Clamp]]:
    """Names, roles and clamps of every node of a layered board with layer ``sizes``.

    Order: inputs ``in0..``, hidden layers ``h1_0..`` (the first :func:`n_excitatory`
    of a layer clamped to ``v >= 0``, the rest to ``v <= 0``), outputs ``out0..``, ``gnd``.
    """
    names: list[str] = [f"in{i}" for i in range(sizes[0])]
    roles: list[NodeRole] = [NodeRole.INPUT] * sizes[0]
    clamps: list[Clamp] = [Clamp.NONE] * sizes[0]
    for k, n in enumerate(sizes[1:-1], start=1):
        h = n_excitatory(n)
        names += [f"h{k}_{i}" for i in range(n)]
        roles += [NodeRole.HIDDEN] * n
        clamps += [Clamp.NON_NEGATIVE] * h + [Clamp.NON_POSITIVE] * (n - h)
    names += [f"out{i}" for i in range(sizes[-1])]
    roles += [NodeRole.OUTPUT] * sizes[-1]
    clamps += [Clamp.NONE] * sizes[-1]
    names.append("gnd")
    roles.append(NodeRole.GROUND)
    clamps.append(Clamp.NONE)
    return names, roles, clamps


def layer_starts(sizes: Sequence[int]) -> NDArray[np.int64]:
    """Index of the first node of each layer, then the total: ``(len(sizes) + 1,)``."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def dense_block(
    starts: NDArray[np.int64],
    src_layer: int,
    dst_layer: int,
    edge_offset: int,
    dtype: type[np.signedinteger[Any]],
) -> tuple[LayerBlock, NDArray[np.signedinteger[Any]]]:
    """The dense block from layer ``src_layer`` to ``dst_layer`` and its edges.

    Returns:
        The :class:`LayerBlock` (edges from ``edge_offset`` on) and its
        ``(n_src * n_dst, 2)`` ``(src, dst)`` node pairs of ``dtype``, row-major.
    """
    src = np.arange(starts[src_layer], starts[src_layer + 1], dtype=np.int64)
    dst = np.arange(starts[dst_layer], starts[dst_layer + 1], dtype=np.int64)
    pairs = np.empty((len(src) * len(dst), 2), dtype=dtype)
    pairs[:, 0] = np.repeat(src, len(dst))
    pairs[:, 1] = np.tile(dst, len(src))
    return LayerBlock(src=src, dst=dst, edge_offset=edge_offset), pairs


def describe_layered(
    sizes: Sequence[int],
    *,
    name: str,
    backend: str,
    g_min_s: float,
    g_max_s: float,
    limits: SafetyLimits,
    v_read_range_v: float = math.inf,
    pulse_step_s: float = 0.0,
    g_scale_s: float = 1.0,
    with_biases: bool = True,
    info: dict[str, object] | None = None,
    sample_dtype: str = "<f8",
    deterministic: bool = False,
    supports_resistive_nudge: bool = True,
) -> BoardDescription:
    """The description of a layered board with layer ``sizes``.

    Args:
        sizes: layer sizes, inputs first, outputs last.
        name: board name.
        backend: backend name.
        g_min_s: lowest programmable conductance, S.
        g_max_s: highest programmable conductance, S.
        limits: safety limits.
        v_read_range_v: node-voltage converter full scale, V.
        pulse_step_s: nominal conductance change per pulse, S (0: delta-programmed).
        g_scale_s: conductance standing for 1 simulation unit, S.
        with_biases: every hidden and output node carries a bias source (else none).
        info: free-form metadata.
        sample_dtype: dtype of the node-voltage samples (``"<f4"`` or ``"<f8"``).
        deterministic: reads carry no noise.
        supports_resistive_nudge: the board applies resistive nudges.
    """
    sizes = tuple(int(s) for s in sizes)
    names, roles, clamps = layered_nodes(sizes)
    starts = layer_starts(sizes)
    blocks = []
    edge_parts = []
    off = 0
    for k in range(len(sizes) - 1):
        block, pairs = dense_block(starts, k, k + 1, off, np.int32)
        blocks.append(block)
        edge_parts.append(pairs)
        off += len(pairs)
    bias_nodes = (
        np.arange(starts[1], starts[-1], dtype=np.int64)
        if with_biases
        else np.zeros(0, dtype=np.int64)
    )
    return BoardDescription(
        name=name,
        backend=backend,
        node_names=tuple(names),
        node_roles=tuple(roles),
        node_clamps=tuple(clamps),
        edge_nodes=np.concatenate(edge_parts),
        g_min_s=g_min_s,
        g_max_s=g_max_s,
        limits=limits,
        supports_complex_nudge=False,
        layers=tuple(blocks),
        bias_nodes=bias_nodes,
        v_read_range_v=v_read_range_v,
        pulse_step_s=pulse_step_s,
        g_scale_s=g_scale_s,
        sample_dtype=sample_dtype,
        deterministic=deterministic,
        supports_resistive_nudge=supports_resistive_nudge,
        info=dict(info or {}),
    )
