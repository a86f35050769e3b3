"""Benchmark: DC operating point of DRN-XS with hwloop vs ngspice.

DRN-XS (1568-100-10, input gain 100): 784 MNIST-like pixels (about 19 % nonzero,
uniform in [0, 1]) drive the input nodes as grounded sources at +100 x and -100 x;
conductances are U(-s, s) clipped at 0 with s = 1/sqrt(fan_in), and zero
conductances are left out (no resistor). Hidden nodes: the first half has a Shockley
diode from ground (anode) to the node, the second half from the node to ground;
outputs are linear.

One netlist file serves both programs: its ``.options``/``.control`` lines make
ngspice print every node voltage; hwloop skips them. Timed, as medians of repeated
runs in one warm process (``--repeats``; ngspice ``--ngspice-repeats``, at least 3):

* parse: ``read_netlist`` of the file,
* set-up: ``prepare_op`` (voltage sources eliminated, fixed nodes reduced out, the
  system assembled with one bincount over the resistors, connectivity checked, the
  unknowns ordered for the block elimination),
* solve: ``PreparedOp.solve`` (Shockley: start point and Newton iterations; ideal:
  the dual active-set QP), up to the returned ``OperatingPoint``,
* set-up + solve: ``solve_op`` of the parsed netlist, timed as a whole,
* end to end: ``hwloop op FILE --json`` in a subprocess (Python start-up, imports,
  parse, solve and JSON output included; the console script beside this Python,
  not a pyenv shim),
* ngspice: ``ngspice -b FILE`` wall time (it parses, sets up, solves and prints),
* CPU time (user + system, from ``wait4``) of the same end-to-end and ngspice runs: on a
  busy machine the wall times stretch with the load, the CPU times much less,
* start-up: ``hwloop --help`` and ``hwloop op`` of a 10-line netlist (wall and CPU).

Checked on every run: the hwloop and ngspice voltages agree within 1e-6 V at every
node (exit code 1 otherwise), the CLI prints exactly the in-process result, and the
KKT residuals (Kirchhoff's current law; ideal diodes also feasibility and signs) are
reported.

Run: ``python benchmarks/bench_op.py [--seed N] [--repeats N] [--ngspice-repeats N]``.
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from _common import median_time

from simulated_device.dcop import DiodeMode, OperatingPoint, prepare_op, solve_op
from simulated_device.netlist import Netlist, read_netlist
from simulated_device.ngspice import OP_CONTROL, parse_op_print

AGREE_V = 1e-6


def drn_xs_netlist(seed: int, gain: float = 100.0) -> tuple[str, int]:
    """The DRN-XS netlist text and its number of resistors."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(784) < 0.19, rng.random(784), 0.0)
    vin = np.r_[gain * x, -gain * x]
    lines = [f"DRN-XS 1568-100-10, input gain {gain:g}, seed {seed}"]
    lines += [f"VIN{i} in{i} 0 DC {v!r}" for i, v in enumerate(vin.tolist())]
    n_res = 0
    for (src, n_src), (dst, n_dst) in (
        (("in", 1568), ("h", 100)),
        (("h", 100), ("o", 10)),
    ):
        s = 1.0 / np.sqrt(n_src)
        g = np.maximum(rng.uniform(-s, s, (n_src, n_dst)), 0.0)
        ii, jj = np.nonzero(g)
        ohm = (1.0 / g[ii, jj]).tolist()
        lines += [
            f"R{src}{i}_{dst}{j} {src}{i} {dst}{j} {r!r}"
            for i, j, r in zip(ii.tolist(), jj.tolist(), ohm, strict=True)
        ]
        n_res += len(ohm)
    lines += [f"DH{j} 0 h{j} DH" if j < 50 else f"DH{j} h{j} 0 DH" for j in range(100)]
    lines.append(".model DH D(IS=1e-14 N=1)")
    return "\n".join(lines) + "\n" + OP_CONTROL, n_res


