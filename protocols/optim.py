"""SGD with per-layer learning rates, optional momentum and exponential decay per epoch.

Parameters are the board's conductances (one group per dense layer block, or
one group for a non-layered board) and its bias currents (one group per free
layer). The update is ``delta = -lr * buf`` with ``buf = momentum * buf + grad``
(PyTorch's convention, which the published DRN code uses), and every learning
rate is multiplied by ``gamma`` at the end of each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hwloop.device import BoardDescription
from hwloop.errors import ConfigError
from protocols.updates import Gradient

Array = NDArray[np.floating]


@dataclass(frozen=True, eq=False)
class Update:
    """Requested parameter changes of one step.

    Attributes:
        delta_g_s: ``(n_edges,)`` conductance changes, S.
        delta_b_a: ``(n_bias,)`` bias current changes, A.
    """

    delta_g_s: Array
    delta_b_a: Array


def _groups(desc: BoardDescription) -> tuple[list[list[slice]], list[NDArray[np.intp]]]:
    """Edge slices per weight group and bias positions per bias group.

    One group per layer pair. On a board with directed couplings
    (``desc.info["couplings"]``: a forward block per layer pair, each backward block
    right after the forward block of its pair) the backward block joins its pair's
    group, so "one learning rate per layer" means the same on every backend. Biases
    are grouped by the receiving layer of each forward block.
    """
    if desc.layers is None:
        return [[slice(0, desc.n_edges)]], [np.arange(len(desc.bias_nodes))]
    raw = desc.info.get("couplings")
    couplings = raw if isinstance(raw, list) else []
    kinds = [str(c.get("kind", "forward")) if isinstance(c, dict) else "forward"
             for c in couplings] or ["forward"] * len(desc.layers)
    if len(kinds) != len(desc.layers) or kinds[0] != "forward":
        raise ConfigError("the board's couplings do not match its layer blocks")
    pos = {int(n): i for i, n in enumerate(desc.bias_nodes)}
    edge_groups: list[list[slice]] = []
    bias_groups: list[NDArray[np.intp]] = []
    for kind, b in zip(kinds, desc.layers, strict=True):
        sl = slice(b.edge_offset, b.edge_offset + b.n_edges)
        if kind == "backward":
            edge_groups[-1].append(sl)
            continue
        edge_groups.append([sl])
        bias_groups.append(
            np.array([pos[int(n)] for n in b.dst if int(n) in pos], dtype=np.intp)
        )
    return edge_groups, bias_groups


class SGD:
    """Per-group SGD with momentum and per-epoch decay.

    Args:
        desc: the board (its layer blocks define the groups).
        lr_weights: one learning rate per weight group (or one for all), >= 0.
        lr_biases: one learning rate per bias group (or one for all), >= 0.
        momentum: in [0, 1).
        gamma: per-epoch decay factor in (0, 1].
        dtype: precision of the momentum buffers and updates.
    """

    def __init__(
        self,
        desc: BoardDescription,
        lr_weights: tuple[float, ...],
        lr_biases: tuple[float, ...],
        *,
        momentum: float = 0.0,
        gamma: float = 1.0,
        dtype: np.dtype[np.floating] | type[np.floating] = np.float64,
    ) -> None:
        self._edge_groups, self._bias_groups = _groups(desc)
        self.lr_w = self._expand("lr_weights", lr_weights, len(self._edge_groups))
        self.lr_b = self._expand("lr_biases", lr_biases, len(self._bias_groups))
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum = {momentum} must be in [0, 1)")
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"lr decay gamma = {gamma} must be in (0, 1]")
        self.momentum = float(momentum)
        self.gamma = float(gamma)
        self.dtype = np.dtype(dtype)
        self._buf_g: Array | None = None
        self._buf_b: Array | None = None
        self.epochs_decayed = 0

    @staticmethod
    def _expand(name: str, lrs: tuple[float, ...], n: int) -> list[float]:
        if len(lrs) == 1:
            lrs = lrs * n
        if len(lrs) != n:
            raise ConfigError(f"{name} needs 1 or {n} values (one per layer), got {len(lrs)}")
        if any(not (np.isfinite(x) and x >= 0) for x in lrs):
            raise ConfigError(f"{name} = {list(lrs)} must be non-negative numbers")
        return [float(x) for x in lrs]

    def step(self, grad: Gradient) -> Update:
        """Turn a gradient estimate into parameter changes."""
        g = np.asarray(grad.g, dtype=self.dtype)
        b = np.asarray(grad.b, dtype=self.dtype)
        if self.momentum > 0:
            if self._buf_g is None or self._buf_b is None:
                self._buf_g, self._buf_b = g.copy(), b.copy()
            else:
                self._buf_g *= self.momentum
                self._buf_g += g
                self._buf_b *= self.momentum
                self._buf_b += b
            g, b = self._buf_g, self._buf_b
        dg = np.empty_like(g)
        for sls, lr in zip(self._edge_groups, self.lr_w, strict=True):
            for sl in sls:
                np.multiply(g[sl], -lr, out=dg[sl])
        db = np.zeros_like(b)
        for idx, lr in zip(self._bias_groups, self.lr_b, strict=True):
            db[idx] = -lr * b[idx]
        return Update(delta_g_s=dg, delta_b_a=db)

    def end_epoch(self) -> None:
        """Multiply every learning rate by ``gamma``."""
        self.lr_w = [lr * self.gamma for lr in self.lr_w]
        self.lr_b = [lr * self.gamma for lr in self.lr_b]
        self.epochs_decayed += 1

    def state(self) -> dict[str, object]:
        """Everything needed to continue exactly (learning rates, momentum buffers)."""
        return {
            "lr_w": list(self.lr_w),
            "lr_b": list(self.lr_b),
            "epochs_decayed": self.epochs_decayed,
            "buf_g": None if self._buf_g is None else self._buf_g.copy(),
            "buf_b": None if self._buf_b is None else self._buf_b.copy(),
        }

    def load_state(self, state: dict[str, object]) -> None:
        """Restore :meth:`state`."""
        self.lr_w = [float(x) for x in state["lr_w"]]  # type: ignore[attr-defined]
        self.lr_b = [float(x) for x in state["lr_b"]]  # type: ignore[attr-defined]
        self.epochs_decayed = int(state["epochs_decayed"])  # type: ignore[call-overload]
        bg, bb = state.get("buf_g"), state.get("buf_b")
        self._buf_g = None if bg is None else np.array(bg, dtype=self.dtype)
        self._buf_b = None if bb is None else np.array(bb, dtype=self.dtype)
