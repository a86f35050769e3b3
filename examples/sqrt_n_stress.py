"""A sigma/sqrt(N) test that can fail: averaging repeat reads under non-white read chains.

With white Gaussian read noise the mean of ``N`` samples has std ``sigma / sqrt(N)`` by
construction, so "the EP gradient error falls as 1/sqrt(N)" is a tautology there. This
script measures the error of the EP gradient (centered estimator, ``|beta|`` = 1 S,
the MNIST-subset batch of the main job's network) against the noise-free EP gradient of
the same network, as a function of the number of repeat samples ``N``, for read chains
where averaging must stop helping, and compares each curve with a prediction made
*before* it is measured, from other conditions' measurements only:

* ``white``: Gaussian ``sigma`` (the control; it gives the constant ``k`` of
  ``err = k sigma / sqrt(N)``, fitted on this condition alone).
* ``slow``: ``sigma`` plus a slow term ``s`` that stays constant during one read's
  repeats (1/f-like). Prediction: ``err = k sqrt(sigma^2 / N + s^2)``: a floor of
  ``k s`` from ``N ~ (sigma / s)^2`` on.
* ``adc``: a 16-bit converter over +/-32 V (LSB 0.98 mV, larger than most nudge
  displacements) with ``sigma`` = 0.1 LSB: too little noise to dither the converter.
  Prediction: no better than the noise-free quantised estimate (``adc0``, measured
  with ``sigma`` = 0) at any ``N``.
* ``adc-dither``: the same converter with ``sigma`` = 1 LSB. Prediction: the white
  law with the quantisation noise added, ``k sqrt(sigma^2 + LSB^2 / 12) / sqrt(N)``.
* ``drift``: no read noise, power-law drift (``nu``, after a wait ``tau`` since
  programming) acting while the phases are read; the free and nudged phases see
  different networks, a bias that grows with the time a phase takes. Prediction: the
  bias is linear in ``N``; its slope ``c`` is taken from the ``N`` = 64 point alone.
* ``drift+white``: both. Prediction: ``err = sqrt((k sigma)^2 / N + (c N)^2)``, best
  at ``N* = (k^2 sigma^2 / (2 c^2))^(1/3)``.

Errors are root-mean-square over ``--reps`` repeated estimates (fresh noise each;
a drifting board is restored to the same age before every estimate).
Prints one table and writes it as CSV with ``--csv``.

Run (about 3 minutes on 2 cores)::

    python examples/sqrt_n_stress.py --csv docs/results/sqrt-n-stress.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.plugins import open_board
from protocols.datasets import load_dataset
from protocols.holomorphic import estimate, make_stencil
from protocols.training import encode_inputs, one_hot

Array = NDArray[np.float64]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="1568-100-10")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sigma", type=float, default=1e-4, help="white read noise, V")
    ap.add_argument("--slow", type=float, default=2.5e-5, help="slow read noise, V")
    ap.add_argument("--nu", type=float, default=0.05, help="drift exponent")
    ap.add_argument("--tau", type=float, default=60.0, help="age at measurement, s")
    ap.add_argument("--max-n", type=int, default=256)
    ap.add_argument("--csv", default=None)
    a = ap.parse_args(argv)
    ns = [2**i for i in range(int(math.log2(a.max_n)) + 1)]
    ds = load_dataset("mnist-subset")
    px = ds.x_train[: a.batch].reshape(a.batch, -1).astype(np.float64)
    px = px / 255.0 if px.max() > 1.0 else px
    bits, rng_v = 16, 32.0
    lsb = 2 * rng_v / 2**bits
    stencil = make_stencil("centered", 1.0)

    boards: dict[str, tuple[Any, dict[str, Any]]] = {}

    def gradient(opts: dict[str, Any], n: int, wait_s: float = 0.0) -> Array:
        """One estimate on the board of ``opts`` (opened once: the same network from the
        same seed for every condition; its generator then gives fresh read noise per
        estimate). A drifting board is restored to its state at age ``wait_s`` first."""
        key = repr(sorted(opts.items())) + f"@{wait_s}"
        if key not in boards:
            board = open_board("emulator", {"arch": a.arch, "warm_start": False, **opts},
                               np.random.default_rng(a.seed))
            if wait_s:
                board.wait(wait_s)  # type: ignore[attr-defined]
            boards[key] = (board, board.checkpoint_state(a.batch))  # type: ignore[attr-defined]
        board, aged = boards[key]
        board.restore_state(aged)
        desc = board.describe()
        x = encode_inputs(px, 480.0, len(desc.input_nodes))
        y = one_hot(ds.y_train[: a.batch], len(desc.output_nodes))
        e = estimate(board, x, y, stencil, n_samples=n, bias_check=False)
        return np.concatenate([e.grad_g, e.grad_b]).astype(np.float64)

    g_ref = gradient({}, 1)
    norm = float(np.linalg.norm(g_ref))
    drift = {"drift_nu": a.nu, "drift_t0_s": 1.0}
    # the reference of the drift conditions: the same aged network, read with no time passing
    g_ref_drift = gradient({**drift, "sample_time_s": 0.0, "settle_time_s": 0.0}, 1, a.tau)

    def rms(opts: dict[str, Any], n: int, reps: int, ref: Array, wait_s: float = 0.0) -> float:
        errs = [np.linalg.norm(gradient(opts, n, wait_s) - ref) / norm for _ in range(reps)]
        return float(np.sqrt(np.mean(np.square(errs))))

    adc = {"adc_bits": bits, "adc_range_v": rng_v}
    conds: dict[str, Callable[[int], float]] = {
        "white": lambda n: rms({"read_noise_v": a.sigma}, n, a.reps, g_ref),
        "slow": lambda n: rms({"read_noise_v": a.sigma, "read_noise_slow_v": a.slow}, n,
                              a.reps, g_ref),
        "adc": lambda n: rms({**adc, "read_noise_v": 0.1 * lsb}, n, a.reps, g_ref),
        "adc-dither": lambda n: rms({**adc, "read_noise_v": lsb}, n, a.reps, g_ref),
        "drift": lambda n: rms(drift, n, 1, g_ref_drift, a.tau),
        "drift+white": lambda n: rms({**drift, "read_noise_v": a.sigma}, n, a.reps,
                                     g_ref_drift, a.tau),
    }
    measured: dict[str, dict[int, float]] = {}
    for name, fn in conds.items():
        measured[name] = {}
        for n in ns:
            measured[name][n] = fn(n)
            print(f"  {name:12s} N={n:4d} err={measured[name][n]:.4g}", file=sys.stderr)
    adc0 = rms({**adc}, 1, 1, g_ref)
    # k from the white control alone: err * sqrt(N) / sigma, geometric mean over N
    k = float(np.exp(np.mean([np.log(measured["white"][n] * math.sqrt(n) / a.sigma)
                              for n in ns])))
    c = measured["drift"][64] / 64.0 if 64 in ns else measured["drift"][ns[-1]] / ns[-1]
    pred: dict[str, Callable[[int], float]] = {
        "white": lambda n: k * a.sigma / math.sqrt(n),
        "slow": lambda n: k * math.sqrt(a.sigma**2 / n + a.slow**2),
        "adc": lambda n: adc0,
        "adc-dither": lambda n: k * math.sqrt(lsb**2 + lsb**2 / 12) / math.sqrt(n),
        "drift": lambda n: c * n,
        "drift+white": lambda n: math.hypot(k * a.sigma / math.sqrt(n), c * n),
    }
    n_star = (k**2 * a.sigma**2 / (2 * c**2)) ** (1 / 3) if c > 0 else math.inf
    rows = []
    for name in conds:
        for n in ns:
            m, p = measured[name][n], pred[name](n)
            rows.append({"condition": name, "N": n, "rel_err": m, "predicted": p,
                         "ratio": m / p if p > 0 else math.nan})
    print(f"network {a.arch}, batch {a.batch}, centered |beta| = 1 S, {a.reps} reps, "
          f"seed {a.seed}; sigma = {a.sigma:g} V, slow = {a.slow:g} V, ADC {bits} bit over "
          f"+/-{rng_v:g} V (LSB {lsb:.3g} V), drift nu = {a.nu:g} at age {a.tau:g} s")
    print(f"k = {k:.4g} /V (white control), noise-free quantised error adc0 = {adc0:.4g}, "
          f"drift slope c = {c:.4g} per sample, predicted best N* = {n_star:.3g}")
    print("| condition | " + " | ".join(f"N={n}" for n in ns) + " |")
    print("|---|" + "---|" * len(ns))
    for name in conds:
        cells = [f"{measured[name][n]:.3g} ({pred[name](n):.3g})" for n in ns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("cells: measured relative gradient error (predicted)")
    for board, _ in boards.values():
        board.close()
    if a.csv:
        with open(a.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