def run_timed(cmd: list[str], repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of running ``cmd``, s."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")
        cpus.append(usage.ru_utime + usage.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


SMALL = """small divider with a diode clamp
V1 in 0 DC 5
R1 in a 1k
R2 a 0 2k
R3 a b 500
D1 b 0 DM
I1 0 b 1m
C1 a 0 1u
.model DM D(IS=1e-14 N=1)
.end
"""


def ngspice_voltages(path: Path) -> dict[str, float]:
    res = subprocess.run(["ngspice", "-b", str(path)], capture_output=True, text=True, check=True)
    return parse_op_print(res.stdout)


def ideal_kkt(net: Netlist, op: OperatingPoint) -> tuple[float, float, float]:
    """Ideal diodes: largest forward drop (V, feasibility: <= 0), largest drop of a
    conducting diode (V, complementarity: 0) and smallest current (A, sign: >= 0)."""
    v = op.voltages_v
    dv = v[net.diode_nodes[:, 0]] - v[net.diode_nodes[:, 1]]
    cur = op.diode_currents_a
    return float(dv.max()), float(np.abs(dv[cur > 0.0]).max(initial=0.0)), float(cur.min())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=51, help="repeats for set-up and solve")
    ap.add_argument("--parse-repeats", type=int, default=9)
    ap.add_argument("--cli-repeats", type=int, default=7)
    ap.add_argument("--ngspice-repeats", type=int, default=3, help="at least 3")
    args = ap.parse_args()
    ng_repeats = max(3, args.ngspice_repeats)

    text, n_res = drn_xs_netlist(args.seed)
    # the console script next to this interpreter (a pyenv shim on PATH adds ~0.2 s)
    script = Path(sys.executable).with_name("hwloop")
    hwloop_exe = str(script) if script.is_file() else shutil.which("hwloop")
    ngspice_exe = shutil.which("ngspice")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drn_xs.cir"
        path.write_text(text)
        size_mb = path.stat().st_size / 1e6
        net = read_netlist(path)
        op = solve_op(net)
        op_ideal = solve_op(net, diodes="ideal")
        t_parse = median_time(lambda: read_netlist(path), args.parse_repeats)
        t = {}
        modes: tuple[DiodeMode, ...] = ("shockley", "ideal")
        for mode in modes:
            prepared = prepare_op(net, diodes=mode)
            t[f"setup_{mode}"] = median_time(partial(prepare_op, net, diodes=mode), args.repeats)
            t[f"solve_{mode}"] = median_time(prepared.solve, args.repeats)
            t[f"total_{mode}"] = median_time(partial(solve_op, net, diodes=mode), args.repeats)
        cmd = (
            [hwloop_exe, "op", str(path), "--json"]
            if hwloop_exe
            else [sys.executable, "-m", "hwloop.cli", "op", str(path), "--json"]
        )
        cli = subprocess.run(cmd, capture_output=True, text=True, check=True)
        cli_volts = json.loads(cli.stdout)["node_voltages_v"]
        cli_diff = max(abs(v - op.node_voltages_v[k]) for k, v in cli_volts.items())
        assert set(cli_volts) == set(op.node_voltages_v) and cli_diff == 0.0, cli_diff
        t_e2e, cpu_e2e = run_timed(cmd, args.cli_repeats)
        small = Path(tmp) / "small.cir"
        small.write_text(SMALL)
        t_help, cpu_help = run_timed([*cmd[: cmd.index("op")], "--help"], args.cli_repeats)
        t_small, cpu_small = run_timed([*cmd[: cmd.index("op") + 1], str(small)], args.cli_repeats)
        t_ng = max_diff = cpu_ng = float("nan")
        if ngspice_exe:
            ng = ngspice_voltages(path)
            missing = set(op.node_voltages_v) - set(ng)
            assert not missing, f"ngspice did not print {sorted(missing)[:5]}"
            max_diff = max(abs(v - ng[k]) for k, v in op.node_voltages_v.items())
            t_ng, cpu_ng = run_timed([ngspice_exe, "-b", str(path)], ng_repeats)

    t_setup, t_solve, t_total = t["setup_shockley"], t["solve_shockley"], t["total_shockley"]
    forward_v, on_drop_v, min_cur_a = ideal_kkt(net, op_ideal)
    ms = 1e3
    rows = [
        ("netlist", f"{net.num_nodes} nodes, {n_res} resistors, 100 diodes, {size_mb:.1f} MB"),
        ("free unknowns after reduction", f"{prepare_op(net).num_unknowns}"),
        ("parse (read_netlist)", f"{t_parse * ms:10.3f} ms"),
        ("set-up (prepare_op), Shockley", f"{t_setup * ms:10.3f} ms"),
        ("solve (Newton), Shockley", f"{t_solve * ms:10.3f} ms  ({op.iterations} Newton its)"),
        ("set-up + solve (solve_op), Shockley", f"{t_total * ms:10.3f} ms"),
        ("set-up (prepare_op), ideal", f"{t['setup_ideal'] * ms:10.3f} ms"),
        (
            "solve (active set), ideal",
            f"{t['solve_ideal'] * ms:10.3f} ms  ({op_ideal.iterations} active-set its)",
        ),
        ("set-up + solve (solve_op), ideal", f"{t['total_ideal'] * ms:10.3f} ms"),
        ("end to end (hwloop op --json)", f"{t_e2e * ms:10.3f} ms"),
        (f"ngspice -b (same file, median of {ng_repeats})", f"{t_ng * ms:10.3f} ms"),
        ("ngspice / solve", f"{t_ng / t_solve:10.0f} x"),
        ("ngspice / (set-up + solve)", f"{t_ng / t_total:10.0f} x"),
        ("ngspice / (parse + set-up + solve)", f"{t_ng / (t_parse + t_total):10.1f} x"),
        ("ngspice / end to end", f"{t_ng / t_e2e:10.2f} x"),
        ("CPU: end to end, ngspice", f"{cpu_e2e * ms:10.3f} ms, {cpu_ng * ms:10.3f} ms"),
        ("CPU: ngspice / end to end", f"{cpu_ng / cpu_e2e:10.2f} x"),
        ("hwloop --help (wall, CPU)", f"{t_help * ms:10.3f} ms, {cpu_help * ms:10.3f} ms"),
        ("hwloop op, 10-line netlist (wall, CPU)",
         f"{t_small * ms:10.3f} ms, {cpu_small * ms:10.3f} ms"),
        ("max |v_hwloop - v_ngspice|", f"{max_diff:.3e} V  (limit {AGREE_V:g} V)"),
        ("max KCL residual, Shockley", f"{op.max_residual_a:.3e} A"),
        ("max KCL residual, ideal", f"{op_ideal.max_residual_a:.3e} A"),
        (
            "ideal: max forward drop, on drop, min current",
            f"{forward_v:.3e} V, {on_drop_v:.3e} V, {min_cur_a:.3e} A",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, val in rows:
        print(f"{key:<{width}}  {val}")
    ok = bool(max_diff <= AGREE_V) if ngspice_exe else None
    has_ng = ngspice_exe is not None
    print(
        json.dumps(
            {
                "benchmark": "drn_xs_op",
                "seed": args.seed,
                "nodes": net.num_nodes,
                "resistors": n_res,
                "statistic": "median",
                "repeats": args.repeats,
                "ngspice_repeats": ng_repeats,
                "parse_s": t_parse,
                "setup_s": t_setup,
                "solve_s": t_solve,
                "setup_plus_solve_s": t_total,
                "setup_ideal_s": t["setup_ideal"],
                "solve_ideal_s": t["solve_ideal"],
                "setup_plus_solve_ideal_s": t["total_ideal"],
                "end_to_end_s": t_e2e,
                "end_to_end_cmd": (
                    f"{hwloop_exe} op FILE --json" if hwloop_exe else "python -m hwloop.cli op ..."
                ),
                "ngspice_s": t_ng if has_ng else None,
                "ratio_ngspice_over_solve": t_ng / t_solve if has_ng else None,
                "ratio_ngspice_over_setup_plus_solve": t_ng / t_total if has_ng else None,
                "ratio_ngspice_over_parse_setup_solve": (
                    t_ng / (t_parse + t_total) if has_ng else None
                ),
                "ratio_ngspice_over_end_to_end": t_ng / t_e2e if has_ng else None,
                "end_to_end_cpu_s": cpu_e2e,
                "ngspice_cpu_s": cpu_ng if has_ng else None,
                "ratio_cpu_ngspice_over_end_to_end": cpu_ng / cpu_e2e if has_ng else None,
                "help_s": t_help,
                "help_cpu_s": cpu_help,
                "op_small_s": t_small,
                "op_small_cpu_s": cpu_small,
                "max_abs_diff_v": max_diff if has_ng else None,
                "agree_1e-6_v": ok,
                "newton_iterations": op.iterations,
                "active_set_iterations": op_ideal.iterations,
                "max_residual_a": op.max_residual_a,
                "max_residual_ideal_a": op_ideal.max_residual_a,
                "ideal_max_forward_drop_v": forward_v,
                "ideal_max_on_drop_v": on_drop_v,
                "ideal_min_current_a": min_cur_a,
            }
        )
    )
    return 0 if ok in (True, None) else 1


if __name__ == "__main__":
    raise SystemExit(main())
