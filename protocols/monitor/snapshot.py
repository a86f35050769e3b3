"""Read a session file or a sweep directory into one JSON-able snapshot for the page.

:class:`RunWatcher` re-opens the session file at every refresh (``open_session``; a
file whose writer runs or was killed is read in HDF5's SWMR-read mode) and keeps small
caches keyed by what identifies the data (run id, step number and checksum, checkpoint
number and time), so a refresh reads only what is new: the index rows after the last
ones read, the raw samples of the new steps of the noise window, the new checkpoints.
A refresh is skipped when the file's size, modification time and inode have not changed.

:class:`SweepWatcher` reads ``OUT/index.json`` (written atomically by ``hwloop sweep``)
and the session files of the points that run.

Every number in a snapshot is SI (names end in the unit: ``_v`` volts, ``_s``
siemens for conductances but seconds in times, ``_a`` amperes); accuracies are
fractions in [0, 1]. NaN and infinities become ``null``.
"""

from __future__ import annotations

import json
import math
import os
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import HwloopError
from hwloop.sessionlog import READ_ERRORS, SessionFile, first_line, open_session

MAX_POINTS = 1500
"""Most points of a per-step curve sent to the page (longer runs are binned)."""
SMOOTH_SPAN = 20
"""Span (steps) of the exponential moving average of the per-step curves."""
NOISE_WINDOW_STEPS = 10
"""Most recent steps whose raw samples, flags and programming rows are summarised."""
NOISE_WINDOW_BYTES = 16 * 2**20
"""Cap on the sample bytes of that window (fewer steps on very large boards)."""
MAX_CHECKPOINTS = 120
"""Most checkpoints in the conductance history (evenly spaced, the last always kept)."""
HISTORY_EDGES = 8192
"""The conductance history (mean and percentiles per checkpoint) is taken over every
k-th edge of a layer, k the smallest stride leaving at most this many (all edges of
layers up to this size); the last checkpoint's statistics use every edge."""
HIST_BINS = 40
"""Bins of the conductance histograms."""
MAX_EVENTS = 400
"""Most recent events sent to the page."""
REASONS = ("converged", "at bound", "max iterations", "no response", "pulse cap", "skipped")
"""Names of ``protocols.programming.Reason`` codes 0..5 (docs/session-format.md)."""
FLAG_OVERRANGE = 1
FLAG_COMPLIANCE = 2


def jsonable(x: Any) -> Any:
    """``x`` with numpy scalars/arrays turned into Python values and non-finite floats None."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "f":
            o = x.astype(object)
            o[~np.isfinite(x)] = None
            return o.tolist()
        if x.dtype.kind in "iub":
            return x.tolist()
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def ema(y: NDArray[np.float64], span: int = SMOOTH_SPAN) -> NDArray[np.float64]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing).

    The mean of ``y_0 .. y_k`` weighted by ``(1 - a)**(k - i)``, ``a = 2 / (span + 1)``,
    over the finite entries (a NaN step still ages the earlier ones).
    """
    a = 2.0 / (span + 1.0)
    out = np.full(y.shape, np.nan)
    s = 0.0
    w = 0.0
    for k, v in enumerate(y):
        s *= 1 - a
        w *= 1 - a
        if math.isfinite(float(v)):
            s += a * float(v)
            w += a
        if w > 0:
            out[k] = s / w
    return out


def binned(x: NDArray[Any], n_max: int = MAX_POINTS) -> tuple[NDArray[np.int64], int]:
    """Indices of the last element of each of at most ``n_max`` equal bins of ``x``."""
    n = len(x)
    size = max(1, math.ceil(n / n_max))
    ends = np.arange(size - 1, n, size, dtype=np.int64)
    if n and (len(ends) == 0 or ends[-1] != n - 1):
        ends = np.append(ends, n - 1)
    return ends, size


def bin_mean(y: NDArray[np.float64], size: int) -> NDArray[np.float64]:
    """Means of consecutive bins of ``size`` elements (the last bin may be shorter)."""
    if size == 1:
        return y.astype(np.float64)
    n = len(y)
    pad = (-n) % size
    z = np.concatenate([y.astype(np.float64), np.full(pad, np.nan)]).reshape(-1, size)
    with np.errstate(all="ignore"):
        counts = np.sum(np.isfinite(z), axis=1)
        sums = np.nansum(z, axis=1)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


