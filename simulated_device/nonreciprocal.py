"""Layered resistive networks whose forward and backward couplings differ (issue 7).

The physics, in the style of Scellier's DRN (docs/physics.md §2) but without
the reciprocity a passive circuit guarantees (docs/estimators.md §2 and §4.2):

* layer 0 holds the inputs (voltage sources); layers ``1 .. L`` are free nodes;
  the last layer is the output layer;
* between layers ``l`` and ``l + 1`` there are two conductance arrays:

  - **forward** ``w_fwd[l]`` of shape ``(n_l, n_{l+1})``: an amplifier of voltage
    gain ``a_l`` buffers node ``i`` of layer ``l`` and drives the conductance
    into node ``j`` of layer ``l + 1``, whose KCL receives
    ``w_fwd[l][i, j] * (a_l * v_i - v_j)`` (the buffer draws no current from ``i``);
  - **backward** ``w_bwd[l - 1]`` of shape ``(n_{l+1}, n_l)`` (for ``l >= 1``;
    inputs are sources and take no feedback): the current through the
    conductance from node ``k`` of layer ``l + 1`` to node ``i`` of layer ``l``
    is multiplied by a current gain ``c_l`` (a current mirror) and injected into
    ``i``: ``c_l * w_bwd[l - 1][k, i] * (v_k - v_i)``;

  with ``w_bwd[l - 1] == w_fwd[l].T`` and ``a_l = c_l = 1`` each pair is one
  resistor and the network is the reciprocal (gradient) system;
* every hidden node has a Shockley diode to ground (a smooth, holomorphic soft
  clamp: the first ``ceil(n/2)`` nodes of a layer are pushed to ``v >~ 0``, the
  rest to ``v <~ 0``, as the DRN's ideal diodes): the current into the node is
  ``s * I_s * (exp(-s * v / V_T) - 1)`` with ``s = +1`` (excitatory) or ``-1``;
* every free node has a bias current source ``b_k``; a nudge adds
  ``beta * (y_o - v_o)`` (resistive pull, ``beta`` may be complex) or a
  current ``I_o`` at each output node.

The steady state solves ``F(u) = 0`` where ``F`` is the net current into each
free node (A): a vector field that is not a gradient when the couplings are
not reciprocal, so it is solved with a batched damped Newton method
(:func:`solve`), in complex arithmetic when the nudge is complex (every element
law is holomorphic, docs/estimators.md §3.4).

The loss is ``L = mean_batch 1/2 sum_o (v_o - y_o)^2`` (V^2). Its exact gradient
comes from implicit differentiation at the free fixed point (docs/estimators.md
§1): with ``J = dF/du`` and ``c = dL/du``, the adjoint ``lam = J^-T c``
gives ``dL/dtheta = -lam^T dF/dtheta``. The EP error vector is instead
``du*/dbeta = J^-1 c`` (for the physical, toward-target nudge); the two agree
exactly when ``J`` is symmetric. Both feed the same local rule
(:func:`local_gradient`).

Units: volts, amperes, siemens (the simulation units of architecture DR-2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import CircuitError, ConfigError
from hwloop.layered import LayerSizes

Array = NDArray[np.floating]
CArray = NDArray[np.floating] | NDArray[np.complexfloating]


@dataclass(frozen=True)
class Coupling:
    """One dense block of directed couplings from a driver layer to a receiver layer.

    The receiver node ``q`` gets the current ``current_gain * g[p, q] *
    (drive_gain * v_p - v_q)`` from driver node ``p``.

    Attributes:
        kind: ``"forward"`` or ``"backward"``.
        src_layer: index of the driving layer.
        dst_layer: index of the receiving layer.
        drive_gain: voltage gain of the buffer driving the conductances (dimensionless).
        current_gain: gain applied to the current delivered to the receiver (dimensionless).
    """

    kind: str
    src_layer: int
    dst_layer: int
    drive_gain: float
    current_gain: float


@dataclass(eq=False)
class NonReciprocalNet(LayerSizes):
    """A layered network with separate forward and backward conductances.

    All conductances live in one flat buffer ``g_flat`` (S) in block order
    ``fwd 0, fwd 1, bwd 1, fwd 2, bwd 2, ...``; :attr:`blocks` are views into it,
    one per :attr:`couplings` entry, each of shape ``(n_src, n_dst)``.

    Args:
        sizes: ``(n_inputs, n_hidden_1, ..., n_outputs)``.
        g_flat: conductances, S (>= 0), block order as above.
        biases_a: ``(n_free,)`` bias currents, A.
        fwd_gain: ``(L,)`` forward voltage gain of each layer pair.
        bwd_gain: ``(L,)`` backward current gain of each layer pair (entry 0 unused).
        i_s_a: diode saturation current, A (> 0).
        v_t_v: diode thermal voltage, V (> 0).
    """

    sizes: tuple[int, ...]
    g_flat: Array
    biases_a: Array
    fwd_gain: Array
    bwd_gain: Array
    i_s_a: float = 0.05
    v_t_v: float = 0.2
    couplings: list[Coupling] = field(init=False)
    blocks: list[Array] = field(init=False)

    def __post_init__(self) -> None:
        sizes = self.sizes
        if len(sizes) < 2 or any(n < 1 for n in sizes):
            raise ConfigError(f"layer sizes {sizes} need at least two positive sizes")
        n_layers = len(sizes) - 1
        if self.fwd_gain.shape != (n_layers,) or self.bwd_gain.shape != (n_layers,):
            raise ConfigError(f"gains need one value per layer pair ({n_layers})")
        if not (self.i_s_a > 0 and self.v_t_v > 0):
            raise ConfigError("diode parameters i_s_a and v_t_v must be > 0")
        self.couplings = []
        for li in range(n_layers):
            self.couplings.append(Coupling("forward", li, li + 1, float(self.fwd_gain[li]), 1.0))
            if li >= 1:
                self.couplings.append(
                    Coupling("backward", li + 1, li, 1.0, float(self.bwd_gain[li]))
                )
        n_g = sum(sizes[c.src_layer] * sizes[c.dst_layer] for c in self.couplings)
        if self.g_flat.shape != (n_g,):
            raise ConfigError(f"expected {n_g} conductances, got shape {self.g_flat.shape}")
        if self.biases_a.shape != (self.n_free,):
            raise ConfigError(f"expected {self.n_free} biases, got shape {self.biases_a.shape}")
        self.blocks = []
        off = 0
        for c in self.couplings:
            ns, nd = sizes[c.src_layer], sizes[c.dst_layer]
            self.blocks.append(self.g_flat[off : off + ns * nd].reshape(ns, nd))
            off += ns * nd

    # ------------------------------------------------------------------ layout
    def layer_slice(self, layer: int) -> slice:
        """Positions of ``layer`` (>= 1) in the free-node vector."""
        start = sum(self.sizes[1:layer])
        return slice(start, start + self.sizes[layer])

    @property
    def diode_sign(self) -> Array:
        """``(n_free,)`` +1 excitatory, -1 inhibitory, 0 no diode (outputs)."""
        s = np.zeros(self.n_free)
        for li in range(1, len(self.sizes) - 1):
            n = self.sizes[li]
            sl = self.layer_slice(li)
            s[sl] = np.where(np.arange(n) < n - n // 2, 1.0, -1.0)
        return s

    def is_reciprocal(self, rtol: float = 0.0) -> bool:
        """True when every backward block equals its forward block transposed and gains are 1."""
        for li in range(1, len(self.sizes) - 1):
            wf, wb = self.forward(li), self.backward(li)
            if not np.allclose(wb, wf.T, rtol=rtol, atol=0.0):
                return False
        return bool(np.all(self.fwd_gain[1:] == 1.0) and np.all(self.bwd_gain[1:] == 1.0))

    def forward(self, li: int) -> Array:
        """Forward conductances ``(n_l, n_{l+1})`` of layer pair ``l``, S (a view)."""
        return self.blocks[0 if li == 0 else 2 * li - 1]

    def backward(self, li: int) -> Array:
        """Backward conductances ``(n_{l+1}, n_l)`` of layer pair ``li >= 1``, S (a view)."""
        if li < 1:
            raise ConfigError("the input layer has no backward couplings")
        return self.blocks[2 * li]

    # ------------------------------------------------------------------ operators
    def operators(self) -> tuple[Array, Array]:
        """The linear part of the vector field.

        Returns:
            ``K`` ``(n_free, n_free)``, S, and ``P`` ``(n_inputs, n_free)``, S, such
            that the coupling currents are ``u @ K.T + v_in @ P`` (A).
        """
        n = self.n_free
        K = np.zeros((n, n))
        P = np.zeros((self.n_inputs, n))
        for c, g in zip(self.couplings, self.blocks, strict=True):
            dst = self.layer_slice(c.dst_layer)
            # diagonal: -current_gain * sum over drivers
            K[dst, dst] -= np.diag(c.current_gain * g.sum(axis=0))
            coef = c.current_gain * c.drive_gain * g  # (n_src, n_dst)
            if c.src_layer == 0:
                P[:, dst] += coef
            else:
                K[dst, self.layer_slice(c.src_layer)] += coef.T
        return K, P


# ---------------------------------------------------------------------- the vector field
@dataclass(frozen=True)
class Nudging:
    """A nudge on the output nodes (complex values allowed).

    Attributes:
        beta_s: resistive pull conductance, S (0: none).
        targets_v: ``(batch, n_outputs)`` targets of the resistive pull, V.
        currents_a: ``(batch, n_outputs)`` injected currents, A (or ``None``).
    """

    beta_s: complex = 0.0
    targets_v: Array | None = None
    currents_a: CArray | None = None


def diode_current(net: NonReciprocalNet, u: CArray) -> tuple[CArray, CArray]:
    """Diode currents into the free nodes, A, and their derivatives, S."""
    s = net.diode_sign
    e = np.exp(-s * u / net.v_t_v)
    i = s * net.i_s_a * (e - 1.0)
    di = -(net.i_s_a / net.v_t_v) * e * (s != 0)
    return i, di


def vector_field(
    net: NonReciprocalNet,
    u: CArray,
    v_in: Array,
    nudge: Nudging | None = None,
    ops: tuple[Array, Array] | None = None,
) -> CArray:
    """Net current into every free node, ``F(u)`` ``(batch, n_free)``, A."""
    K, P = ops if ops is not None else net.operators()
    i_d, _ = diode_current(net, u)
    F = u @ K.T + (v_in @ P) + net.biases_a + i_d
    if nudge is not None:
        out = net.layer_slice(len(net.sizes) - 1)
        if nudge.beta_s != 0 and nudge.targets_v is not None:
            F[:, out] = F[:, out] + nudge.beta_s * (nudge.targets_v - u[:, out])
        if nudge.currents_a is not None:
            F[:, out] = F[:, out] + nudge.currents_a
    return F


def jacobian(
    net: NonReciprocalNet,
    u: CArray,
    beta_s: complex = 0.0,
    ops: tuple[Array, Array] | None = None,
) -> CArray:
    """``dF/du`` ``(batch, n_free, n_free)``, S."""
    K, _ = ops if ops is not None else net.operators()
    _, di = diode_current(net, u)
    d = di.astype(np.result_type(di, np.asarray(beta_s)), copy=True)
    if beta_s != 0:
        d[:, net.layer_slice(len(net.sizes) - 1)] -= beta_s
    J = np.broadcast_to(K, (u.shape[0], *K.shape)).astype(np.result_type(K, d), copy=True)
    idx = np.arange(K.shape[0])
    J[:, idx, idx] += d
    return J


def energy(net: NonReciprocalNet, u: Array, v_in: Array) -> Array:
    """Co-content ``E(u)`` ``(batch,)`` of the reciprocal network, W (= V*A).

    Only meaningful when :meth:`NonReciprocalNet.is_reciprocal`: then
    ``F = -dE/du``. Conductance terms are ``1/2 g (v_p - v_q)^2`` counted once per
    resistor (through the forward blocks), diodes contribute their co-content,
    bias sources ``-b v``.
    """
    e = np.zeros(u.shape[0])
    for li in range(len(net.sizes) - 1):
        g = net.forward(li)
        vs = v_in if li == 0 else u[:, net.layer_slice(li)]
        vd = u[:, net.layer_slice(li + 1)]
        e += 0.5 * np.einsum("ij,bij->b", g, (vs[:, :, None] - vd[:, None, :]) ** 2)
    s = net.diode_sign
    ed = net.i_s_a * net.v_t_v * (np.exp(-s * u / net.v_t_v) - 1.0) + s * net.i_s_a * u
    return np.asarray(e + ed.sum(axis=1) - u @ net.biases_a)


# ---------------------------------------------------------------------- the solver
@dataclass(frozen=True)
class SolveResult:
    """A batched fixed point.

    Attributes:
        u: ``(batch, n_free)`` free-node voltages, V (complex for complex nudges).
        converged: ``(batch,)`` True where the residual met the tolerance.
        residual_a: ``(batch,)`` largest |F| at the returned point, A.
        iterations: Newton iterations done.
    """

    u: CArray
    converged: NDArray[np.bool_]
    residual_a: Array
    iterations: int


def solve(
    net: NonReciprocalNet,
    v_in: Array,
    nudge: Nudging | None = None,
    start: CArray | None = None,
    *,
    tol_a: float = 1e-13,
    max_iter: int = 100,
    max_step_v: float | None = None,
) -> SolveResult:
    """Solve ``F(u) = 0`` for a batch by damped Newton with backtracking.

    Each example takes the full Newton step when it lowers ``max |F|`` and
    halves it (up to 30 times) otherwise; steps are first limited to
    ``max_step_v`` (default ``4 V_T``) per node, which keeps the diode
    exponentials finite far from the solution.

    Args:
        net: the network.
        v_in: ``(batch, n_inputs)`` input voltages, V.
        nudge: output nudge (complex values switch to complex arithmetic).
        start: initial guess ``(batch, n_free)``, V (default zeros).
        tol_a: residual tolerance, A, relative to the largest coupling current scale.
        max_iter: most Newton iterations.
        max_step_v: largest per-node Newton step, V.

    Raises:
        CircuitError: a singular Jacobian (a floating node): no unique fixed point.
    """
    ops = net.operators()
    batch = v_in.shape[0]
    is_complex = nudge is not None and (
        (np.iscomplexobj(nudge.beta_s) and complex(nudge.beta_s).imag != 0)
        or (nudge.currents_a is not None and np.iscomplexobj(nudge.currents_a))
    )
    dt = np.complex128 if is_complex else np.float64
    u = cast(
        CArray,
        np.zeros((batch, net.n_free), dtype=dt) if start is None else np.array(start, dtype=dt),
    )
    beta = 0.0 if nudge is None else nudge.beta_s
    beta_c: complex = complex(beta) if is_complex else float(np.real(beta))
    nz = nudge if nudge is None or is_complex else Nudging(
        float(np.real(nudge.beta_s)), nudge.targets_v, nudge.currents_a
    )
    scale = 1.0 + float(np.max(np.abs(v_in), initial=0.0)) * float(np.abs(ops[0]).max())
    tol = tol_a * scale
    floor = 64 * np.finfo(np.float64).eps * scale  # below this the residual is round-off
    cap = 4.0 * net.v_t_v if max_step_v is None else max_step_v
    F = vector_field(net, u, v_in, nz, ops)
    res = np.max(np.abs(F), axis=1)
    it = 0
    for it in range(1, max_iter + 1):
        active = res > tol
        if not active.any():
            it -= 1
            break
        J = jacobian(net, u[active], beta_c, ops)
        try:
            step = -np.linalg.solve(J, F[active][..., None])[..., 0]
        except np.linalg.LinAlgError:
            raise CircuitError(
                "the network's Jacobian is singular (a node with no conducting path: its "
                "diode off and its conductances at 0, as after a diverging run); check the "
                "run's loss, and lower the learning rate or the homeostasis strength"
            ) from None
        big = np.max(np.abs(step), axis=1, keepdims=True)
        step = step * np.minimum(1.0, cap / np.maximum(big, 1e-300))
        t = np.ones(step.shape[0])
        ua = u[active]
        ra = res[active]
        new_u = ua + step
        new_f = vector_field(net, new_u, v_in[active], _sub(nz, active), ops)
        new_r = np.max(np.abs(new_f), axis=1)
        for _ in range(30):
            worse = ~(new_r < ra) & (new_r > max(tol, floor))
            if not worse.any():
                break
            t[worse] *= 0.5
            new_u[worse] = ua[worse] + t[worse, None] * step[worse]
            sub = _sub(_sub(nz, active), worse)
            f_w = vector_field(net, new_u[worse], v_in[active][worse], sub, ops)
            new_f[worse] = f_w
            new_r[worse] = np.max(np.abs(f_w), axis=1)
        u[active] = new_u
        F[active] = new_f
        res[active] = new_r
    return SolveResult(u=u, converged=res <= tol, residual_a=res, iterations=it)


def _sub(nudge: Nudging | None, mask: NDArray[np.bool_]) -> Nudging | None:
    if nudge is None:
        return None
    return Nudging(
        nudge.beta_s,
        None if nudge.targets_v is None else nudge.targets_v[mask],
        None if nudge.currents_a is None else nudge.currents_a[mask],
    )


# ---------------------------------------------------------------------- dynamics
def relaxation_time(
    net: NonReciprocalNet, u: Array, capacitance_f: float, betas_s: tuple[float, ...] = (0.0,)
) -> float:
    """Slowest relaxation time of ``C du/dt = F(u)`` linearised at ``u``, s.

    Every free node has the same capacitance ``C`` to ground, so the linear modes
    decay as ``exp(lambda t / C)`` with ``lambda`` the eigenvalues of ``J = dF/du``
    (all with negative real part at a stable fixed point); the slowest has
    ``tau = C / min(-Re lambda)`` over the modes, the batch and the resistive nudges
    ``betas_s`` (S; a pull ``beta`` adds ``-beta`` to the output nodes' diagonal, so a
    negative one slows the outputs down and can destabilise them).

    Raises:
        ConfigError: ``capacitance_f <= 0`` or an unstable linearisation (some
            ``Re lambda >= 0`` at one of the nudges: no relaxation to it).
    """
    if not (np.isfinite(capacitance_f) and capacitance_f > 0):
        raise ConfigError(f"node capacitance {capacitance_f} F must be a positive number")
    rate = np.inf
    for beta in betas_s:
        lam = np.linalg.eigvals(np.asarray(np.real(jacobian(net, u, float(beta)))))
        r = float(np.min(-lam.real))
        if r <= 0:
            raise ConfigError(
                f"the network is unstable under a nudge of {beta:g} S (a Jacobian eigenvalue "
                "has Re >= 0); lower the nudge amplitude"
            )
        rate = min(rate, r)
    return float(capacitance_f) / rate


def drive_sinusoid(
    net: NonReciprocalNet,
    v_in: Array,
    targets_v: Array,
    amplitude_s: float,
    omega_rad_s: float,
    t_eval_s: Array,
    *,
    capacitance_f: float,
    start: Array,
    rtol: float = 1e-10,
) -> Array:
    """Integrate ``C du/dt = F(u; beta(t))`` under ``beta(t) = r cos(omega t)``.

    The resistive pull ``beta(t) (y - v_out)`` on the output nodes follows the
    sinusoid; every free node has capacitance ``C`` to ground. The batch is
    integrated as one stiff system (``scipy.integrate.solve_ivp``, BDF, with the
    block-diagonal Jacobian), starting from ``start`` at ``t = 0``.

    Args:
        net: the network.
        v_in: ``(batch, n_inputs)`` inputs, V (held constant).
        targets_v: ``(batch, n_outputs)`` targets of the pull, V.
        amplitude_s: ``r``, S (real).
        omega_rad_s: angular frequency, rad/s (> 0).
        t_eval_s: increasing sample times, s (>= 0).
        capacitance_f: node capacitance, F (> 0).
        start: ``(batch, n_free)`` state at ``t = 0``, V (e.g. the free fixed point).
        rtol: relative tolerance of the integrator (the absolute one is
            ``rtol`` times the largest ``|start|``, at least ``rtol`` V).

    Returns:
        ``(len(t_eval_s), batch, n_free)`` node voltages at the sample times, V.

    Raises:
        ConfigError: bad arguments, or the integration failed.
    """
    from scipy import sparse
    from scipy.integrate import solve_ivp

    if not (np.isfinite(capacitance_f) and capacitance_f > 0):
        raise ConfigError(f"node capacitance {capacitance_f} F must be a positive number")
    if not (np.isfinite(omega_rad_s) and omega_rad_s > 0):
        raise ConfigError(f"angular frequency {omega_rad_s} rad/s must be a positive number")
    t_eval = np.asarray(t_eval_s, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval.size == 0 or t_eval[0] < 0 or np.any(np.diff(t_eval) <= 0):
        raise ConfigError("sample times must be a non-empty, increasing list of times >= 0 s")
    ops = net.operators()
    batch, n = start.shape
    y = np.asarray(targets_v, dtype=np.float64)
    r = float(amplitude_s)
    inv_c = 1.0 / float(capacitance_f)

    def rhs(t: float, x: Array) -> Array:
        u = x.reshape(batch, n)
        f = vector_field(net, u, v_in, Nudging(r * np.cos(omega_rad_s * t), y), ops)
        return np.asarray(np.real(f), dtype=np.float64).ravel() * inv_c

    def jac(t: float, x: Array) -> sparse.csc_matrix:
        u = x.reshape(batch, n)
        J = np.real(jacobian(net, u, r * np.cos(omega_rad_s * t), ops)) * inv_c
        return sparse.csc_matrix(sparse.block_diag(list(J), format="csc"))

    x0 = np.asarray(start, dtype=np.float64).ravel()
    atol = rtol * max(1.0, float(np.max(np.abs(x0), initial=0.0)))
    sol = solve_ivp(rhs, (0.0, float(t_eval[-1])), x0, method="BDF", t_eval=t_eval,
                    jac=jac, rtol=rtol, atol=atol)
    if not sol.success:
        raise ConfigError(f"the relaxation dynamics did not integrate: {sol.message}")
    return np.asarray(sol.y.T.reshape(t_eval.size, batch, n))


# ---------------------------------------------------------------------- gradients
def loss(net: NonReciprocalNet, u: Array, targets_v: Array) -> float:
    """``mean_batch 1/2 sum_o (v_o - y_o)^2``, V^2."""
    d = u[:, net.layer_slice(len(net.sizes) - 1)] - targets_v
    return float(0.5 * np.mean(np.sum(d * d, axis=1)))


def loss_direction(net: NonReciprocalNet, u: Array, targets_v: Array) -> Array:
    """``c = dL/du`` per example (not divided by the batch), ``(batch, n_free)``, V."""
    c = np.zeros_like(u)
    out = net.layer_slice(len(net.sizes) - 1)
    c[:, out] = u[:, out] - targets_v
    return c


def nudge_response(net: NonReciprocalNet, u0: Array, targets_v: Array) -> Array:
    """Exact EP error vector ``du*/dbeta = J^-1 c`` at the free fixed point, V/S.

    For the physical toward-target nudge ``beta (y - v)``; what an ideal,
    infinitesimal-nudge EP measurement converges to.
    """
    J = jacobian(net, u0)
    return np.asarray(np.linalg.solve(J, loss_direction(net, u0, targets_v)[..., None])[..., 0])


def adjoint(net: NonReciprocalNet, u0: Array, targets_v: Array) -> Array:
    """The adjoint ``lam = J^-T c`` at the free fixed point, V/S (the true error vector)."""
    J = jacobian(net, u0)
    Jt = np.swapaxes(J, 1, 2)
    return np.asarray(np.linalg.solve(Jt, loss_direction(net, u0, targets_v)[..., None])[..., 0])


def local_gradient(
    net: NonReciprocalNet, v_in: Array, u0: Array, e: Array
) -> tuple[Array, Array]:
    """``-e^T dF/dtheta`` averaged over the batch: a local rule per coupling.

    For the coupling ``p -> q`` (receiver current ``gamma g (alpha v_p - v_q)``)
    the entry is ``-gamma mean_b[(alpha v_p - v_q) e_q]``; for bias ``k`` it is
    ``-mean_b e_k``. With ``e = adjoint(...)`` this is the exact ``dL/dtheta``;
    with ``e = nudge_response(...)`` (or a measured estimate of it) it is the
    generalized-EP estimate.

    Returns:
        ``(dL/dg, dL/db)``: ``(n_g,)`` in ``g_flat`` order, V^2/S; ``(n_free,)``, V^2/A.
    """
    batch = u0.shape[0]
    grads = []
    for c in net.couplings:
        vs = v_in if c.src_layer == 0 else u0[:, net.layer_slice(c.src_layer)]
        sl = net.layer_slice(c.dst_layer)
        vd, ed = u0[:, sl], e[:, sl]
        blk = c.drive_gain * (vs.T @ ed) - np.sum(vd * ed, axis=0)[None, :]
        grads.append((-c.current_gain / batch) * blk.ravel())
    return np.concatenate(grads), -e.mean(axis=0)


def exact_gradient(
    net: NonReciprocalNet, v_in: Array, u0: Array, targets_v: Array
) -> tuple[Array, Array]:
    """Exact ``dL/dg`` (V^2/S) and ``dL/db`` (V^2/A) by implicit differentiation."""
    return local_gradient(net, v_in, u0, adjoint(net, u0, targets_v))


# ---------------------------------------------------------------------- construction
def initialise(
    sizes: tuple[int, ...],
    rng: np.random.Generator,
    *,
    weight_gain: float = 1.0,
    asymmetry: float = 0.0,
    fwd_gain: float = 1.0,
    bwd_gain: float = 1.0,
    i_s_a: float = 0.05,
    v_t_v: float = 0.2,
    mean_one: bool = False,
) -> NonReciprocalNet:
    """A network with published-style initial conductances.

    Forward conductances ``~ U(0, weight_gain / sqrt(fan_in))`` (strictly
    positive, so every node is connected); backward blocks start as the forward
    transpose times ``exp(asymmetry * xi)``, ``xi ~ N(0, 1)`` per device
    (``asymmetry = 0``: reciprocal). Biases start at 0.

    Args:
        sizes: layer sizes.
        rng: the run's generator.
        weight_gain: initial conductance scale (dimensionless).
        asymmetry: log-normal mismatch of each backward device from its forward
            partner (dimensionless, >= 0).
        fwd_gain: forward voltage gain of the hidden amplifiers (all pairs but the
            input one).
        bwd_gain: backward current gain of the hidden amplifiers.
        i_s_a: diode saturation current, A.
        v_t_v: diode thermal voltage, V.
        mean_one: scale the mismatch factor to mean 1, ``exp(asymmetry * xi -
            asymmetry^2 / 2)``, so that it changes each device's direction share but
            not the backward array's mean conductance (default: median 1, mean
            ``exp(asymmetry^2 / 2)``).
    """
    if not (weight_gain > 0 and asymmetry >= 0 and fwd_gain > 0 and bwd_gain > 0):
        raise ConfigError("weight_gain, fwd_gain, bwd_gain must be > 0 and asymmetry >= 0")
    n_layers = len(sizes) - 1
    parts = []
    for li in range(n_layers):
        s = weight_gain / np.sqrt(sizes[li])
        wf = rng.uniform(0.05 * s, s, size=(sizes[li], sizes[li + 1]))
        parts.append(wf.ravel())
        if li >= 1:
            shift = asymmetry**2 / 2 if mean_one else 0.0
            xi = rng.standard_normal((sizes[li + 1], sizes[li]))
            wb = wf.T * np.exp(asymmetry * xi - shift)
            parts.append(wb.ravel())
    fg = np.full(n_layers, float(fwd_gain))
    bg = np.full(n_layers, float(bwd_gain))
    fg[0] = 1.0
    bg[0] = 1.0
    return NonReciprocalNet(
        tuple(int(n) for n in sizes),
        np.concatenate(parts),
        np.zeros(sum(sizes[1:])),
        fg,
        bg,
        i_s_a=i_s_a,
        v_t_v=v_t_v,
    )
