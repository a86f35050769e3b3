"""Benchmark: DC operating point of DRN-XS with hwloop vs ngspice.

DRN-XS (1568-100-10, input gain 100): 784 MNIST-like pixels (about 19 % nonzero,
uniform in [0, 1]) drive the input nodes as grounded sources at +100 x and -100 x;
conductances are U(-s, s) clipped at 0 with s = 1/sqrt(fan_in), and zero
conductances are left out (no resistor). Hidden nodes: the first half has a Shockley
diode from ground (anode) to the node, the second half from the node to ground;
outputs are linear.

One netlist file serves both programs: its ``.options``/``.control`` lines make
ngspice print every node voltage; hwloop skips them. Timed (median):

* parse: ``read_netlist`` of the file,
* solve: ``solve_op`` of the parsed netlist,
* end to end: ``hwloop op FILE --json`` in a subprocess (Python start-up included),
* ngspice: ``ngspice -b FILE`` wall time.

Run: ``python benchmarks/bench_op.py [--seed N] [--repeats N] [--ngspice-repeats N]``.
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simulated_device.dcop import solve_op
from simulated_device.netlist import read_netlist

CONTROL = """.options reltol=1e-12 abstol=1e-18 vntol=1e-12 gmin=0
.control
set numdgt=16
op
print all
quit 0
.endc
.end
"""
_LINE = re.compile(
    r"^\s*(?:v\(([^)\s]+)\)|([^\s=#]+))\s*=\s*([-+]?[0-9.]+(?:e[-+]?\d+)?)\s*$", re.I
)


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
    return "\n".join(lines) + "\n" + CONTROL, n_res


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ngspice_voltages(path: Path) -> dict[str, float]:
    res = subprocess.run(["ngspice", "-b", str(path)], capture_output=True, text=True, check=True)
    out: dict[str, float] = {}
    for line in res.stdout.splitlines():
        m = _LINE.match(line)
        if m:
            out[(m.group(1) or m.group(2)).lower()] = float(m.group(3))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=21, help="repeats for parse and solve")
    ap.add_argument("--cli-repeats", type=int, default=5)
    ap.add_argument("--ngspice-repeats", type=int, default=3)
    args = ap.parse_args()

    text, n_res = drn_xs_netlist(args.seed)
    hwloop_exe = shutil.which("hwloop")
    ngspice_exe = shutil.which("ngspice")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drn_xs.cir"
        path.write_text(text)
        size_mb = path.stat().st_size / 1e6
        net = read_netlist(path)
        op = solve_op(net)
        t_parse = median_time(lambda: read_netlist(path), max(3, args.repeats // 3))
        t_solve = median_time(lambda: solve_op(net), args.repeats)
        t_solve_ideal = median_time(lambda: solve_op(net, diodes="ideal"), args.repeats)
        cmd = (
            [hwloop_exe, "op", str(path), "--json"]
            if hwloop_exe
            else [
                sys.executable,
                "-m",
                "hwloop.cli",
                "op",
                str(path),
                "--json",
            ]
        )
        cli = subprocess.run(cmd, capture_output=True, text=True, check=True)
        cli_volts = json.loads(cli.stdout)["node_voltages_v"]
        cli_diff = max(abs(v - op.node_voltages_v[k]) for k, v in cli_volts.items())
        assert cli_diff <= 1e-12, cli_diff
        t_e2e = median_time(
            lambda: subprocess.run(cmd, capture_output=True, check=True), args.cli_repeats
        )
        t_ng = max_diff = float("nan")
        if ngspice_exe:
            ng = ngspice_voltages(path)
            max_diff = max(abs(v - ng[k]) for k, v in op.node_voltages_v.items())
            t_ng = median_time(lambda: ngspice_voltages(path), args.ngspice_repeats)

    rows = [
        ("netlist", f"{net.num_nodes} nodes, {n_res} resistors, 100 diodes, {size_mb:.1f} MB"),
        ("parse (read_netlist)", f"{t_parse * 1e3:9.2f} ms"),
        ("solve (solve_op, Shockley)", f"{t_solve * 1e3:9.2f} ms  ({op.iterations} Newton its)"),
        ("solve (solve_op, ideal)", f"{t_solve_ideal * 1e3:9.2f} ms"),
        ("end to end (hwloop op --json)", f"{t_e2e * 1e3:9.2f} ms"),
        ("ngspice -b (same file)", f"{t_ng * 1e3:9.2f} ms"),
        ("ngspice / solve", f"{t_ng / t_solve:9.1f} x"),
        ("ngspice / (parse + solve)", f"{t_ng / (t_parse + t_solve):9.1f} x"),
        ("ngspice / end to end", f"{t_ng / t_e2e:9.2f} x"),
        ("max |v_hwloop - v_ngspice|", f"{max_diff:.3e} V"),
        ("max KCL residual", f"{op.max_residual_a:.3e} A"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, val in rows:
        print(f"{key:<{width}}  {val}")
    ok = bool(max_diff <= 1e-6) if ngspice_exe else None
    print(
        json.dumps(
            {
                "benchmark": "drn_xs_op",
                "seed": args.seed,
                "nodes": net.num_nodes,
                "resistors": n_res,
                "parse_s": t_parse,
                "solve_s": t_solve,
                "solve_ideal_s": t_solve_ideal,
                "end_to_end_s": t_e2e,
                "ngspice_s": t_ng if ngspice_exe else None,
                "ratio_ngspice_over_solve": t_ng / t_solve if ngspice_exe else None,
                "ratio_ngspice_over_end_to_end": t_ng / t_e2e if ngspice_exe else None,
                "max_abs_diff_v": max_diff if ngspice_exe else None,
                "agree_1e-6_v": ok,
                "newton_iterations": op.iterations,
                "max_residual_a": op.max_residual_a,
            }
        )
    )
    return 0 if ok in (True, None) else 1


if __name__ == "__main__":
    raise SystemExit(main())
