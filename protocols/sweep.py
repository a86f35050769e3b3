"""``hwloop sweep``: a grid of emulator training runs over read noise, samples, datasets, seeds.

Each grid point is one ``hwloop train`` run (through
:func:`protocols.commands.run_train`). The point travels to its worker as data: its
resolved training configuration as a TOML string (also kept as ``runs/<point>.toml`` in
the store). The worker trains into a local temporary file, then the session file goes to
the **store** (``--store``: the output directory by default, or an fsspec URL) as
``runs/<point>.h5``, with its log and ``runs/<point>.json`` (status, metrics, size and
SHA-256 of the file, the configuration). Either the worker writes it there, or it returns
the bytes through its future and this process writes them (``--deliver``; the default
for a Dask cluster with a local store, which its workers need not see).
``OUT/index.json`` holds every point's parameters, status and final metrics and is
rewritten atomically (``os.replace``) after each point finishes; only this process writes
to ``OUT``. A point whose stored session file is complete is never run again, so an
interrupted sweep continues where it stopped; a point whose file is missing or
incomplete is run again from scratch.

The grid file (TOML)::

    [grid]                     # the axes; each a non-empty list
    read_noise = [0.0, 1e-4]   # read-noise std per sample, V (>= 0)
    samples = [1, 10]          # samples averaged per phase (>= 1)
    dataset = ["mnist-subset"]
    seed = [0]

    [train]                    # fixed options of every run (TrainConfig keys)
    arch = "1568-100-10"
    epochs = 1

Unless set, ``log_samples = "summary"`` (session files keep per-node means and
standard errors, not every raw sample); the output says which mode the runs use.
Command-line axes (``--read-noise 0 1e-4`` ...) replace the file's; ``--set KEY=VALUE``
adds fixed options (VALUE is a TOML value: ``--set epochs=2``,
``--set arch='"1568-1024-10"'``; bare words are taken as strings).

Runs go to any :class:`concurrent.futures.Executor`: local processes
(``--workers``) or a Dask cluster (``--scheduler tcp://HOST:PORT``, needs the
``sweep`` extra). Files named inside the configuration (a dataset path, a board file)
must exist where the points run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwloop.config import read_toml
from hwloop.errors import ConfigError, HwloopError
from hwloop.plugins import DEFAULT_BACKEND, split_assignment
from protocols.config import ALIASES, TrainConfig, config_toml, make_config, resolve

AXES = ("read_noise", "samples", "dataset", "seed")
"""Grid axes (TrainConfig keys), in the order points are enumerated."""

INDEX_NAME = "index.json"
INDEX_SCHEMA = "hwloop-sweep-index"
INDEX_VERSION = 1
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} | set(ALIASES)


# ----------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class SweepSpec:
    """A validated grid: axis values and the fixed options of every run."""

    read_noise: tuple[float, ...]
    """Read-noise std per sample, V."""
    samples: tuple[int, ...]
    dataset: tuple[str, ...]
    seed: tuple[int, ...]
    fixed: dict[str, Any]
    noise_axis: bool = True
    """The grid names read noise: each point sets the backend's read-noise option
    (``read_noise``, an alias); without it the points leave the backend's own."""

    def points(self) -> list[dict[str, Any]]:
        """Every grid point's axis values, in grid order (dataset, seed, samples, sigma)."""
        return [
            {"read_noise": s, "samples": n, "dataset": d, "seed": k}
            for d in self.dataset
            for k in self.seed
            for n in self.samples
            for s in self.read_noise
        ]


def point_id(p: Mapping[str, Any]) -> str:
    """A file-name-safe, unique name of a point: ``<dataset>_rn<sigma>_N<n>_s<seed>``."""
    ds = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(str(p["dataset"])).name).strip("-") or "data"
    return f"{ds}_rn{float(p['read_noise']):.6g}_N{int(p['samples'])}_s{int(p['seed'])}"


def _as_list(key: str, v: Any) -> list[Any]:
    if not isinstance(v, list | tuple):
        v = [v]
    if len(v) == 0:
        raise ConfigError(f"sweep axis {key} is empty; give at least one value")
    return list(v)