SETTLE_S = 1.0
"""A file whose modification time is this much older than the start of a read (s) is
taken as fully read: file times advance in clock ticks (ms), so two writes within one
tick leave the same time; a read that started later than this after the last write saw
both, and any later write gives a new time."""


def _file_key(path: Path) -> tuple[int, int, int] | None:
    """Inode, size and modification time (ns) of ``path``; None when it is absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _settled(key: tuple[int, int, int] | None, t_read: float) -> bool:
    """Whether a read that started at ``t_read`` (Unix s) saw every write up to ``key``."""
    return key is not None and t_read - key[2] * 1e-9 > SETTLE_S


# ----------------------------------------------------------------------------- a run


@dataclass
class _RunCache:
    run_id: str = ""
    index: dict[str, NDArray[Any]] = field(default_factory=dict)
    step_stats: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    ckpt_stats: dict[tuple[int, int, float], list[dict[str, Any]]] = field(default_factory=dict)
    first_g: tuple[tuple[int, int, float], NDArray[np.float64]] | None = None
    layers: tuple[Any, list[dict[str, Any]]] | None = None


_INDEX_FIELDS = ("step", "epoch", "batch", "n_examples", "t_start_unix_s", "duration_s",
                 "loss", "accuracy", "pulses", "bound_hits", "prog_row_start",
                 "prog_row_count", "crc32")


class RunWatcher:
    """Follows one session file; :meth:`snapshot` gives the page's document.

    Args:
        path: the session file.
        stall_after_s: a file whose status says ``running`` but that has not been
            written for this long (s, > 0) is shown as ``crashed`` (killed or stalled).
    """

    def __init__(self, path: str | Path, *, stall_after_s: float = 60.0) -> None:
        self.path = Path(path)
        self.stall_after_s = float(stall_after_s)
        self._cache = _RunCache()
        self._key: tuple[int, int, int] | None = None
        self._doc: dict[str, Any] | None = None
        self._error = ""

    # -- public
    def snapshot(self, *, force: bool = False) -> dict[str, Any]:
        """The current document (re-reads the file only when it changed)."""
        key = _file_key(self.path)
        if force or key is None or key != self._key or self._doc is None:
            t_read = time.time()
            try:
                with open_session(self.path) as sf:
                    doc = self._read(sf)
                self._doc, self._error = doc, ""
                self._key = key if _settled(key, t_read) else None
            except HwloopError as exc:
                self._error = str(exc).splitlines()[0]
            except READ_ERRORS as exc:  # a file caught mid-write or mid-replace
                self._error = f"cannot read {self.path} now ({first_line(exc)})"
        doc = dict(self._doc) if self._doc is not None else {"kind": "run", "empty": True}
        doc["path"] = str(self.path)
        doc["error"] = self._error
        doc["generated_unix_s"] = time.time()
        if "status" in doc:
            doc["status"] = self._live_status(doc["status"])
        return jsonable(doc)  # type: ignore[no-any-return]

    # -- status
    def _live_status(self, st: dict[str, Any]) -> dict[str, Any]:
        st = dict(st)
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = float("nan")
        last = max(x for x in (mtime, st.get("last_step_end_unix_s") or 0.0)
                   if math.isfinite(x)) if math.isfinite(mtime) else st.get(
                       "last_step_end_unix_s") or 0.0
        age = time.time() - float(last)
        st["last_write_age_s"] = age
        shown = st["file_status"]
        note = st.get("reason", "")
        if shown == "running" and not st["clean"] and age > self.stall_after_s:
            shown = "crashed"
            note = (f"no write for {age:.0f} s: the writer was killed or is stalled; "
                    "'hwloop resume' continues it")
        st["shown"] = shown
        st["note"] = note
        return st

    # -- reading
    def _read(self, sf: SessionFile) -> dict[str, Any]:
        c = self._cache
        run_id = str(sf.attrs.get("run_id", ""))
        if run_id != c.run_id:
            self._cache = c = _RunCache(run_id=run_id)
        f = sf.h5
        n = sf.steps_done
        idx = self._index(sf, n)
        cfg = _parse_toml(str(sf.attrs.get("config_toml", "")))
        layout = sf.layout
        t_examples = int(f["checkpoints/order"].shape[1])
        steps_per_epoch = max(1, math.ceil(t_examples / max(1, layout.batch)))
        epochs_total = int(cfg.get("epochs", 0) or 0)
        total = steps_per_epoch * epochs_total if epochs_total else None
        last_end = float(idx["t_start_unix_s"][-1] + idx["duration_s"][-1]) if n else None
        rate = _rate(idx["t_start_unix_s"], idx["duration_s"])
        st = sf.status
        running = st in ("running", "crashed")
        eta = (total - n) / rate if (running and total and rate) else None
        doc: dict[str, Any] = {
            "kind": "run",
            "status": {
                "file_status": str(sf.attrs.get("status", "")),
                "clean": sf.clean,
                "reason": str(sf.attrs.get("reason", "")),
                "started_utc": str(sf.attrs.get("started_utc", "")),
                "stopped_utc": str(sf.attrs.get("stopped_utc", "")),
                "resumes": int(sf.attrs.get("resumes", 0)),
                "run_id": run_id,
                "seed": sf.attrs.get("seed"),
                "hwloop_version": str(sf.attrs.get("hwloop_version", "")),
                "git_commit": str(sf.attrs.get("git_commit", "")),
                "last_step_end_unix_s": last_end,
            },
            "progress": {
                "steps_done": n,
                "total_steps": total,
                "steps_per_epoch": steps_per_epoch,
                "epochs_total": epochs_total or None,
                "epoch": int(idx["epoch"][-1]) + 1 if n else 0,
                "batch": int(idx["batch"][-1]) + 1 if n else 0,
                "rate_steps_per_s": rate,
                "examples_per_s": rate * layout.batch if rate else None,
                "eta_s": eta,
                "train_examples": t_examples,
                "batch_size": layout.batch,
            },
            "last_step": {
                k: (idx[k][-1] if n else None)
                for k in ("step", "epoch", "loss", "accuracy", "pulses", "bound_hits",
                          "duration_s")
            },
            "steps": self._curves(idx),
            "epochs": _epochs(sf),
            "conductance": self._conductances(sf),
            "noise": self._noise(sf, idx),
            "events": sf.events()[-MAX_EVENTS:],
            "board": _board(sf, cfg),
        }
        if n:
            doc["last_step"]["epoch"] = int(idx["epoch"][-1]) + 1
        return doc

    def _index(self, sf: SessionFile, n: int) -> dict[str, NDArray[Any]]:
        """The index fields of the complete steps, reading only rows not read before."""
        c = self._cache
        have = len(c.index.get("step", ()))
        if have > n:  # the file was cut (repair): forget what is beyond
            c.index = {k: v[:n] for k, v in c.index.items()}
            have = n
        if have and have <= n:
            # a resume of a board without Checkpointable appends; rows below n never change,
            # but a replaced file with the same run id is checked through the checksums
            last = sf.h5["steps/index"][have - 1]
            if int(last["crc32"]) != int(c.index["crc32"][have - 1]):
                c.index, have = {}, 0
        rows = np.asarray(sf.h5["steps/index"][have:n]) if n > have else None
        if not c.index:
            c.index = {k: np.asarray(rows[k] if rows is not None else [],
                                     dtype=np.float64 if k in ("t_start_unix_s", "duration_s",
                                                               "loss", "accuracy")
                                     else np.int64) for k in _INDEX_FIELDS}
        elif rows is not None:
            c.index = {k: np.concatenate([c.index[k], rows[k].astype(c.index[k].dtype)])
                       for k in _INDEX_FIELDS}
        return c.index

    def _curves(self, idx: Mapping[str, NDArray[Any]]) -> dict[str, Any]:
        loss = np.asarray(idx["loss"], dtype=np.float64)
        acc = np.asarray(idx["accuracy"], dtype=np.float64)
        ends, size = binned(loss)
        return {
            "bin_steps": size,
            "smooth_span_steps": SMOOTH_SPAN,
            "step": idx["step"][ends],
            "epoch": idx["epoch"][ends] + 1,
            "loss": bin_mean(loss, size),
            "accuracy": bin_mean(acc, size),
            "loss_smooth": ema(loss)[ends],
            "accuracy_smooth": ema(acc)[ends],
            "pulses": bin_mean(np.asarray(idx["pulses"], dtype=np.float64), size),
            "bound_hits": bin_mean(np.asarray(idx["bound_hits"], dtype=np.float64), size),
            "duration_s": bin_mean(np.asarray(idx["duration_s"], dtype=np.float64), size),
        }

    # -- conductances
    def _conductances(self, sf: SessionFile) -> dict[str, Any]:
        c = self._cache
        rows = sf.checkpoints()
        desc = sf.description
        out: dict[str, Any] = {"g_min_s": desc.g_min_s, "g_max_s": desc.g_max_s,
                               "n_checkpoints": len(rows), "layers": [], "history": {}}
        if len(rows) == 0:
            return out
        ds = sf.h5["checkpoints/conductances_s"]
        blocks = _layer_blocks(sf)

        def key(i: int) -> tuple[int, int, float]:
            return (i, int(rows[i]["steps_done"]), float(rows[i]["t_unix_s"]))

        last_i = len(rows) - 1
        # every stride-th checkpoint, the stride a power of 2: when it doubles, the picks
        # are a subset of the old ones, so the cached statistics stay valid
        stride = 1
        while len(rows) / stride > MAX_CHECKPOINTS:
            stride *= 2
        pick = sorted(set(range(0, len(rows), stride)) | {last_i})
        if c.first_g is None or c.first_g[0] != key(0):
            c.first_g = (key(0), np.asarray(ds[0], dtype=np.float64))
        for i in pick:
            k = key(i)
            if k not in c.ckpt_stats:
                g = np.asarray(ds[i], dtype=np.float64)
                c.ckpt_stats[k] = [_stats(g[a:b:max(1, -(-(b - a) // HISTORY_EDGES))])
                                   for _, a, b, _ in blocks]
        live = {key(i) for i in pick}
        c.ckpt_stats = {k: v for k, v in c.ckpt_stats.items() if k in live}
        hist_keys = [key(i) for i in pick]
        out["last"] = {"index": last_i, "steps_done": int(rows[last_i]["steps_done"]),
                       "t_unix_s": float(rows[last_i]["t_unix_s"])}
        out["previous_steps_done"] = int(rows[last_i - 1]["steps_done"]) if last_i else None
        out["history"] = {"steps_done": [k[1] for k in hist_keys]}
        # the per-layer views of the last checkpoint change only with a new checkpoint
        lkey = (key(0), key(max(0, last_i - 1)), key(last_i))
        if c.layers is None or c.layers[0] != lkey:
            g_first = c.first_g[1]
            g_last = np.asarray(ds[last_i], dtype=np.float64)
            g_prev = np.asarray(ds[last_i - 1], dtype=np.float64) if last_i > 0 else g_last
            c.layers = (lkey, self._layer_views(blocks, g_first, g_prev, g_last, desc))
        out["layers"] = [
            {**view, "history": {stat: [c.ckpt_stats[k][li][stat] for k in hist_keys]
                                 for stat in ("mean_s", "p05_s", "p50_s", "p95_s")}}
            for li, view in enumerate(c.layers[1])]
        return out

    @staticmethod
    def _layer_views(blocks: list[tuple[str, int, int, list[int]]],
                     g_first: NDArray[np.float64], g_prev: NDArray[np.float64],
                     g_last: NDArray[np.float64], desc: Any) -> list[dict[str, Any]]:
        views = []
        lo, hi = desc.g_min_s, desc.g_max_s
        for name, a, b, shape in blocks:
            gl, gf, gp = g_last[a:b], g_first[a:b], g_prev[a:b]
            lo_l = lo if math.isfinite(lo) else float(min(gl.min(), gf.min()))
            hi_l = hi if math.isfinite(hi) else float(max(gl.max(), gf.max()))
            if not hi_l > lo_l:
                hi_l = lo_l + 1e-12
            tol = 1e-6 * (hi_l - lo_l)
            views.append({
                "name": name,
                "shape": shape,
                "n_edges": b - a,
                "edges_s": np.linspace(lo_l, hi_l, HIST_BINS + 1),
                "hist_last": _hist(gl, lo_l, hi_l, HIST_BINS),
                "hist_first": _hist(gf, lo_l, hi_l, HIST_BINS),
                **_stats(gl),
                "frac_at_min": float(np.mean(gl <= lo + tol)) if math.isfinite(lo) else None,
                "frac_at_max": float(np.mean(gl >= hi - tol)) if math.isfinite(hi) else None,
                "mean_abs_change_vs_prev_s": float(np.mean(np.abs(gl - gp))),
                "mean_abs_change_vs_first_s": float(np.mean(np.abs(gl - gf))),
            })
        return views

    # -- read noise, flags and programming over the last steps
    def _noise(self, sf: SessionFile, idx: Mapping[str, NDArray[Any]]) -> dict[str, Any]:
        c = self._cache
        f = sf.h5
        s = f["steps"]
        n = sf.steps_done
        lay = sf.layout
        raw = sf.options.samples == "raw"
        data = s["samples_v"] if raw else s["mean_v"]
        row_bytes = int(np.prod(data.shape[1:])) * data.dtype.itemsize
        w = max(1, min(NOISE_WINDOW_STEPS, NOISE_WINDOW_BYTES // max(1, row_bytes)))
        a = max(0, n - w)
        steps = list(range(a, n))
        missing = [k for k in steps
                   if k not in c.step_stats or c.step_stats[k][0] != int(idx["crc32"][k])]
        if missing:
            lo, hi = missing[0], missing[-1] + 1
            block = _read_block(f, raw, lo, hi)
            for k in missing:
                c.step_stats[k] = (int(idx["crc32"][k]),
                                   _step_noise(block, k - lo, raw, lay.phases,
                                               int(idx["n_examples"][k])))
        c.step_stats = {k: v for k, v in c.step_stats.items() if a <= k < n}
        betas = np.asarray(s["betas_s"][n - 1], dtype=np.float64) if n else np.zeros(lay.phases)
        per = [c.step_stats[k][1] for k in steps]
        phases = []
        for p in range(lay.phases):
            spreads = [q["spread_median_v"][p] for q in per]
            fin = [x for x in spreads if x is not None and math.isfinite(x)]
            phases.append({
                "phase": p,
                "name": "free" if p == 0 else f"nudged {p}",
                "beta_s": float(betas[p]) if p < len(betas) else None,
                "n_samples_mean": float(np.mean([q["n_samples"][p] for q in per])) if per else None,
                "spread_median_v": float(np.median(fin)) if fin else None,
                "spread_p90_v": float(np.percentile(
                    [q["spread_p90_v"][p] for q in per if q["spread_p90_v"][p] is not None],
                    50)) if any(q["spread_p90_v"][p] is not None for q in per) else None,
                "overrange": int(sum(q["overrange"][p] for q in per)),
                "compliance": int(sum(q["compliance"][p] for q in per)),
                "readings": int(sum(q["readings"][p] for q in per)),
            })
        prog = _programming(sf, idx, a, n)
        return {
            "samples_mode": sf.options.samples,
            "max_samples": lay.max_samples,
            "window_steps": [a, n - 1] if n else None,
            "phases": phases,
            "series": {
                "step": steps,
                "spread_median_v": [[q["spread_median_v"][p] for q in per]
                                    for p in range(lay.phases)],
            },
            "programming": prog,
        }


def _read_block(f: Any, raw: bool, lo: int, hi: int) -> dict[str, NDArray[Any]]:
    s = f["steps"]
    if raw:
        return {"v": np.asarray(s["samples_v"][lo:hi]), "flags": np.asarray(s["flags"][lo:hi]),
                "n": np.asarray(s["n_samples"][lo:hi])}
    return {"mean": np.asarray(s["mean_v"][lo:hi]), "sem": np.asarray(s["sem_v"][lo:hi]),
            "flags": np.asarray(s["flags_any"][lo:hi]), "n": np.asarray(s["n_samples"][lo:hi])}


def _step_noise(block: Mapping[str, NDArray[Any]], r: int, raw: bool, phases: int,
                n_ex: int) -> dict[str, Any]:
    """Read-noise statistics of one step, per phase.

    The median and 90th percentile over examples and nodes of the standard deviation of
    a node's samples (V; ddof 1; None with < 2 samples), the samples flagged overrange /
    compliance and the readings taken.
    """
    out: dict[str, Any] = {k: [] for k in ("spread_median_v", "spread_p90_v", "overrange",
                                            "compliance", "readings", "n_samples")}
    for p in range(phases):
        k = int(block["n"][r, p])
        out["n_samples"].append(k)
        if raw:
            v = block["v"][r, :n_ex, p, :k].astype(np.float64)  # (B, k, F)
            fl = block["flags"][r, :n_ex, p, :k]
            sd = np.std(v, axis=1, ddof=1) if k >= 2 else None
        else:
            sd = (block["sem"][r, :n_ex, p].astype(np.float64) * math.sqrt(k)) if k >= 2 \
                else None
            fl = block["flags"][r, :n_ex, p]
        if sd is not None and np.isfinite(sd).any():
            out["spread_median_v"].append(float(np.nanmedian(sd)))
            out["spread_p90_v"].append(float(np.nanpercentile(sd, 90)))
        else:
            out["spread_median_v"].append(None)
            out["spread_p90_v"].append(None)
        out["overrange"].append(int(np.count_nonzero(fl & FLAG_OVERRANGE)))
        out["compliance"].append(int(np.count_nonzero(fl & FLAG_COMPLIANCE)))
        out["readings"].append(int(fl.size))
    return out


def _programming(sf: SessionFile, idx: Mapping[str, NDArray[Any]], a: int, n: int
                 ) -> dict[str, Any]:
    mode = sf.options.programming
    pulses = np.asarray(idx["pulses"][a:n], dtype=np.float64)
    hits = np.asarray(idx["bound_hits"][a:n], dtype=np.float64)
    out: dict[str, Any] = {
        "records": mode,
        "pulses_per_step_mean": float(pulses.mean()) if len(pulses) else None,
        "pulses_per_step_max": float(pulses.max()) if len(pulses) else None,
        "bound_hits_per_step_mean": float(hits.mean()) if len(hits) else None,
        "pulses_total": int(np.sum(idx["pulses"])),
        "bound_hits_total": int(np.sum(idx["bound_hits"])),
        "reasons": None,
    }
    if mode == "off" or n == 0:
        return out
    r0 = int(idx["prog_row_start"][a])
    r1 = int(idx["prog_row_start"][n - 1] + idx["prog_row_count"][n - 1])
    rec = np.asarray(sf.h5["programming/records"][r0:r1]) if r1 > r0 else None
    if rec is None or len(rec) == 0:
        out["reasons"] = dict.fromkeys(REASONS, 0)
        return out
    counts = np.bincount(rec["reason"].astype(np.int64).clip(0, len(REASONS) - 1),
                         minlength=len(REASONS))
    out["reasons"] = {name: int(counts[i]) for i, name in enumerate(REASONS)}
    out["records_in_window"] = len(rec)
    tgt = rec["target_s"].astype(np.float64)
    ach = rec["achieved_s"].astype(np.float64)
    ok = np.isfinite(tgt) & np.isfinite(ach)
    out["converged_fraction"] = float(np.mean(rec["converged"] != 0))
    out["abs_error_median_s"] = float(np.median(np.abs(ach[ok] - tgt[ok]))) if ok.any() \
        else None
    return out


def _hist(g: NDArray[np.float64], lo: float, hi: float, bins: int) -> NDArray[np.int64]:
    """Counts in ``bins`` equal bins over [lo, hi] (values outside go to the end bins)."""
    k = np.floor((g - lo) * (bins / (hi - lo))).astype(np.int64)
    return np.bincount(np.clip(k, 0, bins - 1), minlength=bins)


def _stats(g: NDArray[np.float64]) -> dict[str, Any]:
    p = np.percentile(g, [5, 50, 95]) if g.size else [math.nan] * 3
    return {"mean_s": float(g.mean()) if g.size else None,
            "std_s": float(g.std()) if g.size else None,
            "p05_s": float(p[0]), "p50_s": float(p[1]), "p95_s": float(p[2])}


def _layer_blocks(sf: SessionFile) -> list[tuple[str, int, int, list[int]]]:
    """(name, first edge, end edge, [n_src, n_dst]) of each layer block."""
    desc = sf.description
    n_edges = int(desc.edge_nodes.shape[0])
    if not desc.layers:
        return [("all edges", 0, n_edges, [n_edges])]
    out = []
    for i, L in enumerate(desc.layers):
        a = int(L.edge_offset)
        out.append((f"layer {i}: {len(L.src)} \u2192 {len(L.dst)}", a,
                    a + len(L.src) * len(L.dst), [len(L.src), len(L.dst)]))
    return out


def _rate(t0: NDArray[np.float64], dur: NDArray[np.float64], window: int = 50) -> float | None:
    """Steps per second over the last ``window`` steps (None with fewer than 2).

    The window is cut at a pause longer than 60 s (a stop and a resume).
    """
    n = len(t0)
    if n < 2:
        return None
    a = max(0, n - window)
    ts = t0[a:]
    gaps = np.nonzero(np.diff(ts) > 60.0)[0]
    if len(gaps):
        ts = ts[gaps[-1] + 1:]
        a = n - len(ts)
    if len(ts) < 2:
        return 1.0 / float(dur[-1]) if dur[-1] > 0 else None
    span = float(t0[-1] + dur[-1] - ts[0])
    return len(ts) / span if span > 0 else None


def _epochs(sf: SessionFile) -> dict[str, Any]:
    ep = sf.epochs()
    names = ep.dtype.names or ()
    return {k: np.asarray(ep[k], dtype=np.float64) for k in names}


def _parse_toml(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


def _json_attr(text: Any) -> Any:
    try:
        return json.loads(str(text))
    except (TypeError, ValueError):
        return {}


def _board(sf: SessionFile, cfg: Mapping[str, Any]) -> dict[str, Any]:
    g = sf.h5["device"].attrs
    return {
        "name": sf.description.name,
        "backend": sf.description.backend,
        "summary": _json_attr(g.get("summary_json", "{}")),
        "limits": _json_attr(g.get("limits_json", "{}")),
        "info": _json_attr(g.get("info_json", "{}")),
        "backend_options": _json_attr(sf.attrs.get("backend_options_json", "{}")),
        "log_options": _json_attr(sf.attrs.get("log_options_json", "{}")),
        "defaults_source": str(sf.attrs.get("defaults_source", "")),
        "config_toml": str(sf.attrs.get("config_toml", "")),
        "config": dict(cfg),
    }


# ----------------------------------------------------------------------------- a sweep


class SweepWatcher:
    """Follows a sweep directory (``index.json``, ``runs/*.h5``).

    Args:
        path: the sweep's ``--out`` directory.
        limit_drop: accuracy loss (fraction in (0, 1)) that marks the measured limit,
            as ``hwloop sweep --limit-drop``.
        predict: compute the planner's predicted limit (once, on the first snapshot).
    """

    def __init__(self, path: str | Path, *, limit_drop: float = 0.02,
                 predict: bool = True) -> None:
        self.path = Path(path)
        self.limit_drop = limit_drop
        self._predict = predict
        self._predicted: tuple[float | None, str] | None = None
        self._key: tuple[int, int, int] | None = None
        self._idx: dict[str, Any] | None = None
        self._error = ""

    def _predicted_limit(self, idx: Mapping[str, Any]) -> tuple[float | None, str]:
        if self._predicted is not None:
            return self._predicted
        if not self._predict:
            return (None, "prediction not asked for")
        pts = list(idx.get("points", {}).values())
        if not pts:
            return (None, "no points yet")
        from protocols.planner import predict

        vals = {k: v for k, v in dict(idx.get("fixed", {})).items() if k != "read_noise"}
        vals["dataset"], vals["seed"] = pts[0]["dataset"], pts[0]["seed"]
        try:
            self._predicted = (predict(vals, measure_timings=False).sigma_c_v, "")
        except HwloopError as exc:
            self._predicted = (None, str(exc).splitlines()[0])
        return self._predicted

    def snapshot(self, *, force: bool = False) -> dict[str, Any]:
        """The current document of the sweep."""
        from protocols.sweep import INDEX_NAME, aggregate, load_index, measured_limits

        key = _file_key(self.path / INDEX_NAME)
        if force or key is None or key != self._key or self._idx is None:
            t_read = time.time()
            try:
                self._idx = load_index(self.path)
                self._error = ""
                self._key = key if _settled(key, t_read) else None
                if self._idx is None:
                    self._error = f"{self.path / INDEX_NAME} does not exist yet"
            except HwloopError as exc:
                self._error = str(exc).splitlines()[0]
        idx = self._idx or {"points": {}, "fixed": {}}
        rows = []
        for pid, p in idx["points"].items():
            r = {"point": pid, **{k: p.get(k) for k in (
                "dataset", "seed", "read_noise", "samples", "status", "final_test_accuracy",
                "final_train_accuracy", "epochs", "steps", "wall_time_s", "session", "error")}}
            r["sigma_eff_v"] = (float(p["read_noise"]) / math.sqrt(int(p["samples"]))
                                if p.get("samples") else None)
            if p.get("status") == "running" and p.get("session"):
                r["progress"] = _point_progress(self.path / str(p["session"]))
            rows.append(r)
        sigma_c, why = self._predicted_limit(idx)
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
        grid = {ax: sorted({r[ax] for r in rows}, key=str) for ax in
                ("read_noise", "samples", "dataset", "seed")}
        return jsonable({  # type: ignore[no-any-return]
            "kind": "sweep",
            "path": str(self.path),
            "error": self._error,
            "generated_unix_s": time.time(),
            "fixed": idx.get("fixed", {}),
            "grid": grid,
            "counts": counts,
            "points": rows,
            "aggregate": aggregate(idx),
            "limit_drop": self.limit_drop,
            "measured_limits": measured_limits(idx, self.limit_drop),
            "predicted_limit_v": sigma_c,
            "predicted_note": why,
        })


def _point_progress(path: Path) -> dict[str, Any] | None:
    """Steps done / total of a running point's session file (None when unreadable)."""
    try:
        with open_session(path) as sf:
            cfg = _parse_toml(str(sf.attrs.get("config_toml", "")))
            t = int(sf.h5["checkpoints/order"].shape[1])
            per = max(1, math.ceil(t / max(1, sf.layout.batch)))
            ep = int(cfg.get("epochs", 0) or 0)
            return {"steps_done": sf.steps_done, "total_steps": per * ep or None}
    except (HwloopError, *READ_ERRORS):
        return None


def watcher_for(path: str | Path, *, stall_after_s: float = 60.0,
                limit_drop: float = 0.02) -> RunWatcher | SweepWatcher:
    """A :class:`SweepWatcher` for a directory, else a :class:`RunWatcher`."""
    p = Path(path)
    if p.is_dir():
        return SweepWatcher(p, limit_drop=limit_drop)
    return RunWatcher(p, stall_after_s=stall_after_s)


def disable_hdf5_file_locking() -> None:
    """Keep this process's HDF5 reads from locking the file (``HDF5_USE_FILE_LOCKING``).

    A reader that opens a cleanly closed session file takes a shared lock; a trainer
    that re-opens the same file for writing at that moment (``hwloop resume``, or
    ``hwloop train`` right after it creates the file) would fail with "unable to lock
    file". The monitor only reads, and tolerates a read that fails, so it does not lock.
    """
    os.environ["HDF5_USE_FILE_LOCKING"] = "FALSE"
