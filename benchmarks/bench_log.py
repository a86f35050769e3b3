"""Cost of the session log: training with full raw logging against logging off.

DRN-XS (1568-100-10) on the emulator at batch 32 with N = 10 read samples per
phase (read noise 10 mV), centered EP: the same training steps are run with the
session file written (default options: every raw sample, flags, timestamps,
inputs, nudges, every edge's update, programming exceptions, checkpoints every
1,000 steps and at the epoch end) and with no session file, alternately in the
same process. Reports the median time per step of each, the overhead, the MB/s
written and the file size per epoch of the bundled MNIST subset (4,000 training
examples = 125 steps). Prints a table and, last, one JSON line. Usage::

    python benchmarks/bench_log.py [--steps 100] [--repeats 5] [--samples 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hwloop.datasets import load_dataset
from hwloop.plugins import open_board
from hwloop.sessionlog import SessionWriter
from protocols.config import make_config, resolve
from protocols.engine import StepRecord
from protocols.training import SessionRecorder, StepHook, Trainer, backend_options


def one_run(
    steps: int, samples: int, batch: int, out: Path | None, **log: object
) -> tuple[float, int]:
    """Seconds per training step (epoch-end evaluation excluded) and bytes written."""
    values = {
        "arch": "1568-100-10",
        "batch_size": batch,
        "samples": samples,
        "read_noise": 0.01,
        "epochs": 1,
        "train_limit": steps * batch,
        "test_limit": 1,
        **log,
    }
    cfg, _ = resolve(make_config(values))
    data = load_dataset(cfg.dataset)
    rng = np.random.default_rng(cfg.seed)
    device = open_board(cfg.backend, backend_options(cfg), rng)
    trainer = Trainer(cfg, device, data, rng)
    writer = None
    if out is not None:
        writer = SessionWriter.create(
            out,
            desc=device.describe(),
            layout=trainer.layout(),
            first_checkpoint=trainer.checkpoint(0, 0, np.arange(len(trainer.x_train))),
            config_toml="",
            seed=cfg.seed,
            options=trainer.log_options(),
            overwrite=True,
        )
        trainer.observers.append(SessionRecorder(trainer, writer))
    step_times: list[float] = []
    last = [time.perf_counter()]

    def on_step(_: StepRecord) -> None:
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    trainer.observers.append(StepHook(on_step))
    last[0] = time.perf_counter()
    trainer.run()
    if writer is not None:
        writer.close("completed")
    size = out.stat().st_size if out is not None else 0
    # skip the first steps (warm-up: caches, page faults of fresh datasets)
    return statistics.median(step_times[5:]), size


def main() -> None:
    """Run the comparison and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    variants: dict[str, dict[str, object] | None] = {
        "logging off": None,
        "raw (default)": {},
        "summary": {"log_samples": "summary"},
        "raw, no updates": {"log_updates": "off"},
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        one_run(10, args.samples, args.batch, Path(tmp) / "warm.h5")  # imports, first-touch
        for _ in range(args.repeats):
            for name, log in variants.items():
                out = None if log is None else Path(tmp) / "bench.h5"
                t, size = one_run(args.steps, args.samples, args.batch, out, **(log or {}))
                times[name].append(t)
                sizes[name] = size
    base = statistics.median(times["logging off"])
    steps_per_epoch = 4000 // args.batch
    print(
        f"DRN-XS, batch {args.batch}, {args.samples} samples/phase, {args.steps} steps, "
        f"median of {args.repeats} runs"
    )
    print(f"{'variant':<18} {'ms/step':>8} {'overhead':>9} {'MB/step':>8} {'MB/s':>7} "
          f"{'MB/epoch':>9}")
    result: dict[str, object] = {"batch": args.batch, "samples": args.samples}
    for name in variants:
        t = statistics.median(times[name])
        over = t / base - 1
        per_step = sizes.get(name, 0) / args.steps / 1e6
        print(
            f"{name:<18} {1e3 * t:8.2f} {100 * over:8.1f}% {per_step:8.3f} "
            f"{per_step / t:7.1f} {per_step * steps_per_epoch:9.1f}"
        )
        result[name] = {
            "ms_per_step": 1e3 * t,
            "overhead": over,
            "mb_per_step": per_step,
            "mb_per_s": per_step / t,
            "mb_per_epoch": per_step * steps_per_epoch,
            "runs_ms": [1e3 * x for x in times[name]],
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
