"""Jacobian homeostasis for the non-reciprocal network (docs/estimators.md §4, §4.2).

The homeostatic loss measures the asymmetric part ``A = (J - J^T)/2`` of the
Jacobian ``J = dF/du`` at the free fixed point::

    L_homeo = E_eps[ |J eps|^2 - eps^T J^2 eps ] / n = (tr(J^T J) - tr(J^2)) / n
            = 2 |A|_F^2 / n                                  (S^2)

with ``eps ~ N(0, I)`` and ``n`` free nodes, averaged over the batch. It is 0
exactly when the network is reciprocal.

* :func:`homeostatic_loss` is exact (the emulator knows ``J``);
* :func:`probe_loss` estimates it the way a bench would (docs/estimators.md §4.2): the node
  potentials are clamped to ``u* +/- h eps`` and the node currents read, so
  ``J eps ~ [F(u* + h eps) - F(u* - h eps)] / (2h)`` and ``J (J eps)`` likewise,
  with forward probes only;
* :func:`homeostatic_gradient` is ``dL_homeo/dg`` with the fixed point held
  constant (as the authors' code does). Only the couplings enter ``J``
  linearly, and for the coupling ``p -> q`` (receiver current ``gamma g (alpha
  v_p - v_q)``) the chain rule with ``dL/dJ = 2 (J - J^T) / n`` gives the local
  rule ``dL/dg_pq = 2 gamma alpha (J_qp - J_pq) / n``: each device moves
  toward its reverse partner (Kolen-Pollack-like), which is what a lab can
  program. Couplings from the input layer do not enter ``J`` (gradient 0);
* :func:`probe_gradient` is the stochastic rank-1 version
  ``2 (J eps) eps^T - eps (J eps)^T - (J^T eps) eps^T`` (unbiased for
  ``2 (J - J^T)``), mapped through the same chain rule.

Units: ``J`` in S; the loss in S^2; gradients in S (per S of conductance).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import ConfigError
from simulated_device import nonreciprocal as nr

Array = NDArray[np.floating]


def homeostatic_loss(net: nr.NonReciprocalNet, u0: Array) -> float:
    """Exact ``(tr(J^T J) - tr(J^2)) / n`` averaged over the batch, S^2."""
    J = np.asarray(nr.jacobian(net, u0))
    val = np.einsum("bij,bij->b", J, J) - np.einsum("bij,bji->b", J, J)
    return float(np.mean(val) / net.n_free)


def symmetry_ratio(net: nr.NonReciprocalNet, u0: Array) -> float:
    """Functional symmetry ``|S|_F / (|S|_F + |A|_F)`` of the Jacobian (1: reciprocal)."""
    J = np.asarray(nr.jacobian(net, u0))
    s = np.linalg.norm(J + np.swapaxes(J, 1, 2), axis=(1, 2)) / 2
    a = np.linalg.norm(J - np.swapaxes(J, 1, 2), axis=(1, 2)) / 2
    return float(np.mean(s / (s + a)))


def _jvp(
    net: nr.NonReciprocalNet, u0: Array, v_in: Array, vec: Array, h_v: float
) -> Array:
    """``J vec`` from two clamped-probe current reads, A/V * V = A."""
    fp = nr.vector_field(net, u0 + h_v * vec, v_in)
    fm = nr.vector_field(net, u0 - h_v * vec, v_in)
    return np.asarray((fp - fm) / (2 * h_v))


def probe_loss(
    net: nr.NonReciprocalNet,
    u0: Array,
    v_in: Array,
    rng: np.random.Generator,
    *,
    n_probes: int = 5,
    h_v: float = 1e-4,
) -> float:
    """Estimate of :func:`homeostatic_loss` from clamped-probe current reads, S^2.

    Args:
        net: the network.
        u0: ``(batch, n_free)`` free fixed point, V.
        v_in: ``(batch, n_inputs)`` input voltages, V.
        rng: the run's generator (probe vectors).
        n_probes: Gaussian probes per example (>= 1).
        h_v: probe amplitude, V (> 0; central differences, O(h^2) error).
    """
    if n_probes < 1 or not h_v > 0:
        raise ConfigError("need n_probes >= 1 and a probe amplitude h_v > 0 V")
    total = 0.0
    for _ in range(n_probes):
        eps = rng.standard_normal(u0.shape)
        je = _jvp(net, u0, v_in, eps, h_v)
        # scale the second probe to the same amplitude as the first
        scale = np.linalg.norm(je, axis=1, keepdims=True) / np.sqrt(u0.shape[1])
        scale = np.where(scale > 0, scale, 1.0)
        jje = _jvp(net, u0, v_in, je / scale, h_v) * scale
        total += float(np.mean(np.sum(je * je, axis=1) - np.sum(eps * jje, axis=1)))
    return total / (n_probes * net.n_free)


def _chain(net: nr.NonReciprocalNet, dldj: Array) -> Array:
    """Map ``dL/dJ`` ``(n_free, n_free)`` onto the couplings (``g_flat`` order), S."""
    grads = []
    for c in net.couplings:
        ns, nd = net.sizes[c.src_layer], net.sizes[c.dst_layer]
        if c.src_layer == 0:
            grads.append(np.zeros(ns * nd))
            continue
        dst = net.layer_slice(c.dst_layer)
        src = net.layer_slice(c.src_layer)
        # J[q, p] += gamma alpha g[p, q];  J[q, q] -= gamma g[p, q]
        off = c.current_gain * c.drive_gain * dldj[dst, src].T
        diag = -c.current_gain * np.diag(dldj)[dst][None, :]
        grads.append((off + diag).ravel())
    return np.concatenate(grads)


def homeostatic_gradient(net: nr.NonReciprocalNet, u0: Array) -> Array:
    """Exact ``dL_homeo/dg`` (fixed point held constant), ``(n_g,)`` in ``g_flat`` order, S."""
    J = np.asarray(nr.jacobian(net, u0))
    dldj = 2.0 * np.mean(J - np.swapaxes(J, 1, 2), axis=0) / net.n_free
    return _chain(net, dldj)


def probe_gradient(
    net: nr.NonReciprocalNet,
    u0: Array,
    rng: np.random.Generator,
    *,
    n_probes: int = 5,
) -> Array:
    """Stochastic ``dL_homeo/dg`` from Gaussian probes (rank-1 rule, docs/estimators.md §4.1), S.

    Uses ``J eps`` and the transposed read ``J^T eps`` (a crossbar driven from
    its other side); unbiased for :func:`homeostatic_gradient`.
    """
    if n_probes < 1:
        raise ConfigError("need n_probes >= 1")
    J = np.asarray(nr.jacobian(net, u0))
    n = net.n_free
    acc = np.zeros((n, n))
    for _ in range(n_probes):
        eps = rng.standard_normal(u0.shape)
        je = np.einsum("bij,bj->bi", J, eps)
        jte = np.einsum("bji,bj->bi", J, eps)
        m = 2 * je[:, :, None] * eps[:, None, :] - eps[:, :, None] * je[:, None, :]
        m -= jte[:, :, None] * eps[:, None, :]
        acc += m.mean(axis=0)
    return _chain(net, acc / (n_probes * n))
