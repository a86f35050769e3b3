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
import copy
import json
import re
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.board_protocol import Command
from hwloop.errors import ConfigError
from hwloop.layered import parse_arch
from simulated_device.virtual_faults import SCPI_KINDS, SERIAL_KINDS, FaultRule, parse_fault

__all__ = ["register_virtual_board", "run_virtual_board"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

SCPI_ENV = {
    "smu": "HWLOOP_SMU_RESOURCE",
    "daq": "HWLOOP_DAQ_RESOURCE",
    "matrix": "HWLOOP_MATRIX_RESOURCE",
    "xsmu": "HWLOOP_XSMU_RESOURCE",
    "k2400": "HWLOOP_K2400_RESOURCE",
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


def _fault_rules(args: argparse.Namespace) -> list[tuple[FaultRule, str | None]]:
    """The ``--fault`` rules of this ``--kind`` (a one-line ConfigError for a bad one)."""
    kinds = SERIAL_KINDS if args.kind == "serial" else SCPI_KINDS
    out = []
    for k, spec in enumerate(args.fault or []):
        try:
            rule, instrument = parse_fault(spec, kinds, seed=args.seed * 1000 + k)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if args.kind == "serial":
            if instrument is not None:
                raise ConfigError(f"--fault {spec!r}: instrument= is for --kind scpi; the "
                                  "serial board is one instrument")
            names = {c.name for c in Command}
            if rule.match != "*" and rule.match.upper() not in names:
                raise ConfigError(f"--fault {spec!r}: unknown command {rule.match!r}; use one "
                                  f"of {', '.join(sorted(names))} or *")
        elif instrument is not None and instrument not in SCPI_ENV:
            raise ConfigError(f"--fault {spec!r}: unknown instrument {instrument!r}; use one "
                              f"of {', '.join(SCPI_ENV)}")
        out.append((rule, instrument))
    if args.watchdog_s is not None and args.kind != "serial":
        raise ConfigError("--watchdog-s is for --kind serial (the board protocol's host "
                          "watchdog)")
    return out


def run_virtual_board(args: argparse.Namespace) -> int:
    """Start the virtual instruments, print where they are, serve until Ctrl-C/SIGTERM."""
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port; give 0 (a free one) to 65535")
    opts = _options(args)
    rules = _fault_rules(args)
    closers: list[Any] = []
    env: dict[str, str]
    if args.kind == "serial":
        from simulated_device.virtual_board import FaultConfig, VirtualBoard

        try:
            faults = FaultConfig(rules=tuple(r for r, _ in rules), watchdog_s=args.watchdog_s)
        except ConfigError as exc:
            raise ConfigError(f"--watchdog-s: {exc}") from None
        vb = VirtualBoard(opts, seed=args.seed, faults=faults)
        closers.append(vb.close)

        def summary() -> str:
            fired = _fired(r for r, _ in rules)
            return (f"faults fired: {fired}; watchdog trips {vb.watchdog_trips}, "
                    f"disconnects {vb.disconnects}, reboots {vb.reboots}; "
                    f"{'safe' if vb.is_safe else 'NOT safe'} at exit")
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
        for rule, instrument in rules:
            for name in SCPI_ENV if instrument is None else (instrument,):
                bench.faults(name).rules.append(copy.deepcopy(rule))
        bench.start()
        closers.append(bench.stop)

        def summary() -> str:
            fired = _fired(r for n in SCPI_ENV for r in bench.faults(n).rules)
            return f"faults fired: {fired}; {'safe' if bench.is_safe else 'NOT safe'} at exit"
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
        if rules:
            what += f"; {len(rules)} fault rule(s): " + "; ".join(args.fault)
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
        print(f"hwloop virtual-board: stopped; {summary()}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        for c in reversed(closers):
            c()
    return 0


def _fired(rules: Iterable[FaultRule]) -> str:
    counts: dict[str, int] = {}
    for r in rules:
        counts[r.kind] = counts.get(r.kind, 0) + r.fired
    return ", ".join(f"{k} x{n}" for k, n in counts.items()) or "none"


def _fault_help() -> str:
    lines = ["fault kinds, --kind serial:"]
    lines += [f"  {k:16s} {v}" for k, v in SERIAL_KINDS.items()]
    lines += ["fault kinds, --kind scpi:"]
    lines += [f"  {k:16s} {v}" for k, v in SCPI_KINDS.items()]
    lines += [
        "examples:",
        "  hwloop virtual-board --fault garble,command=READ_NODES,count=5,rate=0.2",
        "  hwloop virtual-board --fault stop,after=200 --watchdog-s 1",
        "  hwloop virtual-board --kind scpi --arch 32-8-2 --fault timeout,instrument=daq,"
        "command=INIT,count=2",
    ]
    return "\n".join(lines)


def register_virtual_board(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop virtual-board``."""
    p = sub.add_parser(
        "virtual-board",
        help="serve virtual instruments (serial board or SCPI bench) for a board file",
        description="Serve a virtual hwloop serial board or a virtual SCPI bench on the "
        "emulator, print the address(es) to export for examples/boards/*.toml, and serve "
        "until Ctrl-C. --fault injects faults per command to rehearse error handling.",
        epilog=_fault_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument(
        "--fault", action="append", default=None, metavar="KIND[,key=value...]",
        help="inject a fault (repeatable): KIND then keys command= (serial: a protocol "
        "command such as READ_NODES; scpi: text in the command line; * = any, the default), "
        "count= (times it fires, default 1; inf = no limit), rate= (probability per matching "
        "exchange, default 1), after= (exchanges of that instrument passed first, default 0), "
        "value= (delay s, pulses before a trip, error code), instrument= (scpi: smu, daq, "
        "matrix, xsmu, k2400; default all). Kinds below.",
    )
    p.add_argument(
        "--watchdog-s", type=float, default=None, metavar="S",
        help="serial: host watchdog: no valid frame for S seconds with an output on puts the "
        "board in its safe state (docs/board-protocol.md); default off",
    )
    p.set_defaults(func=run_virtual_board)
