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

Method (:func:`prepare_op` does steps 1-3 once, :meth:`PreparedOp.solve` step 4):

1. Voltage sources and inductors are eliminated exactly: the nodes they join form
   groups (connected components); a group holding ground is fixed, every other
   group is one unknown plus exact offsets (a least-squares solve of the source
   equations, which also detects inconsistent source loops). Fixed nodes leave the
   problem (a Schur-complement reduction: their voltages only enter the linear term).
2. The quadratic part ``1/2 x^T H x + h^T x`` over the free unknowns is assembled
   with one ``np.bincount`` over all resistors (dense ``H`` for up to
   :data:`DENSE_MAX_UNKNOWNS` unknowns, else ``scipy.sparse``).
3. Nodes without a DC path to a fixed node are reported (``CircuitError``). On the
   dense path the unknowns are reordered so that an independent set ``I`` of them
   (no resistor, nor for Shockley diodes a diode, between two of its members) comes
   first: the ``I`` block of ``H`` and of every Newton matrix is then diagonal and
   is eliminated in ``O(|I| |R|^2)`` (a Schur complement; Gaussian elimination in
   that order), leaving a small dense system on the rest ``R`` (for DRN-XS: the
   100 hidden nodes form ``I``, the 10 outputs ``R``). The dense path needs numpy
   only; scipy is imported for sparse circuits, source groups and error reports.
4. Shockley diodes: Newton's method on ``E`` over the free unknowns, stopped when
   the Newton step is below ``tol_v``. It starts from a block coordinate descent
   from 0 V: the exact minimiser of ``E`` over the unknowns of ``I`` (one diode:
   Lambert W, as the Wright omega function), then, if no diode touches ``R``, over
   ``R`` (linear) and ``I`` again. Each step length comes from a
   1-D search on ``E`` along the Newton direction (it may extrapolate beyond the
   full step, which brings a diode down from far up its exponential in one step;
   the 1-D root finder uses a local exponential model of ``dE/dt``), then is checked
   by Armijo backtracking on ``E``. ``exp`` is continued by its quadratic Taylor
   polynomial above a cap, so ``E`` stays finite: first at the current scale of the
   sources, then at ``u = 200`` if some diode ends above that; the final point is
   checked to lie below the cap, where ``E`` is exact.
   Ideal diodes: the dual of the QP (a bound-constrained QP in the diode currents),
   warm-started by a primal-dual active-set iteration and finished by an exact
   Lawson-Hanson-type active-set method, then a KKT polish (iterative refinement of
   the equality-constrained system of the active diodes) and a check of feasibility
   and of the signs of the multipliers.

Diode temperature model (SPICE level 1): ``Vt = k T / q`` with ``T`` in kelvin
(``temperature_c + 273.15``) and ``IS(T) = IS (T/Tnom)^(XTI/N) exp((T/Tnom - 1) EG /
(N Vt))``; at the default 27 degC (= TNOM) IS is used as given. Physical constants
are the exact SI values (= CODATA 2018, as ``scipy.constants``); ngspice-39 uses
CODATA 2014 values, which shifts diode voltages by about 3.4e-7 relative (0.2 uV at
0.7 V).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import CircuitError, ConfigError
from simulated_device.netlist import Netlist

if TYPE_CHECKING:
    import scipy.sparse

# scipy is imported only where needed (sparse circuits, source groups, error reports):
# the dense path runs on numpy alone, which keeps `hwloop op` start-up short.

__all__ = [
    "DENSE_MAX_UNKNOWNS",
    "DiodeMode",
    "OperatingPoint",
    "PreparedOp",
    "prepare_op",
    "saturation_current_a",
    "solve_op",
    "thermal_voltage_v",
]

DiodeMode = Literal["shockley", "ideal"]

DENSE_MAX_UNKNOWNS = 400
"""Largest number of free unknowns solved with dense linear algebra."""

# exact SI values (2019), identical to scipy.constants (CODATA 2018)
_K_BOLTZMANN = 1.380649e-23  # J/K
_Q_ELECTRON = 1.602176634e-19  # C
_ZERO_C_IN_K = 273.15
_EPS = float(np.finfo(np.float64).eps)
_MAX_ABS_V = 1e12  # beyond this the Newton iterate is taken to diverge
_ARMIJO = 1e-4
_U_CAP = 200.0  # diode exponent above which exp() is continued quadratically (see _newton)
_MAX_STEP_SCALE = 1e12  # longest extrapolation of a Newton step by the line search
_DENSE_INCIDENCE_MAX = 1 << 16  # diodes x unknowns up to which the incidence matrix is dense
_MIS_ROUNDS = 8  # rounds of the independent-set selection (any independent set is valid)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]

_LinAlgError = np.linalg.LinAlgError


def _scatter(index: IntArray, weights: FloatArray, size: int) -> FloatArray:
    """``out[k] = sum of weights[index == k]`` for k < size (np.bincount, typed as float)."""
    return np.bincount(index, weights, size).astype(np.float64, copy=False)


def thermal_voltage_v(temperature_c: float = 27.0) -> float:
    """Thermal voltage ``k T / q`` in V at ``temperature_c`` degC (0.025865 V at 27 degC)."""
    return float(_K_BOLTZMANN * (temperature_c + _ZERO_C_IN_K) / _Q_ELECTRON)


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
        node_voltages_v: node name -> voltage in V, for every node except ground
            (built on first access from ``voltages_v``; the same dict afterwards).
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
    _by_name: dict[str, float] | None = field(default=None, init=False, repr=False)

    @property
    def node_voltages_v(self) -> dict[str, float]:
        """Node name -> voltage in V, for every node except ground."""
        by_name = self._by_name
        if by_name is None:
            volts = self.voltages_v.tolist()
            by_name = dict(zip(self.node_names[1:], volts[1:], strict=True))
            object.__setattr__(self, "_by_name", by_name)
        return by_name


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
    import scipy.sparse
    import scipy.sparse.csgraph
    import scipy.sparse.linalg

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


