"""Plot the amplifier-mismatch demonstration of docs/generalized-ep.md.

Reads the session files ``DATASET_CONDITION_sSEED.h5`` that
``scripts/generalized_ep_mismatch_demo.sh OUTDIR`` writes and draws, per dataset, the
test accuracy per epoch (mean over the seeds that completed, each seed faint) for every
condition, and the final accuracies.

    python scripts/plot_generalized_ep_demo.py OUTDIR docs/figures/generalized-ep-demo.png
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from hwloop.sessionlog import load_run

CONDITIONS = {
    "recip": "reciprocal",
    "reciphomeo": "reciprocal + homeostasis 10",
    "mismatch": "bwd gain 0.25",
    "homeo": "bwd gain 0.25 + homeostasis 10",
    "strong": "bwd gain 0.1",
    "stronghomeo3": "bwd gain 0.1 + homeostasis 3",
}
DATASETS = ("mnist-subset", "fashion-mnist")
NAME = re.compile(r"(?P<ds>[\w-]+?)_(?P<cond>[a-z0-9]+)_s(?P<seed>\d+)\.h5$")


def main(out_dir: Path, png: Path) -> None:
    """Read every completed run in ``out_dir`` and write the figure to ``png``."""
    curves: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    for path in sorted(out_dir.glob("*.h5")):
        m = NAME.match(path.name)
        if m is None or m["cond"] not in CONDITIONS:
            continue
        run = load_run(path)
        if run.status != "completed":
            continue
        curves[(m["ds"], m["cond"])].append(100 * np.asarray(run.metrics["test_accuracy"]))
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(12, 4.5), squeeze=False)
    for ax, ds in zip(axes[0], DATASETS, strict=True):
        for k, (cond, label) in enumerate(CONDITIONS.items()):
            runs = curves.get((ds, cond))
            if not runs:
                continue
            color = f"C{k}"
            for acc in runs:
                ax.plot(np.arange(1, len(acc) + 1), acc, color=color, alpha=0.25, lw=1)
            mean = np.mean(np.stack(runs), axis=0)
            ax.plot(np.arange(1, len(mean) + 1), mean, color=color, lw=2, marker="o",
                    label=f"{label} ({mean[-1]:.1f} %, {len(runs)} seeds)")
        ax.set_title(f"{ds}, 1568-32-10 (bwd-gain arms: device mismatch 1, write noise 0.5)",
                     fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/plot_generalized_ep_demo.py OUTDIR PNG")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
