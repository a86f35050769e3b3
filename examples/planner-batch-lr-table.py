"""Print the table of examples/planner-batch-lr.sh: accuracy per sigma, measured limits.

    python examples/planner-batch-lr-table.py OUTDIR [PREDICTION_V]

For each store OUTDIR/bs<B>-lr<LR>: final test accuracy (%) per sigma (mean over seeds,
and each seed), the measured limit (2-point criterion of ``hwloop sweep``) on the seed
mean and on each seed alone (their range is the interval), and measured / predicted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from protocols.sweep import measured_limits


def _limit(points: dict[str, Any]) -> float | None:
    lim = measured_limits({"points": points}, drop=0.02)
    return lim[0]["limit_sigma_eff_v"] if lim else None


def main(argv: list[str]) -> int:
    """Print one accuracy table and one limit table for every store under ``argv[0]``."""
    if not argv:
        print("usage: planner-batch-lr-table.py OUTDIR [PREDICTION_V]", file=sys.stderr)
        return 2
    pred = float(argv[1]) if len(argv) > 1 else 1.475e-3
    rows = []
    for store in sorted(Path(argv[0]).glob("bs*-lr*")):
        pts = json.loads((store / "index.json").read_text())["points"]
        done = {k: p for k, p in pts.items() if p["status"] == "completed"}
        seeds = sorted({p["seed"] for p in done.values()})
        sigmas = sorted({p["read_noise"] for p in done.values()})
        print(f"\n{store.name}: test accuracy (%), mean / seeds {seeds}")
        for s in sigmas:
            acc = [100 * p["final_test_accuracy"] for p in done.values() if p["read_noise"] == s]
            each = " / ".join(f"{a:.1f}" for a in acc)
            print(f"  sigma {s:8.3g} V: {sum(acc) / len(acc):6.2f}  ({each})")
        per_seed = [_limit({k: p for k, p in done.items() if p["seed"] == sd}) for sd in seeds]
        rows.append((store.name, _limit(done), per_seed))
    print(f"\nmeasured limit (2 points below sigma = 0), predicted {pred:.3g} V")
    print(f"{'store':16s} {'seed mean (V)':>14s} {'per seed (V)':>24s} {'measured/pred':>14s}")
    for name, lim, per in rows:
        ps = " / ".join("n/a" if v is None else f"{v:.3g}" for v in per)
        ratio = "n/a" if lim is None else f"{lim / pred:.2f}"
        print(f"{name:16s} {'n/a' if lim is None else f'{lim:.3g}':>14s} {ps:>24s} {ratio:>14s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
