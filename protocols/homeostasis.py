"""Jacobian homeostasis during training (docs/estimators.md §4 and §4.2).

The homeostatic loss of a board whose Jacobian ``J = dF/du`` (free nodes, at
the free fixed point) is known::

    L_homeo = mean_batch (tr(J^T J) - tr(J^2)) / n = mean_batch 2 |A|_F^2 / n   (S^2)

with ``A = (J - J^T)/2`` and ``n`` free nodes; it is 0 exactly when the
network is reciprocal. Its gradient with the fixed point held constant (as the
authors' code does) is local: a coupling ``p -> q`` whose receiver current is
``gamma g (alpha v_p - v_q)`` (``desc.info["couplings"]``) enters ``J`` as
``J[q, p] += gamma alpha g`` and ``J[q, q] -= gamma g``, so with ``dL/dJ = 2
mean_b (J - J^T) / n``::

    dL/dg_pq = gamma alpha dL/dJ[q, p] - gamma dL/dJ[q, q]

Couplings driven by the input layer do not enter ``J`` (gradient 0).

Two ways to get ``J``, both through structural protocols (never by importing the
emulator):

* :class:`JacobianProbe`: the board reports the exact Jacobian (the emulator);
* :class:`NodeClamp`: the board can clamp every free node to a given voltage and
  read the net current into each (a bench with a source-measure channel per node,
  docs/estimators.md §4.2). :func:`probe_jacobian` then estimates ``J`` from ``P`` pairs of clamped
  probes ``u* +/- h eps_p`` around the measured free state: ``J eps_p ~ [F(u* + h
  eps_p) - F(u* - h eps_p)] / (2h)`` and ``J_hat = (1/P) sum_p (J eps_p) eps_p^T``
  with ``eps_p`` the columns of a random orthogonal matrix scaled by ``sqrt(n)``:
  unbiased for any ``P`` and exact (to ``O(h^2)``) for ``P = n``.

Other boards refuse ``--homeostasis``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from hwloop.device import BoardDescription
from hwloop.errors import ConfigError
from protocols.updates import board_couplings

Array = NDArray[np.floating]


@runtime_checkable
class JacobianProbe(Protocol):
    """A board that reports the exact Jacobian of its free nodes (the emulator)."""

    def jacobian(self) -> Array:
        """``(batch, n_free, n_free)`` ``dF/du`` at the free fixed point, S."""
        ...


@runtime_checkable
class NodeClamp(Protocol):
    """A board that can clamp its free nodes and read the currents into them."""

    def clamp_node_currents(self, v_free: Array) -> Array:
        """Clamp every free node to ``v_free`` and read the net currents into them.

        Args:
            v_free: ``(batch, n_free)`` clamp voltages, V (free-node order), with the
                present inputs applied and no nudge.

        Returns:
            ``(batch, n_free)`` net current flowing into each node from the network
            (the clamp sinks it), A: ``F(v_free)``, zero at the free fixed point.
        """
        ...


def probe_jacobian(
    device: NodeClamp,
    v_free: Array,
    rng: np.random.Generator,
    *,
    n_probes: int | None = None,
    h_v: float = 1e-3,
) -> Array:
    """Estimate ``J = dF/du`` at ``v_free`` from clamped probes (docs/estimators.md §4.2), S.

    Args:
        device: a board with :class:`NodeClamp`.
        v_free: ``(batch, n_free)`` free state around which to probe, V.
        rng: the run's generator (the probe directions).
        n_probes: probe pairs ``P`` (1 .. n_free; default n_free: the full Jacobian).
        h_v: probe amplitude, V (> 0): central differences, error ``O(h^2)``.

    Returns:
        ``(batch, n_free, n_free)`` Jacobian estimate, S.

    Raises:
        ConfigError: bad ``n_probes`` or ``h_v``.
    """
    u0 = np.asarray(v_free, dtype=np.float64)
    n = u0.shape[1]
    p = n if n_probes is None else int(n_probes)
    if not 1 <= p <= n:
        raise ConfigError(f"homeostasis probes = {n_probes} must be in 1..{n} (free nodes)")
    if not (np.isfinite(h_v) and h_v > 0):
        raise ConfigError(f"probe amplitude {h_v} V must be a positive number")
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q *= np.sign(np.diag(r))  # Haar-distributed
    probes = np.sqrt(n) * q[:, :p]
    jac = np.zeros((u0.shape[0], n, n))
    for k in range(p):
        eps = probes[:, k]
        fp = np.asarray(device.clamp_node_currents(u0 + h_v * eps), dtype=np.float64)
        fm = np.asarray(device.clamp_node_currents(u0 - h_v * eps), dtype=np.float64)
        jac += ((fp - fm) / (2 * h_v))[:, :, None] * eps[None, None, :]
    return jac / p


def asymmetry(jac: Array) -> float:
    """The homeostatic loss ``mean_b (tr(J^T J) - tr(J^2)) / n`` of ``(batch, n, n)`` J, S^2."""
    j = np.asarray(jac, dtype=np.float64)
    val = np.einsum("bij,bij->b", j, j) - np.einsum("bij,bji->b", j, j)
    return float(np.mean(val) / j.shape[1])


def symmetry_ratio(jac: Array) -> float:
    """Functional symmetry ``|S|_F / (|S|_F + |A|_F)`` averaged over the batch (1: reciprocal)."""
    j = np.asarray(jac, dtype=np.float64)
    jt = np.swapaxes(j, 1, 2)
    s = np.linalg.norm(j + jt, axis=(1, 2)) / 2
    a = np.linalg.norm(j - jt, axis=(1, 2)) / 2
    return float(np.mean(s / np.maximum(s + a, np.finfo(float).tiny)))


def check_supported(desc: BoardDescription, device: object, *, probes: bool = False) -> None:
    """Refuse homeostasis on a board without couplings in its description or a Jacobian.

    With ``probes`` the board must offer :class:`NodeClamp`; otherwise either
    :class:`JacobianProbe` or :class:`NodeClamp`.

    Raises:
        ConfigError: one line naming the backend.
    """
    if board_couplings(desc) is None:
        raise ConfigError(
            f"homeostasis needs a non-reciprocal board that reports its Jacobian "
            f"(backend 'nonreciprocal'); backend {desc.backend!r} does not"
        )
    if probes and not isinstance(device, NodeClamp):
        raise ConfigError(
            f"homeostasis probes need a board that clamps its nodes and reads their "
            f"currents, which this {desc.backend!r} device cannot; drop homeostasis_probes"
        )
    if not isinstance(device, JacobianProbe | NodeClamp):
        raise ConfigError(
            f"homeostasis needs the board's Jacobian, which this {desc.backend!r} device "
            "neither reports nor can probe (no node clamps; e.g. a replayed recording)"
        )


def homeostatic_gradient(desc: BoardDescription, jac: Array) -> Array:
    """``dL_homeo/dg`` for every edge (board order), fixed point held constant, S.

    Args:
        desc: the board description (layer blocks and ``info["couplings"]``).
        jac: ``(batch, n_free, n_free)`` Jacobian in ``desc.free_nodes`` order, S.
    """
    gains = board_couplings(desc)
    if gains is None or desc.layers is None:
        raise ConfigError("the homeostatic gradient needs the board's coupling gains")
    j = np.asarray(jac, dtype=np.float64)
    n = j.shape[1]
    if j.shape[1:] != (len(desc.free_nodes), len(desc.free_nodes)):
        raise ConfigError(f"the Jacobian must be (batch, {len(desc.free_nodes)}, same)")
    dldj = 2.0 * np.mean(j - np.swapaxes(j, 1, 2), axis=0) / n
    diag = np.diag(dldj)
    # position of every node among the free nodes (-1: not free, e.g. an input)
    pos = np.full(desc.n_nodes, -1, dtype=np.int64)
    pos[desc.free_nodes] = np.arange(len(desc.free_nodes))
    g = np.zeros(desc.n_edges)
    for blk, (alpha, gamma) in zip(desc.layers, gains, strict=True):
        ps, pd = pos[blk.src], pos[blk.dst]
        if np.any(ps < 0) or np.any(pd < 0):
            continue  # driven by sources: does not enter J
        m = gamma * alpha * dldj[np.ix_(pd, ps)].T - gamma * diag[pd][None, :]
        g[blk.edge_offset : blk.edge_offset + blk.n_edges] = m.ravel()
    return g
