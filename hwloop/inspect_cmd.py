"""``hwloop inspect RUN.h5``: what a session file holds, and whether it is intact.

Reads only; works on files left behind by a killed writer (opened in SWMR-read
mode) and never changes the file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from typing import Any

import h5py
import numpy as np

from hwloop.sessionlog import (
    READ_ERRORS,
    SessionError,
    SessionFile,
    check_file,
    first_line,
    missing_objects,
    open_session,
)


def unreadable_datasets(f: h5py.File) -> list[str]:
    """Datasets whose header or first and last rows cannot be read (damaged metadata)."""
    bad: list[str] = []

    def check(name: str) -> None:
        try:
            obj = f[name]
            if isinstance(obj, h5py.Group):
                for k in obj:
                    check(f"{name}/{k}")
                return
            if obj.shape and obj.shape[0]:
                obj[0]
                obj[obj.shape[0] - 1]
            else:
                obj[()]
        except READ_ERRORS:
            bad.append("/" + name)

    try:
        for k in f:
            check(k)
    except READ_ERRORS:
        bad.append("/")
    return bad


def session_report(sf: SessionFile, *, full: bool = False) -> dict[str, Any]:
    """Everything ``hwloop inspect`` prints, as a JSON-able dict.

    Every step's checksum is verified when that takes at most a few seconds per GB
    (:data:`hwloop.sessionlog.reader.VERIFY_S_PER_GB`), else the last steps within that
    budget (``steps_verified`` says how many); ``full`` verifies all however long.
    """
    integrity, verified = sf.integrity_report(full=full)
    idx = sf.index()
    epochs = sf.epochs()
    ck = sf.checkpoints()
    events = sf.events()
    last = idx[-1] if len(idx) else None
    a = sf.attrs
    return {
        "path": str(sf.path),
        "schema_version": int(a["schema_version"]),
        "run_id": str(a["run_id"]),
        "hwloop_version": str(a["hwloop_version"]),
        "git_commit": str(a.get("git_commit", "")),
        "status": sf.status,
        "reason": str(a.get("reason", "")),
        "started_utc": str(a.get("started_utc", "")),
        "stopped_utc": str(a.get("stopped_utc", "")),
        "closed_cleanly": sf.clean,
        "seed": int(a["seed"]),
        "resumes": int(a.get("resumes", 0)),
        "config_toml": str(a["config_toml"]),
        "board": sf.description.summary(),
        "log_options": sf.options.__dict__,
        "layout": sf.layout.__dict__,
        "steps_done": sf.steps_done,
        "last_complete_step": None if last is None else int(last["step"]),
        "last_step_epoch": None if last is None else int(last["epoch"]),
        "last_step_batch": None if last is None else int(last["batch"]),
        "epochs_done": len(epochs),
        "epochs": {name: [float(v) for v in epochs[name]] for name in epochs.dtype.names or ()},
        "step_loss": [float(v) for v in idx["loss"]],
        "checkpoints": [int(r["steps_done"]) for r in ck],
        "events": events,
        "integrity": integrity,
        "steps_verified": verified,
    }


def _curve(values: list[float], width: int = 40) -> str:
    """A one-line text sparkline of ``values``."""
    if not values:
        return ""
    bars = " .:-=+*#%@"
    v = np.asarray(values, dtype=float)
    if len(v) > width:
        v = np.array([c.mean() for c in np.array_split(v, width)])
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    span = hi - lo if hi > lo else 1.0
    return "".join(bars[round((x - lo) / span * (len(bars) - 1))] for x in v)


def format_report(r: dict[str, Any]) -> str:
    """The human-readable report."""
    b = r["board"]
    lines = [
        f"session {r['path']}  (schema v{r['schema_version']}, run {r['run_id'][:12]})",
        f"  status      {r['status']}" + (f" ({r['reason']})" if r["reason"] else ""),
        f"  started     {r['started_utc']}   stopped {r['stopped_utc'] or '-'}",
        f"  written by  hwloop {r['hwloop_version']} {r['git_commit'][:12]}  "
        f"seed {r['seed']}  resumes {r['resumes']}",
        f"  board       {b['name']} ({b['backend']}): {b['n_inputs']} inputs, "
        f"{b['n_hidden']} hidden, {b['n_outputs']} outputs, {b['n_edges']} edges",
        f"  logging     samples={r['log_options']['samples']} "
        f"updates={r['log_options']['updates']} programming={r['log_options']['programming']} "
        f"checkpoint every {r['log_options']['checkpoint_every']} step(s)",
    ]
    if r["last_complete_step"] is None:
        lines.append("  steps       none complete")
    else:
        lines.append(
            f"  steps       {r['steps_done']} complete; last complete step "
            f"{r['last_complete_step']} (epoch {r['last_step_epoch'] + 1}, batch "
            f"{r['last_step_batch'] + 1})"
        )
    lines.append(f"  checkpoints after steps {r['checkpoints'][-5:]} ({len(r['checkpoints'])})")
    ep = r["epochs"]
    if r["epochs_done"]:
        lines.append("  epoch  train loss  train acc  test acc   time")
        for i in range(r["epochs_done"]):
            lines.append(
                f"  {int(ep['epoch'][i]):5d}  {ep['train_loss'][i]:10.4f}  "
                f"{100 * ep['train_accuracy'][i]:8.2f} %  {100 * ep['test_accuracy'][i]:6.2f} %"
                f"  {ep['time_s'][i]:6.1f} s"
            )
    if r["step_loss"]:
        lines.append(f"  step loss   {_curve(r['step_loss'])}  (first {r['step_loss'][0]:.4f},"
                     f" last {r['step_loss'][-1]:.4f})")
    for e in r["events"][-6:]:
        t = _dt.datetime.fromtimestamp(e["t_unix_s"], _dt.UTC).strftime("%H:%M:%S")
        lines.append(f"  event {t} step {e['step']:>6} {e['kind']:<8} {e['message']}")
    n, k = r["steps_done"], r["steps_verified"]
    checked = (f"checksums of all {n} steps verified" if k == n else
               f"checksums of the last {k} of {n} steps verified; 'hwloop inspect --full' "
               "verifies all")
    if r["integrity"]:
        lines.append("  integrity   PROBLEMS: " + "; ".join(r["integrity"]) + f" ({checked})")
    else:
        lines.append(f"  integrity   ok ({checked})")
    lines.append("  configuration:")
    lines += ["    " + ln for ln in r["config_toml"].strip().splitlines()]
    return "\n".join(lines)


def read_report(path: str, *, full: bool = False) -> dict[str, Any]:
    """Open ``path`` and build :func:`session_report`.

    Raises:
        SessionError: the file cannot be used at all (missing, not HDF5, not a session,
            newer schema, required objects missing, metadata damaged); one line that
            names the problem.
    """
    check_file(path)
    try:
        with open_session(path) as sf:
            missing = missing_objects(sf.h5, sf.options.samples)
            if missing:
                raise SessionError(
                    f"{path} is an incomplete session file: {', '.join(missing)} missing "
                    "(the file was edited or not written by 'hwloop train')"
                )
            try:
                return session_report(sf, full=full)
            except READ_ERRORS as exc:
                bad = unreadable_datasets(sf.h5)
                what = ", ".join(bad[:6]) + (" ..." if len(bad) > 6 else "") or "a dataset"
                raise SessionError(
                    f"{path} is damaged: {what} cannot be read ({first_line(exc)})"
                ) from None
    except RuntimeError as exc:  # h5py's error for some metadata damage found while opening
        raise SessionError(
            f"{path} is damaged: its metadata cannot be read ({first_line(exc)})"
        ) from None


def run_inspect(args: argparse.Namespace) -> int:
    """Execute ``hwloop inspect``; exit 1 when the integrity check finds problems."""
    report = read_report(args.run, full=args.full)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 1 if report["integrity"] else 0


def register_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop inspect``."""
    p = sub.add_parser(
        "inspect",
        help="show a session file: configuration, board, steps, metrics, status, integrity",
        description="Summarise RUN.h5 (read-only; also files of a killed run).",
    )
    p.add_argument("run", help="session file (.h5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--full", action="store_true",
                   help="verify every step's checksum however long it takes (by default all "
                   "are verified when that takes at most a few seconds per GB)")
    p.set_defaults(func=run_inspect)
