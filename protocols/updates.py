"""Local EP updates from measured node voltages only (docs/physics.md §3.3).

For a conductance ``g_ij`` the energy derivative is ``dE/dg_ij = 1/2 (v_i - v_j)^2``,
for a bias current ``b_k`` it is ``dE/db_k = -v_k``. An estimator's stencil
combines these at the nudged equilibria (``grad = sum_i c_i f(beta_i)``),
averaged over the examples of the batch.

The squared drops are never formed per example and per edge. For a dense layer
block between node sets A (sources) and D (destinations)::

    sum_b sum_i c_i (a_bi - d_bj)^2
        = sum_i c_i [sum_b a_bi^2] + sum_i c_i [sum_b d_bj^2] - 2 [A_stack^T (c D)_stack]_ij

one matrix product with the phases stacked along the batch axis. When A is the
input layer its voltages are the applied sources, identical in every phase, so
the product collapses to ``A^T (sum_i c_i D_i)`` and, with ``+x/-x`` input
pairs, to one half of that: the same cost as one forward projection.

The local rule from an error vector (:func:`local_gradient`, docs/estimators.md §2.1):
for a coupling from node ``p`` into node ``q`` whose receiver current is
``gamma g (alpha v_p - v_q)``, ``dL/dg = -gamma mean_b[(alpha v_p - v_q) e_q]``.
Boards without coupling gains in ``desc.info["couplings"]`` are reciprocal: an
edge is one resistor and ``dL/dg = -(v_p - v_q)(e_q - e_p)``. Every estimator of
``du*/dbeta`` (training stencils on directed boards, point stencils, lock-in)
ends here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

from hwloop.device import BoardDescription, LayerBlock
from hwloop.errors import ConfigError

Array = NDArray[np.floating]


@dataclass(frozen=True, eq=False)
class Gradient:
    """An EP gradient estimate.

    Attributes:
        g: ``(n_edges,)`` estimate of dL/dg for every edge, 1/S units of the loss.
        b: ``(n_bias,)`` estimate of dL/db for every bias source.
    """

    g: Array
    b: Array


def full_voltages(desc: BoardDescription, v_inputs: Array, v_free: Array) -> Array:
    """Assemble ``(batch, n_nodes)`` node voltages.

    Inputs as applied, free nodes as measured, ground (and any other node) 0 V.
    """
    batch = v_inputs.shape[0]
    out = np.zeros((batch, desc.n_nodes), dtype=np.result_type(v_inputs, v_free))
    out[:, desc.input_index] = v_inputs
    out[:, desc.free_index] = v_free
    return out


def ep_gradient(
    desc: BoardDescription,
    v_inputs: Array,
    phases_free_v: list[Array],
    coeffs: tuple[float, ...],
    *,
    dtype: np.dtype[np.floating] | type[np.floating] = np.float64,
) -> Gradient:
    """Estimate dL/dg and dL/db from the measured free-node voltages of each phase.

    Args:
        desc: the board description (topology; layer blocks enable the fast path).
        v_inputs: ``(batch, n_inputs)`` input voltages as applied (identical in
            every phase), V.
        phases_free_v: one ``(batch, n_free)`` array per stencil phase: the mean
            measured voltage of each free node (``desc.free_nodes`` order), V.
        coeffs: the stencil coefficients, one per phase, 1/S.
        dtype: arithmetic precision.

    Returns:
        The gradient estimate, averaged over the batch.
    """
    dt = np.dtype(dtype)
    batch = v_inputs.shape[0]
    vin = np.asarray(v_inputs, dtype=dt)
    full = [full_voltages(desc, vin, np.asarray(p, dtype=dt)) for p in phases_free_v]
    c = [dt.type(x) for x in coeffs]
    c_sum = dt.type(sum(coeffs))
    g = np.empty(desc.n_edges, dtype=dt)
    is_input = desc.input_mask
    scale = dt.type(0.5 / batch)
    if desc.layers is not None:
        for block in desc.layers:
            src, dst = block.src_index, block.dst_index
            n_src, n_dst = len(block.src), len(block.dst)
            out = g[block.edge_offset : block.edge_offset + block.n_edges].reshape(n_src, n_dst)
            d_ph = [f[:, dst] for f in full]
            sq_d = sum(ci * np.einsum("bj,bj->j", d, d) for ci, d in zip(c, d_ph, strict=True))
            if bool(np.all(is_input[block.src])):
                # Inputs are the applied sources, the same in every phase, so the cross
                # term is a^T z with z = -(1/B) sum_i c_i D_i. The squared terms of the
                # destinations ride along as one more "example" (a row of ones in a, the
                # scaled sums in z): out = [a; 1]^T [z; s] in one product, no extra pass.
                a = full[0][:, src]
                z = sum(ci * d for ci, d in zip(c, d_ph, strict=True)) * dt.type(-1.0 / batch)
                sq_a = c_sum * np.einsum("bi,bi->i", a, a)
                a_aug = np.empty((batch + 1, n_src), dtype=dt)
                a_aug[:batch] = a
                a_aug[batch] = 1.0
                z_aug = np.empty((batch + 1, n_dst), dtype=dt)
                z_aug[:batch] = z
                z_aug[batch] = scale * np.asarray(sq_d, dtype=dt)
                np.matmul(a_aug.T, z_aug, out=out)
                if np.any(sq_a):
                    out += (scale * np.asarray(sq_a, dtype=dt))[:, None]
                continue
            else:
                a_ph = [f[:, src] for f in full]
                sq_a = sum(ci * np.einsum("bi,bi->i", a, a) for ci, a in zip(c, a_ph, strict=True))
                a_stack = np.concatenate(a_ph, axis=0)
                z_stack = np.concatenate(
                    [(ci * dt.type(-1.0 / batch)) * d for ci, d in zip(c, d_ph, strict=True)],
                    axis=0,
                )
                np.matmul(a_stack.T, z_stack, out=out)
            # out holds -(1/B) sum_i c_i A_i^T D_i; add (1/2B) sum_i c_i (a^2 + d^2)
            out += (scale * np.asarray(sq_d, dtype=dt))[None, :]
            if np.any(sq_a):
                out += (scale * np.asarray(sq_a, dtype=dt))[:, None]
    else:
        i, j = desc.edge_nodes[:, 0], desc.edge_nodes[:, 1]
        acc = np.zeros(desc.n_edges, dtype=dt)
        for ci, f in zip(c, full, strict=True):
            drop = f[:, i] - f[:, j]
            acc += ci * np.einsum("be,be->e", drop, drop)
        g[:] = acc * scale
    bias = desc.bias_nodes
    b = np.zeros(len(bias), dtype=dt)
    for ci, f in zip(c, full, strict=True):
        b -= ci * f[:, bias].mean(axis=0)
    return Gradient(g=g, b=b)


def output_cost(v_out: Array, targets_v: Array) -> NDArray[np.float64]:
    """Per-example cost ``C = 1/2 sum_o (v_o - y_o)^2``, V^2."""
    d = np.asarray(v_out, dtype=np.float64) - np.asarray(targets_v, dtype=np.float64)
    return np.asarray(0.5 * np.sum(d * d, axis=1))


def _couplings(desc: BoardDescription) -> list[tuple[float, float]] | None:
    info = desc.info.get("couplings")
    if info is None:
        return None
    if desc.layers is None or not isinstance(info, list) or len(info) != len(desc.layers):
        raise ConfigError("board info 'couplings' must give one entry per layer block")
    out = []
    for c in info:
        d = cast(dict[str, float], c)
        out.append((float(d["drive_gain"]), float(d["current_gain"])))
    return out


def board_couplings(desc: BoardDescription) -> list[tuple[float, float]] | None:
    """``(drive_gain, current_gain)`` per layer block from ``desc.info["couplings"]``.

    ``None`` for a board without the entry (a reciprocal board: each edge is one
    resistor).
    """
    return _couplings(desc)


def stencil_gradient(
    desc: BoardDescription,
    v_inputs: Array,
    v_free: Array,
    phases_free_v: list[Array],
    coeffs: tuple[float | complex, ...],
    *,
    dtype: np.dtype[np.floating] | type[np.floating] = np.float64,
) -> Gradient:
    """The local gradient of a board with directed couplings from a training step's phases.

    The error vector is the stencil's combination of the measured phases,
    ``e = sum_i c_i v_i`` (``~ du*/dbeta``, the same coefficients the
    reciprocal rule :func:`protocols.updates.ep_gradient` applies to the
    energy), and every block (forward and backward arrays alike) gets its own
    local update from :func:`local_gradient`. On a reciprocal network the
    forward and backward updates of a pair sum to the reciprocal rule's.

    Args:
        desc: a layered board's description with ``info["couplings"]``.
        v_inputs: ``(batch, n_inputs)`` input voltages, V.
        v_free: ``(batch, n_free)`` free-phase voltages (the presynaptic factor), V.
        phases_free_v: one ``(batch, n_free)`` mean reading per stencil phase, V.
        coeffs: the stencil coefficients, one per phase, 1/S.
        dtype: precision of the returned arrays.
    """
    if len(phases_free_v) != len(coeffs):
        raise ConfigError("one stencil coefficient per phase is needed")
    err = sum(
        np.real(c * np.asarray(p, dtype=np.complex128)) if isinstance(c, complex)
        else float(c) * np.asarray(np.real(p), dtype=np.float64)
        for c, p in zip(coeffs, phases_free_v, strict=True)
    )
    g, b = local_gradient(
        desc,
        np.asarray(v_inputs, dtype=np.float64),
        np.real(np.asarray(v_free, dtype=np.float64)),
        np.asarray(err, dtype=np.float64),
    )
    dt = np.dtype(dtype)
    return Gradient(g=g.astype(dt), b=b.astype(dt))


def local_gradient(
    desc: BoardDescription, v_inputs: Array, v_free: Array, error: Array
) -> tuple[Array, Array]:
    """``-error^T dF/dtheta`` averaged over the batch, from node voltages only.

    Args:
        desc: a layered board's description.
        v_inputs: ``(batch, n_inputs)`` applied input voltages, V.
        v_free: ``(batch, n_free)`` free state (``desc.free_nodes`` order), V.
        error: ``(batch, n_free)`` error vector (e.g. ``du*/dbeta``), V/S.

    Returns:
        ``(dL/dg per edge, V^2/S; dL/db per bias node, V^2/A)``.
    """
    layers, v, e = _layered_voltages(desc, v_inputs, v_free, error)
    batch = v_inputs.shape[0]

    def block(vp: Array, vq: Array, ep: Array, eq: Array, gain: _Gain) -> Array:
        if gain is None:
            return np.asarray(_reciprocal_block(vp, vq, ep, eq) / batch)
        alpha, gamma = gain
        m = alpha * (vp.T @ eq) - np.sum(vq * eq, axis=0)[None, :]
        m *= -gamma / batch
        return np.asarray(m)

    g = _per_edge(desc, layers, v, e, block)
    bias = -e[:, desc.bias_nodes].mean(axis=0)
    return g, np.asarray(bias)


def _layered_voltages(
    desc: BoardDescription, v_inputs: Array, v_free: Array, per_free: Array
) -> tuple[tuple[LayerBlock, ...], Array, Array]:
    """The layer blocks, every node's voltage (V) and ``per_free`` spread to every node.

    Raises:
        ConfigError: the board has no layer blocks.
    """
    if desc.layers is None:
        raise ConfigError("the local gradient needs a layered board (layer blocks)")
    v = full_voltages(desc, v_inputs, v_free)
    e = np.zeros_like(v)
    e[:, desc.free_index] = per_free
    return desc.layers, v, e


_Gain = tuple[float, float] | None
"""``(drive gain, current gain)`` of a non-reciprocal layer block; ``None``: reciprocal."""


def _per_edge(
    desc: BoardDescription,
    layers: tuple[LayerBlock, ...],
    v: Array,
    per_node: Array,
    block: Callable[[Array, Array, Array, Array, _Gain], Array],
) -> Array:
    """``block(v_src, v_dst, x_src, x_dst, gain)`` of every layer block, laid out per edge.

    ``v`` (V) and ``per_node`` are ``(batch, n_nodes)``; ``block`` returns the
    ``(n_src, n_dst)`` values of its block.
    """
    gains = _couplings(desc)
    g = np.empty(desc.n_edges)
    for k, blk in enumerate(layers):
        m = block(
            v[:, blk.src_index],
            v[:, blk.dst_index],
            per_node[:, blk.src_index],
            per_node[:, blk.dst_index],
            None if gains is None else gains[k],
        )
        g[blk.edge_offset : blk.edge_offset + blk.n_edges] = m.ravel()
    return g


def _reciprocal_block(vp: Array, vq: Array, ep: Array, eq: Array) -> Array:
    """``-sum_b (v_p - v_q)(e_q - e_p)`` for every pair ``(p, q)``."""
    return np.asarray(
        -(vp.T @ eq)
        + np.sum(vp * ep, axis=0)[:, None]
        + np.sum(vq * eq, axis=0)[None, :]
        - (ep.T @ vq)
    )


def local_gradient_variance(
    desc: BoardDescription, v_inputs: Array, v_free: Array, error_var: Array
) -> tuple[Array, Array]:
    """Variance of :func:`local_gradient` caused by independent noise in ``error``.

    The free state is treated as exact (its noise enters at second order).

    Args:
        desc: a layered board's description.
        v_inputs: ``(batch, n_inputs)`` input voltages, V.
        v_free: ``(batch, n_free)`` free state, V.
        error_var: ``(batch, n_free)`` variance of each error component, (V/S)^2.

    Returns:
        Per-edge variance, (V^2/S)^2, and per-bias variance, (V^2/A)^2.
    """
    layers, v, s2 = _layered_voltages(desc, v_inputs, v_free, error_var)
    batch = v_inputs.shape[0]

    def block(vp: Array, vq: Array, sp: Array, sq: Array, gain: _Gain) -> Array:
        if gain is not None:
            alpha, gamma = gain
            # sum_b (alpha v_p - v_q)^2 s2_q
            m = (
                alpha**2 * ((vp**2).T @ sq)
                - 2 * alpha * (vp.T @ (vq * sq))
                + np.sum(vq**2 * sq, axis=0)[None, :]
            ) * (gamma / batch) ** 2
            return np.asarray(m)
        d2 = (vp**2).T @ sq - 2 * (vp.T @ (vq * sq)) + np.sum(vq**2 * sq, axis=0)
        d2p = (
            ((vp**2) * sp).sum(axis=0)[:, None]
            - 2 * ((vp * sp).T @ vq)
            + sp.T @ (vq**2)
        )
        return np.asarray((d2 + d2p) / batch**2)

    g = _per_edge(desc, layers, v, s2, block)
    return g, np.asarray(s2[:, desc.bias_nodes].sum(axis=0) / batch**2)
