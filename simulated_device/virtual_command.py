"""``hwloop virtual-board``: serve virtual instruments for a board file, until Ctrl-C.

Two kinds:

* ``--kind serial``: a :class:`~simulated_device.virtual_board.VirtualBoard` (the
  hwloop serial board protocol) on a TCP port or a pseudo-terminal; it prints
  ``export HWLOOP_BOARD_URL=...`` for ``examples/boards/virtual-serial.toml``;
* ``--kind scpi``: a :class:`~simulated_device.virtual_scpi.VirtualScpiBench` (2600B
  SMU with one channel per input, output and bias node, DAQ6510, 707B matrix and a
  pulsing SMU) on four TCP ports; it prints ``export HWLOOP_SMU_RESOURCE=...`` and
  the three others for ``examples/boards/virtual-scpi.toml``.

Both sit on the emulator (``--arch``, ``--preset``, ``--seed``: the same network and
device draws as ``hwloop train --backend emulator`` with that seed). With
``--board-template FILE --write-board OUT`` the template's ``${VAR}`` are filled in
and OUT is a ready board file. ``--json`` prints one JSON line instead of the text.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.errors import ConfigError
from hwloop.layered import parse_arch

__all__ = ["register_virtual_board", "run_virtual_board"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

SCPI_ENV = {
    "smu": "HWLOOP_SMU_RESOURCE",
    "daq": "HWLOOP_DAQ_RESOURCE",
    "matrix": "HWLOOP_MATRIX_RESOURCE",
    "xsmu": "HWLOOP_XSMU_RESOURCE",
}
"""Environment variable of each virtual SCPI instrument's VISA resource."""
SERIAL_ENV = "HWLOOP_BOARD_URL"
"""Environment variable of the virtual serial board's URL."""


def fill_template(text: str, env: dict[str, str], source: str) -> str:
    """Replace ``${NAME}`` in ``text`` by ``env[NAME]`` (every name must be known)."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            raise ConfigError(
                f"board template {source} uses ${{{name}}}, which this virtual bench does "
                f"not provide ({', '.join(sorted(env))}); use the template of this --kind"
            )
        return env[name]

    return _ENV.sub(repl, text)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    sizes = parse_arch(args.arch)
    opts: dict[str, Any] = {"arch": "-".join(map(str, sizes)), "preset": args.preset}
    if args.read_noise_v is not None:
        opts["read_noise_v"] = args.read_noise_v
    if args.sweeps is not None:
        opts["n_sweeps"] = args.sweeps
    return opts


def run_virtual_board(args: argparse.Namespace) -> int:
    """Start the virtual instruments, print where they are, serve until Ctrl-C/SIGTERM."""
    opts = _options(args)
    closers: list[Any] = []
    env: dict[str, str]
    if args.kind == "serial":
        from simulated_device.virtual_board import VirtualBoard

        vb = VirtualBoard(opts, seed=args.seed)
        closers.append(vb.close)
        try:
            url = vb.start_pty() if args.pty else vb.start_tcp(args.port, args.host)
        except OSError as exc:
            vb.close()
            raise ConfigError(f"cannot serve the virtual board: {exc}") from None
        env = {SERIAL_ENV: url}
        what = f"virtual serial board {opts['arch']} ({args.preset}, seed {args.seed})"
    else:
        from simulated_device.bench_network import BenchNetwork
        from simulated_device.virtual_scpi import (
            DAQ_PER_SLOT,
            PER_SLOT,
            VirtualScpiBench,
        )

        if args.pty:
            raise ConfigError("--pty is for --kind serial; the SCPI bench serves TCP sockets")
        net = BenchNetwork(opts, np.random.default_rng(args.seed))
        d = net.desc
        n_ch = len(d.input_nodes) + len(d.output_nodes) + len(d.bias_nodes)
        if n_ch > 128 or len(d.free_nodes) > 2 * DAQ_PER_SLOT or d.n_edges > 6 * PER_SLOT:
            raise ConfigError(
                f"arch {opts['arch']} needs {n_ch} SMU channels, {len(d.free_nodes)} DAQ "
                f"channels and {d.n_edges} crosspoints; the SCPI bench has at most 128, "
                f"{2 * DAQ_PER_SLOT} and {6 * PER_SLOT}: use a smaller --arch (e.g. 32-8-2)"
            )
        bench = VirtualScpiBench(net, bias_channels=True)
        bench.start()
        closers.append(bench.stop)
        env = {SCPI_ENV[k]: v for k, v in bench.resources.items()}
        what = (
            f"virtual SCPI bench {opts['arch']} ({args.preset}, seed {args.seed}): "
            f"{n_ch} SMU channels, {len(d.free_nodes)} DAQ channels, {d.n_edges} crosspoints"
        )
    # SIGINT/SIGTERM are caught before the addresses go out: a Ctrl-C right after them
    # (a script that read them) still stops cleanly, with exit code 0
    done = threading.Event()
    old_int = signal.signal(signal.SIGINT, lambda signum, frame: done.set())
    old_term = signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    try:
        board_file = None
        if args.write_board is not None:
            if args.board_template is None:
                raise ConfigError("--write-board needs --board-template (e.g. "
                                  "examples/boards/virtual-serial.toml)")
            tpl = Path(args.board_template)
            try:
                text = tpl.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"board template {tpl} cannot be read: {exc}") from None
            out = Path(args.write_board)
            out.write_text(fill_template(text, env, str(tpl)), encoding="utf-8")
            board_file = str(out)
        if args.json:
            print(json.dumps({"kind": args.kind, "what": what, "env": env,
                              "board_file": board_file}), flush=True)
        else:
            print(f"hwloop virtual-board: {what}")
            for k, v in env.items():
                print(f"export {k}={v}")
            if board_file is not None:
                print(f"board file: {board_file}")
            print("serving until Ctrl-C", flush=True)
        while not done.wait(0.2):
            pass
        print("hwloop virtual-board: stopped", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        for c in reversed(closers):
            c()
    return 0


def register_virtual_board(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop virtual-board``."""
    p = sub.add_parser(
        "virtual-board",
        help="serve virtual instruments (serial board or SCPI bench) for a board file",
        description="Serve a virtual hwloop serial board or a virtual SCPI bench on the "
        "emulator, print the address(es) to export for examples/boards/*.toml, and serve "
        "until Ctrl-C.",
    )
    p.add_argument("--kind", choices=("serial", "scpi"), default="serial",
                   help="serial board (hwloop protocol) or SCPI bench (2600B, DAQ6510, 707B)")
    p.add_argument("--arch", default="1568-16-10", help="layer sizes, e.g. 1568-16-10")
    p.add_argument("--preset", default="reram", help="device preset (ideal, reram)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the bench (device draws, noise): as --seed of hwloop train")
    p.add_argument("--read-noise-v", type=float, default=None, help="read noise per sample, V")
    p.add_argument("--sweeps", type=int, default=None, help="emulator sweeps per settle")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (serial)")
    p.add_argument("--port", type=int, default=0, help="TCP port (serial; 0: a free one)")
    p.add_argument("--pty", action="store_true", help="serial: serve on a pseudo-terminal")
    p.add_argument("--board-template", default=None,
                   help="board file whose ${VAR} addresses are filled in (with --write-board)")
    p.add_argument("--write-board", default=None, help="write the filled board file here")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=run_virtual_board)