def _report_floating(
    netlist: Netlist,
    grp: _Groups,
    anchored: BoolArray,
    a: IntArray,
    b: IntArray,
    ideal: bool,
) -> None:
    """Raise CircuitError if an unknown has no path to an ``anchored`` one.

    ``anchored`` marks the unknowns tied directly to a fixed node; ``a``, ``b`` are
    the conductive edges between unknowns.
    """
    import scipy.sparse
    import scipy.sparse.csgraph

    m = grp.m
    graph = scipy.sparse.coo_matrix((np.ones(a.size), (a, b)), shape=(m, m))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    ok_label = np.zeros(m, dtype=bool)
    ok_label[labels[anchored]] = True
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
    _report_floating(netlist, grp, anchored[:m], a, b, ideal)


def _check_connected_dense(
    netlist: Netlist, grp: _Groups, adj: BoolArray, anchored: BoolArray, ideal: bool
) -> None:
    """:func:`_check_connected` for a dense adjacency matrix ``adj`` of the unknowns."""
    if anchored.all():
        return
    reached = anchored
    adj_f = adj.astype(np.float64)
    for _ in range(8):  # a few rounds of breadth-first search settle most circuits
        grown = reached | (adj_f @ reached.astype(np.float64) > 0.0)
        if grown.all():
            return
        if np.array_equal(grown, reached):
            break
        reached = grown
    a, b = np.nonzero(adj)
    _report_floating(netlist, grp, anchored, a.astype(np.intp), b.astype(np.intp), ideal)


def _independent_set(adj: BoolArray) -> BoolArray:
    """An independent set of the graph ``adj`` (no two members adjacent), large if cheap.

    Rounds of a deterministic Luby-type selection: an undecided vertex joins when it
    comes before every undecided neighbour (low degree first, then low index); it and
    its neighbours are then decided. Stopping early leaves a smaller but still
    independent set.
    """
    m = adj.shape[0]
    adj_f = adj.astype(np.float64)
    prio = adj_f.sum(axis=1) * m + np.arange(m)  # distinct integers (exact in float)
    beaten = adj_f * (prio < prio[:, None])  # [i, j]: neighbour j comes before i
    undecided = np.ones(m, dtype=bool)
    chosen = np.zeros(m, dtype=bool)
    for _ in range(_MIS_ROUNDS):
        pick = undecided & ~(beaten @ undecided.astype(np.float64) > 0.0)
        chosen |= pick
        undecided &= ~pick & ~(adj_f @ pick.astype(np.float64) > 0.0)
        if not undecided.any():
            break
    return chosen


# --------------------------------------------------------------------------- assembly


@dataclasses.dataclass(eq=False)
class _Quadratic:
    """The quadratic part ``1/2 x^T H x + h^T x`` over the free unknowns (sparse H).

    ``diag`` the diagonal of H, S; ``rows``/``cols``/``vals`` its off-diagonal entries
    (COO), S; ``h`` the linear term, A; ``matrix`` H as CSR (built from them).
    """

    m: int
    diag: FloatArray
    rows: IntArray
    cols: IntArray
    vals: FloatArray
    h: FloatArray
    matrix: scipy.sparse.csr_matrix = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.matrix = self.assemble(np.zeros(0), np.zeros(0, np.intp), np.zeros(0, np.intp))

    def assemble(self, extra_g: FloatArray, ea: IntArray, eb: IntArray) -> scipy.sparse.csr_matrix:
        """H plus two-terminal conductances ``extra_g`` between unknowns ``ea``, ``eb`` (ext)."""
        import scipy.sparse

        m = self.m
        m1 = m + 1
        diag = self.diag + _scatter(ea, extra_g, m1)[:m] + _scatter(eb, extra_g, m1)[:m]
        both = (ea < m) & (eb < m) & (ea != eb)
        rows = np.concatenate([self.rows, ea[both], eb[both]])
        cols = np.concatenate([self.cols, eb[both], ea[both]])
        vals = np.concatenate([self.vals, -extra_g[both], -extra_g[both]])
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
    out: NDArray[Any]
    try:
        if isinstance(mat, np.ndarray):
            out = np.linalg.solve(mat, rhs)
        else:
            import scipy.sparse.linalg

            out = scipy.sparse.linalg.splu(mat.tocsc()).solve(rhs)
    except (_LinAlgError, RuntimeError) as exc:
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
    u_cap: FloatArray  # exponent above which exp() is continued (see _newton)


class _Incidence:
    """The diode drops as a linear map of the unknowns: ``dv = A x + k_v``.

    ``A`` has one row per diode, +1 at the anode's and -1 at the cathode's unknown
    (nothing for a fixed terminal). Dense when small, else index gathers/scatters.
    """

    def __init__(self, a: IntArray, c: IntArray, m: int) -> None:
        self.a = a
        self.c = c
        self.m = m
        self.mat_t: FloatArray | None = None  # A^T
        self.abs_t: FloatArray | None = None  # |A|^T
        self.mat: FloatArray | None = None
        p = a.size
        if p * m <= _DENSE_INCIDENCE_MAX:
            mat = np.zeros((p, m))
            rows = np.arange(p)
            fa = a < m
            fc = c < m
            mat[rows[fa], a[fa]] = 1.0
            mat[rows[fc], c[fc]] = -1.0
            self.mat = mat
            self.mat_t = np.ascontiguousarray(mat.T)
            self.abs_t = np.abs(self.mat_t)

    def drops(self, x: FloatArray) -> FloatArray:
        """``A x`` (the diode drops without their constant part), V."""
        if self.mat is not None:
            return self.mat @ x
        x_ext = np.append(x, 0.0)
        return np.asarray(x_ext[self.a] - x_ext[self.c], dtype=np.float64)

    def to_nodes(self, cur: FloatArray) -> FloatArray:
        """``A^T cur``: net diode current out of each unknown, A."""
        if self.mat_t is not None:
            return self.mat_t @ cur
        m1 = self.m + 1
        return (_scatter(self.a, cur, m1) - _scatter(self.c, cur, m1))[: self.m]

    def diag(self, g: FloatArray) -> FloatArray:
        """Total diode conductance at each unknown (the diagonal of ``A^T G A``), S."""
        if self.abs_t is not None:
            return self.abs_t @ g
        m1 = self.m + 1
        return (_scatter(self.a, g, m1) + _scatter(self.c, g, m1))[: self.m]