def build_spec(grid: Mapping[str, Any], fixed: Mapping[str, Any]) -> SweepSpec:
    """Check the axes and fixed options; raise :class:`ConfigError` on the first problem."""
    unknown = set(grid) - set(AXES)
    if unknown:
        raise ConfigError(f"unknown sweep axis(es) {sorted(unknown)}; known: {list(AXES)}")
    bad = sorted(set(fixed) - _TRAIN_KEYS)
    if bad:
        raise ConfigError(f"unknown training option(s) {bad} in the sweep's fixed options")
    both = sorted(set(fixed) & set(AXES))
    if both:
        raise ConfigError(f"{both} are sweep axes; give them under [grid], not as fixed options")
    fixed_d = dict(fixed)
    fixed_d.setdefault("backend", DEFAULT_BACKEND)
    # the index holds the results; per-sample raw logs of every point would be large
    # (DRN-1H, N = 16: 0.66 GB per 500 steps), so a sweep keeps means and SEMs by default
    fixed_d.setdefault("log_samples", "summary")
    lists: dict[str, list[Any]] = {}
    defaults: dict[str, list[Any]] = {
        "read_noise": [0.0], "samples": [1], "dataset": ["mnist-subset"], "seed": [0]
    }
    for key in AXES:
        lists[key] = _as_list(key, grid[key]) if key in grid else defaults[key]
    sig: list[float] = []
    for v in lists["read_noise"]:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"read_noise value {v!r} must be a finite number >= 0 V")
        sig.append(float(v))
    ns: list[int] = []
    for v in lists["samples"]:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"samples value {v!r} must be an integer >= 1")
        ns.append(v)
    seeds: list[int] = []
    for v in lists["seed"]:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            raise ConfigError(f"seed value {v!r} must be an integer in [0, 2**63)")
        seeds.append(v)
    dsets = [str(v) for v in lists["dataset"]]
    for key, vals in (("read_noise", sig), ("samples", ns), ("dataset", dsets), ("seed", seeds)):
        if len(set(vals)) != len(vals):
            raise ConfigError(f"sweep axis {key} repeats a value: {vals}")
    spec = SweepSpec(tuple(sig), tuple(ns), tuple(dsets), tuple(seeds), fixed_d,
                     noise_axis="read_noise" in grid)
    for p in spec.points():  # every point must be a valid training configuration
        point_config(spec, p)
    return spec


