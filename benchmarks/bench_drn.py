"""Free-phase equilibrium throughput of the DRN emulator.

For DRN-XS (1568-100-10, input gain 100) and DRN-1H (1568-1024-10, input gain
480), 4 sweeps, batch 1 / 4 / 32 / 256, float32 and float64: examples per
second (median of several timed repeats), the minimal multiply-add count per
example, and the fraction of this machine's own matmul peak (measured in the
same process with a large square GEMM) that the throughput reaches.

Prints a table and, last, one JSON line. Usage::

    python benchmarks/bench_drn.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
from _common import median_rate

from simulated_device.drn import DRN, pixels_to_inputs

MODELS = {"DRN-XS": ((1568, 100, 10), 100.0), "DRN-1H": ((1568, 1024, 10), 480.0)}
BATCHES = (1, 4, 32, 256)
DTYPES = ("float32", "float64")
SWEEPS = 4


def matmul_peak_flops(dtype: str, n: int = 2048, repeats: int = 7) -> float:
    """Median FLOP/s of an n x n x n GEMM in ``dtype`` (2 n^3 flops per product)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times)


def throughput(net: DRN, v_in: np.ndarray, min_time_s: float, repeats: int) -> float:
    """Median examples/s of ``repeats`` timed blocks of free-phase solves."""
    return median_rate(lambda: net.relax(v_in, n_sweeps=SWEEPS), v_in.shape[0], min_time_s,
                       repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing blocks")
    args = parser.parse_args()
    min_time = 0.05 if args.quick else 0.25
    repeats = 3 if args.quick else 7
    rng = np.random.default_rng(0)
    peaks = {dt: matmul_peak_flops(dt) for dt in DTYPES}
    rows = []
    for name, (sizes, gain) in MODELS.items():
        for dt in DTYPES:
            net = DRN.initialise(sizes, np.random.default_rng(1), dtype=np.dtype(dt))
            macs = net.macs_per_example(SWEEPS)
            for batch in BATCHES:
                x = rng.uniform(size=(batch, sizes[0] // 2)) * (
                    rng.uniform(size=(batch, sizes[0] // 2)) < 0.19
                )
                v_in = pixels_to_inputs(x, gain).astype(dt)
                rate = throughput(net, v_in, min_time, repeats)
                frac = rate * 2 * macs / peaks[dt]
                rows.append(
                    {
                        "model": name,
                        "dtype": dt,
                        "batch": batch,
                        "examples_per_s": rate,
                        "macs_per_example": macs,
                        "fraction_of_matmul_peak": frac,
                    }
                )
    print(
        f"machine: {platform.machine()}, numpy {np.__version__}; matmul peak "
        + ", ".join(f"{dt} {peaks[dt] / 1e9:.1f} GFLOP/s" for dt in DTYPES)
    )
    print(
        f"{'model':8} {'dtype':8} {'batch':>5} {'examples/s':>12} {'MAC/example':>12} "
        f"{'% of peak':>9}"
    )
    for r in rows:
        print(
            f"{r['model']:8} {r['dtype']:8} {r['batch']:5d} {r['examples_per_s']:12,.0f} "
            f"{r['macs_per_example']:12,d} {100 * r['fraction_of_matmul_peak']:8.1f}%"
        )
    print(
        json.dumps(
            {
                "benchmark": "drn_free_phase",
                "sweeps": SWEEPS,
                "matmul_peak_flops": peaks,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
