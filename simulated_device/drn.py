"""Deep resistive network (DRN): the layered circuit of Scellier (2024) and its exact solver.

The physics (docs/physics.md §2):

* layer 0 holds the input nodes, driven by voltage sources. A pixel ``x`` in
  [0, 1] is applied as the pair ``+G_in*x`` and ``-G_in*x`` (so an image of
  ``P`` pixels uses ``2P`` input nodes: first all the ``+`` copies, then all the
  ``-`` copies);
* hidden layers: the first ``ceil(n/2)`` nodes of each are clamped to
  ``v >= 0`` by an ideal diode from ground, the rest to ``v <= 0`` by a diode to
  ground (so each node computes a ReLU / negative ReLU of a weighted mean);
* the output layer is linear; a nudge adds ``beta*(y - v)`` (resistive pull) or
  a current ``I`` to each output node;
* consecutive layers are densely connected by conductances ``W[l]`` of shape
  ``(n_l, n_{l+1})``; each hidden and output node has a bias current source.

The steady state minimises ``E = 1/2 sum g (v_i - v_j)^2 - sum b_k v_k`` (plus
``beta * 1/2 sum (v_o - y_o)^2`` when nudged) under the clamps. Nodes of one
layer do not interact, so a whole layer's exact minimiser given its neighbours
is a clipped weighted mean. :func:`relax` alternates between the even- and the
odd-indexed free layers ("asynchronous" block coordinate descent, exact
per block and convergent for this convex problem).

Speed: the input layer never changes during a solve, so its contribution
``v_in @ W[0]`` is computed once per solve, not once per sweep; when the
inputs come in ``+x/-x`` pairs it is computed as ``x @ (W0+ - W0-)``, half the
multiply-adds. Column and row sums of the weights are cached until the
weights change (:meth:`DRN.weights_changed`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import ConfigError
from hwloop.layered import LayerSizes, n_excitatory, parse_arch

__all__ = ["DRN", "SolveStats", "n_excitatory", "parse_arch", "pixels_to_inputs"]

Array = NDArray[np.floating]


@dataclass(frozen=True)
class _Operators:
    """Cached per-layer update operators for one value of beta."""

    inv: list[Array]
    a_in: list[Array | None]
    a_out: list[Array | None]
    n_exc: list[int]
    """Number of ``v >= 0`` nodes in each free layer (hidden layers are clamped)."""


@dataclass(frozen=True)
class SolveStats:
    """Diagnostics of one relaxation.

    Attributes:
        sweeps: number of full sweeps done.
        max_change_v: largest node-voltage change in the last sweep, V.
    """

    sweeps: int
    max_change_v: float


class DRN(LayerSizes):
    """A deep resistive network with its conductances, biases and solver.

    The weights are views into one flat buffer (``g_flat``) so that the board's
    device array can update them in place. All arrays share one dtype (float64
    by default; float32 as an option for speed).

    Args:
        layer_sizes: ``(n_inputs, n_hidden_1, ..., n_outputs)``; ``n_inputs`` counts
            input nodes (twice the pixels when inputs come in +/- pairs).
        g_flat: ``(sum n_l * n_{l+1},)`` conductances, S, layer after layer, each
            layer row-major ``(n_l, n_{l+1})``; must be non-negative.
        biases: ``(sum of hidden and output sizes,)`` bias currents, A.
    """

    def __init__(self, layer_sizes: tuple[int, ...], g_flat: Array, biases: Array) -> None:
        if len(layer_sizes) < 2:
            raise ConfigError("a DRN needs an input and an output layer")
        self.sizes = tuple(int(n) for n in layer_sizes)
        n_w = sum(a * b for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True))
        if g_flat.shape != (n_w,):
            raise ConfigError(f"DRN: expected {n_w} conductances, got shape {g_flat.shape}")
        n_b = sum(self.layer_sizes[1:])
        if biases.shape != (n_b,):
            raise ConfigError(f"DRN: expected {n_b} biases, got shape {biases.shape}")
        self.dtype = g_flat.dtype
        self.g_flat = g_flat
        self.b_flat = biases.astype(self.dtype, copy=False)
        self.weights: list[Array] = []
        off = 0
        for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True):
            self.weights.append(self.g_flat[off : off + a * b].reshape(a, b))
            off += a * b
        self.biases: list[Array] = []
        off = 0
        for n in self.layer_sizes[1:]:
            self.biases.append(self.b_flat[off : off + n])
            off += n
        self._den: list[Array] | None = None
        self._w0_diff: Array | None = None
        self._ops: dict[float, _Operators] = {}
        self._ops_base: _Operators | None = None
        self._rows: Array | None = None

    # ------------------------------------------------------------------ set-up
    @classmethod
    def initialise(
        cls,
        layer_sizes: tuple[int, ...],
        rng: np.random.Generator,
        *,
        weight_gain: float = 1.0,
        dtype: type[np.floating] | np.dtype[np.floating] = np.float64,
    ) -> DRN:
        """Initialise as the published code does.

        ``g ~ U(-s, s)`` with ``s = weight_gain/sqrt(fan_in)``, clipped at 0 (about
        half start at exactly 0 S); biases 0 A.
        """
        sizes = tuple(int(n) for n in layer_sizes)
        parts = []
        for a, b in itertools.pairwise(sizes):
            s = weight_gain / np.sqrt(a)
            parts.append(np.maximum(rng.uniform(-s, s, size=a * b), 0.0))
        g = np.concatenate(parts).astype(dtype)
        return cls(sizes, g, np.zeros(sum(sizes[1:]), dtype=dtype))

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(n_inputs, n_hidden_1, ..., n_outputs)`` (the mixin's ``sizes``)."""
        return self.sizes

    @property
    def n_free_layers(self) -> int:
        """Hidden layers plus the output layer."""
        return len(self.layer_sizes) - 1

    def weights_changed(self) -> None:
        """Drop cached sums and scaled operators; call after any change of ``g_flat``."""
        self._den = None
        self._w0_diff = None
        self._rows = None
        self._ops.clear()
        self._ops_base = None

    def _denominators(self) -> list[Array]:
        """Total conductance at each free node (column sums in, row sums out), S."""
        if self._den is None:
            den = []
            for k in range(self.n_free_layers):
                d = self.weights[k].sum(axis=0)
                if k + 1 < len(self.weights):
                    d = d + self.weights[k + 1].sum(axis=1)
                den.append(np.ascontiguousarray(d, dtype=self.dtype))
            self._den = den
        return self._den

    def _operators(self, beta_s: float) -> _Operators:
        """Per-layer update operators with the 1/den scaling folded in (cached per beta).

        Only the output layer's denominator depends on beta: its scaling and the
        operator into it are built per beta, the rest once per conductance change
        (shared by the free and nudged phases of a step).
        """
        key = float(beta_s)
        ops = self._ops.get(key)
        if ops is not None:
            return ops
        dt = self.dtype
        L = self.n_free_layers
        if key != 0.0:
            self.check_beta(key)
        base = self._ops_base
        if base is None:
            den = self._denominators()
            # A node with no conductance at all is held at 0 V (by its diode, or taken as
            # such for an isolated output) instead of turning the solve into NaN.
            inv0 = [self._inverse(d) for d in den[: L - 1]]
            a_in0: list[Array | None] = [None] * L
            a_out0: list[Array | None] = [None] * L
            for k in range(L - 1):
                if k >= 1:
                    a_in0[k] = np.ascontiguousarray(self.weights[k] * inv0[k][None, :], dtype=dt)
                a_out0[k] = np.ascontiguousarray(
                    (self.weights[k + 1] * inv0[k][:, None]).T, dtype=dt
                )
            n_exc = [n_excitatory(n) for n in self.layer_sizes[1:]]
            base = self._ops_base = _Operators(inv=inv0, a_in=a_in0, a_out=a_out0, n_exc=n_exc)
        d_out = self._denominators()[L - 1]
        if key != 0.0:
            d_out = d_out + dt.type(key)
        inv_out = self._inverse(d_out)
        a_in = list(base.a_in)
        if L >= 2:
            a_in[L - 1] = np.ascontiguousarray(
                self.weights[L - 1] * inv_out[None, :], dtype=dt
            )
        ops = _Operators(inv=[*base.inv, inv_out], a_in=a_in, a_out=list(base.a_out),
                         n_exc=base.n_exc)
        if len(self._ops) > 8:
            self._ops.clear()
        self._ops[key] = ops
        return ops

    def _inverse(self, d: Array) -> Array:
        """``1/d`` where ``d > 0``, else 0, in the arithmetic type."""
        return np.asarray(np.divide(1.0, d, out=np.zeros_like(d), where=d > 0), dtype=self.dtype)

    def check_beta(self, beta_s: float) -> None:
        """Refuse a nudge that makes an output node's total conductance non-positive.

        Raises:
            ConfigError: the nudged problem would not be convex.
        """
        if beta_s >= 0:
            return
        den = self._denominators()[-1]
        if np.any(den + beta_s <= 0):
            raise ConfigError(
                f"beta={beta_s} makes an output node's total conductance non-positive "
                f"(smallest {float(den.min()):.4g} S; the nudged problem is not convex); use a "
                "smaller |beta| or a current nudge"
            )

    def project_inputs(self, v_in: Array, paired: bool | None = None) -> Array:
        """``v_in @ W[0]``: the input layer's pull on the first free layer, A.

        Computed as ``x @ (W0+ - W0-)`` (half the multiply-adds) when the inputs
        are ``+x/-x`` pairs. ``paired=None`` detects that; pass True/False to skip
        the check. The result is constant over a solve and over the nudged
        phases that share the same inputs, so callers may cache it.
        """
        w0 = self.weights[0]
        n = self.n_inputs
        v_in = np.asarray(v_in, dtype=self.dtype)
        if n % 2 == 0:
            h = n // 2
            pos, neg = v_in[:, :h], v_in[:, h:]
            if paired is None:
                paired = bool(np.array_equal(neg, -pos))
            if paired:
                if self._w0_diff is None:
                    self._w0_diff = np.ascontiguousarray(w0[:h] - w0[h:])
                return np.asarray(pos @ self._w0_diff)
        return np.asarray(v_in @ w0)

    def zero_state(self, batch: int) -> list[Array]:
        """Free-layer voltages all at 0 V, for ``batch`` examples."""
        return [np.zeros((batch, n), dtype=self.dtype) for n in self.layer_sizes[1:]]

    # ------------------------------------------------------------------ solve
    def relax(
        self,
        v_in: Array,
        state: list[Array] | None = None,
        *,
        beta_s: float = 0.0,
        targets_v: Array | None = None,
        nudge_currents_a: Array | None = None,
        n_sweeps: int = 4,
        tol_v: float | None = None,
        max_sweeps: int = 10_000,
        projection: Array | None = None,
    ) -> tuple[list[Array], SolveStats]:
        """Relax the free layers to the (nudged) equilibrium by block coordinate descent.

        Args:
            v_in: ``(batch, n_inputs)`` input node voltages, V.
            state: warm start, one ``(batch, n_l)`` array per free layer (not
                modified); ``None`` starts from 0 V.
            beta_s: resistive-pull nudge conductance, S. With a negative beta the
                output denominators must stay positive (checked).
            targets_v: ``(batch, n_outputs)`` nudge targets, V (needed if beta != 0).
            nudge_currents_a: ``(batch, n_outputs)`` injected output currents, A.
            n_sweeps: number of sweeps when ``tol_v`` is None (>= 1).
            tol_v: if given, sweep until the largest change in a sweep is below
                ``tol_v`` (V).
            max_sweeps: most sweeps in tolerance mode (>= 1).
            projection: ``project_inputs(v_in)`` if the caller has it cached.

        Returns:
            The free-layer voltages (new arrays) and solve diagnostics.
        """
        dt = self.dtype
        v_in = np.asarray(v_in, dtype=dt)
        batch = v_in.shape[0]
        L = self.n_free_layers
        if beta_s != 0.0 and targets_v is None:
            raise ConfigError("a resistive nudge needs targets for the output nodes")
        ops = self._operators(beta_s)
        proj = self.project_inputs(v_in) if projection is None else projection
        # constant part of each free layer's update, already divided by den
        const: list[Array] = []
        for k in range(L):
            c = self.biases[k] + proj if k == 0 else self.biases[k][None, :]
            if k == L - 1:
                if beta_s != 0.0:
                    c = c + dt.type(beta_s) * np.asarray(targets_v, dtype=dt)
                if nudge_currents_a is not None:
                    c = c + np.asarray(nudge_currents_a, dtype=dt)
            const.append(np.asarray(c * ops.inv[k], dtype=dt))
        if state is not None:
            V = [s.astype(dt, copy=True) for s in state]
            fresh = False
        else:
            V = self.zero_state(batch)
            fresh = True
        groups = [*range(0, L, 2), *range(1, L, 2)]
        track = tol_v is not None
        limit = max_sweeps if track else n_sweeps
        change = np.inf
        sweeps = 0
        while sweeps < limit:
            change = 0.0
            for k in groups:
                a_in, a_out = ops.a_in[k], ops.a_out[k]
                new: Array
                if a_in is not None:
                    new = V[k - 1] @ a_in
                    new += const[k]
                else:
                    new = const[k].copy()  # layer 0: bias + input projection, (batch, n)
                if a_out is not None and not (fresh and sweeps == 0 and k % 2 == 0):
                    new += V[k + 1] @ a_out
                if k + 1 < L:  # hidden layer: the diode clamps
                    h = ops.n_exc[k]
                    np.maximum(new[:, :h], 0, out=new[:, :h])
                    np.minimum(new[:, h:], 0, out=new[:, h:])
                if track:
                    change = max(change, float(np.max(np.abs(new - V[k]), initial=0.0)))
                V[k] = new
            sweeps += 1
            if track and change < float(tol_v):  # type: ignore[arg-type]
                break
        return V, SolveStats(sweeps=sweeps, max_change_v=float(change) if track else float("nan"))

    # ------------------------------------------------------------------ physics
    def energy(
        self, v_in: Array, V: list[Array], beta_s: float = 0.0, targets_v: Array | None = None
    ) -> NDArray[np.float64]:
        """Per-example total energy ``E + beta*C``, in W/2 units, docs/physics.md §1.2 (float64)."""
        layers = [np.asarray(v_in, np.float64)] + [np.asarray(v, np.float64) for v in V]
        e = np.zeros(layers[0].shape[0])
        for k, w in enumerate(self.weights):
            a, b = layers[k], layers[k + 1]
            w64 = w.astype(np.float64)
            # 1/2 sum_ij g_ij (a_i - b_j)^2 expanded without forming (batch, i, j)
            e += 0.5 * (
                (a * a) @ w64.sum(axis=1)
                + (b * b) @ w64.sum(axis=0)
                - 2.0 * np.einsum("bi,ij,bj->b", a, w64, b)
            )
        for k, bias in enumerate(self.biases):
            e -= layers[k + 1] @ bias.astype(np.float64)
        if beta_s != 0.0 and targets_v is not None:
            e += beta_s * 0.5 * np.sum((layers[-1] - targets_v) ** 2, axis=1)
        return e

    def first_layer_conductance(self) -> float:
        """An upper bound on the total input-block conductance, S (cheap, cached sums)."""
        return float(self._denominators()[0].sum(dtype=np.float64))

    def input_row_sums(self) -> Array:
        """Total conductance at each input node, S (cached until the weights change)."""
        if self._rows is None:
            self._rows = np.ascontiguousarray(self.weights[0].sum(axis=1))
        return self._rows

    def source_currents(self, v_in: Array, V: list[Array]) -> Array:
        """``(batch, n_inputs)`` current delivered by each input source, A."""
        w0 = self.weights[0]
        return np.asarray(v_in * w0.sum(axis=1) - V[0] @ w0.T)

    def macs_per_example(self, n_sweeps: int, paired_inputs: bool = True) -> int:
        """Minimal multiply-adds per example of one solve.

        The input projection once, then per sweep one product per weight matrix
        in each direction it is used.
        """
        s = self.layer_sizes
        first = (s[0] // 2 if paired_inputs and s[0] % 2 == 0 else s[0]) * s[1]
        per_sweep = sum(2 * a * b for a, b in itertools.pairwise(s[1:]))
        return int(first + n_sweeps * per_sweep)


def pixels_to_inputs(x: Array, input_gain_v: float) -> Array:
    """Map pixels ``(batch, P)`` in [0, 1] to ``(batch, 2P)`` input voltages ``[+G x, -G x]``, V."""
    x = np.asarray(x)
    return np.concatenate([input_gain_v * x, -input_gain_v * x], axis=1)
