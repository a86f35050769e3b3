"""``hwloop solve-drn``: one free-phase equilibrium of a deep resistive network.

A demo and a check of the emulator: builds a DRN with the published
initialisation from a seed, applies a batch of MNIST-like inputs (random
pixels in [0, 1], about 19 % of them lit, as in docs/physics.md §2.2),
relaxes it, and prints the output voltages, the convergence of the sweeps,
the dissipated power and the solve time.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from hwloop.errors import ConfigError
from simulated_device.drn import DRN, parse_arch, pixels_to_inputs


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return v


def run(args: argparse.Namespace) -> int:
    """Execute ``hwloop solve-drn``."""
    sizes = parse_arch(args.arch)
    if sizes[0] % 2:
        raise ConfigError(
            f"the input layer of {args.arch} has an odd size; DRN inputs come in +/- pairs"
        )
    rng = np.random.default_rng(args.seed)
    dtype = np.dtype(args.dtype)
    net = DRN.initialise(sizes, rng, dtype=dtype)
    pixels = sizes[0] // 2
    x = rng.uniform(0.0, 1.0, size=(args.batch, pixels)) * (
        rng.uniform(size=(args.batch, pixels)) < 0.19
    )
    v_in = pixels_to_inputs(x, args.input_gain).astype(dtype)
    t0 = time.perf_counter()
    V, stats = net.relax(v_in, n_sweeps=args.sweeps)
    t_solve = time.perf_counter() - t0
    ref, ref_stats = net.relax(
        v_in, V, tol_v=1e-12 if dtype == np.float64 else 1e-5, max_sweeps=10_000
    )
    gap = float(np.max(np.abs(ref[-1].astype(np.float64) - V[-1].astype(np.float64))))
    power_w = 2.0 * net.energy(v_in, V) + 2.0 * sum(
        (v.astype(np.float64) @ b.astype(np.float64)) for v, b in zip(V, net.biases, strict=True)
    )
    result: dict[str, Any] = {
        "arch": "-".join(map(str, sizes)),
        "input_gain_v": args.input_gain,
        "batch": args.batch,
        "sweeps": stats.sweeps,
        "dtype": dtype.name,
        "seed": args.seed,
        "solve_time_s": t_solve,
        "examples_per_s": args.batch / t_solve if t_solve > 0 else float("inf"),
        "max_distance_from_fixed_point_v": gap,
        "sweeps_to_fixed_point": stats.sweeps + ref_stats.sweeps,
        "output_voltages_v": V[-1].astype(np.float64).tolist(),
        "prediction": np.argmax(V[-1], axis=1).tolist(),
        "dissipated_power_w": power_w.tolist(),
        "hidden_active_fraction": [float(np.mean(v != 0)) for v in V[:-1]],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"DRN {result['arch']}  input gain {args.input_gain:g} V  batch {args.batch}  "
        f"{dtype.name}  seed {args.seed}"
    )
    print(
        f"{stats.sweeps} sweeps in {t_solve * 1e3:.3f} ms "
        f"({result['examples_per_s']:.0f} examples/s); distance from the fixed point "
        f"{gap:.2e} V"
    )
    for k, frac in enumerate(result["hidden_active_fraction"], start=1):
        print(f"hidden layer {k}: {100 * frac:.1f} % of nodes conducting (off their clamp)")
    print("example  prediction  power (W)   output voltages (V)")
    for b in range(min(args.batch, 8)):
        outs = " ".join(f"{v:+.4f}" for v in V[-1][b])
        print(f"{b:7d}  {result['prediction'][b]:10d}  {power_w[b]:9.3e}   {outs}")
    if args.batch > 8:
        print(f"... {args.batch - 8} more examples (use --json for all)")
    return 0


def register_solve_drn(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop solve-drn``."""
    p = sub.add_parser(
        "solve-drn",
        help="solve one free-phase equilibrium of a deep resistive network",
        description=__doc__,
    )
    p.add_argument("--arch", default="1568-100-10", help="layer sizes (default 1568-100-10)")
    p.add_argument(
        "--input-gain",
        type=_positive_float,
        default=100.0,
        help="input gain G_in, V per unit pixel (default 100)",
    )
    p.add_argument("--batch", type=_positive_int, default=4, help="examples (default 4)")
    p.add_argument(
        "--sweeps",
        type=_positive_int,
        default=4,
        help="block-coordinate-descent sweeps (default 4)",
    )
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
