"""Controlled generalized-EP experiment: direction error vs error gain (issue 15 part 2).

Arms on the ``nonreciprocal`` emulator, no write noise, each with and without Jacobian
homeostasis:

* ``reciprocal``: backward arrays equal to the forward ones transposed, gains 1;
* ``direction``: each backward device ``exp(s xi - s^2/2)`` times its forward partner
  (log-normal spread with mean 1: the mean feedback is unchanged);
* ``gain``: reciprocal devices, backward current gain ``c`` (< 1: weaker feedback);
* ``both``: the two together.

Effective learning rate: for every arm the learning rate of every weight group but
the last (the groups whose updates carry the hidden layers' error) is swept over a
grid of multipliers of the base rate, and each arm is compared at its own best
multiplier. The best is picked by the mean final-epoch **training** accuracy over the
seeds (not by test accuracy); the table reports the test accuracy there, mean and
95 % confidence interval (Student t over the seeds). Before training and after every
epoch each run measures the alignment of every hidden layer's EP error with the true
error (``protocols.alignment``: cosine and size ratio, on 32 test examples).

Example (the 1-hidden-layer table of docs/generalized-ep.md; prints the table and
writes every run to the JSON file)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/generalized_ep_controlled.py \\
        --arch 98-16-10 --jobs 2 --json gep-1h.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

ARMS: dict[str, dict[str, Any]] = {
    "reciprocal": {},
    "direction": {"asymmetry": None, "asymmetry_mean_one": True},
    "gain": {"bwd_gain": None},
    "both": {"asymmetry": None, "asymmetry_mean_one": True, "bwd_gain": None},
}
"""Backend options of each arm (``None``: filled from the command line)."""


@dataclass(frozen=True)
class Run:
    """One training run of the grid."""

    arm: str
    homeostasis: float
    lr_mult: float
    seed: int
    options: dict[str, Any]
    common: dict[str, Any]


def _lr_weights(arch: str, base: float, mult: float) -> list[float]:
    n_groups = len(arch.split("-")) - 1
    return [base * mult] * (n_groups - 1) + [base]


def run_one(run: Run) -> dict[str, Any]:
    """Train one configuration in this process; the metrics and alignment log."""
    from hwloop.plugins import open_board
    from protocols.config import make_config, resolve
    from protocols.datasets import load_dataset
    from protocols.training import Trainer, backend_options

    c = run.common
    values = {
        "backend": {"name": "nonreciprocal", **run.options},
        "arch": c["arch"],
        "dataset": c["dataset"],
        "epochs": c["epochs"],
        "train_limit": c["train_limit"],
        "test_limit": c["test_limit"],
        "input_gain": c["input_gain"],
        "beta": c["beta"],
        "batch_size": c["batch_size"],
        "estimator": c["estimator"],
        "nudge": "resistive",
        "lr_weights": _lr_weights(c["arch"], c["lr"], run.lr_mult),
        "lr_biases": _lr_weights(c["arch"], c["lr"], run.lr_mult),
        "lr_decay": 1.0,
        "homeostasis": run.homeostasis,
        "alignment": 32,
        "seed": run.seed,
        "dtype": "float64",
    }
    cfg, _ = resolve(make_config(values, source="generalized_ep_controlled"))
    data = load_dataset(cfg.dataset)
    rng = np.random.default_rng(cfg.seed)
    device = open_board("nonreciprocal", backend_options(cfg), rng)
    trainer = Trainer(cfg, device, data, rng)
    t0 = time.perf_counter()
    status, epochs = "completed", []
    try:
        epochs = [m.as_dict() for m in trainer.run().epochs]
    except Exception as exc:  # a diverged run (singular Jacobian) is a result, not a crash
        status = f"failed: {' '.join(str(exc).split())[:120]}"
    al = [(ep, [(r.cosine, r.size_ratio) for r in rows]) for ep, rows in trainer.alignment_log]
    return {
        "arm": run.arm, "homeostasis": run.homeostasis, "lr_mult": run.lr_mult,
        "seed": run.seed, "status": status, "epochs": epochs,
        "alignment": al, "wall_s": time.perf_counter() - t0,
    }


def ci95(x: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t confidence interval (NaN with < 2)."""
    a = np.asarray(x, dtype=float)
    if a.size < 2:
        return float(a.mean()) if a.size else float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))
    return float(a.mean()), half


def _best(results: list[dict[str, Any]], arm: str, homeo: float, lr_grid: list[float]) -> tuple[
    float, dict[int, float], int
]:
    """Best multiplier (by mean final training accuracy), its test accuracy (%) per seed,
    and the number of failed runs of the arm."""
    rs = [r for r in results if r["arm"] == arm and r["homeostasis"] == homeo]
    failed = sum(1 for r in rs if not r["epochs"])

    def train_acc(m: float) -> float:
        tr = [r["epochs"][-1]["train_accuracy"] for r in rs if r["lr_mult"] == m and r["epochs"]]
        return float(np.mean(tr)) if tr else -1.0

    best = max(lr_grid, key=train_acc)
    te = {r["seed"]: 100 * r["epochs"][-1]["test_accuracy"]
          for r in rs if r["lr_mult"] == best and r["epochs"]}
    return best, te, failed


def _paired(a: dict[int, float], b: dict[int, float]) -> str:
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return "-"
    mean, half = ci95([a[s] - b[s] for s in seeds])
    return f"{mean:+.1f} ± {half:.1f}"