def _wright_omega(z: FloatArray) -> FloatArray:
    """Wright omega ``w(z)``, the solution of ``w + ln w = z`` (``= W(exp z)``), real z.

    Starts from the asymptotic forms and refines by Newton's method (quadratic; a
    relative error near 1e-15 after four steps). Below z = -40, ``w = exp(z)`` to
    double precision.
    """
    zc = np.maximum(z, -40.0)
    ez = np.exp(np.minimum(zc, 1.0))
    w = np.where(zc > 1.0, zc - np.log(np.maximum(zc, 1.0)), ez / (1.0 + ez))
    for _ in range(4):
        w = w * (1.0 + zc - np.log(w)) / (1.0 + w)
    return np.where(z < -40.0, np.exp(np.minimum(z, -40.0)), w)


class _DenseSystem:
    """Dense ``H`` (unknowns ordered as ``I`` then ``R``), ``h`` and the Newton solver.

    The first ``n_i`` unknowns form an independent set: no resistor and no diode
    joins two of them, so the ``I`` block of ``H + A^T diag(g) A`` is diagonal.
    """

    def __init__(self, hmat: FloatArray, h: FloatArray, inc: _Incidence, n_i: int) -> None:
        m = h.size
        self.m = m
        self.matrix = hmat
        self.h = h
        self.inc = inc
        self.n_i = n_i
        self.d0 = np.diagonal(hmat)[:n_i].copy()
        self.b0 = np.ascontiguousarray(hmat[:n_i, n_i:])
        self.c0 = np.ascontiguousarray(hmat[n_i:, n_i:])
        a, c = inc.a, inc.c
        self.pair = np.flatnonzero((a < m) & (c < m))  # diodes joining two unknowns
        ap, cp = a[self.pair], c[self.pair]
        self.pair_flat = np.concatenate([ap * m + cp, cp * m + ap])
        # their entries -g in the blocks: one in B for an (I, R) pair (I is
        # independent: no (I, I) pairs), two in C for an (R, R) pair
        nr = m - n_i
        lo, hi = np.minimum(ap, cp), np.maximum(ap, cp)
        in_b = lo < n_i
        self.b_pair = self.pair[in_b]
        self.b_flat = lo[in_b] * nr + (hi[in_b] - n_i)
        self.c_pair = self.pair[~in_b]
        r1, r2 = lo[~in_b] - n_i, hi[~in_b] - n_i
        self.c_flat = np.concatenate([r1 * nr + r2, r2 * nr + r1])
        self._start_plan = self._plan_start(a, c, self.d0)
        # R without diodes: its block of E and of the Newton matrix is that of H
        self.r_diodes = bool(np.any((a >= n_i) & (a < m)) or np.any((c >= n_i) & (c < m)))
        self._c0_inv: FloatArray | None = None
        if 0 < n_i < m and not self.r_diodes:
            try:
                np.linalg.cholesky(self.c0)  # positive definite?
                self._c0_inv = np.asarray(np.linalg.inv(self.c0), dtype=np.float64)
            except _LinAlgError:
                pass

    def apply(self, x: FloatArray) -> FloatArray:
        """H x."""
        return self.matrix @ x

    def _off_diagonal(self, g: FloatArray) -> FloatArray:
        """H with ``-g`` added at (a, c) and (c, a) for each diode joining two unknowns."""
        m = self.m
        gp = g[self.pair]
        return self.matrix - _scatter(self.pair_flat, np.concatenate([gp, gp]), m * m).reshape(m, m)

    def newton_solve(self, g: FloatArray, rhs: FloatArray) -> FloatArray:
        """Solve ``(H + A^T diag(g) A) s = rhs`` by eliminating the diagonal I block."""
        m, ni = self.m, self.n_i
        nr = m - ni
        dg = self.inc.diag(g)
        d = self.d0 + dg[:ni]
        if not d.min(initial=np.inf) > 0.0:
            return self._fallback(g, rhs)
        if nr == 0:
            return rhs / d
        b = self.b0
        cmat = self.c0
        if self.r_diodes:
            cmat = cmat.copy()
            cmat.reshape(-1)[:: nr + 1] += dg[ni:]
            if self.b_pair.size:
                b = b.copy()
                np.subtract.at(b.reshape(-1), self.b_flat, g[self.b_pair])
            if self.c_pair.size:
                gc = g[self.c_pair]
                np.subtract.at(cmat.reshape(-1), self.c_flat, np.concatenate([gc, gc]))
        bd = b / d[:, None]
        schur = cmat - b.T @ bd
        try:
            s_r = np.linalg.solve(schur, rhs[ni:] - bd.T @ rhs[:ni])
        except _LinAlgError:
            return self._fallback(g, rhs)
        return np.concatenate([(rhs[:ni] - b @ s_r) / d, s_r])

    def _fallback(self, g: FloatArray, rhs: FloatArray) -> FloatArray:
        """Solve with the whole matrix (singular or indefinite cases: errors, inf steps)."""
        full = self._off_diagonal(g) if self.pair.size else self.matrix.copy()
        full.flat[:: self.m + 1] += self.inc.diag(g)
        return _solve(full, rhs)

    def start(self, d: _Diodes, sweeps: int = 1) -> FloatArray:
        """A starting point by block coordinate descent on E from 0 V.

        Minimises E exactly over the unknowns of I (R fixed): one without diodes goes
        to its linear optimum, one with a single diode solves ``D x + c + s IS
        (exp((s x + k) / nVt) - 1) = 0`` in closed form (Lambert W), others stay at
        0 V. When no diode touches R, each of ``sweeps`` rounds then minimises over R
        (a linear solve) and over I again.
        """
        x = np.zeros(self.m)
        ni = self.n_i
        h_i = self.h[:ni]
        x[:ni] = self._i_block(d, h_i, x[:ni])
        if self._c0_inv is not None:
            h_r = self.h[ni:]
            for _ in range(sweeps):
                x_r = -(self._c0_inv @ (h_r + self.b0.T @ x[:ni]))
                x[ni:] = x_r
                x[:ni] = self._i_block(d, h_i + self.b0 @ x_r, x[:ni])
        return x

    def _i_block(self, d: _Diodes, c_i: FloatArray, x_i: FloatArray) -> FloatArray:
        """Minimiser of E over I given the gradient ``c_i`` of the rest at ``x_I = 0``."""
        x_i = x_i.copy()
        plain, j, i, s = self._start_plan
        if plain.size:
            x_i[plain] = -c_i[plain] / self.d0[plain]
        if j.size:
            dd = self.d0[i]
            is_a, nvt, k = d.is_a[j], d.nvt_v[j], d.k_v[j]
            # with y = s x + k:  D y + IS exp(y / nVt) = beta
            beta = dd * k - s * c_i[i] + is_a
            scale = dd * nvt
            omega = _wright_omega(np.log(is_a / scale) + beta / scale)
            x_i[i] = s * (beta / dd - nvt * omega - k)
        return x_i

    @staticmethod
    def _plan_start(
        a: IntArray, c: IntArray, d0: FloatArray
    ) -> tuple[IntArray, IntArray, IntArray, FloatArray]:
        """Index sets for :meth:`start`.

        Returns the I unknowns without diodes; the diodes alone at an I unknown; that
        unknown; and +1 / -1 for an anode / cathode there.
        """
        ni = d0.size
        a_in = a < ni
        c_in = c < ni
        node = np.where(a_in, a, c)
        touch = np.flatnonzero(a_in | c_in)  # at most one terminal in I (independent)
        count = np.bincount(node[touch], minlength=ni)
        plain = np.flatnonzero((count == 0) & (d0 > 0.0))
        j = touch[count[node[touch]] == 1]
        j = j[d0[node[j]] > 0.0]
        return plain, j, node[j], np.where(a_in[j], 1.0, -1.0)


