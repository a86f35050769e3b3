"""Cost of watching a run: ``hwloop train`` with and without ``hwloop monitor`` polling it.

DRN-XS (1568-100-10) on the emulator, batch 32, N = 10 raw read samples per phase (read
noise 10 mV: the monitor's read-noise view reads every raw sample of its window),
checkpoints every 10 steps (the conductance view re-reads each new one). Each "with"
run starts ``hwloop monitor RUN.h5 --interval I`` as soon as the trainer has created
the file and a client that fetches ``/api/snapshot`` every I seconds, as an open page
does; the "without" runs have neither. Runs alternate (without, with, without, ...),
each in a fresh process pinned to one BLAS thread. The figure is the training time the
trainer itself records (sum of ``time_s`` of ``/epochs``: the steps, evaluation
excluded) and the process wall time; on a shared, busy machine these drift more between
runs than the monitor costs, so two load-independent figures follow: within each "with"
run, the extra duration of the steps that overlap a refresh (from the steps' own start
times and durations in the file) as a fraction of the training time, and the CPU time of
the monitor process against the trainer's. Prints a table and, last, one JSON line. Usage::

    python benchmarks/bench_monitor.py [--repeats 5] [--epochs 20] [--interval 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from hwloop.sessionlog import open_session

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_cmd(out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "hwloop.cli", "train", "--arch", "1568-100-10",
            "--batch-size", "32", "--train-limit", "1600", "--test-limit", "200",
            "--samples", "10", "--read-noise", "0.01", "--epochs", str(epochs),
            "--checkpoint-every", "10", "--seed", "1", "--out", str(out), "--overwrite",
            "--quiet"]


def wait_for(cond: object, timeout_s: float) -> bool:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def one_run(out: Path, epochs: int, monitor: bool, interval_s: float) -> dict[str, float]:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    trainer = subprocess.Popen(train_cmd(out, epochs), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    mon = None
    polls = [0]
    cpu_at_first_poll = [0.0]
    windows: list[tuple[float, float]] = []
    stop = threading.Event()
    try:
        if monitor:
            if not wait_for(lambda: out.exists() or trainer.poll() is not None, 120):
                raise RuntimeError("the trainer did not create its file")
            mon = subprocess.Popen(
                [sys.executable, "-m", "hwloop.cli", "monitor", str(out), "--port", "0",
                 "--interval", str(interval_s)],
                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            assert mon.stdout is not None
            line = mon.stdout.readline()
            url = line.split()[2] if line.startswith("hwloop monitor:") else ""
            if not url:
                raise RuntimeError(f"monitor did not start: {line!r}")

            def poll() -> None:
                while not stop.is_set():
                    try:
                        t_a = time.time()
                        with urllib.request.urlopen(url + "api/snapshot", timeout=60) as r:
                            r.read()
                        windows.append((t_a, time.time()))
                        polls[0] += 1
                        if polls[0] == 1:  # the monitor's CPU time once it is serving
                            cpu_at_first_poll[0] = proc_cpu_s(mon.pid)
                    except OSError:
                        pass
                    stop.wait(interval_s)

            threading.Thread(target=poll, daemon=True).start()
        _, status, ru = os.wait4(trainer.pid, 0)
        trainer.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        train_cpu = ru.ru_utime + ru.ru_stime
    finally:
        stop.set()
        for p in (mon, trainer):
            if p is not None and p.poll() is None:
                p.terminate()
    mon_cpu = mon_steady = 0.0
    if mon is not None:
        _, _, ru = os.wait4(mon.pid, 0)
        mon.returncode = 0
        mon_cpu = ru.ru_utime + ru.ru_stime
        mon_steady = mon_cpu - cpu_at_first_poll[0]
    if trainer.returncode != 0:
        raise RuntimeError(f"hwloop train exited with {trainer.returncode}")
    with open_session(out) as sf:
        train_s = float(np.sum(sf.epochs()["time_s"]))
        steps = sf.steps_done
        idx = sf.index()
    # within the run: steps that overlap a refresh against the others (paired, so the
    # machine's load, which drifts between runs, cancels)
    t0 = idx["t_start_unix_s"]
    dur = idx["duration_s"]
    hit = np.zeros(len(t0), dtype=bool)
    for a, b in windows[1:]:  # the first refresh reads the whole file once
        hit |= (t0 < b) & (t0 + dur > a)
    paired = (float(np.mean(dur[hit]) - np.mean(dur[~hit])) * int(hit.sum()) / float(dur.sum())
              if hit.any() and (~hit).any() else float("nan"))
    return {"train_s": train_s, "wall_s": wall, "steps": steps, "polls": polls[0],
            "paired_overhead": paired, "steps_during_refresh": float(hit.sum()),
            "train_cpu_s": train_cpu, "monitor_cpu_s": mon_cpu, "monitor_steady_cpu_s": mon_steady}


def proc_cpu_s(pid: int) -> float:
    """User + system CPU time of a running process, s (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs of each kind (default 5)")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of 50 steps (default 20)")
    ap.add_argument("--interval", type=float, default=5.0,
                    help="monitor refresh and client polling interval, s (default 5, the "
                    "monitor's default)")
    args = ap.parse_args()
    rows: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.h5"
        one_run(out, 1, False, args.interval)  # warm the caches (imports, dataset)
        for k in range(args.repeats):
            for mon in (False, True) if k % 2 == 0 else (True, False):
                r = one_run(out, args.epochs, mon, args.interval)
                rows[mon].append(r)
                print(f"run {k} {'with' if mon else 'without'} monitor: training "
                      f"{r['train_s']:.2f} s, wall {r['wall_s']:.2f} s, {r['steps']:.0f} "
                      f"steps, {r['polls']:.0f} polls", file=sys.stderr)
    keys = ("train_s", "wall_s", "train_cpu_s", "monitor_cpu_s", "monitor_steady_cpu_s",
            "polls")
    med = {m: {key: statistics.median(r[key] for r in rows[m]) for key in keys} for m in rows}
    over_train = med[True]["train_s"] / med[False]["train_s"] - 1
    over_wall = med[True]["wall_s"] / med[False]["wall_s"] - 1
    paired = statistics.median(r["paired_overhead"] for r in rows[True])
    cpu_ratio = med[True]["monitor_cpu_s"] / med[True]["train_cpu_s"]
    steady_ratio = med[True]["monitor_steady_cpu_s"] / med[True]["train_cpu_s"]
    print(f"{'':28s} {'training (s)':>12s} {'wall (s)':>10s} {'trainer CPU (s)':>16s}")
    for m in (False, True):
        print(f"{'with monitor' if m else 'without monitor':28s} {med[m]['train_s']:12.2f} "
              f"{med[m]['wall_s']:10.2f} {med[m]['train_cpu_s']:16.2f}")
    print(f"{'overhead (medians)':28s} {100 * over_train:11.1f}% {100 * over_wall:9.1f}%")
    print(f"within the runs with the monitor: steps during a refresh cost {100 * paired:.2f} % "
          "of the training time more than the others (median over runs)")
    print(f"monitor CPU: {med[True]['monitor_cpu_s']:.2f} s in all "
          f"({100 * cpu_ratio:.1f} % of the trainer's), {med[True]['monitor_steady_cpu_s']:.2f} s "
          f"once serving ({100 * steady_ratio:.1f} %; "
          f"{1000 * med[True]['monitor_steady_cpu_s'] / max(1, med[True]['polls'] - 1):.0f} ms "
          f"per refresh); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(json.dumps({
        "benchmark": "monitor_overhead", "arch": "1568-100-10", "batch": 32, "samples": 10,
        "steps": rows[False][0]["steps"], "repeats": args.repeats, "interval_s": args.interval,
        **{f"{k}_without": med[False][k] for k in ("train_s", "wall_s", "train_cpu_s")},
        **{f"{k}_with": med[True][k] for k in keys},
        "overhead_train": over_train, "overhead_wall": over_wall, "overhead_paired": paired,
        "monitor_cpu_fraction": cpu_ratio, "monitor_steady_cpu_fraction": steady_ratio,
        "polls_median": statistics.median(r["polls"] for r in rows[True]),
        "load_average": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
