"""Safe state and closing of an emulated board that holds its sources as data.

:class:`EmulatedBoard` and :class:`NonReciprocalBoard` keep the applied input
voltages (``_v_in``, V) and nudge (``_nudge``) as arrays and solve the network on
demand, so their safe state, closing and open check are the same few lines: they
share them here.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from hwloop.board_base import BoardBase
from hwloop.device import (
    NodeReading,
    Nudge,
    SafetyLimits,
    check_inputs_within_limits,
    check_nudge_for_inputs,
)
from hwloop.errors import ConfigError


class HeldSources(BoardBase):
    """Checks of the sources, safe state and closing of an emulated board (a :class:`BoardBase`).

    The board sets ``_v_in`` (``(batch, n_inputs)`` V or ``None``), ``_nudge``,
    ``_dirty`` and ``_closed`` in ``__init__``; :meth:`_inputs_zeroed` drops what it
    cached for the previous inputs.
    """

    _v_in: NDArray[Any] | None
    _nudge: Nudge | None
    _dirty: bool
    _closed: bool
    _limits: SafetyLimits
    _settle_time_s: float
    _sample_time_s: float
    _clock_s: float
    _free: NDArray[np.integer]
    _complex_nudges: ClassVar[bool] = False
    """The board takes complex-valued nudges."""

    def _checked_inputs(self, v_inputs: NDArray[Any], dtype: Any) -> NDArray[Any]:
        """``(batch, n_inputs)`` input voltages, V, checked against the limits, as a copy."""
        self._check_open()
        check_inputs_within_limits(v_inputs, self._limits, len(self._desc.input_nodes))
        return np.array(v_inputs, dtype=dtype, copy=True)

    def apply_nudge(self, nudge: Nudge | None) -> None:
        """Apply (or with ``None`` release) a nudge on the outputs, checked first."""
        self._check_open()
        if nudge is not None:
            check_nudge_for_inputs(nudge, self._limits, self._v_in,
                                   len(self._desc.output_nodes), self._complex_nudges)
            self._check_nudge(nudge)
        self._nudge = nudge
        self._dirty = True

    def _check_nudge(self, nudge: Nudge) -> None:
        """What the network itself refuses in a nudge that passed the limits (none here)."""

    @abstractmethod
    def _solve(self) -> None:
        """Bring the network's state up to date with the present sources."""

    @abstractmethod
    def _sample(self, idx: NDArray[np.integer], n_samples: int) -> NodeReading:
        """``n_samples`` (>= 1) reads of the nodes ``idx`` of the solved state."""

    def read_nodes(
        self, n_samples: int = 1, nodes: NDArray[np.integer] | None = None
    ) -> NodeReading:
        """Read the voltages of ``nodes`` (None: the free nodes) ``n_samples`` times, V."""
        n, idx = self._read_request(n_samples, nodes)
        self._solve()
        return self._sample(idx, n)

    def _read_request(
        self, n_samples: int, nodes: NDArray[np.integer] | None
    ) -> tuple[int, NDArray[np.integer]]:
        """Check a read of ``n_samples`` (>= 1) samples of ``nodes`` (None: the free nodes).

        Returns:
            ``(n_samples, node indices)``.
        """
        self._check_open()
        if int(n_samples) != n_samples or n_samples < 1:
            raise ConfigError(f"n_samples={n_samples} must be an integer >= 1")
        if nodes is None:
            return int(n_samples), self._free  # valid by construction
        idx = np.asarray(nodes, dtype=np.int64)
        n_nodes = self._desc.n_nodes
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n_nodes)):
            raise ConfigError(f"node indices must lie in 0..{n_nodes - 1}")
        return int(n_samples), idx

    def _sample_stamps(self, batch: int, n_samples: int) -> NDArray[np.float64]:
        """``(n_samples, batch)`` times of the samples of a read starting now, s."""
        order = np.arange(batch)[None, :] * n_samples + np.arange(n_samples)[:, None]
        stamps = self._clock_s + (order + 1) * self._sample_time_s
        return np.asarray(stamps, dtype=np.float64)

    def _settle_time(self, settle_time_s: float | None) -> float:
        """The settling wait, s: ``settle_time_s`` (>= 0) or the board's default for ``None``."""
        self._check_open()
        if settle_time_s is not None and settle_time_s < 0:
            raise ConfigError(f"settle_time_s={settle_time_s} must be >= 0")
        return self._settle_time_s if settle_time_s is None else float(settle_time_s)

    def _inputs_zeroed(self) -> None:
        """Forget what was computed for the previous input voltages."""

    def safe_state(self) -> None:
        """Release the nudge and set every input source to 0 V (idempotent)."""
        self._nudge = None
        if self._v_in is not None:
            self._v_in = np.zeros_like(self._v_in)
            self._inputs_zeroed()
        self._dirty = True

    @property
    def is_safe(self) -> bool:
        """True when no nudge is applied and every input source is at 0 V."""
        return self._nudge is None and (self._v_in is None or not np.any(self._v_in))

    def close(self) -> None:
        """Go to the safe state; further calls other than ``close``/``safe_state`` fail."""
        self.safe_state()
        self._closed = True