class _SparseSystem:
    """Sparse ``H``, ``h`` and a sparse LU Newton solver (large circuits)."""

    def __init__(self, quad: _Quadratic, inc: _Incidence) -> None:
        self.m = quad.m
        self.matrix = quad.matrix
        self.h = quad.h
        self.inc = inc
        self.quad = quad

    def apply(self, x: FloatArray) -> FloatArray:
        """H x."""
        return self.quad.apply(x)

    def newton_solve(self, g: FloatArray, rhs: FloatArray) -> FloatArray:
        """Solve ``(H + A^T diag(g) A) s = rhs``."""
        return _solve(self.quad.assemble(g, self.inc.a, self.inc.c), rhs)

    def start(self, d: _Diodes) -> FloatArray:
        """The starting point: 0 V."""
        return np.zeros(self.m)


_System = _DenseSystem | _SparseSystem


@dataclasses.dataclass(frozen=True)
class _Stamps:
    """The netlist's resistors, current sources and diodes over the unknowns of ``grp``.

    ``ra``/``rb`` and ``da``/``dc`` are resistor ends and diode anode/cathode as unknown
    indices (``grp.m``: a fixed node); ``g`` conductances, S; ``gc`` the current each
    resistor carries at x = 0, A; ``lin`` the source currents into each unknown, A;
    ``moving`` the diodes whose ends differ; ``ideal`` ideal (switch) diodes.
    """

    netlist: Netlist
    grp: _Groups
    ra: IntArray
    rb: IntArray
    g: FloatArray
    gc: FloatArray
    lin: FloatArray
    da: IntArray
    dc: IntArray
    moving: IntArray
    ideal: bool


def _dense_system(st: _Stamps) -> tuple[_DenseSystem, IntArray, IntArray, IntArray]:
    """Assemble, check and reorder (I first) the dense system; return it and var, da, dc."""
    grp, ra, rb, g, gc, lin = st.grp, st.ra, st.rb, st.g, st.gc, st.lin
    da, dc, moving, ideal = st.da, st.dc, st.moving, st.ideal
    m = grp.m
    m1 = m + 1
    key = ra * m1 + rb
    # symmetric conductances between unknowns (index m: all fixed nodes); the diagonal
    # holds resistors with both ends in one group or both fixed, which do not count
    w = _scatter(key, g, m1 * m1).reshape(m1, m1)
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    wc = _scatter(key, gc, m1 * m1).reshape(m1, m1)
    np.fill_diagonal(wc, 0.0)
    h = (wc.sum(axis=1) - wc.sum(axis=0) + lin)[:m]
    hmat = -w[:m, :m]
    hmat.flat[:: m + 1] = w[:m].sum(axis=1)

    adj = w[:m, :m] > 0.0
    anchored = w[:m, m] > 0.0
    a, c = da[moving], dc[moving]
    fa = a < m
    fc = c < m
    both = fa & fc
    if not ideal:  # a diode is a DC path too
        anchored[a[fa & ~fc]] = True
        anchored[c[fc & ~fa]] = True
        adj[a[both], c[both]] = True
        adj[c[both], a[both]] = True
    _check_connected_dense(st.netlist, grp, adj, anchored, ideal)

    var = grp.var
    n_i = 0
    if m:
        chosen = _independent_set(adj)
        order = np.concatenate([np.flatnonzero(chosen), np.flatnonzero(~chosen)])
        n_i = int(np.count_nonzero(chosen))
        pos = np.empty(m1, dtype=np.intp)
        pos[order] = np.arange(m)
        pos[m] = m
        # (row then column gathers are faster for small m, np.ix_ for large)
        hmat = hmat[order][:, order] if m <= 160 else hmat[np.ix_(order, order)]
        h = h[order]
        var, da, dc = pos[var], pos[da], pos[dc]
    inc = _Incidence(da[moving], dc[moving], m)
    return _DenseSystem(hmat, h, inc, n_i), var, da, dc


