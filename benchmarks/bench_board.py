"""Overhead of the real-board stack per node-voltage read and per EP training step.

The stack under test is everything between the protocol layer and the instrument:
``RealBoard`` (wiring, calibration, limit checks, event and wire-level logging) ->
``SerialBoardDriver`` -> ``SerialTransport`` -> the board protocol's frame codec ->
a TCP socket on 127.0.0.1 -> a ``VirtualBoard`` in a child process (so it shares no
interpreter lock with the stack). The virtual board's own work (frame decoding, the
emulator's solve and read noise, frame encoding; timed inside ``VirtualBoard.respond``)
is subtracted, which leaves the overhead a zero-latency board would see. Figures are
medians of several runs.

* per read: one example's free nodes (all of them, N = 1 sample) through
  ``RealBoard.read_nodes`` with the sources unchanged (a READ_NODES exchange), and with
  new input levels (SET_INPUTS + READ_NODES), next to the bare driver call;
* per step: one EP training step (batch 4, centered estimator: 3 phases, current
  nudges, open-loop pulse programming, session file with every raw sample and a
  checkpoint per step) through ``Trainer`` on the board, against the same step on the
  emulator backend.

The overhead per read is compared with the fastest real instrument read times of
docs/devices.md §5.2. Usage::

    python benchmarks/bench_board.py [--arch 1568-16-10] [--reads 300] [--steps 40] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.config import config_to_dict, to_toml
from hwloop.plugins import open_board
from hwloop.sessionlog import SessionWriter
from instruments.board_file import parse_board_file
from instruments.real_board import RealBoard
from protocols.config import TrainConfig, resolve
from protocols.datasets import load_dataset
from protocols.engine import StepRecord
from protocols.training import SessionRecorder, StepHook, Trainer
from simulated_device.virtual_board import VirtualBoard

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "boards" / "virtual-serial.toml"

# docs/devices.md §5.2: time to read one layer of node voltages (N ~ 32-64 nodes)
REFERENCE_S = [
    ("ArC TWO / DAQ, reads queued in hardware", 50e-6, 100e-6),
    ("2600B channels over TSP-Link, TSP script", 0.1e-3, 1e-3),
    ("ArC TWO / DAQ, one host round trip per read", 1e-3, 3e-3),
    ("SMU + 707B matrix, 0.01 NPLC, GPIB per reading", 0.15, 0.3),
]


class TimedBoard(VirtualBoard):
    """A VirtualBoard that adds up the time spent inside ``respond`` (its own work)."""

    def __init__(self, *args: Any, busy: Any = None, frames: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.busy = busy  # multiprocessing.Value("d"), shared with the benchmark
        self.frames = frames

    def respond(self, frame: Any) -> list[tuple[float, bytes]]:
        t0 = time.perf_counter()
        try:
            return super().respond(frame)
        finally:
            self.busy.value += time.perf_counter() - t0
            self.frames.value += 1


def _child(opts: dict[str, Any], seed: int, busy: Any, frames: Any, conn: Any) -> None:
    vb = TimedBoard(opts, seed=seed, busy=busy, frames=frames)
    conn.send(vb.start_tcp())
    conn.recv()  # until told to stop
    vb.close()


class RemoteBoard:
    """A TimedBoard in a child process (no GIL shared with the stack under test)."""

    def __init__(self, opts: dict[str, Any], seed: int) -> None:
        ctx = mp.get_context("spawn")
        self._busy = ctx.Value("d", 0.0, lock=False)
        self._frames = ctx.Value("q", 0, lock=False)
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(opts, seed, self._busy, self._frames,
                                                      child), daemon=True)
        self._proc.start()
        self.url: str = self._conn.recv()

    @property
    def busy_s(self) -> float:
        """Seconds the board spent in ``respond`` so far."""
        return float(self._busy.value)

    @property
    def frames_received(self) -> int:
        """Request frames answered so far."""
        return int(self._frames.value)

    def close(self) -> None:
        self._conn.send("stop")
        self._proc.join(10)


def _board(vb: RemoteBoard, log_exchanges: str) -> RealBoard:
    text = EXAMPLE.read_text().replace('log_exchanges = "faults"',
                                       f'log_exchanges = "{log_exchanges}"')
    board = RealBoard(parse_board_file(text, env={"HWLOOP_BOARD_URL": vb.url}))
    events: list[tuple[str, str]] = []
    board.set_event_sink(lambda k, m: events.append((k, m)))  # a sink like the session log's
    return board


def _per_call(fn: Callable[[], Any], vb: RemoteBoard, n: int) -> tuple[float, float]:
    """(wall s per call, virtual-board s per call) over ``n`` calls."""
    fn()
    fn()
    b0 = vb.busy_s
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    wall = (time.perf_counter() - t0) / n
    return wall, (vb.busy_s - b0) / n


def _read_cases(board: RealBoard, with_driver: bool) -> dict[str, Callable[[], Any]]:
    d = board.describe()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2, len(d.input_nodes) // 2))
    v = np.concatenate([100 * x, -100 * x], axis=1)
    drv = board._inst["board"].roles.meter  # the bare driver, for the layer split
    assert drv is not None
    ch = board.board_file.wiring.meter
    board.apply_inputs(v[:1])
    flip = [0]

    def read_same() -> None:
        board.read_nodes(1)

    def read_new() -> None:
        flip[0] ^= 1
        board.apply_inputs(v[flip[0] : flip[0] + 1])
        board.read_nodes(1)

    def driver_read() -> None:
        drv.read_voltages(ch, 1)

    cases: dict[str, Callable[[], Any]] = {
        "read, sources unchanged": read_same,
        "set inputs + read": read_new,
    }
    if with_driver:
        cases["driver read_voltages only"] = driver_read
    return cases


def bench_reads(arch: str, reads: int, runs: int) -> dict[str, Any]:
    vb = RemoteBoard({"arch": arch, "preset": "reram"}, seed=0)
    out: dict[str, list[tuple[float, float]]] = {}
    try:
        for mode in ("off", "faults", "all"):
            board = _board(vb, mode)
            for name, fn in _read_cases(board, mode == "off").items():
                key = f"{name} [log_exchanges={mode}]"
                out[key] = [_per_call(fn, vb, reads) for _ in range(runs)]
            board.close()
    finally:
        vb.close()
    rows = {}
    for key, vals in out.items():
        wall = statistics.median(w for w, _ in vals)
        own = statistics.median(b for _, b in vals)
        rows[key] = {"wall_ms": 1e3 * wall, "board_ms": 1e3 * own,
                     "overhead_ms": 1e3 * (wall - own)}
    return rows


def _one_run(backend: str, arch: str, steps: int, run: int) -> tuple[float, float, float]:
    """(median s per step, virtual board's own s per step, exchanges per step)."""
    data = load_dataset("mnist-subset")
    cfg, _ = resolve(TrainConfig(arch=arch, nudge="current", epochs=1, seed=run,
                                 train_limit=4 * (steps + 2), test_limit=4))
    rng = np.random.default_rng(run)
    vb: RemoteBoard | None = None
    dev: Any
    if backend == "board":
        vb = RemoteBoard({"arch": arch, "preset": "reram"}, seed=run)
        dev = _board(vb, "faults")
    else:
        dev = open_board("emulator", {"arch": arch, "preset": "reram"}, rng)
    stamps: list[float] = []
    own: list[float] = []
    frames: list[float] = []

    def on_step(_: StepRecord) -> None:
        stamps.append(time.perf_counter())
        own.append(vb.busy_s if vb is not None else 0.0)
        frames.append(float(vb.frames_received) if vb is not None else 0.0)

    try:
        trainer = Trainer(cfg, dev, data, rng, observers=[StepHook(on_step)])
        with tempfile.TemporaryDirectory() as tmp:
            writer = SessionWriter.create(
                Path(tmp) / "run.h5", desc=dev.describe(), layout=trainer.layout(),
                first_checkpoint=trainer.checkpoint(0, 0, np.arange(len(trainer.x_train))),
                config_toml=to_toml(config_to_dict(cfg)), seed=run,
                options=trainer.log_options(),
            )
            trainer.observers.insert(0, SessionRecorder(trainer, writer))
            trainer.run()
            writer.close("completed")
    finally:
        dev.close()
        if vb is not None:
            vb.close()
    # steps 2.. (the first two warm up); the epoch-end evaluation is not a step
    return (float(np.median(np.diff(stamps[1:]))), float(np.median(np.diff(own[1:]))),
            float(np.median(np.diff(frames[1:]))))


def bench_steps(arch: str, steps: int, runs: int) -> dict[str, Any]:
    board = [_one_run("board", arch, steps, r) for r in range(runs)]
    emu = [_one_run("emulator", arch, steps, r)[0] for r in range(runs)]
    wall = statistics.median(b[0] for b in board)
    own = statistics.median(b[1] for b in board)
    return {
        "board_step_ms": 1e3 * wall,
        "virtual_board_own_ms": 1e3 * own,
        "stack_overhead_ms": 1e3 * (wall - own),
        "emulator_step_ms": 1e3 * statistics.median(emu),
        "exchanges_per_step": statistics.median(b[2] for b in board),
    }


def main() -> None:
    """Run the benchmark; print the tables, the comparison and a JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="1568-16-10")
    p.add_argument("--reads", type=int, default=300)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    reads = bench_reads(a.arch, a.reads, a.runs)
    steps = bench_steps(a.arch, a.steps, a.runs)
    print(f"arch {a.arch}: one example's {sum(map(int, a.arch.split('-')[1:]))} free nodes, "
          f"N = 1 sample; medians of {a.runs} runs of {a.reads} reads")
    print(f"{'per read':58s} {'wall ms':>8s} {'board ms':>9s} {'stack ms':>9s}")
    for k, r in reads.items():
        print(f"{k:58s} {r['wall_ms']:8.3f} {r['board_ms']:9.3f} {r['overhead_ms']:9.3f}")
    s = steps
    print(f"\nper EP step (batch 4, 3 phases, current nudges, pulses, session file; medians of "
          f"{a.runs} runs of {a.steps} steps)")
    print(f"  board backend    {s['board_step_ms']:8.2f} ms  ({s['exchanges_per_step']:.0f} "
          f"exchanges; virtual board's own work {s['virtual_board_own_ms']:.2f} ms)")
    print(f"  stack overhead   {s['stack_overhead_ms']:8.2f} ms per step")
    print(f"  emulator backend {s['emulator_step_ms']:8.2f} ms per step (same network)")
    ov = reads["read, sources unchanged [log_exchanges=faults]"]["overhead_ms"] * 1e-3
    ov_set = reads["set inputs + read [log_exchanges=faults]"]["overhead_ms"] * 1e-3
    print("\nstack overhead per read vs the fastest real instrument reads of one layer "
          "(docs/devices.md §5.2):")
    print(f"  ours: {1e3 * ov:.3f} ms per read ({1e3 * ov_set:.3f} ms with new input levels)")
    for name, lo, hi in REFERENCE_S:
        print(f"  {name:50s} {1e3 * lo:8.3f}-{1e3 * hi:<8.3f} ms   overhead = "
              f"{ov / hi:6.2f}-{ov / lo:6.2f} x")
    print(json.dumps({"arch": a.arch, "reads": reads, "steps": steps,
                      "reference_s": REFERENCE_S}))


if __name__ == "__main__":
    main()
