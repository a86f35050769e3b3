"""What every board implementation shares: description, pulse budget, open check, ``with``.

The emulated boards (``simulated_device``), the real board (``instruments``) and the
mock board keep their :class:`~hwloop.device.BoardDescription` in ``_desc``, count the
programming pulses they applied in ``_pulses_used`` and refuse commands once closed
(``_closed``). Those few lines are the same in both implementation packages, so they
live here (DR-19, DR-46); each board still implements the Device methods itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

import numpy as np
from numpy.typing import NDArray

from hwloop.device import BoardDescription, SafetyLimits
from hwloop.errors import ConfigError, LimitError


def check_pulse_budget(
    pulses: NDArray[np.integer],
    used: int,
    limits: SafetyLimits,
    per_call: str = "max_pulses_per_call",
    where: str = "",
) -> None:
    """Refuse signed pulse counts beyond the per-call or per-run budget (before any pulse).

    Args:
        pulses: signed pulse counts, one per edge.
        used: pulses applied so far over the board's life (>= 0).
        limits: the board's safety limits (``max_pulses_per_call``, ``max_pulses_per_run``).
        per_call: how the message names the per-call limit (the board file's name for it).
        where: appended to the per-call limit in the message (e.g. " of the board file").

    Raises:
        LimitError: more than ``max_pulses_per_call`` on one edge, or ``used`` plus the
            total beyond ``max_pulses_per_run``.
    """
    peak = int(np.max(np.abs(pulses), initial=0))
    if peak > limits.max_pulses_per_call:
        raise LimitError(
            f"{peak} pulses on one edge exceed {per_call}={limits.max_pulses_per_call}"
            f"{where}; split the update or raise the limit"
        )
    total = int(np.abs(pulses).sum())
    if used + total > limits.max_pulses_per_run:
        raise LimitError(
            f"{total} more pulses would exceed max_pulses_per_run={limits.max_pulses_per_run}"
            f" ({used} used); start a new run or raise the limit"
        )


class BoardBase(ABC):
    """``describe``, ``pulses_used``, the open check and the context manager of a board.

    A subclass sets ``_desc``, ``_pulses_used`` (0) and ``_closed`` (False) in its
    ``__init__`` and implements :meth:`close` (safe state first).
    """

    _desc: BoardDescription
    _pulses_used: int
    _closed: bool

    def describe(self) -> BoardDescription:
        """The board description (layout, bounds, limits, identities)."""
        return self._desc

    @property
    def pulses_used(self) -> int:
        """Programming pulses applied over the board object's life."""
        return self._pulses_used

    @abstractmethod
    def close(self) -> None:
        """Go to the safe state, then refuse further commands (idempotent)."""

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("the board is closed; open a new one")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