def _sparse_system(st: _Stamps) -> _SparseSystem:
    """Assemble and check the sparse system."""
    grp, ra, rb, g, gc, lin = st.grp, st.ra, st.rb, st.g, st.gc, st.lin
    da, dc, ideal = st.da, st.dc, st.ideal
    m = grp.m
    m1 = m + 1
    r_edges = (ra, rb, *_split_edges(ra, rb, m))
    edges = [r_edges] if ideal else [r_edges, (da, dc, *_split_edges(da, dc, m))]
    _check_connected(st.netlist, grp, edges, ideal)
    same = ra == rb  # both ends fixed or in one source group: no effect on the unknowns
    gw = np.where(same, 0.0, g) if same.any() else g
    gcw = np.where(same, 0.0, gc) if same.any() else gc
    diag = _scatter(ra, gw, m1)[:m] + _scatter(rb, gw, m1)[:m]
    h = (_scatter(ra, gcw, m1) - _scatter(rb, gcw, m1) + lin)[:m]
    both = r_edges[3]
    quad = _Quadratic(
        m,
        diag,
        np.concatenate([ra[both], rb[both]]),
        np.concatenate([rb[both], ra[both]]),
        np.concatenate([-g[both], -g[both]]),
        h,
    )
    return _SparseSystem(quad, _Incidence(da[st.moving], dc[st.moving], m))


# --------------------------------------------------------------------------- Shockley


def _line_search(
    d: _Diodes,
    u0: FloatArray,
    ud: FloatArray,
    fi0: FloatArray,
    slope: float,
    curv: float,
) -> float:
    """Step length ``t > 0`` near the minimum of the convex ``phi(t) = E(x + t step)``.

    ``u0`` and ``ud`` are the diode exponents ``dv / (n Vt)`` at ``x`` and their change
    per unit ``t``; ``fi0`` the diode current factors at ``x`` (current / IS); ``slope
    = phi'(0) < 0`` (W); ``curv = step^T H step`` (W, resistor part). The search may go
    beyond ``t = 1``: from a point far up a diode's exponential the Newton step is
    only about ``n Vt`` long, and extrapolating along it jumps to the knee in one
    iteration. Returns 1 when ``|phi'(1)| <= 0.1 |phi'(0)|`` (the usual case near the
    solution); otherwise finds the root of ``phi'`` to 1e-3 of ``|phi'(0)|`` or 1 % of
    ``t`` by a safeguarded 1-D Newton method whose model of ``phi'`` is an exponential
    ``f + f' (exp(kappa dt) - 1) / kappa`` with ``kappa = f'' / f'`` (exact for one
    diode without resistors, and Newton's method when ``kappa -> 0``). Costs O(diodes)
    per trial.
    """
    w1 = d.is_a * d.nvt_v * ud  # d(current)/d(factor) times d(dv)/dt: phi' weights
    w2 = w1 * ud
    w3 = w2 * ud
    cap = d.u_cap
    target = 0.1 * abs(slope)
    f_tol = 1e-3 * abs(slope)

    def dphi(t: float) -> tuple[float, float, float]:
        u = u0 + t * ud
        low = np.minimum(u, cap)
        em1 = np.expm1(low)
        ex = em1 + 1.0
        f = slope + t * curv + float(w1 @ (em1 + ex * (u - low) - fi0))
        fp = curv + float(w2 @ ex)
        fpp = float(w3 @ np.where(u < cap, ex, 0.0))
        return f, fp, fpp

    t = 1.0
    f, fp, fpp = dphi(t)
    if abs(f) <= target:
        return 1.0  # Newton's own step is good (the usual case near the solution)
    lo, hi = (1.0, math.inf) if f < 0.0 else (0.0, 1.0)
    for _ in range(200):
        nxt = math.nan
        if fp > 0.0:
            kappa = fpp / fp
            arg = -kappa * f / fp
            # Newton's step when there is no curvature or the model has no root
            nxt = t - f / fp if abs(arg) <= 1e-6 or arg <= -1.0 else t + math.log1p(arg) / kappa
        if not lo < nxt < hi:
            nxt = 8.0 * t if hi == math.inf else 0.5 * (lo + hi)
        if nxt > _MAX_STEP_SCALE:
            return lo
        t = nxt
        f, fp, fpp = dphi(t)
        if abs(f) <= f_tol:
            return t
        if f < 0.0:
            lo = t
        else:
            hi = t
        if hi - lo <= 1e-2 * hi:
            return t
    return t


