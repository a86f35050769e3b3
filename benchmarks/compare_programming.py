"""Accuracy of open-loop and write-verify programming on the emulator's device presets.

Runs ``hwloop train`` (end to end, session file written) for each arm and seed and prints
a table of final test accuracy: mean, sample standard deviation, 95 % t-interval, and
the paired difference of each arm against ``reram open-loop`` (same seeds, same
schedule). Arms are CLI argument lists; add your own with ``--arm NAME='ARGS'``.

    python benchmarks/compare_programming.py --epochs 5            # 12 arms, 3 seeds
    python benchmarks/compare_programming.py --seeds 0 1 2 3 4 --epochs 5 \
        --arm "wv 2 steps=--device-preset reram --programming write-verify --wv-tolerance 2e-6"
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

DRIFT_NU = 0.2
"""Drift exponent of the drift arms (``g = g_prog ((t + t0)/t0)^-nu``, t0 20 s)."""
STRONG_DRIFT_NU = 0.5
"""Drift exponent of the strong-drift arms."""
BENCH_DRIFT = ["--backend-opt", "drift_nu=0.1", "--backend-opt", "drift_nu_d2d=0.05",
               "--backend-opt", "drift_t0_s=1", "--backend-opt", "sample_time_s=0.05"]
"""The "reram with drift" arms: PCM-like relaxation (nu 0.1, device-to-device spread 0.05,
t0 1 s) on a bench that takes 50 ms per sample (a switch matrix and a DMM), so a run
lasts minutes of board time: many times t0."""
HIGH_WRITE_NOISE = 0.1
"""Write noise of the high-write-noise arms, fraction of the conductance range."""

ARMS: dict[str, list[str]] = {
    "ideal open-loop": ["--device-preset", "ideal"],
    "reram open-loop": ["--device-preset", "reram", "--programming", "open-loop"],
    "reram write-verify": ["--device-preset", "reram", "--programming", "write-verify"],
    # drift on the board clock (power law, restarted at each write; reram has none)
    "reram drift open-loop": ["--device-preset", "reram", "--programming", "open-loop",
                              "--backend-opt", f"drift_nu={DRIFT_NU}"],
    "reram drift write-verify": ["--device-preset", "reram", "--programming", "write-verify",
                                 "--backend-opt", f"drift_nu={DRIFT_NU}"],
    "reram strong drift open-loop": ["--device-preset", "reram", "--programming", "open-loop",
                                     "--backend-opt", f"drift_nu={STRONG_DRIFT_NU}"],
    "reram strong drift write-verify": ["--device-preset", "reram", "--programming",
                                        "write-verify", "--backend-opt",
                                        f"drift_nu={STRONG_DRIFT_NU}"],
    "reram with drift open-loop": ["--device-preset", "reram", "--programming", "open-loop",
                                   *BENCH_DRIFT],
    "reram with drift write-verify": ["--device-preset", "reram", "--programming",
                                      "write-verify", *BENCH_DRIFT],
    "reram with drift write-verify refresh": ["--device-preset", "reram", "--programming",
                                              "write-verify", "--wv-refresh-every", "10",
                                              *BENCH_DRIFT],
    # apparent write noise 5x the preset's (10 % of the range instead of 2 %)
    "reram high write-noise open-loop": ["--device-preset", "reram", "--programming",
                                         "open-loop", "--backend-opt",
                                         f"write_noise={HIGH_WRITE_NOISE}"],
    "reram high write-noise write-verify": ["--device-preset", "reram", "--programming",
                                            "write-verify", "--backend-opt",
                                            f"write_noise={HIGH_WRITE_NOISE}"],
}
BASELINE = "reram open-loop"
REFERENCE = {
    "reram drift open-loop": "reram open-loop",
    "reram drift write-verify": "reram write-verify",
    "reram strong drift open-loop": "reram open-loop",
    "reram strong drift write-verify": "reram write-verify",
    "reram high write-noise write-verify": "reram high write-noise open-loop",
    "reram with drift write-verify": "reram with drift open-loop",
    "reram with drift write-verify refresh": "reram with drift open-loop",
}
"""Each arm's own reference for a second paired difference (what drift costs, what
write-verify recovers under high write noise)."""


def run(arm: list[str], seed: int, common: list[str], out: Path) -> float:
    cmd = ["hwloop", "train", *common, *arm, "--seed", str(seed), "--out", str(out),
           "--overwrite", "--quiet", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"failed: {shlex.join(cmd)}\n{res.stderr.strip()}")
    return float(json.loads(res.stdout.strip().splitlines()[-1])["final_test_accuracy"])


def interval(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval."""
    if len(x) < 2:
        return float(x.mean()), float("nan")
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="1568-100-10")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-limit", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arm", action="append", default=[], metavar="NAME=ARGS",
                   help="an extra arm: its name and its hwloop train arguments")
    p.add_argument("--only", nargs="+", help="run only these arms (names)")
    a = p.parse_args()
    arms = dict(ARMS)
    for spec in a.arm:
        name, _, args = spec.partition("=")
        arms[name.strip()] = shlex.split(args)
    if a.only:
        keep = {BASELINE, *a.only, *(REFERENCE[k] for k in a.only if k in REFERENCE)}
        arms = {k: v for k, v in arms.items() if k in keep}
    common = ["--arch", a.arch, "--epochs", str(a.epochs), "--train-limit", str(a.train_limit)]
    acc: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, arm in arms.items():
            acc[name] = np.array(
                [run(arm, s, common, Path(tmp) / "run.h5") for s in a.seeds]
            )
            print(f"  {name}: {', '.join(f'{x:.4f}' for x in acc[name])}", file=sys.stderr)
    print(f"hwloop train {shlex.join(common)}; seeds {a.seeds}; final test accuracy")
    print(f"{'arm':36s} {'mean':>7s} {'sd':>6s} {'95% CI':>15s} {'vs ' + BASELINE:>24s}"
          "  paired vs its reference")

    def paired(x: np.ndarray, ref: str) -> str:
        if ref not in acc:
            return ""
        dm, dh = interval(x - acc[ref])
        return f"{100 * dm:+6.2f} ± {100 * dh:5.2f} pts"

    for name, x in acc.items():
        m, h = interval(x)
        diff = paired(x, BASELINE) if name != BASELINE else ""
        ref = REFERENCE.get(name)
        own = f"{paired(x, ref)} vs {ref}" if ref and ref in acc and ref != BASELINE else ""
        sd = x.std(ddof=1) if len(x) > 1 else float("nan")
        print(f"{name:36s} {100 * m:6.2f}% {100 * sd:5.2f} "
              f"[{100 * (m - h):5.2f}, {100 * (m + h):5.2f}] {diff:>24s}  {own}")
    print(json.dumps({k: v.tolist() for k, v in acc.items()}))


if __name__ == "__main__":
    main()