def table(results: list[dict[str, Any]], lr_grid: list[float]) -> str:
    """The findings table (Markdown) from the runs.

    Differences are paired by seed (the same seed gives the same forward
    initialisation and example order in every arm) with 95 % t intervals: against the
    reciprocal arm with the same homeostasis setting, and homeostasis against none.
    """
    lines = [
        "| arm | homeostasis | L1.. cos / size at start | L1.. cos / size at end | best lr x "
        "(by train acc) | test acc % at best (95 % CI) | vs reciprocal (paired) | "
        "homeostasis effect (paired) | test acc % per lr x "
        + " / ".join(f"{m:g}" for m in lr_grid) + " | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["arm"], r["homeostasis"]) for r in results},
                  key=lambda k: (list(ARMS).index(k[0]), k[1]))
    homeos = sorted({r["homeostasis"] for r in results})
    for arm, homeo in keys:
        rs = [r for r in results if r["arm"] == arm and r["homeostasis"] == homeo]
        best, te, failed = _best(results, arm, homeo, lr_grid)
        mean, half = ci95(list(te.values()))
        ref = _paired(te, _best(results, "reciprocal", homeo, lr_grid)[1]) if (
            arm != "reciprocal" and any(r["arm"] == "reciprocal" for r in results)) else "-"
        eff = _paired(te, _best(results, arm, homeos[0], lr_grid)[1]) if homeo != homeos[0] else "-"
        al = [r["alignment"] for r in rs if r["alignment"] and r["lr_mult"] == best]

        def fmt(idx: int, al: list[Any] = al) -> str:
            if not al:
                return "-"
            parts = []
            for k in range(len(al[0][idx][1])):
                cos = np.mean([a[idx][1][k][0] for a in al])
                size = np.mean([a[idx][1][k][1] for a in al])
                parts.append(f"{cos:.3f} / {size:.3g}")
            return "; ".join(parts)

        per_lr = []
        for m in lr_grid:
            acc = [100 * r["epochs"][-1]["test_accuracy"]
                   for r in rs if r["lr_mult"] == m and r["epochs"]]
            per_lr.append(f"{np.mean(acc):.1f}" if acc else "-")
        lines.append(
            f"| {arm} | {homeo:g} | {fmt(0)} | {fmt(-1)} | {best:g} | "
            f"{mean:.1f} ± {half:.1f} | {ref} | {eff} | " + " / ".join(per_lr)
            + f" | {failed} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the grid, print the table (and write the runs as JSON when asked)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="98-16-10")
    p.add_argument("--dataset", default="mnist-7x7")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=1000)
    p.add_argument("--test-limit", type=int, default=500)
    p.add_argument("--input-gain", type=float, default=None, help="V (default: hwloop's)")
    p.add_argument("--beta", type=float, default=0.5, help="nudge, S")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--estimator", default="centered")
    p.add_argument("--lr", type=float, default=0.03, help="base learning rate (published units)")
    p.add_argument("--lr-grid", default="0.3,1,3,10",
                   help="multipliers of the hidden groups' learning rate")
    p.add_argument("--asymmetry", type=float, default=1.0, help="log-normal spread s")
    p.add_argument("--bwd-gain", type=float, default=0.1, help="backward current gain c")
    p.add_argument("--homeostasis", default="0,3", help="lambda values")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--json", default=None, help="write every run here")
    p.add_argument("--table-from", nargs="+", default=None, metavar="JSON",
                   help="print the table of JSON files written by --json, merged (no runs)")
    a = p.parse_args(argv)
    lr_grid = [float(x) for x in a.lr_grid.split(",")]
    if a.table_from:
        runs_in: list[dict[str, Any]] = []
        grid_in: set[float] = set()
        for path in a.table_from:
            with open(path) as f:
                saved = json.load(f)
            runs_in += saved["runs"]
            grid_in |= {float(x) for x in saved["args"]["lr_grid"].split(",")}
        print(table(runs_in, sorted(grid_in)))
        return 0
    common = {
        "arch": a.arch, "dataset": a.dataset, "epochs": a.epochs,
        "train_limit": a.train_limit, "test_limit": a.test_limit,
        "input_gain": a.input_gain, "beta": a.beta, "batch_size": a.batch_size,
        "estimator": a.estimator, "lr": a.lr,
    }
    runs = []
    for arm in a.arms.split(","):
        if arm not in ARMS:
            print(f"error: unknown arm {arm!r}; choose from {', '.join(ARMS)}", file=sys.stderr)
            return 2
        opts = {k: (a.asymmetry if k == "asymmetry" else a.bwd_gain) if v is None else v
                for k, v in ARMS[arm].items()}
        for homeo in (float(x) for x in a.homeostasis.split(",")):
            for m in lr_grid:
                for seed in (int(s) for s in a.seeds.split(",")):
                    runs.append(Run(arm, homeo, m, seed, opts, common))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for i, r in enumerate(pool.map(run_one, runs), start=1):
            results.append(r)
            acc = r["epochs"][-1]["test_accuracy"] if r["epochs"] else float("nan")
            print(f"[{i}/{len(runs)}] {r['arm']} h{r['homeostasis']:g} lr x{r['lr_mult']:g} "
                  f"seed {r['seed']}: {100 * acc:.1f} % ({r['wall_s']:.0f} s) {r['status']}",
                  file=sys.stderr, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "runs": results}, f)
    print(f"# {a.arch} on {a.dataset} ({a.train_limit} train / {a.test_limit} test), "
          f"{a.epochs} epochs, batch {a.batch_size}, {a.estimator} beta {a.beta:g}, base lr "
          f"{a.lr:g}; s = {a.asymmetry:g}, c = {a.bwd_gain:g}; seeds {a.seeds}; "
          f"{time.perf_counter() - t0:.0f} s")
    print(table(results, lr_grid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