def point_config(spec: SweepSpec, p: Mapping[str, Any]) -> TrainConfig:
    """The training configuration of one point (not yet resolved)."""
    values = {**spec.fixed, **p}
    if not spec.noise_axis:
        values.pop("read_noise")
    return make_config(values, source=f"sweep point {point_id(p)}")


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> options (VALUE parsed as TOML, else taken as a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, raw = split_assignment(item, "--set", ", e.g. epochs=2")
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out


# ----------------------------------------------------------------------------- the store


_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class Store:
    """Where a sweep's session files and per-point records go: ``runs/<point>.*``.

    A local directory (a path, or a ``file://`` URL) is handled with :mod:`os`; any other
    URL (``s3://bucket/sweep``, ``gcs://...``, ``sftp://...``, ``memory://...``) goes through
    fsspec (the ``sweep`` extra; a protocol's own package, e.g. ``s3fs``, must be installed
    wherever the store is written). The location is a string, so it travels to a worker as
    data.
    """

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        m = _URL_RE.match(self.location)
        self.protocol = m.group(1).lower() if m else "file"
        self._root: Path | None = None
        if self.protocol == "file":
            self._root = Path(self.location[len("file://"):] if m else self.location)

    @property
    def is_local(self) -> bool:
        """True for a directory of this machine's file system."""
        return self._root is not None

    def local_path(self, rel: str) -> Path | None:
        """The local path of ``rel`` (None for a URL store)."""
        return None if self._root is None else self._root / rel

    def where(self, rel: str) -> str:
        """``rel`` inside the store, as the user would name it."""
        local = self.local_path(rel)
        return str(local.resolve()) if local is not None else self.location.rstrip("/") + "/" + rel

    def _fs(self) -> tuple[Any, str]:
        try:
            import fsspec  # type: ignore[import-untyped]
        except ImportError:
            raise ConfigError(
                f"--store {self.location} needs fsspec; install it with pip install "
                "'hwloop[sweep]'"
            ) from None
        try:
            fs, root = fsspec.core.url_to_fs(self.location)
        except (ImportError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"--store {self.location}: fsspec cannot open protocol {self.protocol!r} "
                f"({first}); install its package or use a local directory"
            ) from None
        return fs, str(root).rstrip("/")

    def prepare(self) -> None:
        """Create ``runs/`` (raises :class:`ConfigError` when the store cannot be used)."""
        local = self.local_path("runs")
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
            return
        fs, root = self._fs()
        try:
            fs.makedirs(f"{root}/runs", exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"--store {self.location}: cannot create runs/ there ({exc}); check the URL "
                "and its credentials"
            ) from None

    def put_file(self, rel: str, src: Path) -> None:
        """Copy the local file ``src`` to ``rel`` (a local store sees the old or new file)."""
        local = self.local_path(rel)
        if local is not None:
            tmp = local.with_name(local.name + ".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, local)
            return
        fs, root = self._fs()
        fs.put_file(str(src), f"{root}/{rel}")

    def put_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` (atomically in a local store)."""
        local = self.local_path(rel)
        if local is not None:
            _atomic_write(local, data)
            return
        fs, root = self._fs()
        fs.pipe_file(f"{root}/{rel}", data)

    def read_bytes(self, rel: str) -> bytes | None:
        """The content of ``rel``; None when it does not exist."""
        local = self.local_path(rel)
        if local is not None:
            return local.read_bytes() if local.exists() else None
        fs, root = self._fs()
        try:
            data: bytes = fs.cat_file(f"{root}/{rel}")
        except FileNotFoundError:
            return None
        return data

    def size(self, rel: str) -> int | None:
        """Size of ``rel`` in bytes; None when it does not exist."""
        local = self.local_path(rel)
        if local is not None:
            return local.stat().st_size if local.exists() else None
        fs, root = self._fs()
        try:
            return int(fs.size(f"{root}/{rel}"))
        except FileNotFoundError:
            return None


def _point_record(
    pid: str, params: Mapping[str, Any], config_toml: str, result: Mapping[str, Any]
) -> bytes:
    """``runs/<point>.json``: the point's axis values, resolved config, status and metrics.

    Written after the session file, so a record that says ``completed`` names a file that
    is all there (its size and SHA-256 are in the record).
    """
    rec = {"schema": "hwloop-sweep-point", "point": pid, **params,
           **{k: v for k, v in result.items() if not k.endswith("_data")},
           "config_toml": config_toml}
    return (json.dumps(rec, indent=1) + "\n").encode()


# ----------------------------------------------------------------------------- one point


SHIP_LIMIT_MB = 1024.0
"""Default largest session file a worker returns through its future, MB (``--ship-limit-mb``)."""


def _scratch_dir() -> str | None:
    """A Dask worker's own local directory, else None (the system's temporary directory)."""
    if "distributed" not in sys.modules:  # a Dask worker has imported it already
        return None
    from distributed import get_worker

    try:
        return str(get_worker().local_directory)
    except ValueError:  # not inside a Dask worker
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_point(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one grid point (in a worker): train into a local temporary file, then deliver it.

    Everything the point needs travels in ``task`` as data; the worker reads no file of
    the client's. The session file is written to a temporary directory (a Dask worker's
    ``local_directory``, else the system's) and removed after delivery.

    Args:
        task: ``point`` (its id), ``params`` (axis values), ``config_toml`` (the resolved
            training configuration), ``deliver``: ``"worker"`` (copy the session file,
            its log and ``runs/<point>.json`` to the store at ``store``) or ``"client"``
            (return the bytes as ``session_data`` / ``log_data`` for the client to store;
            a file over ``ship_limit_bytes`` is not returned and the point fails).

    Returns:
        ``status``, ``final_test_accuracy``, ``final_train_accuracy``,
        ``final_test_loss``, ``epochs``, ``steps``, ``wall_time_s``, ``error``,
        ``session_bytes``, ``session_sha256``, ``ran_on`` (host, pid, working and
        temporary directory of the worker),
        ``stored_by``, and with ``deliver = "client"`` the data fields.
    """
    pid = str(task["point"])
    with tempfile.TemporaryDirectory(prefix=f"hwloop-sweep-{pid}-", dir=_scratch_dir()) as tmp:
        d = Path(tmp)
        cfg_path, session, log = d / f"{pid}.toml", d / f"{pid}.h5", d / f"{pid}.log"
        cfg_path.write_text(str(task["config_toml"]))
        result = _train_point(cfg_path, session, log)
        result["ran_on"] = {"host": socket.gethostname(), "pid": os.getpid(),
                            "cwd": os.getcwd(), "scratch": str(d.parent)}
        if not session.exists():
            return result
        result["session_bytes"] = session.stat().st_size
        result["session_sha256"] = _sha256(session)
        if task["deliver"] == "worker":
            store = Store(str(task["store"]))
            try:
                store.put_file(f"runs/{pid}.h5", session)
                if log.exists():
                    store.put_file(f"runs/{pid}.log", log)
                result["stored_by"] = "worker"
                store.put_bytes(f"runs/{pid}.json", _point_record(
                    pid, task["params"], str(task["config_toml"]), result))
            except (OSError, ConfigError) as exc:
                result.update(status="failed", stored_by="",
                              error=f"storing to {store.location} failed: "
                              f"{type(exc).__name__}: {exc}"[:300])
            return result
        limit = int(task["ship_limit_bytes"])
        if result["session_bytes"] > limit:
            result.update(status="failed", error=(
                f"session file of {result['session_bytes'] / 1e6:.3g} MB is over the "
                f"--ship-limit-mb of {limit / 1e6:.3g} MB; raise it, or give a --store URL "
                "the workers write to"))
            return result
        result["session_data"] = session.read_bytes()
        if log.exists():
            result["log_data"] = log.read_bytes()
        return result


def _train_point(cfg_path: Path, session: Path, log: Path) -> dict[str, Any]:
    """``hwloop train`` of one point into ``session``; its status and final metrics."""
    from protocols.cli import _TRAIN_FLAGS
    from protocols.commands import run_train

    ns = argparse.Namespace(**{k: None for k in _TRAIN_FLAGS})
    ns.config, ns.out = cfg_path, str(session)
    ns.overwrite, ns.dry_run, ns.quiet, ns.json = True, False, True, False
    ns.backend_opt = []
    t0 = time.perf_counter()
    error = ""
    # a process worker runs tasks in its main thread: keep its console quiet (the
    # messages go to the point's log); thread workers share sys.stdout, leave it alone
    quiet = threading.current_thread() is threading.main_thread()
    with contextlib.ExitStack() as stack:
        if quiet:
            f = stack.enter_context(log.open("w"))
            stack.enter_context(contextlib.redirect_stdout(f))
            stack.enter_context(contextlib.redirect_stderr(f))
        try:
            run_train(ns)
        except HwloopError as exc:
            error = str(exc)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    wall = time.perf_counter() - t0
    result = read_point_result(session)
    result["wall_time_s"] = wall
    if error:
        result["error"] = error.splitlines()[0][:300]
        result["status"] = "failed"
    return result


def read_point_result(path: Path) -> dict[str, Any]:
    """Status and final metrics of a point's session file (``missing`` when absent)."""
    from hwloop.sessionlog import load_run

    res: dict[str, Any] = {
        "status": "missing",
        "final_test_accuracy": None,
        "final_train_accuracy": None,
        "final_test_loss": None,
        "epochs": 0,
        "steps": 0,
        "error": "",
    }
    if not path.exists():
        return res
    try:
        run = load_run(path)
    except HwloopError as exc:
        res["status"], res["error"] = "unreadable", str(exc).splitlines()[0][:300]
        return res
    except (OSError, KeyError, ValueError) as exc:
        res["status"], res["error"] = "unreadable", f"{type(exc).__name__}: {exc}"[:300]
        return res
    m = run.metrics
    n_ep = len(m["test_accuracy"])
    res.update(
        status=run.status,
        epochs=n_ep,
        steps=run.steps_done,
        final_test_accuracy=float(m["test_accuracy"][-1]) if n_ep else None,
        final_train_accuracy=float(m["train_accuracy"][-1]) if n_ep else None,
        final_test_loss=float(m["test_loss"][-1]) if n_ep else None,
    )
    return res


# ----------------------------------------------------------------------------- the index


def _atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def load_index(out: Path) -> dict[str, Any] | None:
    """The sweep index in ``out`` (None when there is none)."""
    p = out / INDEX_NAME
    if not p.exists():
        return None
    try:
        idx = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p} is not valid JSON ({exc}); delete it to rebuild it") from None
    if not isinstance(idx, dict) or idx.get("schema") != INDEX_SCHEMA:
        raise ConfigError(f"{p} is not a hwloop sweep index; use another --out directory")
    return idx


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`."""

    index: dict[str, Any]
    ran: list[str]
    """Points run by this call (the others were complete already)."""
    wall_time_s: float


def run_sweep(
    spec: SweepSpec,
    out: Path,
    executor: Executor,
    *,
    store: Store | None = None,
    deliver: str = "worker",
    ship_limit_bytes: int = int(SHIP_LIMIT_MB * 1e6),
    on_point: Callable[[str, dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run every point of ``spec`` not yet complete in the store on ``executor``.

    Args:
        spec: the grid.
        out: the sweep directory (``index.json``; written by this process only).
        executor: where points run; each gets its point as data (see :func:`run_point`).
        store: where session files go (default: ``out``).
        deliver: ``"worker"`` (workers write to the store) or ``"client"`` (workers
            return the files through their futures; this process writes them).
        ship_limit_bytes: largest session file returned through a future, bytes.
        on_point: called with each finished point's id and index entry.

    Raises:
        ConfigError: ``out`` holds a sweep with other fixed options, or the store
            cannot be used.
    """
    if deliver not in ("worker", "client"):
        raise ConfigError(f"deliver {deliver!r} must be 'worker' or 'client'")
    t0 = time.perf_counter()
    store = Store(out) if store is None else store
    root = store.local_path(".")
    same = root is not None and root.resolve() == out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    store.prepare()
    fixed = {k: _jsonable(v) for k, v in spec.fixed.items()}
    idx = load_index(out)
    if idx is None:
        idx = {"schema": INDEX_SCHEMA, "version": INDEX_VERSION, "fixed": fixed, "points": {}}
    elif idx.get("fixed") != fixed:
        raise ConfigError(
            f"{out} holds a sweep with other fixed options ({idx.get('fixed')}); use a new "
            "--out directory to run this grid"
        )
    if not same:
        idx["store"] = store.location
    points: dict[str, Any] = idx["points"]
    todo: list[tuple[str, dict[str, Any]]] = []
    configs: dict[str, tuple[dict[str, Any], str]] = {}
    for p in spec.points():
        pid = point_id(p)
        rel = f"runs/{pid}.h5"
        entry = {**p, "session": rel if same else store.where(rel)}
        old = points.get(pid, {})
        done = _stored_result(store, pid)
        if done is not None and done["status"] == "completed":
            # keep the recorded wall time (and where it ran); metrics from the store (the truth)
            keep = old if old.get("status") == "completed" else {
                "wall_time_s": old.get("wall_time_s")}
            points[pid] = {**keep, **entry, **done}
            continue
        cfg, _ = resolve(point_config(spec, p))
        cfg_toml = config_toml(cfg)
        store.put_bytes(f"runs/{pid}.toml", cfg_toml.encode())
        configs[pid] = (p, cfg_toml)
        points[pid] = {**entry, "status": "pending", **{k: None for k in ("final_test_accuracy",
                       "final_train_accuracy", "final_test_loss", "wall_time_s")}}
        # the point travels as data: no path of this machine's is in the task
        task: dict[str, Any] = {"point": pid, "params": p, "config_toml": cfg_toml,
                                "deliver": deliver, "ship_limit_bytes": ship_limit_bytes}
        if deliver == "worker":
            task["store"] = store.location if root is None else str(root.resolve())
        todo.append((pid, task))
    write_index(out, idx)
    pending: dict[Future[dict[str, Any]], str] = {}
    ran: list[str] = []
    try:
        for pid, task in todo:
            pending[executor.submit(run_point, task)] = pid
            points[pid]["status"] = "running"
        for fut in as_completed(list(pending)):
            pid = pending.pop(fut)  # drop the future: a Dask worker may free the result
            try:
                res = fut.result()
            except Exception as exc:  # the worker died (not a training error)
                res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
            del fut
            if "session_data" in res:
                _store_returned(store, pid, configs[pid], res)
            points[pid].update(res)
            ran.append(pid)
            write_index(out, idx)
            if on_point is not None:
                on_point(pid, points[pid])
    finally:
        for fut, pid in pending.items():
            if not fut.done():
                fut.cancel()
                points[pid]["status"] = "pending"
        write_index(out, idx)
    return SweepResult(idx, ran, time.perf_counter() - t0)


def _store_returned(
    store: Store, pid: str, point: tuple[dict[str, Any], str], res: dict[str, Any]
) -> None:
    """Write a session file (and log) returned through a future, then its record."""
    data: bytes = res.pop("session_data")
    log = res.pop("log_data", None)
    try:
        if hashlib.sha256(data).hexdigest() != res.get("session_sha256"):
            raise OSError("the bytes received differ from the worker's file (SHA-256)")
        store.put_bytes(f"runs/{pid}.h5", data)
        if log is not None:
            store.put_bytes(f"runs/{pid}.log", log)
        res["stored_by"] = "client"
        store.put_bytes(f"runs/{pid}.json", _point_record(pid, point[0], point[1], res))
    except (OSError, ConfigError) as exc:
        res.update(status="failed", stored_by="",
                   error=f"storing to {store.location} failed: {type(exc).__name__}: {exc}"
                   [:300])


def _stored_result(store: Store, pid: str) -> dict[str, Any] | None:
    """A point's status and metrics in the store; None when it has no session file.

    A local store is judged by the session file itself; a URL store by the point's
    record, trusted only when the stored session file has the recorded size.
    """
    rel = f"runs/{pid}.h5"
    local = store.local_path(rel)
    if local is not None:
        return read_point_result(local) if local.exists() else None
    raw = store.read_bytes(f"runs/{pid}.json")
    if raw is None:
        return None
    try:
        rec = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or rec.get("schema") != "hwloop-sweep-point":
        return None
    if store.size(rel) != rec.get("session_bytes"):
        return None
    keys = ("status", "final_test_accuracy", "final_train_accuracy", "final_test_loss",
            "epochs", "steps", "error", "session_bytes", "session_sha256")
    return {k: rec.get(k) for k in keys}


def write_index(out: Path, idx: Mapping[str, Any]) -> None:
    """Write the index atomically (a reader sees the old or the new file, never a mix)."""
    _atomic_write(out / INDEX_NAME, json.dumps(idx, indent=1, sort_keys=False) + "\n")


# ----------------------------------------------------------------------------- report


def _rows(idx: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(v, point=k) for k, v in idx["points"].items()]


def aggregate(idx: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Completed points grouped over seeds: mean/std of the final test accuracy per point.

    Keys: dataset, read_noise (V), samples, sigma_eff (= read_noise/sqrt(samples), V),
    n_seeds, acc_mean, acc_std (fractions).
    """
    groups: dict[tuple[str, float, int], list[float]] = {}
    for r in _rows(idx):
        if r.get("status") != "completed" or r.get("final_test_accuracy") is None:
            continue
        groups.setdefault((r["dataset"], r["read_noise"], r["samples"]), []).append(
            float(r["final_test_accuracy"])
        )
    out = []
    for (d, s, n), accs in sorted(groups.items()):
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
        out.append(dict(dataset=d, read_noise=s, samples=n, sigma_eff=s / math.sqrt(n),
                        n_seeds=len(accs), acc_mean=mean, acc_std=std))
    return out


def measured_limits(idx: Mapping[str, Any], drop: float = 0.02) -> list[dict[str, Any]]:
    """The measured critical noise per dataset and N: where accuracy falls by ``drop``.

    For each dataset and N, the seed-mean final test accuracy is followed up the grid of
    sigma/sqrt(N). The reference is the mean accuracy of that dataset's sigma = 0 points
    (any N), or the group's lowest-noise point when there is none. The limit is the
    first sigma/sqrt(N) at which the mean falls below reference - ``drop``,
    interpolated linearly in log(sigma/sqrt(N)) between the last point above and the
    first point below the threshold.

    Args:
        idx: a sweep index.
        drop: accuracy loss that counts as "training fails", a fraction in (0, 1)
            (0.02 = 2 percentage points; choose it above the seed spread).

    Returns:
        Dicts with dataset, samples, reference_acc, reference (which points it is
        the mean of), threshold_acc, limit_sigma_eff_v and
        limit_sigma_v (= limit_sigma_eff_v * sqrt(N); both None when the grid does not
        cross the threshold), and ``bracket_v`` (the two grid values of sigma/sqrt(N)
        around the crossing) or ``note`` (why there is no crossing).
    """
    if not 0 < drop < 1:
        raise ConfigError(f"limit drop {drop} must be a fraction in (0, 1), e.g. 0.02")
    agg = aggregate(idx)
    out: list[dict[str, Any]] = []
    for ds in sorted({a["dataset"] for a in agg}):
        rows = [a for a in agg if a["dataset"] == ds]
        zero = [a for a in rows if a["read_noise"] == 0]
        for n in sorted({a["samples"] for a in rows}):
            noisy = sorted((a for a in rows if a["samples"] == n and a["read_noise"] > 0),
                           key=lambda a: a["sigma_eff"])
            if not noisy:
                continue
            if zero:
                w = [a["n_seeds"] for a in zero]
                ref = sum(a["acc_mean"] * k for a, k in zip(zero, w, strict=True)) / sum(w)
                curve = noisy
            else:
                ref, curve = noisy[0]["acc_mean"], noisy[1:]
            thr = ref - drop
            rec: dict[str, Any] = dict(dataset=ds, samples=n, reference_acc=ref,
                                       reference="sigma = 0" if zero else
                                       f"sigma/sqrt(N) = {noisy[0]['sigma_eff']:.3g} V",
                                       threshold_acc=thr, limit_sigma_eff_v=None,
                                       limit_sigma_v=None)
            prev = (0.0, ref) if zero else (noisy[0]["sigma_eff"], ref)
            for a in curve:
                x, y = a["sigma_eff"], a["acc_mean"]
                if y < thr:
                    x0, y0 = prev
                    if x0 <= 0:  # below the first noisy grid value
                        rec["note"] = f"below the grid (fails at {x:.3g} V already)"
                        break
                    t = (y0 - thr) / (y0 - y) if y0 != y else 1.0
                    lim = math.exp(math.log(x0) + t * (math.log(x) - math.log(x0)))
                    rec.update(limit_sigma_eff_v=lim, limit_sigma_v=lim * math.sqrt(n),
                               bracket_v=[x0, x])
                    break
                prev = (x, y)
            else:
                rec["note"] = f"above the grid (no fall of {100 * drop:.3g} points up to " \
                              f"{noisy[-1]['sigma_eff']:.3g} V)"
            out.append(rec)
    return out


def format_limits(limits: Sequence[Mapping[str, Any]], drop: float) -> str:
    """Plain-text lines of :func:`measured_limits`."""
    lines = [f"measured limit (mean accuracy {100 * drop:.3g} points below the reference):"]
    for r in limits:
        head = f"  {r['dataset']}, N = {r['samples']} (reference {r['reference']}): "
        if r["limit_sigma_eff_v"] is None:
            lines.append(head + r.get("note", "not crossed"))
        else:
            lines.append(head + f"sigma/sqrt(N) = {r['limit_sigma_eff_v']:.2e} V "
                         f"(sigma = {r['limit_sigma_v']:.2e} V; between "
                         f"{r['bracket_v'][0]:.2e} and {r['bracket_v'][1]:.2e} V)")
    return "\n".join(lines)


def format_table(idx: Mapping[str, Any]) -> str:
    """Plain-text table of every point."""
    head = f"{'point':40s} {'status':10s} {'sigma (V)':>10s} {'N':>4s} {'sigma/sqrtN':>11s} " \
           f"{'test acc':>8s} {'time (s)':>8s}"
    lines = [head]
    for r in _rows(idx):
        acc = r.get("final_test_accuracy")
        wt = r.get("wall_time_s")
        lines.append(
            f"{r['point'][:40]:40s} {r.get('status', ''):10s} {r['read_noise']:10.3g} "
            f"{r['samples']:4d} {r['read_noise'] / math.sqrt(r['samples']):11.3g} "
            f"{'' if acc is None else f'{100 * acc:7.2f}%':>8s} "
            f"{'' if wt is None else f'{wt:8.1f}':>8s}"
        )
    return "\n".join(lines)


def write_table_csv(out: Path, idx: Mapping[str, Any]) -> Path:
    """``OUT/table.csv``: one row per point (written atomically)."""
    cols = ["point", "dataset", "seed", "read_noise", "samples", "status",
            "final_test_accuracy", "final_train_accuracy", "final_test_loss", "epochs",
            "steps", "wall_time_s", "session", "error"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in _rows(idx):
        w.writerow(r)
    path = out / "table.csv"
    _atomic_write(path, buf.getvalue())
    return path


def plot_sweep(
    out: Path,
    idx: Mapping[str, Any],
    sigma_c_v: float | None,
    limits: Sequence[Mapping[str, Any]] = (),
) -> list[Path]:
    """One PNG per dataset: accuracy vs sigma per N, and vs sigma/sqrt(N) with the limit.

    ``sigma_c_v`` (the prediction) is a dashed line; each measured limit of
    :func:`measured_limits` is a triangle on the sigma/sqrt(N) axis at its threshold.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(idx)
    paths: list[Path] = []
    for ds in sorted({a["dataset"] for a in agg}):
        rows = [a for a in agg if a["dataset"] == ds]
        pos = [a["sigma_eff"] for a in rows if a["sigma_eff"] > 0] + [
            a["read_noise"] for a in rows if a["read_noise"] > 0]
        lin = min(pos) if pos else 1e-6
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for n in sorted({a["samples"] for a in rows}):
            sel = sorted((a for a in rows if a["samples"] == n), key=lambda a: a["read_noise"])
            ax1.errorbar([a["read_noise"] for a in sel], [100 * a["acc_mean"] for a in sel],
                         yerr=[100 * a["acc_std"] for a in sel], marker="o", capsize=3,
                         label=f"N = {n}")
            ax2.errorbar([a["sigma_eff"] for a in sel], [100 * a["acc_mean"] for a in sel],
                         yerr=[100 * a["acc_std"] for a in sel], marker="o", capsize=3,
                         ls="none", label=f"N = {n}")
        for ax, xl in ((ax1, "read noise sigma per sample (V)"),
                       (ax2, "sigma / sqrt(N) (V)")):
            ax.set_xscale("symlog", linthresh=lin)
            ax.set_xlabel(xl)
            ax.set_ylabel("final test accuracy (%)")
            ax.grid(alpha=0.3)
        if sigma_c_v is not None:
            ax2.axvline(sigma_c_v, color="k", ls="--",
                        label=f"predicted limit {sigma_c_v:.2g} V")
            ax1.axvline(sigma_c_v, color="k", ls=":", label="limit (N = 1)")
        for lim in limits:
            if lim["dataset"] == ds and lim["limit_sigma_eff_v"] is not None:
                ax2.plot([lim["limit_sigma_eff_v"]], [100 * lim["threshold_acc"]], "v",
                         ms=9, mfc="none", label=f"measured, N = {lim['samples']}: "
                         f"{lim['limit_sigma_eff_v']:.2g} V")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
        ax1.set_title(f"{ds}: accuracy vs sigma")
        ax2.set_title(f"{ds}: accuracy vs sigma/sqrt(N)")
        fig.tight_layout()
        safe = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(ds).name)
        path = out / f"accuracy_{safe}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def predicted_limit(spec: SweepSpec) -> float | None:
    """The planner's critical noise for the sweep's fixed options (first dataset), V."""
    from protocols.planner import predict

    vals = {k: v for k, v in spec.fixed.items() if k not in ("read_noise",)}
    vals["dataset"] = spec.dataset[0]
    vals["seed"] = spec.seed[0]
    return predict(vals, measure_timings=False).sigma_c_v


# ----------------------------------------------------------------------------- executors


_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _worker_env(threads: int) -> Iterator[None]:
    """Set the BLAS thread variables that spawned workers inherit; restore them after."""
    saved = {k: os.environ.get(k) for k in _BLAS_VARS}
    os.environ.update({k: str(threads) for k in _BLAS_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def make_executor(
    workers: int, scheduler: str | None, timeout_s: float, threads: int | None = None
) -> Iterator[Executor]:
    """Local processes, or a Dask cluster's executor when ``scheduler`` is given.

    Args:
        workers: local worker processes.
        scheduler: Dask scheduler address, or None for local processes.
        timeout_s: scheduler connect timeout, s.
        threads: BLAS threads per local worker (default 1: on a 2-core machine one
            DRN-1H point took 2.7 s with 1 thread and 6-10 s with 2; see
            docs/uncertainty.md).
    """
    if scheduler is None:
        if workers < 1:
            raise ConfigError(f"--workers {workers} must be >= 1")
        if threads is None:
            threads = 1
        if threads < 1:
            raise ConfigError(f"--threads {threads} must be >= 1")
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with _worker_env(threads), ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            yield ex
        return
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            "--scheduler needs Dask distributed; install it with pip install 'hwloop[sweep]'"
        ) from None
    try:
        client_cls: Any = distributed.Client  # untyped library
        client: Any = client_cls(scheduler, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler {scheduler} within {timeout_s:g} s "
            f"({type(exc).__name__}); check the address and that the scheduler is running"
        ) from None
    try:
        yield client.get_executor()
    finally:
        client.close()


# ----------------------------------------------------------------------------- CLI


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The grid from ``--grid`` and the command-line axes / ``--set`` options."""
    grid: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    if args.grid is not None:
        raw = read_toml(args.grid)
        extra = sorted(set(raw) - {"grid", "train"})
        if extra:
            raise ConfigError(f"{args.grid}: unknown table(s) {extra}; use [grid] and [train]")
        for name, dest in (("grid", grid), ("train", fixed)):
            t = raw.get(name, {})
            if not isinstance(t, dict):
                raise ConfigError(f"{args.grid}: {name} must be a table ([{name}])")
            dest.update(t)
    for key in AXES:
        v = getattr(args, key, None)
        if v is not None:
            grid[key] = list(v)
    fixed.update(parse_set(args.set or []))
    return build_spec(grid, fixed)


def run_sweep_cmd(args: argparse.Namespace) -> int:
    """Execute ``hwloop sweep``."""
    spec = spec_from_args(args)
    out = Path(args.out)
    n = len(spec.points())

    def progress(pid: str, r: dict[str, Any]) -> None:
        if not args.quiet:
            acc = r.get("final_test_accuracy")
            a = "" if acc is None else f" test acc {100 * acc:.2f} %"
            err = f" ({r['error']})" if r.get("error") else ""
            print(f"hwloop sweep: {pid}: {r.get('status')}{a}{err}", file=sys.stderr)

    if args.timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout} must be > 0 s")
    if not 0 < args.limit_drop < 1:
        raise ConfigError(f"--limit-drop {args.limit_drop} must be a fraction in (0, 1), "
                          "e.g. 0.02 for 2 points of accuracy")
    if not args.ship_limit_mb > 0:
        raise ConfigError(f"--ship-limit-mb {args.ship_limit_mb} must be > 0 MB")
    store = Store(out if args.store is None else args.store)
    deliver = args.deliver
    if deliver == "auto":  # a local store of this machine is not a Dask worker's
        deliver = "client" if args.scheduler is not None and store.is_local else "worker"
    log_mode = spec.fixed.get("log_samples")
    with make_executor(args.workers, args.scheduler, args.timeout, args.threads) as ex:
        store.prepare()
        if not args.quiet:
            how = "returned to this process" if deliver == "client" else "written by workers"
            print(f"hwloop sweep: {n} point(s) in {out}; session files to "
                  f"{store.where('runs')} ({how}); {_log_mode_line(log_mode)}", file=sys.stderr)
        res = run_sweep(spec, out, ex, store=store, deliver=deliver,
                        ship_limit_bytes=int(args.ship_limit_mb * 1e6), on_point=progress)
    write_table_csv(out, res.index)
    sigma_c = None
    figures: list[Path] = []
    limits = measured_limits(res.index, args.limit_drop)
    if not args.no_plots:
        try:
            sigma_c = predicted_limit(spec)
        except HwloopError as exc:
            print(f"hwloop sweep: no predicted limit ({exc})", file=sys.stderr)
        figures = plot_sweep(out, res.index, sigma_c, limits)
    # this grid's points; the store may hold more (other grids with the same fixed options)
    statuses = [res.index["points"][point_id(p)].get("status") for p in spec.points()]
    summary = {
        "out": str(out),
        "store": store.location,
        "deliver": deliver,
        "log_samples": log_mode,
        "points": n,
        "store_points": len(res.index["points"]),
        "ran": len(res.ran),
        "completed": statuses.count("completed"),
        "failed": n - statuses.count("completed"),
        "wall_time_s": res.wall_time_s,
        "predicted_limit_v": sigma_c,
        "limit_drop": args.limit_drop,
        "measured_limits": limits,
        "figures": [str(f) for f in figures],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_table(res.index))
        if limits:
            print(format_limits(limits, args.limit_drop))
        print(
            f"{summary['completed']}/{n} point(s) of this grid complete ({len(res.ran)} run "
            f"now, {res.wall_time_s:.1f} s; the store holds {summary['store_points']}); "
            f"index {out / INDEX_NAME}, table {out / 'table.csv'}"
            + (f", predicted limit {sigma_c:.3g} V" if sigma_c is not None else "")
        )
        print(_log_mode_line(log_mode))
    return 0 if summary["failed"] == 0 else 1


def _log_mode_line(mode: Any) -> str:
    """The line that says what the sweep's session files keep."""
    if mode == "summary":
        return ('runs logged with log_samples = "summary" (per-node means and standard '
                "errors, not every raw sample; --set log_samples='\"raw\"' keeps them)")
    return f"runs logged with log_samples = {json.dumps(mode)}"


def register_sweep(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hwloop sweep``."""
    p = sub.add_parser(
        "sweep",
        help="grid of training runs over read noise x samples x datasets x seeds",
        description="Run one emulator training per grid point (on local processes or a Dask "
        "cluster, which needs no shared file system), each into its own session file "
        "STORE/runs/<point>.h5 (STORE: OUT or --store), with OUT/index.json updated after "
        "each point; re-running continues an interrupted sweep. Writes OUT/table.csv and "
        "accuracy plots. Exit 0 when every point completed, 1 when one failed (see "
        "index.json), 2 for a bad grid.",
    )
    p.add_argument("--grid", type=Path, help="TOML file with [grid] axes and [train] options")
    p.add_argument("--read-noise", dest="read_noise", type=float, nargs="+",
                   help="read-noise std per sample, V (axis)")
    p.add_argument("--samples", type=int, nargs="+", help="samples per phase (axis)")
    p.add_argument("--dataset", nargs="+", help="datasets (axis)")
    p.add_argument("--seed", type=int, nargs="+", help="seeds (axis)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="fixed training option, e.g. --set epochs=2 (repeatable)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--store", default=None,
                   help="where session files go: a directory (default: OUT) or an fsspec "
                   "URL such as s3://bucket/sweep (sweep extra, plus that protocol's package)")
    p.add_argument("--deliver", choices=("auto", "worker", "client"), default="auto",
                   help="who writes session files to the store: the workers, or this "
                   "process from the bytes the workers return (default auto: client for a "
                   "Dask cluster with a local --store, else worker)")
    p.add_argument("--ship-limit-mb", dest="ship_limit_mb", type=float, default=SHIP_LIMIT_MB,
                   help="largest session file a worker returns through its future, MB "
                   f"(default {SHIP_LIMIT_MB:g}; a larger one fails its point)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads per local worker (default 1)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address tcp://HOST:PORT (instead of local processes)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="scheduler connect timeout, s (default 10)")
    p.add_argument("--limit-drop", type=float, default=0.02,
                   help="accuracy loss (fraction) that marks the measured limit (default "
                   "0.02: 2 points below sigma = 0)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots and the planner")
    p.add_argument("--quiet", action="store_true", help="no per-point progress lines")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run_sweep_cmd)
