"""Exact DC operating point of a resistor / diode / source netlist.

The operating point minimises the circuit's co-content (a convex "energy"), in volts
and watts::

    E(v) = 1/2 sum_R g (v_a - v_b)^2                                  resistors
         + sum_D [IS n Vt (exp(dv / (n Vt)) - 1) - IS dv]             Shockley diodes
         + sum_I I (v_plus - v_minus)                                  current sources

subject to ``v(n+) - v(n-) = V`` for every voltage source (and 0 V for every
inductor). Its stationarity conditions are Kirchhoff's current law with the
Shockley law ``i = IS (exp(dv / (n Vt)) - 1)``, where ``dv = v_anode - v_cathode``
and ``Vt = k T / q``. With ``diodes="ideal"`` each diode is instead the constraint
``v_anode <= v_cathode`` with a forward current >= 0 (a convex QP).

Method:

1. Voltage sources and inductors are eliminated exactly: the nodes they join form
   groups (connected components); a group holding ground is fixed, every other
   group is one unknown plus exact offsets (a least-squares solve of the source
   equations, which also detects inconsistent source loops).
2. Nodes without a DC path to a fixed node are reported (``CircuitError``).
3. Shockley diodes: Newton's method on ``E`` over the free unknowns, stopped when
   the Newton step is below ``tol_v``. Each step length comes from a 1-D search on
   ``E`` along the Newton direction (it may extrapolate beyond the full step, which
   brings a diode down from far up its exponential in one step), then is checked
   by Armijo backtracking on ``E``. ``exp`` is continued by its quadratic Taylor
   polynomial above a cap, so ``E`` stays finite: first at the current scale of the
   sources (a good start from 0 V), then at ``u = 200`` if some diode ends above
   that; the final point is checked to lie below the cap, where ``E`` is exact.
   Ideal diodes: the dual of the QP (a bound-constrained QP in the diode currents)
   by an exact Lawson-Hanson-type active-set method, then a KKT polish (iterative
   refinement of the equality-constrained system of the active diodes) and a check
   of feasibility and of the signs of the multipliers.

Assembly is vectorised (``np.bincount``); the Hessian is dense for up to
:data:`DENSE_MAX_UNKNOWNS` unknowns and a ``scipy.sparse`` matrix beyond.

Diode temperature model (SPICE level 1): ``Vt = k T / q`` with ``T`` in kelvin
(``temperature_c + 273.15``) and ``IS(T) = IS (T/Tnom)^(XTI/N) exp((T/Tnom - 1) EG /
(N Vt))``; at the default 27 degC (= TNOM) IS is used as given. Physical constants
are CODATA 2018 (``scipy.constants``); ngspice-39 uses CODATA 2014 values, which
shifts diode voltages by about 3.4e-7 relative (0.2 uV at 0.7 V).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.constants
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
from numpy.typing import NDArray

from hwloop.errors import CircuitError, ConfigError
from simulated_device.netlist import Netlist

__all__ = [
    "DENSE_MAX_UNKNOWNS",
    "DiodeMode",
    "OperatingPoint",
    "saturation_current_a",
    "solve_op",
    "thermal_voltage_v",
]

DiodeMode = Literal["shockley", "ideal"]

DENSE_MAX_UNKNOWNS = 400
"""Largest number of free unknowns solved with dense linear algebra."""

_ZERO_C_IN_K = scipy.constants.zero_Celsius
_EPS = float(np.finfo(np.float64).eps)
_MAX_ABS_V = 1e12  # beyond this the Newton iterate is taken to diverge
_ARMIJO = 1e-4
_U_CAP = 200.0  # diode exponent above which exp() is continued quadratically (see _junction)
_MAX_STEP_SCALE = 1e12  # longest extrapolation of a Newton step by the line search

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


def _scatter(index: IntArray, weights: FloatArray, size: int) -> FloatArray:
    """``out[k] = sum of weights[index == k]`` for k < size (np.bincount, typed as float)."""
    return np.bincount(index, weights, size).astype(np.float64, copy=False)


def thermal_voltage_v(temperature_c: float = 27.0) -> float:
    """Thermal voltage ``k T / q`` in V at ``temperature_c`` degC (0.025865 V at 27 degC)."""
    return float(scipy.constants.k * (temperature_c + _ZERO_C_IN_K) / scipy.constants.e)


def saturation_current_a(netlist: Netlist, temperature_c: float = 27.0) -> FloatArray:
    """Diode saturation currents IS in A at ``temperature_c`` (SPICE level-1 scaling).

    ``IS(T) = IS (T/Tnom)^(XTI/N) exp((T/Tnom - 1) EG / (N Vt(T)))``; equal to the
    model's IS when ``temperature_c`` equals the model's TNOM (27 degC by default).
    """
    t_k = temperature_c + _ZERO_C_IN_K
    ratio = t_k / (netlist.diode_tnom_c + _ZERO_C_IN_K)
    vt = thermal_voltage_v(temperature_c)
    n = netlist.diode_n
    factor = np.exp(
        (ratio - 1.0) * netlist.diode_eg_ev / (n * vt) + netlist.diode_xti / n * np.log(ratio)
    )
    return np.asarray(netlist.diode_is_a * factor, dtype=np.float64)


@dataclass(frozen=True, slots=True, eq=False)
class OperatingPoint:
    """A DC operating point.

    Attributes:
        node_names: node names by index, as in the netlist (index 0 is ground).
        voltages_v: node voltages in V by node index; ``voltages_v[0] == 0``.
        node_voltages_v: node name -> voltage in V, for every node except ground.
        diode_currents_a: forward current of each diode (anode to cathode) in A, in
            netlist order. Ideal diodes: >= 0, and 0 for a diode whose two terminals
            are both fixed by voltage sources (its current is not determined).
        iterations: Newton iterations (Shockley) or active-set iterations (ideal).
        max_residual_a: largest net current into a free node or free source group
            (Kirchhoff's current law residual) in A.
        diodes: the diode model used, ``"shockley"`` or ``"ideal"``.
        temperature_c: the temperature in degC.
    """

    node_names: tuple[str, ...]
    voltages_v: FloatArray
    diode_currents_a: FloatArray
    iterations: int
    max_residual_a: float
    diodes: DiodeMode
    temperature_c: float
    node_voltages_v: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        volts = self.voltages_v.tolist()
        object.__setattr__(
            self, "node_voltages_v", dict(zip(self.node_names[1:], volts[1:], strict=True))
        )


# --------------------------------------------------------------------------- reduction


@dataclass(frozen=True, slots=True)
class _Groups:
    """Node -> unknown map after eliminating the voltage sources.

    ``v[node] = x_ext[var[node]] + off_v[node]`` where ``x_ext`` is the vector of the
    ``m`` free unknowns followed by one 0 (index ``m`` stands for "fixed").
    """

    m: int
    var: IntArray
    off_v: FloatArray


def _names(netlist: Netlist, nodes: IntArray, limit: int = 6) -> str:
    picked = [netlist.node_names[k] for k in np.unique(nodes).tolist()]
    text = ", ".join(picked[:limit])
    if len(picked) > limit:
        text += f" and {len(picked) - limit} more"
    return text


def _eliminate_sources(netlist: Netlist) -> _Groups:
    n = netlist.num_nodes
    pairs = np.concatenate([netlist.vsource_nodes, netlist.inductor_nodes])
    values = np.concatenate([netlist.vsource_v, np.zeros(len(netlist.inductor_nodes))])
    k = len(values)
    if k == 0:
        var = np.arange(-1, n - 1, dtype=np.intp)
        var[0] = n - 1
        return _Groups(m=n - 1, var=var, off_v=np.zeros(n))
    p, q = pairs[:, 0], pairs[:, 1]
    other = np.where(p == 0, q, p)
    if np.all((p == 0) != (q == 0)) and np.bincount(other).max() <= 1:
        # fast path: every source is grounded and drives its own node (no groups, no loops)
        off = np.zeros(n)
        off[other] = np.where(q == 0, values, -values)
        fixed = np.zeros(n, dtype=bool)
        fixed[0] = True
        fixed[other] = True
        free_nodes = np.flatnonzero(~fixed)
        m = int(free_nodes.size)
        var = np.full(n, m, dtype=np.intp)
        var[free_nodes] = np.arange(m)
        return _Groups(m=m, var=var, off_v=off)
    graph = scipy.sparse.coo_matrix((np.ones(k), (p, q)), shape=(n, n))
    ncomp, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    labels = labels.astype(np.intp)
    root_of = np.full(ncomp, n, dtype=np.intp)
    np.minimum.at(root_of, labels, np.arange(n, dtype=np.intp))  # ground (0) roots its group
    unknown = np.flatnonzero(root_of[labels] != np.arange(n))
    off = np.zeros(n)
    if unknown.size:
        # least squares on the source equations v_p - v_q = V with each root at 0 V:
        # (B B^T) off = B V on the non-root nodes; exact for trees and consistent loops
        cols = np.arange(k)
        b = scipy.sparse.coo_matrix(
            (np.r_[np.ones(k), -np.ones(k)], (np.r_[p, q], np.r_[cols, cols])), shape=(n, k)
        ).tocsr()
        b.eliminate_zeros()
        lap = (b @ b.T).tocsr()[unknown][:, unknown]
        lap.eliminate_zeros()
        rhs = b[unknown] @ values
        if lap.nnz == unknown.size:  # every source hangs off a root: diagonal system
            off[unknown] = rhs / lap.diagonal()
        else:
            off[unknown] = scipy.sparse.linalg.spsolve(lap.tocsc(), rhs)
    mismatch = off[p] - off[q] - values
    tol = 1e-9 * (1.0 + float(np.max(np.abs(values))))
    bad = np.flatnonzero(np.abs(mismatch) > tol)
    if bad.size:
        names = [(netlist.vsource_names + netlist.inductor_names)[j] for j in bad[:6].tolist()]
        raise CircuitError(
            f"voltage sources {', '.join(names)} form a loop whose voltages do not add up "
            f"(mismatch up to {float(np.max(np.abs(mismatch))):.3g} V); remove one source of "
            f"the loop or fix the values"
        )
    ground_label = labels[0]
    comp_var = np.empty(ncomp, dtype=np.intp)
    free = np.flatnonzero(np.arange(ncomp) != ground_label)
    comp_var[free] = np.arange(free.size)
    comp_var[ground_label] = free.size
    return _Groups(m=int(free.size), var=comp_var[labels], off_v=off)


def _split_edges(ka: IntArray, kb: IntArray, m: int) -> tuple[IntArray, IntArray]:
    """For two-terminal elements between unknowns ``ka``, ``kb`` (ext indices).

    Returns the unknowns tied directly to a fixed node, and the mask of elements
    joining two different unknowns.
    """
    free_a = ka < m
    free_b = kb < m
    anchors = np.concatenate([ka[free_a & ~free_b], kb[free_b & ~free_a]])
    return anchors, free_a & free_b & (ka != kb)


def _check_connected(
    netlist: Netlist,
    grp: _Groups,
    edges: list[tuple[IntArray, IntArray, IntArray, IntArray]],
    ideal: bool,
) -> None:
    """Raise CircuitError if some unknown has no conductive path to a fixed node.

    ``edges`` holds ``(ka, kb, anchors, between)`` per element kind (see _split_edges).
    """
    m = grp.m
    if m == 0:
        return
    anchored = np.zeros(m + 1, dtype=bool)
    for _, _, anchors, _ in edges:
        anchored[anchors] = True
    if anchored[:m].all():
        return
    a = np.concatenate([ka[between] for ka, _, _, between in edges])
    b = np.concatenate([kb[between] for _, kb, _, between in edges])
    graph = scipy.sparse.coo_matrix((np.ones(a.size), (a, b)), shape=(m, m))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    ok_label = np.zeros(m, dtype=bool)
    ok_label[labels[anchored[:m]]] = True
    floating = np.flatnonzero(~ok_label[labels])
    if floating.size:
        nodes = np.flatnonzero(np.isin(grp.var, floating))
        via = "resistors or voltage sources" if ideal else "resistors, diodes or voltage sources"
        hint = (
            " (ideal diodes do not fix a voltage: add a resistor, or use Shockley diodes)"
            if ideal
            else ""
        )
        raise CircuitError(
            f"floating node(s) {_names(netlist, nodes)}: no DC path to ground through "
            f"{via}{hint}; connect them to the circuit, e.g. with a large resistor to ground"
        )


# --------------------------------------------------------------------------- assembly


class _Quadratic:
    """The quadratic part ``1/2 x^T H x + h^T x`` of the energy over the free unknowns."""

    def __init__(
        self,
        m: int,
        diag: FloatArray,
        rows: IntArray,
        cols: IntArray,
        vals: FloatArray,
        h: FloatArray,
    ) -> None:
        self.m = m
        self.dense = m <= DENSE_MAX_UNKNOWNS
        self.h = h
        self.diag = diag
        self.rows = rows
        self.cols = cols
        self.vals = vals
        self.matrix: FloatArray | scipy.sparse.csr_matrix = self.assemble(
            np.zeros(0), np.zeros(0, np.intp), np.zeros(0, np.intp)
        )

    def assemble(
        self, extra_g: FloatArray, ea: IntArray, eb: IntArray
    ) -> FloatArray | scipy.sparse.csr_matrix:
        """H plus two-terminal conductances ``extra_g`` between unknowns ``ea``, ``eb`` (ext)."""
        m = self.m
        m1 = m + 1
        diag = self.diag + _scatter(ea, extra_g, m1)[:m] + _scatter(eb, extra_g, m1)[:m]
        both = (ea < m) & (eb < m) & (ea != eb)
        rows = np.concatenate([self.rows, ea[both], eb[both]])
        cols = np.concatenate([self.cols, eb[both], ea[both]])
        vals = np.concatenate([self.vals, -extra_g[both], -extra_g[both]])
        if self.dense:
            flat = _scatter(rows * m + cols, vals, m * m)
            flat[:: m + 1] += diag
            return flat.reshape(m, m)
        idx = np.arange(m)
        return scipy.sparse.csr_matrix(
            (
                np.concatenate([vals, diag]),
                (np.concatenate([rows, idx]), np.concatenate([cols, idx])),
            ),
            shape=(m, m),
        )

    def apply(self, x: FloatArray) -> FloatArray:
        """H x for the resistor-only H."""
        return np.asarray(self.matrix @ x, dtype=np.float64)


def _solve(mat: FloatArray | scipy.sparse.csr_matrix, rhs: FloatArray) -> FloatArray:
    """Solve ``mat @ x = rhs``; raise CircuitError if the matrix is singular."""
    try:
        if isinstance(mat, np.ndarray):
            try:
                cho = scipy.linalg.cho_factor(mat, check_finite=False)
                out = scipy.linalg.cho_solve(cho, rhs, check_finite=False)
            except np.linalg.LinAlgError:  # not numerically positive definite
                out = np.linalg.solve(mat, rhs)
        else:
            out = scipy.sparse.linalg.splu(mat.tocsc()).solve(rhs)
    except (np.linalg.LinAlgError, RuntimeError) as exc:
        raise CircuitError(
            f"the circuit equations are singular ({exc}); some node has no well-defined "
            f"voltage: add a resistor to ground at the suspect node"
        ) from None
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Diodes:
    """The diodes that depend on the unknowns: ext indices, offsets and parameters."""

    index: IntArray  # positions in the netlist
    a: IntArray
    c: IntArray
    k_v: FloatArray  # constant part of v_anode - v_cathode
    is_a: FloatArray
    nvt_v: FloatArray
    u_cap: FloatArray  # exponent above which exp() is continued (see _junction)


# --------------------------------------------------------------------------- Shockley


def _junction(u: FloatArray, cap: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``exp(u) - 1`` for the energy and the current, and ``exp(u)`` for the conductance.

    Above ``u = cap`` the exponential is continued by its second-order Taylor
    polynomial, which keeps every value finite (the energy stays convex and C2). The
    minimiser is the true operating point as long as no diode ends above its cap,
    which :func:`solve_op` checks.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        w = np.maximum(u - cap, 0.0)
        low = np.minimum(u, cap)
        em1 = np.expm1(low)
        ex = em1 + 1.0
        em1_energy = em1 + ex * w * (1.0 + 0.5 * w)
        em1_current = em1 + ex * w
    return em1_energy, em1_current, ex


def _diode_terms(d: _Diodes, dv: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    """Energy (W), currents (A) and conductances (S) of the diodes at drops ``dv`` (V)."""
    f_e, f_i, f_g = _junction(dv / d.nvt_v, d.u_cap)
    energy = float(np.sum(d.is_a * (d.nvt_v * f_e - dv)))
    return energy, d.is_a * f_i, d.is_a / d.nvt_v * f_g


def _line_search(d: _Diodes, dv0: FloatArray, dd: FloatArray, slope: float, curv: float) -> float:
    """Step length ``t > 0`` near the minimum of the convex ``phi(t) = E(x + t step)``.

    ``dv0`` and ``dd`` are the diode drops at ``x`` and their change per unit ``t`` (V);
    ``slope = phi'(0) < 0`` (W); ``curv = step^T H_R step`` (W, resistor part). The
    search may go beyond ``t = 1``: from a point far up a diode's exponential the
    Newton step is only about ``n Vt`` long, and extrapolating along it jumps to the
    knee in one iteration. Returns 1 when ``|phi'(1)| <= 0.1 |phi'(0)|`` (the usual
    case near the solution); otherwise brackets the minimum and locates it to 1 %
    by safeguarded 1-D Newton. Costs O(diodes) per trial.
    """
    is_a, nvt = d.is_a, d.nvt_v
    cap = d.u_cap
    i0 = is_a * _junction(dv0 / nvt, cap)[1]
    dd2 = dd * dd
    target = 0.1 * abs(slope)

    def dphi(t: float) -> tuple[float, float]:
        _, f_i, f_g = _junction((dv0 + t * dd) / nvt, cap)
        f = slope + t * curv + float(dd @ (is_a * f_i - i0))
        fp = curv + float(dd2 @ (is_a / nvt * f_g))
        return f, fp

    f, fp = dphi(1.0)
    if abs(f) <= target:
        return 1.0  # Newton's own step is good (the usual case near the solution)
    if f < 0.0:  # the minimum lies beyond the full step: expand until phi' changes sign
        lo = t = 1.0
        while f < 0.0:
            lo = t
            t *= 8.0
            if t > _MAX_STEP_SCALE:
                return lo
            f, fp = dphi(t)
        hi = t
    else:
        lo, hi = 0.0, 1.0
    # safeguarded 1-D Newton on phi' inside [lo, hi], to 1 % of t
    nxt = hi - f / fp if fp > 0.0 else np.nan  # f, fp are at t = hi here
    t = nxt if lo < nxt < hi else 0.5 * (lo + hi)
    for _ in range(200):
        f, fp = dphi(t)
        if abs(f) <= 1e-9 * abs(slope):
            return t
        if f < 0.0:
            lo = t
        else:
            hi = t
        if hi - lo <= 1e-2 * hi:
            return t
        nxt = t - f / fp if fp > 0.0 else np.nan
        t = nxt if lo < nxt < hi else 0.5 * (lo + hi)
    return t


def _newton(
    quad: _Quadratic, d: _Diodes, x: FloatArray, tol_v: float, max_iterations: int
) -> tuple[FloatArray, int]:
    """Minimise the energy over the free unknowns from ``x``; return them and the iterations."""
    m = quad.m
    m1 = m + 1

    def drops(x: FloatArray) -> FloatArray:
        x_ext = np.append(x, 0.0)
        return np.asarray(x_ext[d.a] - x_ext[d.c] + d.k_v, dtype=np.float64)

    def evaluate(x: FloatArray) -> tuple[float, FloatArray, FloatArray, float]:
        e_d, cur, g = _diode_terms(d, drops(x))
        hx = quad.apply(x)
        quad_part = 0.5 * float(x @ hx)
        lin_part = float(quad.h @ x)
        energy = quad_part + lin_part + e_d
        grad = hx + quad.h + _scatter(d.a, cur, m1)[:m] - _scatter(d.c, cur, m1)[:m]
        scale = abs(quad_part) + abs(lin_part) + abs(e_d)
        return energy, grad, g, scale

    energy, grad, g, scale = evaluate(x)
    step_v = np.inf
    for it in range(1, max_iterations + 1):
        hess = quad.assemble(g, d.a, d.c)
        step = -_solve(hess, grad)
        if not np.all(np.isfinite(step)):
            raise CircuitError(
                "no DC operating point found: the Newton step is not finite; a node is "
                "probably held only by reverse-biased diodes: add a resistor to ground"
            )
        step_v = float(np.max(np.abs(step), initial=0.0))
        slope = float(grad @ step)
        noise = 64.0 * _EPS * scale
        alpha = 1.0
        if -slope > noise and d.a.size:  # (a decrease below rounding needs no search)
            s_ext = np.append(step, 0.0)
            alpha = _line_search(
                d, drops(x), s_ext[d.a] - s_ext[d.c], slope, float(step @ quad.apply(step))
            )
        while True:
            x_new = x + alpha * step
            e_new, g_new, gd_new, s_new = evaluate(x_new)
            if e_new <= energy + _ARMIJO * alpha * min(slope, 0.0) + noise:
                break
            alpha *= 0.5
            if alpha < 1e-20:
                if step_v <= 1e3 * tol_v * (1.0 + float(np.max(np.abs(x), initial=0.0))):
                    return x, it  # converged to rounding: no decrease is measurable
                raise CircuitError(
                    f"the Newton line search failed (step {step_v:.3g} V); the circuit may "
                    f"have extreme element values"
                )
        x, energy, grad, g, scale = x_new, e_new, g_new, gd_new, s_new
        if float(np.max(np.abs(x), initial=0.0)) > _MAX_ABS_V:
            raise CircuitError(
                "no DC operating point: node voltages diverge (above 1e12 V); a current "
                "source probably drives more than IS into a reverse-biased diode: add a "
                "resistor across it"
            )
        if step_v <= tol_v:
            return x, it
    raise CircuitError(
        f"Newton's method did not converge in {max_iterations} iterations (last step "
        f"{step_v:.3g} V); check for extreme element values or raise tol_v"
    )


# --------------------------------------------------------------------------- ideal diodes


class _Factor:
    """A factorisation of the (positive definite) resistor Hessian."""

    def __init__(self, mat: FloatArray | scipy.sparse.csr_matrix) -> None:
        self.cho: tuple[FloatArray, bool] | None = None
        self.lu: Any = None
        try:
            if isinstance(mat, np.ndarray):
                self.cho = scipy.linalg.cho_factor(mat)
            else:
                self.lu = scipy.sparse.linalg.splu(mat.tocsc())
        except (np.linalg.LinAlgError, RuntimeError) as exc:
            raise CircuitError(
                f"the resistor network is singular ({exc}); add a resistor to ground at "
                f"the suspect node"
            ) from None

    def solve(self, rhs: FloatArray) -> FloatArray:
        if self.cho is not None:
            return np.asarray(scipy.linalg.cho_solve(self.cho, rhs), dtype=np.float64)
        return np.asarray(self.lu.solve(rhs), dtype=np.float64)


def _face_solve(qff: FloatArray, qf: FloatArray) -> tuple[FloatArray, FloatArray | None]:
    """Minimise ``1/2 s^T Q s - q^T s`` over a face.

    Returns ``(s, None)`` at a minimiser, or ``(_, d)`` with a null direction ``d`` of
    Q along which the objective decreases without bound.
    """
    try:
        cf = scipy.linalg.cho_factor(qff)
        piv = np.abs(np.diag(cf[0]))
        if float(np.min(piv)) ** 2 > 1e-12 * float(np.max(np.diag(qff))):
            return np.asarray(scipy.linalg.cho_solve(cf, qf), dtype=np.float64), None
    except np.linalg.LinAlgError:
        pass
    w, vecs = np.linalg.eigh(qff)
    cut = 1e-12 * float(np.max(np.abs(w)))
    big = w > cut
    coef = vecs.T @ qf
    s = vecs[:, big] @ (coef[big] / w[big])
    null_part = vecs[:, ~big] @ coef[~big]
    if float(np.linalg.norm(null_part)) > 1e-10 * max(float(np.linalg.norm(qf)), 1e-300):
        return s, null_part
    return s, None


def _dual_active_set(
    qmat: FloatArray,
    qvec: FloatArray,
    lam: FloatArray,
    tol: float,
    max_iterations: int,
    names: list[str],
) -> tuple[FloatArray, int]:
    """Solve ``min 1/2 l^T Q l - q^T l`` s.t. ``l >= 0`` (Lawson-Hanson style active set).

    ``Q l - q`` is the vector of diode slacks ``v_cathode - v_anode`` (V); at the
    solution every slack is >= -tol and is 0 where ``l > 0``.
    """
    p = qvec.size
    free = lam > 0.0
    blocked = np.zeros(p, dtype=bool)
    for it in range(1, max_iterations + 1):
        slack = qmat @ lam - qvec
        cand = ~free & ~blocked & (slack < -tol)
        if not cand.any():
            return lam, it
        j = int(np.argmin(np.where(cand, slack, np.inf)))
        free[j] = True
        entering = j
        while True:
            idx = np.flatnonzero(free)
            s, direction = _face_solve(qmat[np.ix_(idx, idx)], qvec[idx])
            cur = lam[idx]
            if direction is not None:
                neg = direction < 0.0
                if not neg.any():
                    culprits = ", ".join(names[k] for k in idx[:6].tolist())
                    raise CircuitError(
                        f"no DC operating point: ideal diodes {culprits} cannot all be "
                        f"reverse-biased or conducting with the given sources (conflicting "
                        f"constraints); use Shockley diodes or fix the sources"
                    )
                t = float(np.min(cur[neg] / -direction[neg]))
                new = cur + t * direction
                new[neg & (cur / np.where(neg, -direction, 1.0) <= t)] = 0.0
            elif np.all(s > 0.0):
                lam[idx] = s
                blocked[:] = False
                break
            else:
                neg = s <= 0.0
                denom = cur[neg] - s[neg]
                ratios = np.divide(cur[neg], denom, out=np.zeros(denom.size), where=denom > 0.0)
                t = float(np.min(ratios))
                new = cur + t * (s - cur)
                hit = np.flatnonzero(neg)[ratios <= t]
                new[hit] = 0.0
            new[new < 0.0] = 0.0
            lam[idx] = new
            dropped = idx[new <= 0.0]
            free[dropped] = False
            if entering in dropped.tolist() and lam[entering] == 0.0 and t == 0.0:
                blocked[entering] = True  # degenerate: would re-enter forever
            entering = -1
            if not free.any():
                break
    raise CircuitError(
        f"the ideal-diode active-set method did not finish in {max_iterations} iterations; "
        f"use Shockley diodes for this circuit"
    )


def _solve_ideal(
    netlist: Netlist,
    quad: _Quadratic,
    d: _Diodes,
    tol_v: float,
) -> tuple[FloatArray, FloatArray, int]:
    """Return the free unknowns, the diode currents (A, active diodes) and iterations."""
    m = quad.m
    p = d.a.size
    if m == 0:
        return np.zeros(0), np.zeros(p), 1
    fac = _Factor(quad.matrix)
    x_u = fac.solve(-quad.h)
    if p == 0:
        return x_u, np.zeros(0), 1
    # constraint rows: x_ext[a] - x_ext[c] <= -k
    rows = np.r_[np.arange(p), np.arange(p)]
    cols = np.r_[d.a, d.c]
    vals = np.r_[np.ones(p), -np.ones(p)]
    keep = cols < m
    amat = scipy.sparse.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(p, m))
    u = -d.k_v
    z = fac.solve(amat.T.toarray())
    qmat = np.asarray(amat @ z, dtype=np.float64)
    qmat = 0.5 * (qmat + qmat.T)
    qvec = amat @ x_u - u
    vscale = 1.0 + float(np.max(np.abs(qvec))) + float(np.max(np.abs(u)))
    tol = max(tol_v, 1e3 * _EPS * vscale)
    names = [netlist.diode_names[k] for k in d.index.tolist()]
    lam = np.zeros(p)
    iterations = 0
    for _ in range(4):
        lam, its = _dual_active_set(qmat, qvec, lam, tol, 50 * p + 100, names)
        iterations += its
        act = np.flatnonzero(lam > 0.0)
        x = x_u - z[:, act] @ lam[act]
        # KKT polish on the identified active set: iterative refinement of
        # [H A^T; A 0] [x; l] = [-h; u] with the Schur complement Q_FF
        if act.size:
            a_f = amat[act]
            qff = qmat[np.ix_(act, act)]
            for _ in range(2):
                r1 = -quad.h - quad.apply(x) - a_f.T @ lam[act]
                r2 = u[act] - a_f @ x
                hr1 = fac.solve(r1)
                dl = np.linalg.lstsq(qff, a_f @ hr1 - r2, rcond=None)[0]
                lam[act] = lam[act] + dl
                x = x + hr1 - z[:, act] @ dl
        slack = u - amat @ x
        if np.all(lam >= 0.0) and np.all(slack >= -10.0 * tol):
            return x, lam, iterations
        lam = np.maximum(lam, 0.0)  # polish left the feasible set: resume the active set
    raise CircuitError(
        "the ideal-diode solution failed its KKT check; use Shockley diodes for this circuit"
    )


# --------------------------------------------------------------------------- driver


def solve_op(
    netlist: Netlist,
    *,
    diodes: DiodeMode = "shockley",
    temperature_c: float = 27.0,
    tol_v: float = 1e-12,
    max_iterations: int = 500,
) -> OperatingPoint:
    """Compute the DC operating point of ``netlist``.

    Args:
        netlist: the circuit (see :func:`simulated_device.netlist.parse_netlist`).
        diodes: ``"shockley"`` (exponential law, exact to ``tol_v``) or ``"ideal"``
            (``v_anode <= v_cathode``, forward current >= 0).
        temperature_c: temperature in degC (> -273.15); sets ``Vt`` and scales IS.
        tol_v: Newton stopping tolerance on the largest voltage update, in V (> 0).
        max_iterations: Newton iteration limit (Shockley).

    Returns:
        The operating point: node voltages in V, diode currents, diagnostics.

    Raises:
        CircuitError: a floating node, an inconsistent voltage-source loop, ideal
            diodes forward-biased by sources, or no operating point.
        ConfigError: an invalid argument.
    """
    if diodes not in ("shockley", "ideal"):
        raise ConfigError(f"diodes must be 'shockley' or 'ideal', not {diodes!r}")
    if not -_ZERO_C_IN_K < temperature_c < np.inf:
        raise ConfigError(
            f"temperature {temperature_c} degC is not above absolute zero (-273.15 degC); fix it"
        )
    if not tol_v > 0.0:
        raise ConfigError(f"tol_v must be > 0 V, not {tol_v}")
    ideal = diodes == "ideal"
    grp = _eliminate_sources(netlist)
    m, var, off = grp.m, grp.var, grp.off_v

    rn = netlist.resistor_nodes
    r0, r1 = rn[:, 0], rn[:, 1]
    ra, rb = var[r0], var[r1]
    dn = netlist.diode_nodes
    da, dc = var[dn[:, 0]], var[dn[:, 1]]
    r_edges = (ra, rb, *_split_edges(ra, rb, m))
    edges = [r_edges] if ideal else [r_edges, (da, dc, *_split_edges(da, dc, m))]
    _check_connected(netlist, grp, edges, ideal)

    m1 = m + 1
    g = netlist.resistor_g_s
    same = ra == rb  # both ends fixed or in one source group: no effect on the unknowns
    gw = np.where(same, 0.0, g) if same.any() else g
    gc = gw * (off[r0] - off[r1])
    diag = _scatter(ra, gw, m1)[:m] + _scatter(rb, gw, m1)[:m]
    lin = _scatter(ra, gc, m1) - _scatter(rb, gc, m1)
    ins = netlist.isource_nodes
    ia, ib = var[ins[:, 0]], var[ins[:, 1]]
    lin += _scatter(ia, netlist.isource_a, m1) - _scatter(ib, netlist.isource_a, m1)
    both = r_edges[3]
    quad = _Quadratic(
        m,
        diag,
        np.concatenate([ra[both], rb[both]]),
        np.concatenate([rb[both], ra[both]]),
        np.concatenate([-g[both], -g[both]]),
        lin[:m],
    )

    is_t = saturation_current_a(netlist, temperature_c)
    nvt = netlist.diode_n * thermal_voltage_v(temperature_c)
    k_all = off[dn[:, 0]] - off[dn[:, 1]]
    moving = np.flatnonzero(da != dc)
    dset = _Diodes(
        index=moving,
        a=da[moving],
        c=dc[moving],
        k_v=k_all[moving],
        is_a=is_t[moving],
        nvt_v=nvt[moving],
        u_cap=np.full(moving.size, _U_CAP),
    )
    currents = np.zeros(len(netlist.diode_names))
    if ideal:
        fixed = np.flatnonzero(da == dc)
        bad = fixed[k_all[fixed] > max(tol_v, 1e-9)]
        if bad.size:
            j = int(bad[0])
            raise CircuitError(
                f"ideal diode {netlist.diode_names[j]} is forward-biased by voltage sources "
                f"(v_anode - v_cathode = {k_all[j]:.6g} V > 0) and would short them; fix "
                f"the sources or use Shockley diodes"
            )
        x, lam, iterations = _solve_ideal(netlist, quad, dset, tol_v)
        currents[moving] = lam
        x_ext = np.append(x, 0.0)
        diode_cur = lam
    else:
        x = np.zeros(m)
        iterations = 0
        if m:
            # phase 1: exponentials continued above the current scale of the sources,
            # so that a start far up a diode's exponential costs a few steps, not
            # hundreds; phase 2 (only if some diode ends above that) lifts the cap
            i_scale = float(np.sum(np.abs(gc)) + np.sum(np.abs(netlist.isource_a)))
            cap1 = np.clip(np.log1p(i_scale / dset.is_a), 1.0, _U_CAP)
            d1 = dataclasses.replace(dset, u_cap=cap1)
            x, iterations = _newton(quad, d1, x, tol_v, max_iterations)
            x_ext = np.append(x, 0.0)
            u1 = (x_ext[dset.a] - x_ext[dset.c] + dset.k_v) / dset.nvt_v
            if np.any(u1 > cap1):
                x, more = _newton(quad, dset, x, tol_v, max_iterations)
                iterations += more
        x_ext = np.append(x, 0.0)
        dv_all = x_ext[da] - x_ext[dc] + k_all
        over = np.flatnonzero(dv_all[moving] > _U_CAP * nvt[moving])
        if over.size:
            name = netlist.diode_names[int(moving[over[0]])]
            raise CircuitError(
                f"diode {name} would need a forward drop above {_U_CAP:g} n Vt (a current "
                f"beyond IS e^{_U_CAP:g}); the circuit has no physical operating point: "
                f"check its element values"
            )
        with np.errstate(over="ignore"):
            currents = is_t * np.expm1(dv_all / nvt)
        diode_cur = currents[moving]
    kcl = (
        quad.apply(x)
        + quad.h
        + _scatter(dset.a, diode_cur, m1)[:m]
        - _scatter(dset.c, diode_cur, m1)[:m]
    )
    volts = x_ext[var] + off
    volts[0] = 0.0
    volts.setflags(write=False)
    currents.setflags(write=False)
    return OperatingPoint(
        node_names=netlist.node_names,
        voltages_v=volts,
        diode_currents_a=currents,
        iterations=iterations,
        max_residual_a=float(np.max(np.abs(kcl), initial=0.0)),
        diodes=diodes,
        temperature_c=float(temperature_c),
    )
