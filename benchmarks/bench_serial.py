"""Round trips of the serial board protocol against the virtual board, without hardware.

The driver (``SerialBoardDriver`` over ``SerialTransport``) talks to a
``VirtualBoard`` over a TCP socket on 127.0.0.1 (``socket://``) and over a
pseudo-terminal (``serial.Serial('/dev/pts/N')``). For each exchange kind the
median wall time of one exchange is reported, with exchanges per second and, for
bulk replies, MB/s; "board" is the virtual board's own time for the same request
(``VirtualBoard.respond`` without I/O: emulator solve and noise), so the rest is
the protocol stack and the link. Prints a table and, last, one JSON line. Usage::

    python benchmarks/bench_serial.py [--arch 64-32-10] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import median_time

from hwloop.board_protocol import (
    Frame,
    ReadMode,
    ReadNodes,
    decode_frame,
    encode_request,
)
from instruments.serial_board import SerialBoardDriver
from simulated_device.virtual_board import VirtualBoard


def run(link: str, arch: str, repeats: int) -> list[dict[str, Any]]:
    vb = VirtualBoard({"arch": arch, "preset": "reram"}, seed=0)
    url = vb.start_pty() if link == "pty" else vb.start_tcp()
    d = SerialBoardDriver.open(url, base_timeout_s=2.0)
    i = d.info
    adc = np.arange(i.n_adc_channels)
    edges = np.arange(i.n_crosspoints)
    d.set_voltages(np.arange(i.n_input_channels), np.linspace(-1, 1, i.n_input_channels))
    big_n = min(i.max_samples, (4 * 1024 * 1024 - 7) // (9 * adc.size + 8))
    cases: list[tuple[str, Callable[[], Any], int, int]] = [
        ("GET_STATE", d.get_state, 0, repeats),
        ("READ_NODES mean, 1 channel, N=1", lambda: d.read_mean([0], 1), 0, repeats),
        (f"READ_NODES mean, {adc.size} ch, N=16", lambda: d.read_mean(adc, 16), 0, repeats),
        (f"READ_NODES samples, {adc.size} ch, N=100", lambda: d.read_voltages(adc, 100),
         100 * (9 * adc.size + 8), repeats),
        (f"READ_NODES samples, {adc.size} ch, N={big_n} (one frame)",
         lambda: d.read_voltages(adc, big_n), big_n * (9 * adc.size + 8), max(3, repeats // 50)),
        ("SET_INPUTS, all channels",
         lambda: d.set_voltages(np.arange(i.n_input_channels), np.zeros(i.n_input_channels)),
         0, repeats),
        (f"READ_CONDUCTANCE, {edges.size} crosspoints", lambda: d.read_conductance(edges, 0.2),
         8 * edges.size, repeats),
        (f"PULSE, {edges.size} crosspoints x 1",
         lambda: d.pulse_many(edges, np.ones(edges.size, dtype=np.int64), 1.0, 1e-6),
         5 * edges.size, max(3, repeats // 10)),
    ]
    rows = []
    for name, fn, nbytes, reps in cases:
        t = median_time(fn, reps, warm_ups=2)
        row: dict[str, Any] = {"link": link, "exchange": name, "median_ms": 1e3 * t,
                               "per_s": 1.0 / t}
        if nbytes:
            row["MB_per_s"] = nbytes / t / 1e6
        if name.startswith("READ_NODES mean") and "1 channel" in name:
            frame: Frame = decode_frame(encode_request(1, ReadNodes([0], 1, ReadMode.MEAN)))
            row["board_ms"] = 1e3 * median_time(lambda f=frame: vb.respond(f), reps, warm_ups=2)
        rows.append(row)
    d.close()
    vb.close()
    return rows


def main() -> None:
    """Run the benchmark and print the table and a JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="64-32-10")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--links", default="socket,pty")
    a = p.parse_args()
    rows: list[dict[str, Any]] = []
    for link in a.links.split(","):
        rows += run(link, a.arch, a.repeats)
    print(f"{'link':7s} {'exchange':48s} {'median ms':>10s} {'per s':>9s} {'MB/s':>7s}"
          f" {'board ms':>9s}")
    for r in rows:
        mb = f"{r['MB_per_s']:.1f}" if "MB_per_s" in r else ""
        bd = f"{r['board_ms']:.3f}" if "board_ms" in r else ""
        print(f"{r['link']:7s} {r['exchange']:48s} {r['median_ms']:10.3f} {r['per_s']:9.0f}"
              f" {mb:>7s} {bd:>9s}")
    print(json.dumps({"arch": a.arch, "rows": rows}))


if __name__ == "__main__":
    main()
