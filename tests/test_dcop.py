"""DC operating point: analytic cases, independent references and KKT checks."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.constants
import scipy.optimize
from scipy.special import lambertw

from hwloop.errors import CircuitError
from simulated_device.dcop import OperatingPoint, solve_op, thermal_voltage_v
from simulated_device.netlist import parse_netlist
from tests.procs import DEADLINE_S

VT27 = scipy.constants.k * 300.15 / scipy.constants.e


# --------------------------------------------------------------------------- generator


@dataclass
class Circuit:
    """A random circuit as text plus the element list used by the independent checks."""

    text: str
    nodes: list[str]
    # (name, a, b, ohm) / (name, anode, cathode, is_a, n) / (name, plus, minus, value)
    resistors: list[tuple[str, str, str, float]] = field(default_factory=list)
    diodes: list[tuple[str, str, str, float, float]] = field(default_factory=list)
    vsources: list[tuple[str, str, str, float]] = field(default_factory=list)
    isources: list[tuple[str, str, str, float]] = field(default_factory=list)


def random_circuit(
    rng: np.random.Generator,
    n_nodes: int = 6,
    n_diodes: int = 4,
    floating_sources: bool = True,
    n_isources: int = 2,
    series_r: bool = True,
) -> Circuit:
    """A random circuit with a unique operating point.

    Every node is tied to ground through a resistor tree; voltage sources never form a
    loop; diodes (IS 1e-15..1e-10 A, N 1..1.8) go between random nodes, ground included.
    With ``series_r`` each diode feeds its cathode node through a private resistor
    (100 ohm..10 kohm), so no chain of diodes is driven by sources alone; without it
    diode chains across sources can carry absurd currents (a stress test).
    """
    nodes = [f"n{k}" for k in range(1, n_nodes + 1)]
    allnodes = ["0", *nodes]
    c = Circuit(text="", nodes=nodes)
    lines = ["* random circuit"]
    # resistor spanning tree plus extras
    for k, node in enumerate(nodes):
        other = allnodes[int(rng.integers(0, k + 1))]
        c.resistors.append((f"R{len(c.resistors) + 1}", node, other, 0.0))
    for _ in range(n_nodes):
        a, b = rng.choice(len(allnodes), 2, replace=False)
        c.resistors.append((f"R{len(c.resistors) + 1}", allnodes[a], allnodes[b], 0.0))
    c.resistors = [(nm, a, b, float(10 ** rng.uniform(2, 5))) for nm, a, b, _ in c.resistors]
    # voltage sources without loops (union-find over nodes)
    parent = {n: n for n in allnodes}

    def find(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    n_v = int(rng.integers(1, 4))
    for k in range(n_v):
        for _ in range(20):
            if floating_sources and k % 2 == 1:
                a, b = (allnodes[i] for i in rng.choice(range(1, len(allnodes)), 2, replace=False))
            else:
                a, b = allnodes[int(rng.integers(1, len(allnodes)))], "0"
            if find(a) != find(b):
                parent[find(a)] = find(b)
                c.vsources.append((f"V{k + 1}", a, b, float(rng.uniform(-5, 5))))
                break
    for k in range(n_isources):
        a, b = rng.choice(len(allnodes), 2, replace=False)
        c.isources.append((f"I{k + 1}", allnodes[a], allnodes[b], float(rng.uniform(-1e-3, 1e-3))))
    for k in range(n_diodes):
        a, b = rng.choice(len(allnodes), 2, replace=False)
        is_a = float(10 ** rng.uniform(-15, -10))
        n = float(rng.uniform(1.0, 1.8))
        if series_r:
            mid = f"k{k + 1}"
            c.nodes.append(mid)
            ohm = float(10 ** rng.uniform(2, 4))
            c.resistors.append((f"RS{k + 1}", mid, allnodes[b], ohm))
            c.diodes.append((f"D{k + 1}", allnodes[a], mid, is_a, n))
        else:
            c.diodes.append((f"D{k + 1}", allnodes[a], allnodes[b], is_a, n))
    for nm, a, b, ohm in c.resistors:
        lines.append(f"{nm} {a} {b} {ohm!r}")
    for nm, a, b, v in c.vsources:
        lines.append(f"{nm} {a} {b} DC {v!r}")
    for nm, a, b, i in c.isources:
        lines.append(f"{nm} {a} {b} DC {i!r}")
    for nm, a, b, is_a, n in c.diodes:
        lines.append(f"{nm} {a} {b} M{nm}")
        lines.append(f".model M{nm} D(IS={is_a!r} N={n!r})")
    c.text = "\n".join(lines) + "\n"
    return c


# --------------------------------------------------------------------------- checks


def _supernodes(c: Circuit) -> dict[str, str]:
    """Node -> representative of its voltage-source group (ground's group is '0')."""
    parent = {n: n for n in ["0", *c.nodes]}

    def find(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for _, a, b, _ in c.vsources:
        ra, rb = find(a), find(b)
        if ra != rb:
            if rb == "0":
                parent[ra] = rb
            else:
                parent[rb] = ra
    return {n: find(n) for n in parent}


def assert_kcl(c: Circuit, op: OperatingPoint, diode_currents: dict[str, float]) -> float:
    """Independent check: source equations hold and every free (super)node balances.

    The tolerance is 1e-12 A plus 1e-12 of the sum of |element currents| at the
    (super)node, i.e. a relative KCL residual of 1e-12.
    """
    v = {"0": 0.0, **op.node_voltages_v}
    for _, a, b, val in c.vsources:
        assert v[a] - v[b] == pytest.approx(val, abs=1e-12 * (1 + abs(val)))
    group = _supernodes(c)
    net: dict[str, float] = {}
    mag: dict[str, float] = {}

    def flow(a: str, b: str, i: float) -> None:  # current i leaves a, enters b
        for node, s in ((a, 1.0), (b, -1.0)):
            g = group[node]
            net[g] = net.get(g, 0.0) + s * i
            mag[g] = mag.get(g, 0.0) + abs(i)

    for _, a, b, ohm in c.resistors:
        flow(a, b, (v[a] - v[b]) / ohm)
    for _, a, b, i in c.isources:
        flow(a, b, i)
    for nm, a, b, *_ in c.diodes:
        flow(a, b, diode_currents[nm])
    for g, i in net.items():
        if g != "0":
            assert abs(i) <= 1e-12 + 1e-12 * mag[g], (g, i, mag[g])
    return max(mag.values())


def shockley_currents(c: Circuit, op: OperatingPoint, vt: float = VT27) -> dict[str, float]:
    v = {"0": 0.0, **op.node_voltages_v}
    return {nm: is_a * np.expm1((v[a] - v[b]) / (n * vt)) for nm, a, b, is_a, n in c.diodes}


def _safe_diode(dv: float, is_a: float, nvt: float) -> tuple[float, float, float]:
    """Co-content, current and conductance of a diode, continued quadratically above 40 nVt.

    The continuation keeps the reference energy finite everywhere (its minimiser is
    unchanged: no test current comes near IS e^40).
    """
    u0 = 40.0
    u = dv / nvt
    if u <= u0:
        em1 = np.expm1(u)
        return is_a * (nvt * em1 - dv), is_a * em1, is_a / nvt * (em1 + 1.0)
    e0, i0, g0 = _safe_diode(u0 * nvt, is_a, nvt)
    dx = dv - u0 * nvt
    return e0 + i0 * dx + 0.5 * g0 * dx * dx, i0 + g0 * dx, g0


def energy_reference(c: Circuit, vt: float = VT27) -> tuple[list[str], float, np.ndarray]:
    """Minimise the co-content with scipy's trust-exact (grounded sources only).

    Written independently of simulated_device: element by element, from 0 V.
    Returns the free node names, the minimum energy (W) and the voltages (V).
    """
    fixed = {a: val for _, a, b, val in c.vsources if b == "0"}
    assert len(fixed) == len(c.vsources)
    free = [n for n in c.nodes if n not in fixed]
    pos = {n: k for k, n in enumerate(free)}

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        v = {"0": 0.0, **fixed}
        v.update({n: float(x[k]) for n, k in pos.items()})
        e = 0.0
        grad = np.zeros(len(free))
        hess = np.zeros((len(free), len(free)))

        def add(a: str, b: str, i: float, g: float) -> None:
            for p, q, s in ((a, b, 1.0), (b, a, -1.0)):
                if p in pos:
                    grad[pos[p]] += s * i
                    hess[pos[p], pos[p]] += g
                    if q in pos:
                        hess[pos[p], pos[q]] -= g

        for _, a, b, ohm in c.resistors:
            dv = v[a] - v[b]
            e += 0.5 * dv * dv / ohm
            add(a, b, dv / ohm, 1.0 / ohm)
        for _, a, b, i in c.isources:
            e += i * (v[a] - v[b])
            add(a, b, i, 0.0)
        for _, a, b, is_a, n in c.diodes:
            ed, i, g = _safe_diode(v[a] - v[b], is_a, n * vt)
            e += ed
            add(a, b, i, g)
        return e, grad, hess

    res = scipy.optimize.minimize(
        lambda x: evaluate(x)[0],
        np.zeros(len(free)),
        jac=lambda x: evaluate(x)[1],
        hess=lambda x: evaluate(x)[2],
        method="trust-exact",
        options={"gtol": 1e-13, "maxiter": 2000},
    )
    return free, float(res.fun), res.x


# --------------------------------------------------------------------------- analytic


def test_thermal_voltage() -> None:
    assert thermal_voltage_v(27.0) == pytest.approx(0.0258649, abs=1e-7)
    assert thermal_voltage_v(-273.15) == 0.0


def test_voltage_divider() -> None:
    op = solve_op(parse_netlist("div\nV1 in 0 10\nR1 in out 1k\nR2 out 0 3k\n"))
    assert op.node_voltages_v == {"in": 10.0, "out": pytest.approx(7.5, abs=1e-14)}
    assert op.max_residual_a < 1e-16
    assert op.voltages_v[0] == 0.0


def test_current_source_convention() -> None:
    # SPICE: I1 n+ n- pulls current out of n+ and pushes it into n-
    op = solve_op(parse_netlist("i\nI1 0 a 1m\nR1 a 0 1k\nI2 b 0 2m\nR2 b 0 1k\n"))
    assert op.node_voltages_v["a"] == pytest.approx(1.0, abs=1e-14)
    assert op.node_voltages_v["b"] == pytest.approx(-2.0, abs=1e-14)


@pytest.mark.parametrize(
    ("vs", "ohm", "is_a", "n", "temp_c"),
    [
        (5.0, 1e3, 1e-14, 1.0, 27.0),
        (1.0, 1e4, 2e-12, 1.7, 27.0),
        (0.3, 100.0, 1e-9, 1.2, 27.0),
        (-3.0, 2e3, 1e-14, 1.0, 27.0),  # reverse biased
        (5.0, 1e3, 1e-14, 1.3, 80.0),  # IS and Vt scaled with temperature
    ],
)
def test_diode_resistor_lambert_w(
    vs: float, ohm: float, is_a: float, n: float, temp_c: float
) -> None:
    text = f"lw\nV1 in 0 {vs}\nR1 in a {ohm}\nD1 a 0 DM\n.model DM D(IS={is_a} N={n})\n"
    op = solve_op(parse_netlist(text), temperature_c=temp_c)
    t, tnom = temp_c + 273.15, 300.15
    vt = scipy.constants.k * t / scipy.constants.e
    is_t = is_a * (t / tnom) ** (3.0 / n) * np.exp((t / tnom - 1) * 1.11 / (n * vt))
    nvt = n * vt
    # i = IS (exp(v/nVt) - 1), vs = i R + v  =>  i = nVt/R W(IS R/nVt exp((vs + IS R)/nVt)) - IS
    cur = nvt / ohm * lambertw(is_t * ohm / nvt * np.exp((vs + is_t * ohm) / nvt)).real - is_t
    assert op.node_voltages_v["a"] == pytest.approx(vs - cur * ohm, abs=1e-12)
    assert op.diode_currents_a[0] == pytest.approx(cur, rel=1e-9, abs=1e-20)
    assert op.max_residual_a < 1e-15


def test_ideal_diode_between_free_nodes_analytic() -> None:
    # a -R1- b -|>|- c -R2- 0, plus R3 from b to ground: D conducts, b = c
    text = "free\nV1 a 0 6\nR1 a b 1k\nD1 b c DI\nR2 c 0 2k\nR3 b 0 2k\n.model DI D\n"
    op = solve_op(parse_netlist(text), diodes="ideal")
    vb = 6.0 * 1000.0 / (1000.0 + 1000.0)  # 2k || 2k = 1k
    assert op.node_voltages_v["b"] == pytest.approx(vb, abs=1e-12)
    assert op.node_voltages_v["c"] == pytest.approx(vb, abs=1e-12)
    assert op.diode_currents_a[0] == pytest.approx(vb / 2000.0, abs=1e-15)
    # reversed source: D blocks, c = 0 and b = -6 * 2/3
    op = solve_op(parse_netlist(text.replace("V1 a 0 6", "V1 a 0 -6")), diodes="ideal")
    assert op.node_voltages_v["c"] == pytest.approx(0.0, abs=1e-12)
    assert op.node_voltages_v["b"] == pytest.approx(-4.0, abs=1e-12)
    assert op.diode_currents_a[0] == 0.0


def test_ideal_diode_clamps_drn_style() -> None:
    text = (
        "clamp\nV1 in 0 5\nV2 in2 0 -5\nR1 in h1 1k\nR2 in2 h2 1k\nR3 h1 0 1k\nR4 h2 0 1k\n"
        "D1 0 h1 DI\nD2 h2 0 DI\nD3 0 h2 DI\nD4 h1 0 DI\n.model DI D\n"
    )
    # D1 keeps h1 >= 0, D4 keeps h1 <= 0: h1 is clamped to 0 (and so is h2)
    op = solve_op(parse_netlist(text), diodes="ideal")
    assert op.node_voltages_v["h1"] == pytest.approx(0.0, abs=1e-12)
    assert op.node_voltages_v["h2"] == pytest.approx(0.0, abs=1e-12)
    assert op.diode_currents_a[3] == pytest.approx(5e-3, abs=1e-15)
    assert op.diode_currents_a[2] == pytest.approx(5e-3, abs=1e-15)


def test_inductor_is_short_capacitor_is_open() -> None:
    text = "lc\nV1 a 0 2\nL1 a b 1m\nR1 b c 1k\nC1 c 0 1u\nR2 c 0 1k\n"
    op = solve_op(parse_netlist(text))
    assert op.node_voltages_v["b"] == 2.0
    assert op.node_voltages_v["c"] == pytest.approx(1.0, abs=1e-14)


def test_consistent_source_loop_is_fine() -> None:
    text = "loop\nV1 a 0 1\nV2 b a 2\nV3 b 0 3\nR1 b c 1k\nR2 c 0 1k\n"
    op = solve_op(parse_netlist(text))
    assert op.node_voltages_v == pytest.approx({"a": 1.0, "b": 3.0, "c": 1.5}, abs=1e-14)


def test_floating_source_group() -> None:
    # V1 floats between a and b; the pair is held by R1 and R2 only
    text = "float\nV1 a b 2\nR1 a 0 1k\nR2 b 0 1k\n"
    op = solve_op(parse_netlist(text))
    assert op.node_voltages_v == pytest.approx({"a": 1.0, "b": -1.0}, abs=1e-14)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("only I\nV1 a 0 1\nR1 a 0 1k\nI1 a b 1m\n", ["b"]),
        ("only C\nV1 a 0 1\nR1 a 0 1k\nC1 a b 1u\n", ["b"]),
        ("island\nV1 a 0 1\nR1 a 0 1k\nR2 b c 1k\n", ["b", "c"]),
        ("source island\nV1 a 0 1\nR1 a 0 1k\nV2 b c 1\nI1 b c 1m\n", ["b", "c"]),
    ],
)
def test_floating_node_raises(text: str, names: list[str]) -> None:
    with pytest.raises(CircuitError, match="floating node") as err:
        solve_op(parse_netlist(text))
    for nm in names:
        assert nm in str(err.value)
    assert "\n" not in str(err.value)


