"""``hwloop monitor`` and ``hwloop report``."""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from pathlib import Path

from hwloop.errors import ConfigError
from protocols.monitor.page import render_page
from protocols.monitor.snapshot import (
    RunWatcher,
    SweepWatcher,
    disable_hdf5_file_locking,
    watcher_for,
)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _watcher(args: argparse.Namespace) -> RunWatcher | SweepWatcher:
    p = Path(args.target)
    if not p.exists():
        raise ConfigError(f"{p} not found; give a session file (RUN.h5) or a sweep directory")
    if p.is_dir() and not (p / "index.json").exists():
        raise ConfigError(f"{p} is a directory without index.json; give a sweep directory "
                          "written by 'hwloop sweep --out' or a session file")
    if not 0 < args.limit_drop < 1:
        raise ConfigError(f"--limit-drop {args.limit_drop} must be a fraction in (0, 1), "
                          "e.g. 0.02")
    disable_hdf5_file_locking()  # before the first read: never block the trainer's writes
    return watcher_for(p, stall_after_s=args.stall_after, limit_drop=args.limit_drop)


def _check_first_read(w: RunWatcher | SweepWatcher) -> None:
    """A run file that cannot be read at all is an error now, not a page of errors."""
    doc = w.snapshot()
    if doc.get("kind") == "run" and doc.get("empty"):
        raise ConfigError(str(doc.get("error") or f"{w.path} cannot be read"))


def run_monitor(args: argparse.Namespace) -> int:
    """Execute ``hwloop monitor``: serve the page until Ctrl-C."""
    from protocols.monitor.server import MonitorServer, SnapshotCache

    if args.interval <= 0:
        raise ConfigError(f"--interval {args.interval} must be > 0 s, e.g. 2")
    if args.stall_after <= 0:
        raise ConfigError(f"--stall-after {args.stall_after} must be > 0 s, e.g. 60")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} must be in 0..65535 (0: any free port)")
    if args.bind not in LOCAL_HOSTS and not args.allow_remote:
        raise ConfigError(f"--bind {args.bind} would let other machines read the run; add "
                          "--allow-remote to do that on purpose, or use 127.0.0.1")
    if args.nice > 0:
        os.nice(args.nice)  # yield the CPU to the trainer it watches
    w = _watcher(args)
    _check_first_read(w)
    try:
        srv = MonitorServer((args.bind, args.port), SnapshotCache(w, args.interval),
                            title=f"hwloop monitor: {Path(args.target).name}",
                            interval_s=args.interval)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.bind}:{args.port} ({exc.strerror or exc}); "
                          "choose another --port (0: any free port)") from None
    with srv:
        if args.bind not in LOCAL_HOSTS:
            print(f"hwloop monitor: warning: listening on {args.bind}: anyone who can reach "
                  "this machine can read the run (read-only, no authentication)",
                  file=sys.stderr)
        print(f"hwloop monitor: {srv.url}  (watching {args.target}; Ctrl-C stops)", flush=True)
        if args.open:
            webbrowser.open(srv.url)
        try:
            srv.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            print("hwloop monitor: stopped", file=sys.stderr)
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Execute ``hwloop report``: write the self-contained HTML file."""
    w = _watcher(args)
    _check_first_read(w)
    doc = w.snapshot(force=True)
    target = Path(args.target)
    out = Path(args.out) if args.out else (
        target / "report.html" if target.is_dir() else target.with_suffix(".html"))
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name like report.html")
    if not out.parent.exists():
        raise ConfigError(f"--out {out}: directory {out.parent} does not exist; create it first")
    page = render_page(title=f"hwloop report: {target.name}", mode="report", data=doc)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    print(f"hwloop report: wrote {out} ({len(page.encode()) / 1024:.0f} kB)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN.h5|SWEEP_DIR",
                   help="a session file (also one still being written) or a sweep directory")
    p.add_argument("--stall-after", type=float, default=60.0, metavar="S",
                   help="show a 'running' file not written for S seconds as crashed "
                   "(default 60)")
    p.add_argument("--limit-drop", type=float, default=0.02,
                   help="sweeps: accuracy loss (fraction) that marks the measured limit "
                   "(default 0.02, as hwloop sweep)")


def register_monitor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop monitor``."""
    p = sub.add_parser(
        "monitor", help="live read-only web page of a run or a sweep, from its files",
        description="Serve a read-only page that follows a session file (or a sweep "
        "directory) while it is written: status, rate and ETA, loss and accuracy, "
        "conductances, read noise, programming, events, board and configuration. Reads "
        "only the files (HDF5 SWMR reader, re-opened at each refresh), so it keeps working "
        "across a crash and a 'hwloop resume'. Listens on 127.0.0.1 unless told otherwise.",
    )
    _common(p)
    p.add_argument("--port", type=int, default=8765,
                   help="TCP port (default 8765; 0: any free port, printed)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; another needs --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow --bind to a non-loopback address (prints a warning)")
    p.add_argument("--interval", type=float, default=5.0, metavar="S",
                   help="refresh interval of the page and shortest time between reads, s "
                   "(default 5)")
    p.add_argument("--open", action="store_true", help="open the page in the web browser")
    p.add_argument("--nice", type=int, default=10, choices=range(0, 20), metavar="0..19",
                   help="lower the monitor's CPU priority by this much (default 10: a trainer "
                   "on the same machine keeps the CPU; 0: unchanged)")
    p.set_defaults(func=run_monitor)


def register_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop report``."""
    p = sub.add_parser(
        "report", help="one self-contained HTML report of a run or a sweep",
        description="Write the monitor's views of a session file or a sweep directory as "
        "one HTML file with every script, style and number inside (opens without network).",
    )
    _common(p)
    p.add_argument("--out", default=None,
                   help="output file (default RUN.html next to the run, SWEEP_DIR/report.html)")
    p.set_defaults(func=run_report)
