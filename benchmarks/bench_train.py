"""EP training throughput on the emulator: the engine alone and ``hwloop train`` end to end.

One training step = the centered-EP plan (apply inputs, free phase, -beta and
+beta nudged phases, local updates, SGD, open-loop programming) on an
``EmulatedBoard`` with the ideal device model. For DRN-XS (1568-100-10) and
DRN-1H (1568-1024-10) at batch 4 and 32, in one run:

* **engine**: ``protocols.engine.run_step`` in a loop (no trainer, no log);
* **trainer**: ``Trainer.run`` of one epoch in-process without observers (the
  training loop: batching, encoding, cost, accuracy) and with the session file's
  recorder (full logging, the default raw samples) -> the logging overhead;
* **hwloop train**: the command line end to end (``python -m hwloop.cli train``,
  its default full logging), as a user runs it.

Rates are examples per second over the training loop of the epoch (the epoch-end
evaluation, start-up and data loading excluded), medians of ``--repeats`` runs
interleaved over the configurations; the multiply-add count per example and the
fraction of this machine's matmul peak (measured in the same run) put them in
perspective.

Every figure runs with the BLAS thread policy of ``hwloop train``
(``protocols.commands.training_blas_threads``: one thread unless the environment sets
a count). Each configuration's ``hwloop train`` figure is set against issue 14's target
(``TARGETS``; the ratio is printed), and every median also as microseconds per step.
Prints a table and, last, one JSON line. Usage::

    python benchmarks/bench_train.py [--quick] [--dtype float32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
from _common import median_rate
from bench_drn import matmul_peak_flops

from hwloop.plugins import open_board
from hwloop.sessionlog import SessionWriter
from protocols.commands import training_blas_threads
from protocols.config import TrainConfig, resolve
from protocols.datasets import load_dataset
from protocols.engine import run_step
from protocols.estimators import Centered
from protocols.optim import SGD
from protocols.plan import build_step_plan
from protocols.programming import OpenLoopProgrammer
from protocols.training import SessionRecorder, Trainer, backend_options

MODELS = {"DRN-XS": ("1568-100-10", 100.0), "DRN-1H": ("1568-1024-10", 480.0)}
TARGETS = {("DRN-XS", 4): 12_000, ("DRN-XS", 32): 60_000, ("DRN-1H", 4): 1_200,
           ("DRN-1H", 32): 8_000}
"""Issue 14's targets for ``hwloop train`` end to end (full logging, float32), examples/s."""
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

    return median_rate(step, batch, min_time_s, repeats, min_calls=2)


STEPS = 250
"""Training steps per timed epoch (the training set is cut to STEPS x batch examples)."""


def _config(arch: str, batch: int, dtype: str) -> TrainConfig:
    cfg, _ = resolve(TrainConfig(arch=arch, epochs=1, batch_size=batch, dtype=dtype,
                                 train_limit=STEPS * batch, test_limit=100, seed=0))
    return cfg


def trainer_rate(arch: str, batch: int, dtype: str, log: bool) -> float:
    """Examples/s of one in-process training epoch, with or without the session file."""
    cfg = _config(arch, batch, dtype)
    data = load_dataset(cfg.dataset)
    rng = np.random.default_rng(cfg.seed)
    device = open_board(cfg.backend, backend_options(cfg), rng)
    trainer = Trainer(cfg, device, data, rng)
    with tempfile.TemporaryDirectory() as tmp:
        writer = None
        if log:
            writer = SessionWriter.create(
                Path(tmp) / "run.h5", desc=device.describe(), layout=trainer.layout(),
                first_checkpoint=trainer.checkpoint(0, 0, np.arange(len(trainer.x_train))),
                config_toml="", seed=cfg.seed, options=trainer.log_options(), overwrite=True,
            )
            trainer.observers.append(SessionRecorder(trainer, writer))
        try:
            result = trainer.run()
        finally:
            if writer is not None:
                writer.close("completed")
            device.safe_state()
    return result.epochs[0].examples_per_s


