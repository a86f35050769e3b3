"""The summary of a finished run most analyses need, read into memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.sessionlog.reader import open_session
from hwloop.sessionlog.schema import EPOCH_FIELDS

__all__ = [
    "RunSummary",
    "load_run",
]


@dataclass(frozen=True, eq=False)
class RunSummary:
    """The parts of a session file most analyses need, read into memory.

    Attributes:
        path: the file.
        attrs: root attributes.
        status: exit status (``crashed`` for a killed writer).
        config_toml: the resolved configuration.
        metrics: per-epoch metrics, one array per :data:`EPOCH_FIELDS` name.
        conductances_s: ``(n_edges,)`` conductances at the last checkpoint, S.
        biases_a: ``(n_bias,)`` bias currents at the last checkpoint, A.
        steps_done: complete steps.
    """

    path: Path
    attrs: dict[str, Any]
    status: str
    config_toml: str
    metrics: dict[str, NDArray[np.float64]]
    conductances_s: NDArray[np.float64]
    biases_a: NDArray[np.float64]
    steps_done: int


def load_run(path: str | Path) -> RunSummary:
    """Read the summary of a session file (see :class:`RunSummary`).

    Raises:
        SessionError: as :func:`open_session`, or when no checkpoint is complete.
    """
    with open_session(path) as sf:
        ck = sf.checkpoint(-1)
        ep = sf.epochs()
        return RunSummary(
            path=sf.path,
            attrs=dict(sf.attrs),
            status=sf.status,
            config_toml=str(sf.attrs["config_toml"]),
            metrics={name: np.asarray(ep[name], dtype=np.float64) for name, _ in EPOCH_FIELDS},
            conductances_s=np.asarray(ck.arrays["conductances_s"], dtype=np.float64),
            biases_a=np.asarray(ck.arrays["biases_a"], dtype=np.float64),
            steps_done=sf.steps_done,
        )
