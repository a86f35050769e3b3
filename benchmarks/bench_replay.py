"""Replay against training: ``hwloop replay`` must run at least 5x faster than the run.

Trains N steps of the README's main job on the emulator (DRN-XS 1568-100-10 on the
bundled MNIST subset, batch 4, default full logging: every raw sample, every edge's
update) with ``hwloop train``, then replays the file with ``hwloop replay``, both in
this process (imports warmed, so start-up is not counted for either), interleaved,
``--repeats`` times. Replay does no physics: it reads the recording in blocks, checks
each step's CRC-32 and every board call against it, and re-runs the learner. Prints
the wall time of each (median), steps/s and the ratio, then one JSON line::

    nice -n 10 python benchmarks/bench_replay.py [--steps 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

from hwloop.cli import main


def _timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU time of ``hwloop ARGV`` in this process, s (its output swallowed).

    The CPU time (this process's) is the steadier figure on a shared, loaded machine.
    """
    sink = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = main(argv)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    if code != 0:
        raise SystemExit(f"hwloop {argv[0]} failed ({code}):\n{sink.getvalue()}")
    return dt, dc


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="training steps (batch 4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--arch", default="1568-100-10")
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    train_s: list[tuple[float, float]] = []
    replay_s: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            run = Path(tmp) / f"run{k}.h5"
            train_s.append(_timed([
                "train", "--arch", args.arch, "--dataset", "mnist-subset", "--batch-size",
                str(args.batch), "--train-limit", str(args.steps * args.batch), "--test-limit",
                "10", "--epochs", "1", "--seed", str(k), "--out", str(run), "--quiet",
            ]))
            replay_s.append(_timed(["replay", str(run), "--quiet"]))
    print(f"{args.arch}, batch {args.batch}, {args.steps} steps, medians of {args.repeats}:")
    ratio = {}
    for k, kind in enumerate(("wall", "CPU")):
        t_train = statistics.median(t[k] for t in train_s)
        t_replay = statistics.median(t[k] for t in replay_s)
        ratio[kind] = t_train / t_replay
        print(f"  {kind:4s} hwloop train  {t_train:8.2f} s  {args.steps / t_train:7.0f} steps/s"
              f"   hwloop replay {t_replay:8.2f} s  {args.steps / t_replay:7.0f} steps/s"
              f"   ratio {ratio[kind]:.1f}x (target >= 5x)")
    print(json.dumps({"arch": args.arch, "batch": args.batch, "steps": args.steps,
                      "train_wall_cpu_s": train_s, "replay_wall_cpu_s": replay_s,
                      "ratio_wall": ratio["wall"], "ratio_cpu": ratio["CPU"]}))


if __name__ == "__main__":
    main_bench()
