"""``hwloop inspect RUN.h5``: what a session file holds, and whether it is intact.

Reads only; works on files left behind by a killed writer (opened in SWMR-read
mode) and never changes the file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hwloop.sessionlog import SessionError, SessionFile, open_session

REQUIRED = (
    "device",
    "device/node_names",
    "device/node_roles",
    "device/node_clamps",
    "device/edge_nodes",
    "device/bias_nodes",
    "steps",
    "steps/index",
    "steps/free_nodes",
    "steps/examples",
    "steps/n_samples",
    "steps/inputs_v",
    "steps/betas_s",
    "steps/nudge_values",
    "steps/update_b_a",
    "programming",
    "programming/records",
    "epochs",
    "events",
    "checkpoints",
    "checkpoints/index",
    "checkpoints/order",
    "checkpoints/conductances_s",
    "checkpoints/biases_a",
)
"""Objects every schema-1 session file holds (docs/session-format.md, "present: always")."""

REQUIRED_BY_MODE = {
    "raw": ("steps/samples_v", "steps/flags", "steps/sample_time_s"),
    "summary": ("steps/mean_v", "steps/sem_v", "steps/flags_any"),
}
"""The per-step sample datasets of each ``samples`` logging mode."""

_READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)
"""What h5py raises for a damaged or incomplete file."""


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (KeyError's without its quotes)."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = str(msg).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_file(path: str | Path) -> None:
    """Refuse a truncated HDF5 file, or a cleanly closed one HDF5 cannot open.

    Both would otherwise reach the SWMR-read fallback of
    :func:`hwloop.sessionlog.open_session`, meant for a killed writer's file: HDF5
    skips the end-of-file check there (a truncated file is then taken for a crashed
    one, and ``hwloop resume`` rewrites it) and retries a damaged metadata block with
    doubling sleeps (a hang). A missing or non-HDF5 file is left to ``open_session``.

    Raises:
        SessionError: the file is truncated or cannot be opened; one line.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(48)
        size = p.stat().st_size
    except OSError:
        return
    # superblock version 2 or 3 (what hwloop writes), 8-byte offsets:
    # signature, version, sizes, flags, base address, extension address, end of file
    if head[:8] != _SIGNATURE or len(head) < 36 or head[8] not in (2, 3) or head[9] != 8:
        return
    eof = int.from_bytes(head[28:36], "little")
    if size < eof:
        raise SessionError(
            f"{p} is truncated: {size} of its {eof} bytes are there (an interrupted copy "
            "or a full disk?); copy it again from the original"
        )
    if head[11] == 0:  # closed cleanly: no reason for the SWMR fallback
        try:
            h5py.File(p, "r").close()
        except _READ_ERRORS as exc:
            raise SessionError(
                f"{p} cannot be opened as HDF5 ({_first_line(exc)}); the file is damaged"
            ) from None


def missing_objects(f: h5py.File, samples_mode: str) -> list[str]:
    """The required groups and datasets that ``f`` lacks, as absolute paths."""
    need = (*REQUIRED, *REQUIRED_BY_MODE.get(samples_mode, ()))
    return ["/" + name for name in need if name not in f]


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
        except _READ_ERRORS:
            bad.append("/" + name)

    try:
        for k in f:
            check(k)
    except _READ_ERRORS:
        bad.append("/")
    return bad


def session_report(sf: SessionFile, *, full: bool = False) -> dict[str, Any]:
    """Everything ``hwloop inspect`` prints, as a JSON-able dict."""
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
        "integrity": sf.integrity(full=full),
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
    if r["integrity"]:
        lines.append("  integrity   PROBLEMS: " + "; ".join(r["integrity"]))
    else:
        lines.append("  integrity   ok")
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
            except _READ_ERRORS as exc:
                bad = unreadable_datasets(sf.h5)
                what = ", ".join(bad[:6]) + (" ..." if len(bad) > 6 else "") or "a dataset"
                raise SessionError(
                    f"{path} is damaged: {what} cannot be read ({_first_line(exc)})"
                ) from None
    except RuntimeError as exc:  # h5py's error for some metadata damage found while opening
        raise SessionError(
            f"{path} is damaged: its metadata cannot be read ({_first_line(exc)})"
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
    p.add_argument("--full", action="store_true", help="verify the checksum of every step")
    p.set_defaults(func=run_inspect)