def cli_rate(arch: str, batch: int, dtype: str) -> float:
    """Examples/s of ``hwloop train`` end to end (read back from its session file)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.h5"
        cmd = [sys.executable, "-m", "hwloop.cli", "train", "--arch", arch, "--epochs", "1",
               "--batch-size", str(batch), "--dtype", dtype, "--train-limit",
               str(STEPS * batch), "--test-limit", "100", "--seed", "0", "--out", str(out),
               "--quiet", "--json"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=3600)
        with h5py.File(out, "r") as f:
            return float(f["epochs"]["examples_per_s"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing blocks")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    args = parser.parse_args()
    min_time = 0.2 if args.quick else 1.0
    dt = args.dtype
    peak = matmul_peak_flops(dt)
    configs = [(m, b) for m in args.models.split(",") for b in BATCHES]
    runs: dict[tuple[str, int], dict[str, list[float]]] = {
        c: {"engine": [], "trainer": [], "trainer_logged": [], "hwloop_train": []}
        for c in configs
    }
    for _ in range(args.repeats):  # interleaved, so a load change hits every figure alike
        for name, batch in configs:
            arch, gain = MODELS[name]
            r = runs[(name, batch)]
            with training_blas_threads():  # in-process figures: as hwloop train runs
                r["engine"].append(throughput(arch, gain, dt, batch, min_time, 1))
                r["trainer"].append(trainer_rate(arch, batch, dt, log=False))
                r["trainer_logged"].append(trainer_rate(arch, batch, dt, log=True))
            r["hwloop_train"].append(cli_rate(arch, batch, dt))
    peak_after = matmul_peak_flops(dt)
    rows = []
    for name, batch in configs:
        sizes = tuple(int(s) for s in MODELS[name][0].split("-"))
        macs = macs_per_example(sizes)
        med = {k: statistics.median(v) for k, v in runs[(name, batch)].items()}
        target = TARGETS.get((name, batch))
        rows.append({"model": name, "dtype": dt, "batch": batch, "macs_per_example": macs,
                     **{f"{k}_examples_per_s": v for k, v in med.items()},
                     **{f"{k}_us_per_step": 1e6 * batch / v for k, v in med.items()},
                     "target_examples_per_s": target,
                     "hwloop_train_over_target": med["hwloop_train"] / target if target else None,
                     "logging_overhead": med["trainer"] / med["trainer_logged"] - 1.0,
                     "engine_fraction_of_matmul_peak": med["engine"] * 2 * macs / peak,
                     "runs": runs[(name, batch)]})
    print(f"matmul peak ({dt}): {peak / 1e9:.1f} GFLOP/s before, {peak_after / 1e9:.1f} after; "
          f"medians of {args.repeats} runs, {STEPS} steps per epoch")
    print(f"{'model':8} {'batch':>5} {'engine':>10} {'trainer':>10} {'+log':>10} "
          f"{'log cost':>9} {'hwloop train':>13} {'target':>8} {'/target':>8} "
          f"{'engine % peak':>14}")
    for r in rows:
        over = r["hwloop_train_over_target"]
        print(f"{r['model']:8} {r['batch']:5d} {r['engine_examples_per_s']:10,.0f} "
              f"{r['trainer_examples_per_s']:10,.0f} {r['trainer_logged_examples_per_s']:10,.0f} "
              f"{100 * r['logging_overhead']:8.1f}% {r['hwloop_train_examples_per_s']:13,.0f} "
              f"{r['target_examples_per_s'] or 0:8,} {over or 0:8.2f} "
              f"{100 * r['engine_fraction_of_matmul_peak']:13.1f}%")
    print("examples/s, medians; per step (us): " + "; ".join(
        f"{r['model']} b{r['batch']}: engine {r['engine_us_per_step']:.0f}, "
        f"hwloop train {r['hwloop_train_us_per_step']:.0f}" for r in rows))
    print(json.dumps({"benchmark": "ep_training", "estimator": "centered", "sweeps": SWEEPS,
                      "steps_per_epoch": STEPS, "matmul_peak_flops": [peak, peak_after],
                      "rows": rows}))


if __name__ == "__main__":
    main()
