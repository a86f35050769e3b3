"""Per-layer alignment of the measured EP error vector with the true error (issue 15).

At the free fixed point ``u*`` of a board with Jacobian ``J = dF/du`` (free nodes, S)
and output cost ``L = 1/2 sum_o (v_o - y_o)^2`` (V^2), with ``c = dL/du`` (V, zero off
the outputs):

* the **EP error vector** is what the run's estimator measures, ``e = Re sum_i c_i
  v(beta_i)`` (the stencil's combination of the nudged phases, V/S); for a small
  nudge it tends to ``du*/dbeta = J^-1 c``;
* the **true error vector** is the adjoint ``lam = J^-T c`` (V/S): the exact gradient is
  the local rule applied to ``lam`` (docs/estimators.md §1), and ``-lam_k`` is the
  derivative of the loss with respect to a current injected into node ``k``.

The two agree when ``J`` is symmetric (a reciprocal network). For each hidden layer
``l`` (the nodes a forward block drives, outputs excluded) the alignment is

* ``cosine = <e_l, lam_l> / (|e_l| |lam_l|)`` (dimensionless, in [-1, 1]): the
  direction error of the error signal that reaches that layer;
* ``size_ratio = |e_l| / |lam_l|`` (dimensionless, >= 0): its gain, i.e. the factor by
  which that layer's effective learning rate differs from exact gradient descent's;

with both vectors flattened over the examples and the layer's nodes. The output layer
is not reported: its error vector is ``c`` in both (up to the estimator's bias).

The true error needs the Jacobian, so the measurement needs a board that reports it
(:class:`protocols.homeostasis.JacobianProbe`: the emulators).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hwloop.device import BoardDescription, Device
from hwloop.errors import ConfigError
from protocols.config import TrainConfig
from protocols.engine import free_phase, nudged_phases
from protocols.estimators import Stencil
from protocols.homeostasis import JacobianProbe
from protocols.updates import board_couplings

Array = NDArray[np.floating]


@dataclass(frozen=True)
class LayerAlignment:
    """Alignment of one hidden layer's EP error with its true error.

    Attributes:
        layer: hidden layer number, 1 = the first after the inputs.
        cosine: cosine of the angle between the two error vectors (in [-1, 1]).
        size_ratio: ``|EP error| / |true error|`` (>= 0; NaN when the true error is 0).
    """

    layer: int
    cosine: float
    size_ratio: float


def hidden_layer_positions(desc: BoardDescription) -> list[NDArray[np.intp]]:
    """Positions (in ``desc.free_nodes`` order) of each hidden layer's nodes.

    The hidden layers are the receivers of the forward layer blocks, the last
    (output) one excluded. On a board with directed couplings the backward blocks
    are skipped.

    Raises:
        ConfigError: the board has no layer blocks.
    """
    if desc.layers is None:
        raise ConfigError("the error alignment needs a layered board (layer blocks)")
    couplings = desc.info.get("couplings")
    kinds = (
        [str(c["kind"]) for c in couplings]
        if board_couplings(desc) is not None and isinstance(couplings, list)
        else ["forward"] * len(desc.layers)
    )
    forward = [b for b, k in zip(desc.layers, kinds, strict=True) if k == "forward"]
    return [np.searchsorted(desc.free_nodes, b.dst) for b in forward[:-1]]


def alignment(
    ep_error: Array, true_error: Array, layers: list[NDArray[np.intp]]
) -> list[LayerAlignment]:
    """Cosine and size ratio per hidden layer.

    Args:
        ep_error: ``(batch, n_free)`` measured EP error vector, V/S.
        true_error: ``(batch, n_free)`` true error (adjoint) vector, V/S.
        layers: the positions of each hidden layer (:func:`hidden_layer_positions`).
    """
    out = []
    for i, pos in enumerate(layers, start=1):
        e = np.real(np.asarray(ep_error))[:, pos].ravel()
        t = np.real(np.asarray(true_error))[:, pos].ravel()
        ne, nt = float(np.linalg.norm(e)), float(np.linalg.norm(t))
        cos = float(e @ t) / (ne * nt) if ne > 0 and nt > 0 else float("nan")
        out.append(LayerAlignment(i, cos, ne / nt if nt > 0 else float("nan")))
    return out


def true_error(jacobian_s: Array, v_free: Array, targets_v: Array, out_pos: NDArray[np.intp]) -> (
    Array
):
    """The adjoint ``lam = J^-T c`` per example, V/S.

    Args:
        jacobian_s: ``(batch, n_free, n_free)`` ``dF/du`` at the free fixed point, S.
        v_free: ``(batch, n_free)`` free-phase voltages, V.
        targets_v: ``(batch, n_outputs)`` targets, V.
        out_pos: positions of the outputs among the free nodes.
    """
    c = np.zeros(v_free.shape, dtype=np.float64)
    c[:, out_pos] = np.real(v_free[:, out_pos]) - targets_v
    jt = np.swapaxes(np.real(jacobian_s), 1, 2)
    return np.asarray(np.linalg.solve(jt, c[..., None])[..., 0])


def measure_alignment(
    device: Device, stencil: Stencil, v_inputs: Array, targets_v: Array, *, n_samples: int = 1
) -> list[LayerAlignment]:
    """Measure the run's EP error vector and compare it with the true error, per hidden layer.

    Applies ``v_inputs`` (V), measures the free phase and the stencil's nudged phases
    (``stencil.betas_s``, S, with ``n_samples`` samples each, as a training step
    does), and asks the board for its Jacobian at the free fixed point. The nudge is
    released at the end.

    Raises:
        ConfigError: the board does not report its Jacobian, or is not layered.
    """
    if not isinstance(device, JacobianProbe):
        raise ConfigError(
            "the error alignment needs a board that reports its Jacobian (an emulator); "
            "drop --alignment for this backend"
        )
    desc = device.describe()
    out_pos = np.searchsorted(desc.free_nodes, desc.output_nodes)
    u0 = np.asarray(np.real(free_phase(device, v_inputs, n_samples).mean_v), dtype=np.float64)
    lam = true_error(device.jacobian(), u0, targets_v, out_pos)
    readings, _ = nudged_phases(device, stencil.betas_s, targets_v, n_samples=n_samples)
    e = np.zeros_like(u0)
    for coef, r in zip(stencil.coeffs, readings, strict=True):
        v = u0 if r is None else np.asarray(r.mean_v)
        e = e + np.real(complex(coef) * v)
    return alignment(e, lam, hidden_layer_positions(desc))


def format_alignment(epoch: int, rows: list[LayerAlignment], n_examples: int) -> list[str]:
    """One session-file ``info`` message per hidden layer (docs/session-format.md).

    ``epoch 3: error alignment layer 1: cos 0.951234, size ratio 0.351234 (EP vs true
    error, 32 examples)``; epoch 0 is the state before training.
    """
    return [
        f"epoch {epoch}: error alignment layer {r.layer}: cos {r.cosine:.6f}, size ratio "
        f"{r.size_ratio:.6g} (EP vs true error, {n_examples} examples)"
        for r in rows
    ]


def for_replay(cfg: TrainConfig, deterministic: bool) -> TrainConfig:
    """The recorded configuration as a replay re-runs it: without the alignment measurement.

    The measurement happens between epochs and is not part of the recorded steps; on a
    board without read noise (``deterministic``) it drew nothing from the run's
    generator, so the steps replay without it.

    Raises:
        ConfigError: the run measured its alignment on a noisy board: those reads drew
            from the run's generator, so its later steps cannot be reproduced.
    """
    if cfg.alignment == 0:
        return cfg
    if not deterministic:
        raise ConfigError(
            "this run measured its error alignment (--alignment) on a board with read "
            "noise; those reads drew from the run's generator, so it cannot be replayed "
            "(train without --alignment for a replayable run)"
        )
    return dataclasses.replace(cfg, alignment=0)
