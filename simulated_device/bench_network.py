"""One physical network on a bench, as the virtual instruments see it.

The virtual serial board and the virtual SCPI bench both sit on a
:class:`BenchNetwork`: an :class:`~simulated_device.board.EmulatedBoard` driven
one example at a time, the way instruments drive a real board. Source levels
(input voltages, nudge and bias currents) are held here; reading a node solves
the network under the present levels (cached until a level or a conductance
changes) and draws the read noise of the device model; pulses go to the device
model's pulse law.

Units: V, A, S, s. Node indices are the board's (see ``describe()``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.device import BoardDescription, CurrentNudge, NodeReading
from hwloop.errors import ConfigError
from simulated_device.board import EmulatedBoard, make_emulated_board

FloatArray = NDArray[np.float64]


class BenchNetwork:
    """An emulated network with instrument-style, one-example source levels.

    Args:
        options: emulator options (``arch``, ``preset``, ``read_noise_v``, ...; see
            :func:`simulated_device.board.make_emulated_board`).
        rng: the generator of the virtual bench (device draws and read noise).
    """

    def __init__(self, options: dict[str, Any], rng: np.random.Generator) -> None:
        self.board: EmulatedBoard = make_emulated_board(options, rng)
        self.desc: BoardDescription = self.board.describe()
        n_in, n_out = len(self.desc.input_nodes), len(self.desc.output_nodes)
        self.inputs_v = np.zeros(n_in)
        self.nudge_a = np.zeros(n_out)
        self.bias_a = np.zeros(len(self.desc.bias_nodes))
        self._applied = False

    # ------------------------------------------------------------------ source levels
    def set_inputs(self, idx: NDArray[np.integer], volts: FloatArray) -> None:
        """Set input sources ``idx`` (0-based positions among the input nodes), V."""
        self.inputs_v[np.asarray(idx)] = volts
        self._applied = False

    def set_nudge_currents(self, idx: NDArray[np.integer], amps: FloatArray) -> None:
        """Set the current injected into output nodes ``idx`` (positions), A."""
        self.nudge_a[np.asarray(idx)] = amps
        self._applied = False

    def set_bias_currents(self, idx: NDArray[np.integer], amps: FloatArray) -> None:
        """Set bias current sources ``idx`` (positions among the bias nodes), A."""
        self.bias_a[np.asarray(idx)] = amps
        self._applied = False

    def all_off(self) -> None:
        """Every source to 0 (the safe state)."""
        self.inputs_v[:] = 0.0
        self.nudge_a[:] = 0.0
        self.bias_a[:] = 0.0
        self._applied = False

    @property
    def energised(self) -> bool:
        """True when any source level is nonzero."""
        return bool(np.any(self.inputs_v) or np.any(self.nudge_a) or np.any(self.bias_a))

    # ------------------------------------------------------------------ measurements
    def _apply(self) -> None:
        if self._applied:
            return
        b = self.board
        b.set_bias_currents(self.bias_a)
        b.apply_inputs(self.inputs_v[None, :])
        b.apply_nudge(CurrentNudge(self.nudge_a[None, :]) if np.any(self.nudge_a) else None)
        b.settle()
        self._applied = True

    def read_nodes(self, nodes: NDArray[np.integer], n_samples: int) -> NodeReading:
        """Read board nodes ``nodes`` ``n_samples`` times under the present levels."""
        self._apply()
        return self.board.read_nodes(n_samples, nodes=np.asarray(nodes, dtype=np.int64))

    def true_voltages(self) -> FloatArray:
        """``(n_nodes,)`` noise-free node voltages under the present levels, V."""
        self._apply()
        return np.asarray(self.board.node_voltages()[0], dtype=np.float64)

    def conductances(self, edges: NDArray[np.integer]) -> FloatArray:
        """Conductances of ``edges`` as a read would see them (with read noise), S."""
        return np.asarray(self.board.read_conductances(np.asarray(edges, dtype=np.int64)))

    def pulse(self, edge: int, count: int) -> int:
        """Apply ``count`` signed pulses to ``edge``; returns the pulses applied."""
        if count == 0:
            return 0
        if not 0 <= edge < self.desc.n_edges:
            raise ConfigError(f"edge {edge} does not exist (0..{self.desc.n_edges - 1})")
        res = self.board.program_pulses(np.array([edge]), np.array([count]))
        self._applied = False
        return int(res.applied_pulses[0])

    def pulse_many(self, edges: NDArray[np.integer], counts: NDArray[np.integer]) -> NDArray[Any]:
        """Apply signed pulse counts to several edges at once; returns those applied."""
        e = np.asarray(edges, dtype=np.int64)
        c = np.asarray(counts, dtype=np.int64)
        if e.size == 0:
            return np.zeros(0, dtype=np.int64)
        res = self.board.program_pulses(e, c)
        self._applied = False
        return np.asarray(res.applied_pulses, dtype=np.int64)