def test_ideal_diode_alone_does_not_anchor_a_node() -> None:
    text = "d only\nV1 a 0 1\nR1 a b 1k\nD1 b c DI\n.model DI D\n"
    solve_op(parse_netlist(text))  # Shockley: the diode conducts, c is defined
    with pytest.raises(CircuitError, match=r"floating node.*c"):
        solve_op(parse_netlist(text), diodes="ideal")


def test_inconsistent_source_loop_raises() -> None:
    text = "bad loop\nV1 a 0 1\nV2 b a 2\nV3 b 0 3.5\nR1 b 0 1k\n"
    with pytest.raises(CircuitError, match=r"V1, V2, V3|v1, v2, v3"):
        solve_op(parse_netlist(text))
    with pytest.raises(CircuitError, match="loop"):
        solve_op(parse_netlist("self\nV1 a a 1\nR1 a 0 1\n"))


def test_ideal_diode_forward_biased_by_sources_raises() -> None:
    with pytest.raises(CircuitError, match="forward-biased"):
        solve_op(parse_netlist("fb\nV1 a 0 1\nD1 a 0 DI\n.model DI D\n"), diodes="ideal")


def test_ideal_diodes_conflicting_constraints_raise() -> None:
    # v_a <= v_b <= v_c = v_a - 1 is infeasible (c floats with a through V1)
    text = "conflict\nV1 c a -1\nR1 a 0 1k\nR2 b 0 1k\nD1 a b DI\nD2 b c DI\n.model DI D\n"
    with pytest.raises(CircuitError, match="operating point"):
        solve_op(parse_netlist(text), diodes="ideal")