def _newton(
    system: _System, d: _Diodes, x: FloatArray, tol_v: float, max_iterations: int
) -> tuple[FloatArray, int]:
    """Minimise the energy over the free unknowns from ``x``; return them and the iterations.

    Above its exponent ``u = dv / (n Vt) = cap`` a diode's ``exp(u)`` is continued by
    its second-order Taylor polynomial at the cap, which keeps every value finite (the
    energy stays convex and C2). The minimiser is the true operating point as long as
    no diode ends above its cap, which :meth:`PreparedOp.solve` checks.
    """
    inc = system.inc
    h = system.h
    apply = system.apply
    is_a, nvt, cap, k = d.is_a, d.nvt_v, d.u_cap, d.k_v
    inv_nvt = 1.0 / nvt
    g_unit = is_a * inv_nvt
    has_diodes = is_a.size > 0
    cap_min = float(cap.min(initial=np.inf))

    def evaluate(
        x: FloatArray,
    ) -> tuple[float, FloatArray, FloatArray, float, FloatArray, FloatArray]:
        """Energy, gradient, diode conductances, energy scale, exponents, current factors."""
        dv = inc.drops(x) + k
        u = dv * inv_nvt
        if not has_diodes or float(u.max()) <= cap_min:  # no diode above its cap
            fi = np.expm1(u)
            ex = fi + 1.0
            e_d = float(is_a @ (nvt * fi - dv))
        else:  # exp continued quadratically above the cap: w = u - cap > 0
            low = np.minimum(u, cap)
            w = u - low
            em1 = np.expm1(low)
            ex = em1 + 1.0
            exw = ex * w
            fi = em1 + exw
            e_d = float(is_a @ (nvt * (fi + 0.5 * exw * w) - dv))
        hx = apply(x)
        quad_part = 0.5 * float(x @ hx)
        lin_part = float(h @ x)
        grad = hx + h + inc.to_nodes(is_a * fi)
        scale = abs(quad_part) + abs(lin_part) + abs(e_d)
        return quad_part + lin_part + e_d, grad, g_unit * ex, scale, u, fi

    energy, grad, g, scale, u, fi = evaluate(x)
    step_v = math.inf
    for it in range(1, max_iterations + 1):
        step = -system.newton_solve(g, grad)
        if not np.isfinite(step).all():
            raise CircuitError(
                "no DC operating point found: the Newton step is not finite; a node is "
                "probably held only by reverse-biased diodes: add a resistor to ground"
            )
        step_v = float(abs(step).max())
        if step_v <= tol_v:  # converged: a step this small cannot fail the energy test
            return x + step, it
        slope = float(grad @ step)
        noise = 64.0 * _EPS * scale
        alpha = 1.0
        if -slope > noise and has_diodes:  # (a decrease below rounding needs no search)
            ud = inc.drops(step) * inv_nvt
            # a step that moves every diode by under n Vt / 2 is taken in full (the
            # energy is nearly quadratic along it); the Armijo test below still checks it
            if float(abs(ud).max()) > 0.5:
                alpha = _line_search(d, u, ud, fi, slope, float(step @ apply(step)))
        while True:
            x_new = x + alpha * step
            e_new, g_new, gd_new, s_new, u_new, fi_new = evaluate(x_new)
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
        x, energy, grad, g, scale, u, fi = x_new, e_new, g_new, gd_new, s_new, u_new, fi_new
        if float(abs(x).max()) > _MAX_ABS_V:
            raise CircuitError(
                "no DC operating point: node voltages diverge (above 1e12 V); a current "
                "source probably drives more than IS into a reverse-biased diode: add a "
                "resistor across it"
            )
    raise CircuitError(
        f"Newton's method did not converge in {max_iterations} iterations (last step "
        f"{step_v:.3g} V); check for extreme element values or raise tol_v"
    )


# --------------------------------------------------------------------------- ideal diodes


class _Factor:
    """A factorisation of the (positive definite) resistor Hessian ``H``.

    Dense: the diagonal I block is eliminated and the Schur complement on R is
    Cholesky-factorised, so every BLAS call stays small (large multi-column
    triangular solves can stall for milliseconds in a threaded BLAS on a busy
    machine). Sparse: LU (SuperLU).
    """

    def __init__(self, system: _System) -> None:
        self.lu: Any = None
        self.s_inv: FloatArray | None = None
        if isinstance(system, _SparseSystem):
            import scipy.sparse.linalg

            try:
                self.lu = scipy.sparse.linalg.splu(system.matrix.tocsc())
            except RuntimeError as exc:
                raise _singular_network(str(exc)) from None
            return
        ni = system.n_i
        self.n_i = ni
        self.d = system.d0
        if ni and not self.d.min() > 0.0:
            raise _singular_network("a node has no resistor")
        self.bd = system.b0 / self.d[:, None]
        if ni < system.m:
            schur = system.c0 - system.b0.T @ self.bd
            try:
                np.linalg.cholesky(schur)  # positive definite?
                self.s_inv = np.asarray(np.linalg.inv(schur), dtype=np.float64)
            except _LinAlgError as exc:
                raise _singular_network(str(exc)) from None

    def solve(self, rhs: FloatArray) -> FloatArray:
        """``H^-1 rhs`` for one right-hand side ``(m,)`` or several ``(m, k)``."""
        if self.lu is not None:
            return np.asarray(self.lu.solve(rhs), dtype=np.float64)
        ni = self.n_i
        y = rhs[:ni] / (self.d if rhs.ndim == 1 else self.d[:, None])
        if self.s_inv is None:
            return np.asarray(y, dtype=np.float64)
        s_r = self.s_inv @ (rhs[ni:] - self.bd.T @ rhs[:ni])
        return np.concatenate([y - self.bd @ s_r, s_r])


def _singular_network(reason: str) -> CircuitError:
    return CircuitError(
        f"the resistor network is singular ({reason}); add a resistor to ground at the suspect node"
    )


def _spd_solve(qff: FloatArray, qf: FloatArray) -> FloatArray | None:
    """``qff^-1 qf``, or None unless ``qff`` is clearly positive definite (Cholesky)."""
    try:
        piv = np.diagonal(np.linalg.cholesky(qff))
    except _LinAlgError:
        return None
    if float(piv.min()) ** 2 > 1e-12 * float(np.diagonal(qff).max()):
        return np.asarray(np.linalg.solve(qff, qf), dtype=np.float64)
    return None


def _face_solve(qff: FloatArray, qf: FloatArray) -> tuple[FloatArray, FloatArray | None]:
    """Minimise ``1/2 s^T Q s - q^T s`` over a face.

    Returns ``(s, None)`` at a minimiser, or ``(_, d)`` with a null direction ``d`` of
    Q along which the objective decreases without bound.
    """
    out = _spd_solve(qff, qf)
    if out is not None:
        return out, None
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
            s, direction = _face_solve(qmat[idx][:, idx], qvec[idx])
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


