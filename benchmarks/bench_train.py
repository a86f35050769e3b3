"""EP training throughput on the emulator, through the full protocol stack.

One training step = the centered-EP plan (apply inputs, free phase, -beta and
+beta nudged phases, local updates, SGD, open-loop programming) run by
``protocols.engine.run_step`` on an ``EmulatedBoard`` with the ideal device
model. For DRN-XS (1568-100-10) and DRN-1H (1568-1024-10) at batch 4 and 32
in float32 and float64: examples per second (median of several timed blocks),
the multiply-add count per example and the fraction of this machine's matmul
peak (measured in the same process).

Prints a table and, last, one JSON line. Usage::

    python benchmarks/bench_train.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import numpy as np
from bench_drn import matmul_peak_flops

from hwloop.plugins import open_board
from protocols.engine import run_step
from protocols.estimators import Centered
from protocols.optim import SGD
from protocols.plan import build_step_plan
from protocols.programming import OpenLoopProgrammer

MODELS = {"DRN-XS": ("1568-100-10", 100.0), "DRN-1H": ("1568-1024-10", 480.0)}
BATCHES = (4, 32)
DTYPES = ("float32", "float64")
SWEEPS = 4
PHASES = 3


def macs_per_example(sizes: tuple[int, ...]) -> int:
    """Minimal multiply-adds of one centered-EP training example.

    Input projection once (x @ (W0+ - W0-), P x N1), every sweep of every phase
    2 products per inner weight matrix, and the updates: P x N1 for the input
    block (inputs identical in all phases) and 2 x N1 x N2 for each inner block
    (two nudged phases stacked).
    """
    p = sizes[0] // 2
    inner = sum(a * b for a, b in itertools.pairwise(sizes[1:]))
    return p * sizes[1] * 2 + PHASES * SWEEPS * 2 * inner + 2 * inner


class Learner:
    def __init__(self, desc, dtype) -> None:
        self.opt = SGD(desc, (0.006,), (0.006,), dtype=dtype)
        self.prog = OpenLoopProgrammer()
        self.rng = np.random.default_rng(0)

    def update(self, grad):
        return self.opt.step(grad)

    def program(self, device, update):
        return self.prog.program(device, update, self.rng)


def throughput(arch: str, gain: float, dtype: str, batch: int, min_time_s: float,
               repeats: int) -> float:
    board = open_board("emulator", {"arch": arch, "dtype": dtype}, np.random.default_rng(0))
    desc = board.describe()
    learner = Learner(desc, np.dtype(dtype))
    plan = build_step_plan(Centered().stencil(1.0, None))
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(64 * batch, 784)) * (rng.uniform(size=(64 * batch, 784)) < 0.19)
    y = np.eye(10)[rng.integers(0, 10, 64 * batch)]
    v_all = np.concatenate([gain * x, -gain * x], axis=1)
    i = 0

    def step() -> None:
        nonlocal i
        s = slice((i % 64) * batch, (i % 64 + 1) * batch)
        run_step(plan, board, v_all[s], y[s], learner, dtype=np.dtype(dtype))
        i += 1

    step()
    t0 = time.perf_counter()
    step()
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(2, int(min_time_s / one))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        rates.append(inner * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing blocks")
    args = parser.parse_args()
    min_time = 0.2 if args.quick else 1.0
    repeats = 3 if args.quick else 5
    peaks = {dt: matmul_peak_flops(dt) for dt in DTYPES}
    rows = []
    for name, (arch, gain) in MODELS.items():
        sizes = tuple(int(s) for s in arch.split("-"))
        macs = macs_per_example(sizes)
        for dt in DTYPES:
            for batch in BATCHES:
                rate = throughput(arch, gain, dt, batch, min_time, repeats)
                rows.append({"model": name, "dtype": dt, "batch": batch,
                             "examples_per_s": rate, "macs_per_example": macs,
                             "fraction_of_matmul_peak": rate * 2 * macs / peaks[dt]})
    print("matmul peak: " + ", ".join(f"{dt} {peaks[dt] / 1e9:.1f} GFLOP/s" for dt in DTYPES))
    print(f"{'model':8} {'dtype':8} {'batch':>5} {'examples/s':>12} {'MAC/example':>12} "
          f"{'% of peak':>9}")
    for r in rows:
        print(f"{r['model']:8} {r['dtype']:8} {r['batch']:5d} {r['examples_per_s']:12,.0f} "
              f"{r['macs_per_example']:12,d} {100 * r['fraction_of_matmul_peak']:8.1f}%")
    print(json.dumps({"benchmark": "ep_training_step", "estimator": "centered",
                      "sweeps": SWEEPS, "matmul_peak_flops": peaks, "rows": rows}))


if __name__ == "__main__":
    main()
