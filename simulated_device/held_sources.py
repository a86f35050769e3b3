"""Safe state and closing of an emulated board that holds its sources as data.

:class:`EmulatedBoard` and :class:`NonReciprocalBoard` keep the applied input
voltages (``_v_in``, V) and nudge (``_nudge``) as arrays and solve the network on
demand, so their safe state, closing and open check are the same few lines: they
share them here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.board_base import BoardBase
from hwloop.device import Nudge


class HeldSources(BoardBase):
    """``safe_state``, ``is_safe`` and ``close`` of an emulated board (a :class:`BoardBase`).

    The board sets ``_v_in`` (``(batch, n_inputs)`` V or ``None``), ``_nudge``,
    ``_dirty`` and ``_closed`` in ``__init__``; :meth:`_inputs_zeroed` drops what it
    cached for the previous inputs.
    """

    _v_in: NDArray[Any] | None
    _nudge: Nudge | None
    _dirty: bool
    _closed: bool

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
