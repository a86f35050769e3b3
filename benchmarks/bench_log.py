"""Cost of the session log: training with full raw logging against logging off.

DRN-XS (1568-100-10) on the emulator at batch 32 with N = 10 read samples per
phase (read noise 10 mV), centered EP: the same training steps are run with the
session file written (default options: every raw sample, flags, timestamps,
inputs, nudges, every edge's update, programming exceptions, checkpoints every
1,000 steps and at the epoch end) and with no session file, alternately in the
same process. Reports the mean time per step of each (median over repeats), the overhead
(difference of the runs), the share of each logged step spent inside the session writer
(measured within the run: robust on a busy machine), the MB/s
written and the file size per epoch of the bundled MNIST subset (4,000 training
examples = 125 steps). Prints a table and, last, one JSON line. Usage::

    python benchmarks/bench_log.py [--steps 100] [--repeats 5] [--samples 10]

``--flat N`` instead appends N synthetic steps (DRN-XS shapes, batch 4, one sample
per phase, the default logging options of a DRN-XS emulator run) straight to a
session writer, and prints the time per step of the first and the last 10 % of them
(the cost must not grow with the file) and the file size::

    python benchmarks/bench_log.py --flat 1000000 [--dir /tmp]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.plugins import open_board
from hwloop.sessionlog import SessionWriter
from protocols.commands import training_blas_threads
from protocols.config import make_config, resolve
from protocols.datasets import load_dataset
from protocols.engine import StepRecord
from protocols.training import SessionRecorder, StepHook, Trainer, backend_options


def one_run(
    steps: int, samples: int, batch: int, out: Path | None, **log: object
) -> tuple[float, int, float]:
    """Seconds per training step (epoch-end evaluation excluded), bytes written, and the
    seconds per step spent inside the session writer (measured in the same run, so a
    loaded machine does not hide or invent overhead as the difference of two runs can)."""
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
    in_writer = [0.0]
    if writer is not None:
        for name in ("append_step", "write_checkpoint", "append_epoch", "event", "close"):
            method = getattr(writer, name)

            def timed(*a: Any, _m: Any = method, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return _m(*a, **k)
                finally:
                    in_writer[0] += time.perf_counter() - t0

            setattr(writer, name, timed)
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
    # skip the first steps (warm-up: caches, page faults of fresh datasets); the mean,
    # not the median: with group commit a few steps carry the commits of many
    return statistics.fmean(step_times[5:]), size, in_writer[0] / steps


def flat(n_steps: int, directory: str | None, batch: int = 4) -> dict[str, object]:
    """Append ``n_steps`` synthetic DRN-XS steps; time per step along the file."""
    from hwloop.device import NodeReading
    from hwloop.sessionlog import StepLog
    from protocols.training import encode_inputs

    values = {"arch": "1568-100-10", "batch_size": batch, "samples": 1, "read_noise": 0.01,
              "epochs": 1, "test_limit": 1}
    cfg, _ = resolve(make_config(values))
    data = load_dataset(cfg.dataset)
    rng = np.random.default_rng(cfg.seed)
    device = open_board(cfg.backend, backend_options(cfg), rng)
    trainer = Trainer(cfg, device, data, rng)
    layout, options = trainer.layout(), trainer.log_options()
    desc = device.describe()
    free = np.asarray(desc.free_nodes)
    # a pool of distinct steps built from real images (inputs compress as in a real run)
    pool = []
    for k in range(64):
        idx = np.arange(k * batch, (k + 1) * batch)
        x = data.x_train[idx].reshape(batch, -1).astype(np.float32) / 255
        v_in = encode_inputs(x, float(cfg.input_gain or 1.0), layout.n_inputs)
        readings = [
            NodeReading(
                samples_v=rng.normal(0, 0.3, (1, batch, len(free))).astype(np.float32),
                timestamps_s=np.full((1, batch), 1e-3 * k),
                flags=np.zeros((1, batch, len(free)), np.uint8),
                nodes=free,
            )
            for _ in range(layout.phases)
        ]
        pool.append(StepLog(
            epoch=0, batch=k, examples=idx, inputs_v=v_in, readings=readings,
            betas_s=np.array([0.0, -1e-3, 1e-3])[: layout.phases],
            nudge_values=np.zeros((layout.phases, batch, layout.n_outputs)), rng=rng,
            loss=0.1, accuracy=0.5,
        ))
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        out = Path(tmp) / "flat.h5"
        writer = SessionWriter.create(
            out, desc=desc, layout=layout,
            first_checkpoint=trainer.checkpoint(0, 0, np.arange(len(trainer.x_train))),
            config_toml="", seed=cfg.seed, options=options, overwrite=True,
        )
        tenth = max(1, n_steps // 10)
        marks = []
        t0 = time.perf_counter()
        for i in range(n_steps):
            if i % tenth == 0:
                marks.append(time.perf_counter())
            writer.append_step(pool[i % len(pool)])
        marks.append(time.perf_counter())
        writer.close("completed")
        total = time.perf_counter() - t0
        size = out.stat().st_size
    per_tenth_us = [1e6 * (b - a) / tenth for a, b in itertools.pairwise(marks)]
    first, last = per_tenth_us[0], per_tenth_us[-1]
    print(f"flat: {n_steps} synthetic DRN-XS steps, batch {batch}, "
          "steps only (no checkpoints)")
    print("us/step per tenth of the file: " + " ".join(f"{x:.0f}" for x in per_tenth_us))
    print(f"first 10 %: {first:.1f} us/step, last 10 %: {last:.1f} us/step, "
          f"ratio {last / first:.3f}; {size / n_steps / 1e3:.1f} kB/step, {total:.0f} s")
    return {"flat_steps": n_steps, "first_us": first, "last_us": last,
            "ratio": last / first, "tenths_us": per_tenth_us, "bytes_per_step": size / n_steps}


def main() -> None:
    """Run the comparison and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--flat", type=int, default=0,
                    help="append this many synthetic steps and report the cost along the file")
    ap.add_argument("--dir", default=None, help="directory for the --flat file")
    args = ap.parse_args()
    if args.flat:
        print(json.dumps(flat(args.flat, args.dir)))
        return
    variants: dict[str, dict[str, object] | None] = {
        "logging off": None,
        "raw (default)": {},
        "summary": {"log_samples": "summary"},
        "raw, no updates": {"log_updates": "off"},
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    sizes: dict[str, int] = {}
    shares: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp, training_blas_threads():  # as hwloop train
        one_run(10, args.samples, args.batch, Path(tmp) / "warm.h5")  # imports, first-touch
        for _ in range(args.repeats):
            for name, log in variants.items():
                out = None if log is None else Path(tmp) / "bench.h5"
                t, size, w = one_run(args.steps, args.samples, args.batch, out, **(log or {}))
                times[name].append(t)
                shares[name].append(w / t)
                sizes[name] = size
    base = statistics.median(times["logging off"])
    steps_per_epoch = 4000 // args.batch
    print(
        f"DRN-XS, batch {args.batch}, {args.samples} samples/phase, {args.steps} steps, "
        f"median of {args.repeats} runs"
    )
    print(f"{'variant':<18} {'ms/step':>8} {'overhead':>9} {'in writer':>9} {'MB/step':>8} "
          f"{'MB/s':>7} {'MB/epoch':>9}")
    result: dict[str, object] = {"batch": args.batch, "samples": args.samples}
    for name in variants:
        t = statistics.median(times[name])
        over = t / base - 1
        per_step = sizes.get(name, 0) / args.steps / 1e6
        share = statistics.median(shares[name]) if shares[name] else 0.0
        print(
            f"{name:<18} {1e3 * t:8.2f} {100 * over:8.1f}% {100 * share:8.1f}% {per_step:8.3f} "
            f"{per_step / t:7.1f} {per_step * steps_per_epoch:9.1f}"
        )
        result[name] = {
            "ms_per_step": 1e3 * t,
            "overhead": over,
            "writer_share": share,
            "mb_per_step": per_step,
            "mb_per_s": per_step / t,
            "mb_per_epoch": per_step * steps_per_epoch,
            "runs_ms": [1e3 * x for x in times[name]],
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