def test_current_source_into_reverse_diode_raises() -> None:
    # more than IS into a reverse-biased diode: no operating point (v -> -inf)
    text = "runaway\nR1 a 0 1k\nD1 b a DM\nI1 b 0 1m\n.model DM D(IS=1e-14)\n"
    with pytest.raises(CircuitError, match=r"operating point|diverge|singular"):
        solve_op(parse_netlist(text))


def test_bad_arguments() -> None:
    net = parse_netlist("x\nV1 a 0 1\nR1 a 0 1\n")
    with pytest.raises(Exception, match="diodes"):
        solve_op(net, diodes="exact")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="absolute zero"):
        solve_op(net, temperature_c=-300.0)


# --------------------------------------------------------------------------- random


@pytest.mark.parametrize("seed", range(12))
def test_shockley_matches_scipy_minimize(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    c = random_circuit(rng, n_nodes=5, n_diodes=4, floating_sources=False)
    op = solve_op(parse_netlist(c.text))
    free, e_ref, x_ref = energy_reference(c)
    v_ref = np.array([op.node_voltages_v[n] for n in free])
    assert np.max(np.abs(v_ref - x_ref), initial=0.0) < 1e-6
    # our point has an energy no higher than scipy's (it is the exact minimiser)
    _, e_ours, _ = energy_reference_at(c, op)
    assert e_ours <= e_ref + 1e-12 * (1.0 + abs(e_ref))
    assert_kcl(c, op, shockley_currents(c, op))


def energy_reference_at(c: Circuit, op: OperatingPoint) -> tuple[list[str], float, None]:
    v = {"0": 0.0, **op.node_voltages_v}
    e = sum(0.5 * (v[a] - v[b]) ** 2 / ohm for _, a, b, ohm in c.resistors)
    e += sum(i * (v[a] - v[b]) for _, a, b, i in c.isources)
    e += sum(_safe_diode(v[a] - v[b], is_a, n * VT27)[0] for _, a, b, is_a, n in c.diodes)
    return [], float(e), None


def random_sized_circuit(base: int, seed: int, max_diodes: int) -> Circuit:
    """:func:`random_circuit` of 3..11 nodes and 1..``max_diodes`` diodes, drawn from
    ``default_rng(base + seed)``; series resistors on even seeds."""
    rng = np.random.default_rng(base + seed)
    return random_circuit(
        rng,
        n_nodes=int(rng.integers(3, 12)),
        n_diodes=int(rng.integers(1, max_diodes + 1)),
        series_r=seed % 2 == 0,
    )


@pytest.mark.parametrize("seed", range(30))
def test_shockley_kcl_on_random_circuits(seed: int) -> None:
    # odd seeds: no series resistors, so diode chains across sources may carry absurd
    # currents (kA..GA); the residual is then judged relative to the currents involved
    c = random_sized_circuit(2000, seed, max_diodes=7)
    op = solve_op(parse_netlist(c.text))
    scale_a = assert_kcl(c, op, shockley_currents(c, op))
    assert op.max_residual_a <= 1e-12 + 1e-12 * scale_a
    assert op.iterations < 40


def _ideal_bruteforce(c: Circuit) -> dict[str, float] | None:
    """Enumerate active sets of the ideal-diode QP (grounded sources only)."""
    fixed = {"0": 0.0, **{a: val for _, a, b, val in c.vsources if b == "0"}}
    free = [n for n in c.nodes if n not in fixed]
    pos = {n: k for k, n in enumerate(free)}
    m = len(free)
    hess = np.zeros((m, m))
    lin = np.zeros(m)

    def stamp(a: str, b: str, g: float) -> None:
        for p, q, s in ((a, b, 1.0), (b, a, 1.0)):
            if p in pos:
                hess[pos[p], pos[p]] += g * s
                if q in pos:
                    hess[pos[p], pos[q]] -= g
                else:
                    lin[pos[p]] -= g * fixed[q]

    for _, a, b, ohm in c.resistors:
        stamp(a, b, 1.0 / ohm)
    for _, a, b, i in c.isources:
        if a in pos:
            lin[pos[a]] += i
        if b in pos:
            lin[pos[b]] -= i
    rows = []
    rhs = []
    for _, a, b, *_ in c.diodes:  # v_a - v_b <= 0  ->  row . x <= rhs
        row = np.zeros(m)
        r = 0.0
        for node, s in ((a, 1.0), (b, -1.0)):
            if node in pos:
                row[pos[node]] += s
            else:
                r -= s * fixed[node]
        rows.append(row)
        rhs.append(r)
    amat, bvec = np.array(rows), np.array(rhs)
    best = None
    for k in range(len(rows) + 1):
        for act in itertools.combinations(range(len(rows)), k):
            idx = list(act)
            kkt = np.block([[hess, amat[idx].T], [amat[idx], np.zeros((k, k))]])
            try:
                sol = np.linalg.solve(kkt, np.r_[-lin, bvec[idx]])
            except np.linalg.LinAlgError:
                continue
            x, lam = sol[:m], sol[m:]
            if np.all(lam >= -1e-12) and np.all(amat @ x <= bvec + 1e-9):
                best = x
                break
        if best is not None:
            break
    if best is None:
        return None  # no feasible point: the diode constraints conflict
    out = dict(fixed)
    out.update({n: float(best[k]) for n, k in pos.items()})
    return out


@pytest.mark.parametrize("seed", range(20))
def test_ideal_matches_bruteforce(seed: int) -> None:
    rng = np.random.default_rng(3000 + seed)
    c = random_circuit(rng, n_nodes=5, n_diodes=5, floating_sources=False, series_r=seed % 3 != 0)
    ref = _ideal_bruteforce(c)
    if ref is None:
        with pytest.raises(CircuitError, match=r"forward-biased|operating point"):
            solve_op(parse_netlist(c.text), diodes="ideal")
        return
    op = solve_op(parse_netlist(c.text), diodes="ideal")
    for n in c.nodes:
        assert op.node_voltages_v[n] == pytest.approx(ref[n], abs=1e-9)
    assert_ideal_kkt(c, op)


def assert_ideal_kkt(c: Circuit, op: OperatingPoint) -> None:
    v = {"0": 0.0, **op.node_voltages_v}
    lam = dict(zip([d[0] for d in c.diodes], op.diode_currents_a.tolist(), strict=True))
    scale = 1.0 + max(abs(x) for x in v.values())
    for nm, a, b, *_ in c.diodes:
        dv = v[a] - v[b]
        assert dv <= 1e-11 * scale, (nm, dv)  # reverse voltage <= 0
        assert lam[nm] >= 0.0  # forward current >= 0
        if lam[nm] > 1e-12:
            assert abs(dv) <= 1e-11 * scale  # conducting: zero drop
    assert_kcl(c, op, lam)


@pytest.mark.parametrize("seed", range(30))
def test_ideal_kkt_on_random_circuits(seed: int) -> None:
    c = random_sized_circuit(4000, seed, max_diodes=9)
    try:
        op = solve_op(parse_netlist(c.text), diodes="ideal")
    except CircuitError as exc:
        # random sources may forward-bias a diode between two fixed nodes, or leave a
        # node held by ideal diodes only: both are legitimate refusals
        assert "forward-biased" in str(exc) or "floating" in str(exc) or "conflict" in str(exc)
        return
    assert_ideal_kkt(c, op)


def test_ideal_parallel_diodes_degenerate() -> None:
    # two identical diodes in parallel: total current is defined, the split is not
    text = "par\nV1 a 0 5\nR1 a b 1k\nD1 b c DI\nD2 b c DI\nR2 c 0 1k\n.model DI D\n"
    op = solve_op(parse_netlist(text), diodes="ideal")
    assert op.node_voltages_v["b"] == pytest.approx(2.5, abs=1e-12)
    assert float(np.sum(op.diode_currents_a)) == pytest.approx(2.5e-3, abs=1e-14)
    assert np.all(op.diode_currents_a >= 0.0)


def test_ideal_shifted_parallel_diodes() -> None:
    # D1: b -> c and D2: b -> d with d = c + 1 V: identical constraint rows, different offsets
    text = "shift\nV1 a 0 5\nR1 a b 1k\nD1 b c DI\nD2 b d DI\nV2 d c 1\nR2 c 0 1k\n.model DI D\n"
    op = solve_op(parse_netlist(text), diodes="ideal")
    v = op.node_voltages_v
    assert v["b"] <= v["c"] + 1e-12 and v["b"] <= v["d"] + 1e-12
    assert v["b"] == pytest.approx(v["c"], abs=1e-12)  # D1 conducts, D2 is reverse biased
    assert v["b"] == pytest.approx(2.5, abs=1e-12)


def test_shockley_approaches_ideal_for_tiny_vt() -> None:
    # cross-check of the two modes: at 1 K the Shockley knee is a few 0.1 mV wide
    rng = np.random.default_rng(7)
    c = random_circuit(rng, n_nodes=6, n_diodes=4, floating_sources=False, n_isources=0)
    text = "\n".join(
        ln.split(" N=")[0] + " N=1 XTI=0 EG=0)" if ln.startswith(".model") else ln
        for ln in c.text.splitlines()
    )
    ideal = solve_op(parse_netlist(text), diodes="ideal")
    cold = solve_op(parse_netlist(text), temperature_c=-272.15)
    diff = max(abs(ideal.node_voltages_v[n] - cold.node_voltages_v[n]) for n in c.nodes)
    assert diff < 5e-3


def _grid_text(seed: int, side: int = 24) -> str:
    """A side x side resistive mesh with sources on the rim and diodes inside."""
    rng = np.random.default_rng(seed)
    lines = ["* grid"]
    k = 0
    for r in range(side):
        for c in range(side):
            for dr, dc in ((0, 1), (1, 0)):
                if r + dr < side and c + dc < side:
                    ohm = float(10 ** rng.uniform(2, 4))
                    lines.append(f"R{k} g{r}_{c} g{r + dr}_{c + dc} {ohm!r}")
                    k += 1
    for c in range(0, side, 3):
        lines.append(f"VT{c} g0_{c} 0 {float(rng.uniform(-5, 5))!r}")
        lines.append(f"VB{c} g{side - 1}_{c} g{side - 2}_{c} {float(rng.uniform(-1, 1))!r}")
    for j in range(side * 2):
        r, c = (int(v) for v in rng.integers(1, side - 1, 2))
        r2, c2 = (int(v) for v in rng.integers(1, side - 1, 2))
        other = "0" if j % 2 else f"g{r2}_{c2}"
        if other != f"g{r}_{c}":
            lines.append(f"D{j} g{r}_{c} {other} DM" if j % 4 < 2 else f"D{j} {other} g{r}_{c} DM")
    lines.append("I1 0 g5_5 1m")
    lines.append(".model DM D(IS=1e-14 N=1.2)")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("diodes", ["shockley", "ideal"])
def test_sparse_path_matches_dense_path(diodes: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import simulated_device.dcop as dcop_module

    net = parse_netlist(_grid_text(5))
    sparse = solve_op(net, diodes=diodes)  # type: ignore[arg-type]
    assert net.num_nodes - 1 > dcop_module.DENSE_MAX_UNKNOWNS  # really the sparse path
    monkeypatch.setattr(dcop_module, "DENSE_MAX_UNKNOWNS", 10_000)
    dense = solve_op(net, diodes=diodes)  # type: ignore[arg-type]
    np.testing.assert_allclose(sparse.voltages_v, dense.voltages_v, rtol=0, atol=1e-10)
    assert sparse.max_residual_a < 1e-12
    if diodes == "ideal":
        dv = sparse.voltages_v[net.diode_nodes[:, 0]] - sparse.voltages_v[net.diode_nodes[:, 1]]
        assert np.all(dv <= 1e-10)
        assert np.all(sparse.diode_currents_a >= 0.0)
        assert np.all(np.abs(dv[sparse.diode_currents_a > 1e-12]) <= 1e-10)


# --------------------------------------------------------------------------- fast path


def _layered_text(seed: int, n_in: int = 40, n_hid: int = 8, n_out: int = 3) -> str:
    """A small DRN-style layered network: grounded inputs, diode-clamped hidden nodes."""
    rng = np.random.default_rng(seed)
    lines = ["* layered"]
    lines += [f"V{i} in{i} 0 {float(rng.uniform(-20, 20))!r}" for i in range(n_in)]
    k = 0
    for src, n_src, dst, n_dst in (("in", n_in, "h", n_hid), ("h", n_hid, "o", n_out)):
        for i in range(n_src):
            for j in range(n_dst):
                if rng.random() < 0.7:
                    ohm = float(10 ** rng.uniform(1, 4))
                    lines.append(f"R{k} {src}{i} {dst}{j} {ohm!r}")
                    k += 1
    for j in range(n_hid):
        lines.append(f"D{j} 0 h{j} DM" if j % 2 else f"D{j} h{j} 0 DM")
    lines += ["I1 o0 0 1m", ".model DM D(IS=1e-14 N=1.1)"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("diodes", ["shockley", "ideal"])
def test_block_elimination_matches_sparse_path(
    seed: int, diodes: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simulated_device.dcop as dcop_module

    net = parse_netlist(_layered_text(seed))
    fast = solve_op(net, diodes=diodes)  # type: ignore[arg-type]
    prepared = dcop_module.prepare_op(net, diodes=diodes)  # type: ignore[arg-type]
    system = prepared._system
    assert isinstance(system, dcop_module._DenseSystem)
    assert system.n_i == 8  # the hidden layer is eliminated as the diagonal block
    if diodes == "shockley":
        assert fast.iterations <= 8
    monkeypatch.setattr(dcop_module, "DENSE_MAX_UNKNOWNS", 0)
    slow = solve_op(net, diodes=diodes)  # type: ignore[arg-type]
    np.testing.assert_allclose(fast.voltages_v, slow.voltages_v, rtol=0, atol=1e-12)
    assert fast.max_residual_a < 1e-12


def test_prepared_op_solves_repeatably() -> None:
    from simulated_device.dcop import prepare_op

    net = parse_netlist(_layered_text(1))
    for diodes in ("shockley", "ideal"):
        prepared = prepare_op(net, diodes=diodes)
        assert prepared.num_unknowns == 8 + 3
        a, b = prepared.solve(), prepared.solve()
        ref = solve_op(net, diodes=diodes)
        assert np.array_equal(a.voltages_v, b.voltages_v)
        assert np.array_equal(a.voltages_v, ref.voltages_v)
        assert a.iterations == ref.iterations
    with pytest.raises(Exception, match="tol_v"):
        prepare_op(net).solve(tol_v=0.0)


def test_node_voltages_dict_is_built_once() -> None:
    op = solve_op(parse_netlist(_layered_text(2)))
    volts = op.node_voltages_v
    assert volts is op.node_voltages_v
    assert volts == dict(zip(op.node_names[1:], op.voltages_v[1:].tolist(), strict=True))


def test_wright_omega_matches_scipy() -> None:
    from scipy.special import wrightomega

    from simulated_device.dcop import _wright_omega

    z = np.concatenate([np.linspace(-60.0, 60.0, 24001), 10.0 ** np.linspace(1.8, 15, 200)])
    np.testing.assert_allclose(_wright_omega(z), wrightomega(z), rtol=1e-13, atol=0)
    assert _wright_omega(np.array([-800.0]))[0] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_independent_set_is_independent(seed: int) -> None:
    from simulated_device.dcop import _independent_set

    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 60))
    adj = rng.random((m, m)) < rng.uniform(0.02, 0.5)
    adj = np.triu(adj, 1)
    adj = adj | adj.T
    chosen = _independent_set(adj)
    assert chosen.any()
    idx = np.flatnonzero(chosen)
    assert not adj[np.ix_(idx, idx)].any()


@pytest.mark.parametrize("seed", range(8))
def test_pdas_warm_start_agrees_with_cold_active_set(seed: int) -> None:
    from simulated_device.dcop import _dual_active_set, _pdas_start

    rng = np.random.default_rng(seed)
    p = 25
    a = rng.normal(size=(p, 40))
    qmat = a @ a.T / 40 + 1e-3 * np.eye(p)
    qvec = rng.normal(size=p)
    names = [f"d{k}" for k in range(p)]
    warm, _ = _pdas_start(qmat, qvec, 1e-12)
    lam_w, _ = _dual_active_set(qmat, qvec, warm, 1e-12, 10_000, names)
    lam_c, _ = _dual_active_set(qmat, qvec, np.zeros(p), 1e-12, 10_000, names)
    np.testing.assert_allclose(lam_w, lam_c, atol=1e-9)
    slack = qmat @ lam_w - qvec
    assert np.all(lam_w >= 0) and np.all(slack >= -1e-9)
    assert np.all(np.abs(slack[lam_w > 0]) <= 1e-9)


def test_dense_solve_does_not_import_scipy() -> None:
    # `hwloop op` start-up: the dense path needs numpy only
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from simulated_device.netlist import parse_netlist\n"
        "from simulated_device.dcop import solve_op\n"
        f"net = parse_netlist({_layered_text(3)!r})\n"
        "solve_op(net); solve_op(net, diodes='ideal')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=DEADLINE_S)
    assert out.stdout.strip() == "[]"