def _pdas_start(qmat: FloatArray, qvec: FloatArray, tol: float) -> tuple[FloatArray, int]:
    """A warm start for :func:`_dual_active_set` by the primal-dual active-set method.

    Guesses the conducting diodes (first: those with a negative slack at ``l = 0``),
    solves for their currents on that face and updates the guess from the signs of
    currents and slacks, until it repeats. Returns the face minimiser when the guess
    settles with ``l > 0`` on it, else zeros (a cold start: the guess cycles or a face
    is degenerate); and the iterations spent. Usually a few face solves instead of
    one per conducting diode.
    """
    p = qvec.size
    act = qvec > tol  # slack at l = 0 is -q
    it = 0
    for it in range(1, 26):
        lam = np.zeros(p)
        idx = np.flatnonzero(act)
        if idx.size:
            s = _spd_solve(qmat[idx][:, idx], qvec[idx])
            if s is None:  # a degenerate face: leave it to the exact method
                break
            lam[idx] = s
        slack = qmat @ lam - qvec
        new = np.where(act, lam > 0.0, slack < -tol)
        if np.array_equal(new, act):
            return lam, it
        act = new
    return np.zeros(p), it


def _solve_ideal(
    netlist: Netlist,
    quad: _System,
    d: _Diodes,
    tol_v: float,
) -> tuple[FloatArray, FloatArray, int]:
    """Return the free unknowns, the diode currents (A, active diodes) and iterations."""
    m = quad.m
    p = d.a.size
    if m == 0:
        return np.zeros(0), np.zeros(p), 1
    fac = _Factor(quad)
    x_u = fac.solve(-quad.h)
    if p == 0:
        return x_u, np.zeros(0), 1
    # constraint rows A x <= u, A the diode incidence: x_ext[a] - x_ext[c] <= -k
    inc = quad.inc
    u = -d.k_v
    cols = np.arange(p)
    a_t = np.zeros((m + 1, p))  # A^T, with a row for "fixed"
    a_t[d.a, cols] = 1.0
    a_t[d.c, cols] = -1.0
    z = np.vstack([fac.solve(a_t[:m]), np.zeros((1, p))])  # H^-1 A^T
    qmat = z[d.a] - z[d.c]  # A H^-1 A^T
    qmat = 0.5 * (qmat + qmat.T)
    z = z[:m]
    qvec = inc.drops(x_u) - u
    vscale = 1.0 + float(np.max(np.abs(qvec))) + float(np.max(np.abs(u)))
    tol = max(tol_v, 1e3 * _EPS * vscale)
    names = [netlist.diode_names[k] for k in d.index.tolist()]
    lam, iterations = _pdas_start(qmat, qvec, tol)
    for _ in range(4):
        lam, its = _dual_active_set(qmat, qvec, lam, tol, 50 * p + 100, names)
        iterations += its
        act = np.flatnonzero(lam > 0.0)
        x = x_u - z[:, act] @ lam[act]
        # KKT polish on the identified active set: iterative refinement of
        # [H A^T; A 0] [x; l] = [-h; u] with the Schur complement Q_FF (lam is 0 off
        # the active set, so A_F^T lam_F = A^T lam)
        if act.size:
            qff = qmat[act][:, act]
            for _ in range(2):
                r1 = -quad.h - quad.apply(x) - inc.to_nodes(lam)
                r2 = u[act] - inc.drops(x)[act]
                hr1 = fac.solve(r1)
                rhs = inc.drops(hr1)[act] - r2
                dl = _spd_solve(qff, rhs)
                if dl is None:  # degenerate active set: least squares
                    dl = np.linalg.lstsq(qff, rhs, rcond=None)[0]
                lam[act] = lam[act] + dl
                x = x + hr1 - z[:, act] @ dl
        slack = u - inc.drops(x)
        if np.all(lam >= 0.0) and np.all(slack >= -10.0 * tol):
            return x, lam, iterations
        lam = np.maximum(lam, 0.0)  # polish left the feasible set: resume the active set
    raise CircuitError(
        "the ideal-diode solution failed its KKT check; use Shockley diodes for this circuit"
    )


# --------------------------------------------------------------------------- driver


def _check_args(diodes: str, temperature_c: float) -> None:
    if diodes not in ("shockley", "ideal"):
        raise ConfigError(f"diodes must be 'shockley' or 'ideal', not {diodes!r}")
    if not -_ZERO_C_IN_K < temperature_c < np.inf:
        raise ConfigError(
            f"temperature {temperature_c} degC is not above absolute zero (-273.15 degC); fix it"
        )


def _check_tol(tol_v: float) -> None:
    if not tol_v > 0.0:
        raise ConfigError(f"tol_v must be > 0 V, not {tol_v}")


