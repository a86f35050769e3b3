"""What the first EP step would refuse, checked before anything is energised.

Before a run writes its session file or applies anything to the board,
:func:`check_first_step` checks what the board itself would refuse at step 0:
a nudge kind the board cannot apply (``BoardDescription.supports_resistive_nudge``)
and a resistive nudge with a negative beta that makes an output node's total
conductance non-positive (the nudged problem is then not convex). ``--dry-run``
runs the same checks, so it refuses what step 0 would.

:func:`choose_nudge` picks the default nudge when the user gave none: the published
resistive nudge where it is valid with a margin (every output node's total
conductance at least 1.5 times ``|beta|``, as training moves the conductances), else a
current nudge, which keeps the nudged problem convex for any beta.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import NDArray

from hwloop.device import BoardDescription, Device
from hwloop.errors import ConfigError, UnsupportedError
from protocols.config import TrainConfig
from protocols.estimators import is_complex_estimator, make_estimator

CONVEX_MARGIN = 1.5
"""The default nudge is resistive when every output node's total conductance is at least
this many times ``|beta|`` (S / S)."""


def output_conductances_s(desc: BoardDescription, g_s: NDArray[np.floating]) -> NDArray[np.float64]:
    """Total conductance of the edges at each output node, S (``(n_outputs,)``)."""
    g = np.asarray(g_s, dtype=np.float64)
    out = np.zeros(len(desc.output_nodes))
    pos = {int(n): i for i, n in enumerate(desc.output_nodes)}
    for end in (0, 1):
        nodes = desc.edge_nodes[:, end]
        mask = np.isin(nodes, desc.output_nodes)
        idx = np.array([pos[int(n)] for n in nodes[mask]], dtype=np.int64)
        np.add.at(out, idx, g[mask])
    return out


def _betas_s(cfg: TrainConfig, desc: BoardDescription) -> list[float]:
    """Every real beta (S) the estimator's nudged phases may use (both signs for random-sign)."""
    assert cfg.beta is not None
    beta_s = float(cfg.beta) * float(desc.g_scale_s)
    stencil = make_estimator(cfg.estimator).stencil(beta_s, np.random.default_rng(0))
    betas = [float(np.real(b)) for b in stencil.betas_s if b != 0]
    if cfg.estimator == "random-sign":
        betas += [-b for b in betas]
    return betas


def convexity_problem(cfg: TrainConfig, desc: BoardDescription, g_s: NDArray[np.floating],
                      margin: float = 1.0) -> str:
    """'' when every resistive nudged phase keeps the problem convex (with ``margin``), else why."""
    den = output_conductances_s(desc, g_s)
    smallest = float(den.min()) if den.size else float("inf")
    for b in _betas_s(cfg, desc):
        if b < 0 and smallest + margin * b <= 0:
            return (f"beta={b:g} makes an output node's total conductance non-positive "
                    f"(smallest {smallest:.4g} S; the nudged problem is not convex)")
    return ""


def check_first_step(cfg: TrainConfig, device: Device) -> None:
    """Refuse what step 0 would refuse (nudge kind, convexity), before anything is applied.

    Raises:
        UnsupportedError: a resistive nudge on a board that cannot apply one, or a
            complex (Cauchy) estimator on a board without ``supports_complex_nudge``.
        ConfigError: a resistive nudge whose nudged problem is not convex.
    """
    desc = device.describe()
    if is_complex_estimator(cfg.estimator) and not desc.supports_complex_nudge:
        raise UnsupportedError(
            f"--estimator {cfg.estimator} needs complex nudges, which backend {desc.backend!r} "
            "cannot apply (its description lists no complex-nudge support); use four-point "
            "or centered, or a backend with complex nudges (nonreciprocal)")
    if cfg.nudge == "resistive":
        if not desc.supports_resistive_nudge:
            raise UnsupportedError(
                f"board {desc.name!r} cannot apply resistive nudges (current sources on its "
                "outputs, no switched pull resistors); pass --nudge current")
        why = convexity_problem(cfg, desc, device.read_conductances())
        if why:
            raise ConfigError(f"{why}; use a smaller |beta|, the one-sided estimator or "
                              "--nudge current")


def choose_nudge(cfg: TrainConfig, device: Device, *, given: bool) -> tuple[TrainConfig, str]:
    """The run's nudge: as given, else resistive where valid (with a margin), else current.

    Returns:
        The configuration with its nudge and a note for the header ('' when nothing was
        chosen).
    """
    if given:
        return cfg, ""
    desc = device.describe()
    if not desc.supports_resistive_nudge:
        return (dataclasses.replace(cfg, nudge="current"),
                "nudge: current (the board cannot apply resistive nudges)")
    why = convexity_problem(cfg, desc, device.read_conductances(), margin=CONVEX_MARGIN)
    if why:
        return (dataclasses.replace(cfg, nudge="current"),
                f"nudge: current (a resistive nudge with {why.replace('beta=', 'beta ')} "
                f"within a margin of {CONVEX_MARGIN:g}; a current nudge keeps it convex)")
    return cfg, ""