class PreparedOp:
    """A netlist reduced to its free unknowns and assembled, ready to :meth:`solve`.

    Made by :func:`prepare_op`; :meth:`solve` does not change it and starts from scratch.
    ``solve_op(net, ...)`` is ``prepare_op(net, ...).solve(...)``.

    Attributes:
        netlist: the circuit.
        diodes: the diode model, ``"shockley"`` or ``"ideal"``.
        temperature_c: the temperature in degC.
        num_unknowns: free unknowns left after eliminating the voltage sources.
    """

    __slots__ = (
        "_da",
        "_dc",
        "_dset",
        "_dset1",
        "_is_t",
        "_k_all",
        "_moving",
        "_nvt",
        "_off",
        "_system",
        "_var",
        "diodes",
        "netlist",
        "temperature_c",
    )

    def __init__(self, netlist: Netlist, diodes: DiodeMode, temperature_c: float) -> None:
        self.netlist = netlist
        self.diodes: DiodeMode = diodes
        self.temperature_c = float(temperature_c)
        ideal = diodes == "ideal"
        grp = _eliminate_sources(netlist)
        m, var, off = grp.m, grp.var, grp.off_v
        m1 = m + 1

        rn = netlist.resistor_nodes
        r0, r1 = rn[:, 0], rn[:, 1]
        ra, rb = var[r0], var[r1]
        g = netlist.resistor_g_s
        gc = g * (off[r0] - off[r1])  # current each resistor carries at x = 0, A
        ins = netlist.isource_nodes
        cur_i = netlist.isource_a
        lin = _scatter(var[ins[:, 0]], cur_i, m1) - _scatter(var[ins[:, 1]], cur_i, m1)
        dn = netlist.diode_nodes
        da, dc = var[dn[:, 0]], var[dn[:, 1]]
        moving = np.flatnonzero(da != dc)
        stamps = _Stamps(netlist, grp, ra, rb, g, gc, lin, da, dc, moving, ideal)
        system: _System
        if m <= DENSE_MAX_UNKNOWNS:
            system, var, da, dc = _dense_system(stamps)
        else:
            system = _sparse_system(stamps)

        is_t = saturation_current_a(netlist, temperature_c)
        nvt = netlist.diode_n * thermal_voltage_v(temperature_c)
        k_all = off[dn[:, 0]] - off[dn[:, 1]]
        self._dset = _Diodes(
            index=moving,
            a=da[moving],
            c=dc[moving],
            k_v=k_all[moving],
            is_a=is_t[moving],
            nvt_v=nvt[moving],
            u_cap=np.full(moving.size, _U_CAP),
        )
        self._system = system
        self._var = var
        self._off = off
        self._da = da
        self._dc = dc
        self._moving = moving
        self._k_all = k_all
        self._is_t = is_t
        self._nvt = nvt
        # the exp() cap of phase 1 (see solve): the scale of the currents the sources drive
        i_scale = float(np.sum(np.abs(gc)) + np.sum(np.abs(cur_i)))
        cap1 = np.minimum(np.maximum(np.log1p(i_scale / self._dset.is_a), 1.0), _U_CAP)
        self._dset1 = dataclasses.replace(self._dset, u_cap=cap1)

    @property
    def num_unknowns(self) -> int:
        """Free unknowns (node groups not fixed by voltage sources)."""
        return self._system.m

    def solve(self, *, tol_v: float = 1e-12, max_iterations: int = 500) -> OperatingPoint:
        """Compute the operating point (see :func:`solve_op` for the arguments)."""
        _check_tol(tol_v)
        netlist = self.netlist
        system = self._system
        dset = self._dset
        m = system.m
        nvt = self._nvt
        is_t = self._is_t
        moving = self._moving
        currents = np.zeros(len(netlist.diode_names))
        if self.diodes == "ideal":
            k_all = self._k_all
            fixed = np.flatnonzero(self._da == self._dc)
            bad = fixed[k_all[fixed] > max(tol_v, 1e-9)]
            if bad.size:
                j = int(bad[0])
                raise CircuitError(
                    f"ideal diode {netlist.diode_names[j]} is forward-biased by voltage "
                    f"sources (v_anode - v_cathode = {k_all[j]:.6g} V > 0) and would short "
                    f"them; fix the sources or use Shockley diodes"
                )
            x, lam, iterations = _solve_ideal(netlist, system, dset, tol_v)
            currents[moving] = lam
            diode_cur = lam
            x_ext = np.append(x, 0.0)
        else:
            x = np.zeros(m)
            iterations = 0
            u = np.zeros(0)  # exponents dv / (n Vt) of the moving diodes
            if m:
                # phase 1: exponentials continued above the current scale of the sources,
                # so that a start far up a diode's exponential costs a few steps, not
                # hundreds; phase 2 (only if some diode ends above that) lifts the cap
                d1 = self._dset1
                x, iterations = _newton(system, d1, system.start(d1), tol_v, max_iterations)
                u = (system.inc.drops(x) + dset.k_v) / dset.nvt_v
                if (u > d1.u_cap).any():
                    x, more = _newton(system, dset, x, tol_v, max_iterations)
                    iterations += more
                    u = (system.inc.drops(x) + dset.k_v) / dset.nvt_v
            over = np.flatnonzero(u > _U_CAP)
            if over.size:
                name = netlist.diode_names[int(moving[over[0]])]
                raise CircuitError(
                    f"diode {name} would need a forward drop above {_U_CAP:g} n Vt (a "
                    f"current beyond IS e^{_U_CAP:g}); the circuit has no physical operating "
                    f"point: check its element values"
                )
            diode_cur = dset.is_a * np.expm1(u)
            if moving.size == currents.size:
                currents = diode_cur
            else:  # diodes between two nodes of one source group (or both fixed)
                with np.errstate(over="ignore"):
                    currents = is_t * np.expm1(self._k_all / nvt)
                currents[moving] = diode_cur
            x_ext = np.append(x, 0.0)
        kcl = system.apply(x) + system.h + system.inc.to_nodes(diode_cur)
        volts = x_ext[self._var] + self._off
        volts[0] = 0.0
        volts.setflags(write=False)
        currents.setflags(write=False)
        return OperatingPoint(
            node_names=netlist.node_names,
            voltages_v=volts,
            diode_currents_a=currents,
            iterations=iterations,
            max_residual_a=float(np.max(np.abs(kcl), initial=0.0)),
            diodes=self.diodes,
            temperature_c=self.temperature_c,
        )


def prepare_op(
    netlist: Netlist, *, diodes: DiodeMode = "shockley", temperature_c: float = 27.0
) -> PreparedOp:
    """Reduce and assemble ``netlist`` for :meth:`PreparedOp.solve` (steps 1-3 above).

    Raises:
        CircuitError: a floating node or an inconsistent voltage-source loop.
        ConfigError: an invalid argument.
    """
    _check_args(diodes, temperature_c)
    return PreparedOp(netlist, diodes, temperature_c)


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
    _check_args(diodes, temperature_c)
    _check_tol(tol_v)
    return PreparedOp(netlist, diodes, temperature_c).solve(
        tol_v=tol_v, max_iterations=max_iterations
    )
