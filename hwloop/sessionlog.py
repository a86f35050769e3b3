"""The session file: one HDF5 file per run, written step by step, crash-safe.

The layout (schema ``hwloop-session`` version 1) is documented group by group in
``docs/session-format.md``; :class:`SessionWriter` below is the reference. In short:

* root attributes: identity, times, exit status, seed, the resolved configuration;
* ``/device``: the full board description (topology, limits, noise model);
* ``/steps``: one row per completed EP step in chunked, resizable datasets
  (raw samples ``[step, example, phase, sample, node]``, flags, timestamps,
  inputs, nudges, updates, per-step metrics and the generator state);
* ``/programming``: one row per programmed edge (structured table);
* ``/checkpoints``: full state every K steps (conductances, biases, optimiser,
  programmer and board state, generator state, the epoch's example order);
* ``/epochs`` and ``/events``: per-epoch metrics and the event log.

Crash safety (decision record DR-12 in ``docs/architecture.md``): every dataset
is created before writing starts; the file is then switched to HDF5's SWMR mode
(single writer, multiple readers), in which the library orders its metadata
writes so that the file on disk is always a consistent, readable file, and
everything is flushed at each step boundary. A step counts as complete when its
row in ``/steps/index`` exists (that row is written last) and its checksum
matches. A file left behind by a killed writer is opened read-only in SWMR mode
(plain ``h5py.File`` refuses it because its "open for writing" flag is still
set); :func:`repair` rewrites it as a clean file, which ``hwloop resume`` does
before appending.

Nothing in a session file is ever executed or unpickled: configuration is TOML
text, structured data are numeric tables, JSON is only parsed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from hwloop import __version__
from hwloop.device import (
    BoardDescription,
    Clamp,
    LayerBlock,
    NodeReading,
    NodeRole,
    SafetyLimits,
)
from hwloop.errors import ConfigError
from hwloop.session import sigint_held

SCHEMA = "hwloop-session"
SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "stopped", "aborted", "failed")
LIBVER = ("v110", "latest")

Array = NDArray[np.floating]

# ----------------------------------------------------------------------------- record types

INDEX_DTYPE = np.dtype(
    [
        ("step", "<i8"),
        ("epoch", "<i4"),
        ("batch", "<i4"),
        ("n_examples", "<i4"),
        ("t_start_unix_s", "<f8"),
        ("duration_s", "<f8"),
        ("loss", "<f8"),
        ("accuracy", "<f8"),
        ("pulses", "<i8"),
        ("bound_hits", "<i8"),
        ("prog_row_start", "<i8"),
        ("prog_row_count", "<i8"),
        ("rng_state_hi", "<u8"),
        ("rng_state_lo", "<u8"),
        ("rng_inc_hi", "<u8"),
        ("rng_inc_lo", "<u8"),
        ("rng_has_uint32", "u1"),
        ("rng_uinteger", "<u4"),
        ("crc32", "<u4"),
    ]
)
"""One row per completed step; ``crc32`` covers the step's samples and inputs."""

INDEX_UNITS = {
    "step": "1 (global step number, from 0)",
    "epoch": "1 (from 0)",
    "batch": "1 (mini-batch number within the epoch, from 0)",
    "n_examples": "1",
    "t_start_unix_s": "s (Unix time)",
    "duration_s": "s",
    "loss": "V^2 (mean output cost of the free phase)",
    "accuracy": "1 (fraction of the batch classified right)",
    "pulses": "1",
    "bound_hits": "1",
    "prog_row_start": "1 (first row in /programming/records)",
    "prog_row_count": "1",
    "rng_*": "PCG64 state after the step",
    "crc32": "1 (CRC-32 of samples_v and inputs_v bytes)",
}

PROG_DTYPE = np.dtype(
    [
        ("step", "<i8"),
        ("edge", "<i8"),
        ("requested_s", "<f4"),
        ("target_s", "<f4"),
        ("achieved_s", "<f4"),
        ("pulses", "<i4"),
        ("converged", "u1"),
        ("reason", "i1"),
    ]
)
"""One row per programmed edge."""

EVENT_DTYPE = np.dtype(
    [("t_unix_s", "<f8"), ("step", "<i8"), ("kind", "S16"), ("message", "S240")]
)
EVENT_KINDS = ("start", "warning", "retry", "safety", "stop", "resume", "checkpoint", "info")

CKPT_DTYPE = np.dtype(
    [
        ("steps_done", "<i8"),
        ("epoch", "<i4"),
        ("batch", "<i4"),
        ("t_unix_s", "<f8"),
        ("rng_state_hi", "<u8"),
        ("rng_state_lo", "<u8"),
        ("rng_inc_hi", "<u8"),
        ("rng_inc_lo", "<u8"),
        ("rng_has_uint32", "u1"),
        ("rng_uinteger", "<u4"),
    ]
)
"""One row per checkpoint: ``steps_done`` steps were complete; the next step is
batch ``batch`` of epoch ``epoch`` (``batch == 0`` at an epoch start)."""

EPOCH_FIELDS = (
    ("epoch", "1"),
    ("train_loss", "V^2"),
    ("train_accuracy", "1"),
    ("test_accuracy", "1"),
    ("test_loss", "V^2"),
    ("time_s", "s"),
    ("examples_per_s", "1/s"),
    ("pulses", "1"),
    ("bound_hits", "1"),
)
EPOCH_DTYPE = np.dtype([(name, "<f8") for name, _ in EPOCH_FIELDS])

_MASK64 = (1 << 64) - 1


def rng_to_fields(rng: np.random.Generator) -> dict[str, int]:
    """The PCG64 state of ``rng`` as integer fields (exact)."""
    st = rng.bit_generator.state
    if st.get("bit_generator") != "PCG64":
        raise ConfigError("session logs need a PCG64 generator (numpy.random.default_rng)")
    s, inc = int(st["state"]["state"]), int(st["state"]["inc"])
    return {
        "rng_state_hi": s >> 64,
        "rng_state_lo": s & _MASK64,
        "rng_inc_hi": inc >> 64,
        "rng_inc_lo": inc & _MASK64,
        "rng_has_uint32": int(st["has_uint32"]),
        "rng_uinteger": int(st["uinteger"]),
    }


def rng_from_fields(row: Any) -> dict[str, Any]:
    """A ``bit_generator.state`` dict from a row written by :func:`rng_to_fields`."""
    return {
        "bit_generator": "PCG64",
        "state": {
            "state": (int(row["rng_state_hi"]) << 64) | int(row["rng_state_lo"]),
            "inc": (int(row["rng_inc_hi"]) << 64) | int(row["rng_inc_lo"]),
        },
        "has_uint32": int(row["rng_has_uint32"]),
        "uinteger": int(row["rng_uinteger"]),
    }


@dataclass(frozen=True)
class LogOptions:
    """What the session file keeps.

    Attributes:
        samples: ``"raw"`` keeps every sample (default); ``"summary"`` keeps the
            per-node mean and standard error of each phase only.
        updates: keep the requested conductance change of every edge at every step.
        programming: ``"all"`` rows for every programmed edge; ``"exceptions"``
            only for edges that did not end as requested (at a bound, not converged,
            capped, stuck); ``"off"``: none (the step index keeps the pulse and
            bound-hit counts).
        checkpoint_every: full-state checkpoint every this many steps (>= 1);
            a checkpoint is also written at every epoch end and at a clean stop.
        compress: compress the compressible datasets (inputs, flags, examples,
            checkpoints) with LZF; raw noisy samples are stored uncompressed
            (their float mantissas are noise: LZF saves < 10 % at several times
            the write time).
    """

    samples: str = "raw"
    updates: bool = True
    programming: str = "all"
    checkpoint_every: int = 100
    compress: bool = True
    compress_samples: bool = False

    def __post_init__(self) -> None:
        if self.samples not in ("raw", "summary"):
            raise ConfigError(f"log samples = {self.samples!r} must be 'raw' or 'summary'")
        if self.programming not in ("all", "exceptions", "off"):
            raise ConfigError(
                f"log programming = {self.programming!r} must be 'all', 'exceptions' or 'off'"
            )
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every = {self.checkpoint_every} must be >= 1")


@dataclass(frozen=True)
class StepLayout:
    """Fixed shapes of the per-step datasets.

    Attributes:
        batch: examples per step (a shorter last batch is padded).
        phases: phases per step (free first).
        max_samples: samples per phase (the sample axis; padded with NaN when a
            phase took fewer).
        n_inputs: input nodes.
        n_outputs: output nodes.
        nudge_kind: ``"resistive"`` (targets, V) or ``"current"`` (currents, A).
    """

    batch: int
    phases: int
    max_samples: int
    n_inputs: int
    n_outputs: int
    nudge_kind: str
    sample_dtype: str = "<f4"
    """Storage type of the voltages: the backend's own (float32 emulator: ``<f4``;
    float64 emulator and instruments: ``<f8``), so that recorded readings are exact."""


@dataclass(eq=False)
class StepLog:
    """Everything one step measured and did, as the session file stores it.

    Attributes:
        epoch: epoch number, from 0.
        batch: mini-batch number within the epoch, from 0.
        examples: ``(b,)`` training-set indices of the batch.
        inputs_v: ``(b, n_inputs)`` input voltages applied, V.
        readings: one :class:`NodeReading` per phase (free first).
        betas_s: ``(phases,)`` signed nudge strength per phase, S (0: free).
        nudge_values: ``(phases, b, n_outputs)`` targets (V) or currents (A) per
            phase (zeros for the free phase).
        update_g_s: ``(n_edges,)`` requested conductance changes, S, or None.
        update_b_a: ``(n_bias,)`` requested bias changes, A, or None.
        prog_edges, prog_requested_s, prog_target_s, prog_achieved_s,
        prog_pulses, prog_reason: the programming record of the addressed edges.
        loss: mean free-phase output cost, V^2.
        accuracy: fraction of the batch classified right.
        t_start_unix_s, duration_s: when the step started and how long it took.
        rng: the run's generator (its state after the step is recorded).
    """

    epoch: int
    batch: int
    examples: NDArray[np.integer]
    inputs_v: Array
    readings: list[NodeReading]
    betas_s: Array
    nudge_values: Array
    rng: np.random.Generator
    update_g_s: Array | None = None
    update_b_a: Array | None = None
    prog_edges: NDArray[np.integer] | None = None
    prog_requested_s: Array | None = None
    prog_target_s: Array | None = None
    prog_achieved_s: Array | None = None
    prog_pulses: NDArray[np.integer] | None = None
    prog_reason: NDArray[np.integer] | None = None
    loss: float = float("nan")
    accuracy: float = float("nan")
    t_start_unix_s: float = 0.0
    duration_s: float = 0.0


@dataclass(eq=False)
class Checkpoint:
    """The full state needed to continue a run exactly.

    Attributes:
        steps_done: steps complete at the checkpoint.
        epoch: epoch of the next step (from 0).
        batch: mini-batch number of the next step within that epoch.
        rng_state: the generator's ``bit_generator.state``.
        order: ``(n_train,)`` example order of the epoch under way.
        arrays: named state arrays (``conductances_s``, ``biases_a``,
            ``optimiser/...``, ``programmer/...``, ``board/...``); the names and
            shapes are fixed by the first checkpoint of the file.
        t_unix_s: when it was taken.
    """

    steps_done: int
    epoch: int
    batch: int
    rng_state: dict[str, Any]
    order: NDArray[np.integer]
    arrays: dict[str, NDArray[Any]]
    t_unix_s: float = 0.0


# ----------------------------------------------------------------------------- helpers


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def git_commit() -> str:
    """The commit of the hwloop checkout in use ('' when not a git checkout)."""
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return ""
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    commit = out.stdout.strip()
    return commit + ("-dirty" if commit and dirty.stdout.strip() else "")


def check_session_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """Validate a session-file path before any work starts.

    Raises:
        ConfigError: wrong suffix, missing directory, or an existing file without ``overwrite``.
    """
    p = Path(path)
    if p.suffix not in (".h5", ".hdf5"):
        raise ConfigError(f"session file {p} must end in .h5 or .hdf5")
    if not p.parent.exists():
        raise ConfigError(f"directory {p.parent} does not exist; create it first")
    if p.exists() and not overwrite:
        raise ConfigError(
            f"session file {p} already exists; choose another --out, add --overwrite, "
            "or continue it with 'hwloop resume'"
        )
    return p


def _units(ds: h5py.Dataset | h5py.Group, units: str) -> None:
    ds.attrs["units"] = units


def description_to_group(grp: h5py.Group, desc: BoardDescription) -> None:
    """Store the full board description in ``grp`` (see docs/session-format.md)."""
    grp.attrs["name"] = desc.name
    grp.attrs["backend"] = desc.backend
    grp.attrs["g_min_s"] = desc.g_min_s
    grp.attrs["g_max_s"] = desc.g_max_s
    grp.attrs["supports_complex_nudge"] = desc.supports_complex_nudge
    grp.attrs["v_read_range_v"] = desc.v_read_range_v
    grp.attrs["pulse_step_s"] = desc.pulse_step_s
    grp.attrs["g_scale_s"] = desc.g_scale_s
    grp.attrs["limits_json"] = json.dumps(
        {k: getattr(desc.limits, k) for k in desc.limits.__dataclass_fields__}
    )
    grp.attrs["info_json"] = json.dumps(desc.info, default=str)
    grp.attrs["summary_json"] = json.dumps(desc.summary(), default=str)
    names = np.array([n.encode() for n in desc.node_names])
    _units(grp.create_dataset("node_names", data=names), "text")
    roles = np.array([str(r).encode() for r in desc.node_roles])
    _units(grp.create_dataset("node_roles", data=roles), "text (NodeRole)")
    clamps = np.array([str(c).encode() for c in desc.node_clamps])
    _units(grp.create_dataset("node_clamps", data=clamps), "text (Clamp)")
    _units(
        grp.create_dataset(
            "edge_nodes", data=np.asarray(desc.edge_nodes, dtype=np.int64), compression="gzip"
        ),
        "1 (node indices)",
    )
    _units(
        grp.create_dataset("bias_nodes", data=np.asarray(desc.bias_nodes, dtype=np.int64)),
        "1 (node indices)",
    )
    if desc.layers is not None:
        lay = grp.create_group("layers")
        for i, blk in enumerate(desc.layers):
            g = lay.create_group(f"{i:03d}")
            _units(g.create_dataset("src", data=np.asarray(blk.src, dtype=np.int64)), "1")
            _units(g.create_dataset("dst", data=np.asarray(blk.dst, dtype=np.int64)), "1")
            g.attrs["edge_offset"] = blk.edge_offset


def description_from_group(grp: h5py.Group) -> BoardDescription:
    """Rebuild the board description stored by :func:`description_to_group`."""
    layers = None
    if "layers" in grp:
        layers = tuple(
            LayerBlock(
                src=np.asarray(g["src"][()], dtype=np.int64),
                dst=np.asarray(g["dst"][()], dtype=np.int64),
                edge_offset=int(g.attrs["edge_offset"]),
            )
            for _, g in sorted(grp["layers"].items())
        )
    limits = SafetyLimits(**json.loads(grp.attrs["limits_json"]))
    return BoardDescription(
        name=str(grp.attrs["name"]),
        backend=str(grp.attrs["backend"]),
        node_names=tuple(b.decode() for b in grp["node_names"][()]),
        node_roles=tuple(NodeRole(b.decode()) for b in grp["node_roles"][()]),
        node_clamps=tuple(Clamp(b.decode()) for b in grp["node_clamps"][()]),
        edge_nodes=np.asarray(grp["edge_nodes"][()], dtype=np.int64),
        g_min_s=float(grp.attrs["g_min_s"]),
        g_max_s=float(grp.attrs["g_max_s"]),
        limits=limits,
        supports_complex_nudge=bool(grp.attrs["supports_complex_nudge"]),
        layers=layers,
        bias_nodes=np.asarray(grp["bias_nodes"][()], dtype=np.int64),
        v_read_range_v=float(grp.attrs["v_read_range_v"]),
        pulse_step_s=float(grp.attrs["pulse_step_s"]),
        g_scale_s=float(grp.attrs["g_scale_s"]),
        info=json.loads(grp.attrs["info_json"]),
    )


def _layout_and_options(f: h5py.File) -> tuple[StepLayout, LogOptions]:
    """The per-step layout and the logging options recorded in a session file."""
    a = f["steps"].attrs
    layout = StepLayout(
        batch=int(a["batch"]),
        phases=int(a["phases"]),
        max_samples=int(a["max_samples"]),
        n_inputs=int(a["n_inputs"]),
        n_outputs=int(a["n_outputs"]),
        nudge_kind=str(a["nudge_kind"]),
        sample_dtype=str(a.get("sample_dtype", "<f4")),
    )
    return layout, LogOptions(**json.loads(f.attrs["log_options_json"]))


class _Appender:
    """Appends rows to one resizable dataset through h5py's low-level API.

    The high-level ``resize`` + ``__setitem__`` pair costs about 0.5 ms per call
    (selection and dtype bookkeeping); this keeps the handle, dtype and row count.
    """

    __slots__ = ("block", "capacity", "dsid", "dtype", "n", "row_shape")

    def __init__(self, ds: h5py.Dataset, block: int = 0) -> None:
        self.dsid = ds.id
        self.dtype = ds.dtype
        self.row_shape: tuple[int, ...] = tuple(ds.shape[1:])
        self.n = int(ds.shape[0])
        self.capacity = self.n
        self.block = block

    def append(self, value: Any, rows: int = 1) -> None:
        """Append ``rows`` rows (``value`` of shape ``(rows, *row_shape)`` or one row).

        With ``block > 0`` the dataset grows ``block`` rows at a time (fewer metadata
        updates); :meth:`SessionWriter.close` trims it to the rows written.
        """
        if rows == 0:
            return
        arr = np.ascontiguousarray(value, dtype=self.dtype).reshape((rows, *self.row_shape))
        n = self.n
        if n + rows > self.capacity:
            self.capacity = n + rows + self.block
            self.dsid.set_extent((self.capacity, *self.row_shape))
        fspace = self.dsid.get_space()
        fspace.select_hyperslab((n,) + (0,) * len(self.row_shape), arr.shape)
        mspace = h5py.h5s.create_simple(arr.shape)
        self.dsid.write(mspace, fspace, arr)
        self.n = n + rows


def _crc(*arrays: NDArray[Any]) -> int:
    c = 0
    for a in arrays:
        c = zlib.crc32(np.ascontiguousarray(a).tobytes(), c)
    return c


# ----------------------------------------------------------------------------- writer


class SessionError(ConfigError):
    """A session file that cannot be used (not hwloop, newer schema, damaged)."""




class SessionWriter:
    """Writes one session file; see the module docstring for the guarantees.

    Use :meth:`create` for a new run and :meth:`reopen` to append to a stopped or
    crashed one. Every write holds Ctrl-C back until it is on disk.
    """

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path = path
        self._f = f
        self._closed = False
        self.layout, self.options = _layout_and_options(f)
        self.run_id = str(f.attrs["run_id"])
        self.free_nodes = np.asarray(f["steps/free_nodes"][()], dtype=np.int64)
        self._apps: dict[str, _Appender] = {}
        self._n_update_g = int(f["steps/update_g_s"].shape[1]) if "update_g_s" in f["steps"] else 0
        self._n_bias = int(f["steps/update_b_a"].shape[1])

    def _app(self, path: str) -> _Appender:
        app = self._apps.get(path)
        if app is None:
            app = self._apps[path] = _Appender(self._f[path])
        return app

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        desc: BoardDescription,
        layout: StepLayout,
        first_checkpoint: Checkpoint,
        config_toml: str,
        seed: int,
        backend_options: Mapping[str, Any] | None = None,
        defaults_source: str = "",
        options: LogOptions | None = None,
        overwrite: bool = False,
    ) -> SessionWriter:
        """Create the file, every dataset in it, and the first checkpoint; enter SWMR mode.

        Args:
            path: the ``.h5`` file.
            desc: the board description.
            layout: fixed per-step shapes.
            first_checkpoint: the state before the first step (fixes the names and
                shapes of the checkpoint arrays).
            config_toml: the resolved configuration as TOML text.
            seed: the run's seed.
            backend_options: the options the board was opened with (JSON-able).
            defaults_source: where unset hyper-parameters came from.
            options: what to keep (see :class:`LogOptions`).
            overwrite: replace an existing file.
        """
        p = check_session_path(path, overwrite=overwrite)
        opts = options or LogOptions()
        lzf: dict[str, Any] = {"compression": "lzf"} if opts.compress else {}
        free = np.asarray(desc.free_nodes, dtype=np.int64)
        n_free, n_edges, n_bias = len(free), desc.n_edges, len(desc.bias_nodes)
        b, ph, ms = layout.batch, layout.phases, layout.max_samples
        with sigint_held():
            tmp = p.with_name(p.name + ".creating")
            f = h5py.File(tmp, "w", libver=LIBVER)
            try:
                f.attrs.update(
                    schema=SCHEMA,
                    schema_version=SCHEMA_VERSION,
                    run_id=uuid.uuid4().hex,
                    hwloop_version=__version__,
                    git_commit=git_commit(),
                    started_utc=_now_iso(),
                    seed=int(seed),
                    config_toml=config_toml,
                    defaults_source=defaults_source,
                    backend_options_json=json.dumps(dict(backend_options or {}), default=str),
                    log_options_json=json.dumps(opts.__dict__),
                    resumes=0,
                )
                # changed while the file is in SWMR mode: fixed-size, created up front
                for name, size in _MUTABLE_ATTRS.items():
                    f.attrs.create(name, np.bytes_(b""), dtype=f"S{size}")
                f.attrs.modify("status", np.bytes_(b"running"))
                description_to_group(f.create_group("device"), desc)
                s = f.create_group("steps")
                s.attrs.update(
                    batch=b,
                    phases=ph,
                    max_samples=ms,
                    n_inputs=layout.n_inputs,
                    n_outputs=layout.n_outputs,
                    nudge_kind=layout.nudge_kind,
                    sample_dtype=layout.sample_dtype,
                    samples_mode=opts.samples,
                )
                _units(s.create_dataset("free_nodes", data=free), "1 (node indices)")

                def grow(name: str, shape: tuple[int, ...], dtype: Any, units: str,
                         chunk_rows: int = 1, **kw: Any) -> None:
                    ds = s.create_dataset(
                        name,
                        shape=(0, *shape),
                        maxshape=(None, *shape),
                        chunks=(chunk_rows, *shape) if shape else (chunk_rows,),
                        dtype=dtype,
                        **kw,
                    )
                    _units(ds, units)

                sdt = np.dtype(layout.sample_dtype)
                if sdt not in (np.dtype("<f4"), np.dtype("<f8")):
                    raise ConfigError(f"sample dtype {layout.sample_dtype} must be <f4 or <f8")
                grow("index", (), INDEX_DTYPE, json.dumps(INDEX_UNITS), chunk_rows=256)
                grow("examples", (b,), "<i8", "1 (training-set index; -1 pads)", 64)
                if opts.samples == "raw":
                    zs = lzf if opts.compress_samples else {}
                    grow("samples_v", (b, ph, ms, n_free), sdt, "V", fillvalue=np.nan, **zs)
                    grow("flags", (b, ph, ms, n_free), "u1", "SampleFlag bits", **lzf)
                    grow("sample_time_s", (ph, ms, b), "<f8", "s (board clock)",
                         fillvalue=np.nan, **lzf)
                else:
                    grow("mean_v", (b, ph, n_free), sdt, "V", fillvalue=np.nan)
                    grow("sem_v", (b, ph, n_free), "<f4", "V", fillvalue=np.nan)
                    grow("flags_any", (b, ph, n_free), "u1", "SampleFlag bits (OR)", **lzf)
                grow("n_samples", (ph,), "<i4", "1", 256)
                grow("inputs_v", (b, layout.n_inputs), "<f4", "V", **lzf)
                grow("betas_s", (ph,), "<f8", "S", 256)
                nudge_unit = "V (target)" if layout.nudge_kind == "resistive" else "A"
                grow("nudge_values", (ph, b, layout.n_outputs), "<f4", nudge_unit, 16)
                if opts.updates:
                    grow("update_g_s", (n_edges,), "<f4", "S")
                grow("update_b_a", (n_bias,), "<f4", "A", 256)
                pr = f.create_group("programming")
                ds = pr.create_dataset(
                    "records", shape=(0,), maxshape=(None,), chunks=(16384,), dtype=PROG_DTYPE
                )
                _units(ds, json.dumps({"requested_s": "S", "target_s": "S",
                                       "achieved_s": "S", "pulses": "1", "reason": "Reason"}))
                ep = f.create_dataset(
                    "epochs", shape=(0,), maxshape=(None,), chunks=(64,), dtype=EPOCH_DTYPE
                )
                _units(ep, json.dumps(dict(EPOCH_FIELDS)))
                ev = f.create_dataset(
                    "events", shape=(0,), maxshape=(None,), chunks=(64,), dtype=EVENT_DTYPE
                )
                _units(ev, json.dumps({"t_unix_s": "s (Unix time)", "step": "1"}))
                c = f.create_group("checkpoints")
                ci = c.create_dataset(
                    "index", shape=(0,), maxshape=(None,), chunks=(64,), dtype=CKPT_DTYPE
                )
                _units(ci, "see docs/session-format.md")
                order = np.asarray(first_checkpoint.order, dtype=np.int64)
                ds = c.create_dataset(
                    "order", shape=(0, len(order)), maxshape=(None, len(order)),
                    chunks=(1, len(order)), dtype="<i8", **lzf,
                )
                _units(ds, "1 (training-set indices)")
                for name, arr in first_checkpoint.arrays.items():
                    a = np.asarray(arr)
                    ds = c.create_dataset(
                        name, shape=(0, *a.shape), maxshape=(None, *a.shape),
                        chunks=(1, *a.shape) if a.size else None, dtype=a.dtype,
                    )
                    _units(ds, _checkpoint_units(name))
                w = cls(tmp, f)
                w.event("start", 0, f"session started (hwloop {__version__})", flush=False)
                w.write_checkpoint(first_checkpoint, flush=False)
            except BaseException:
                f.close()
                tmp.unlink(missing_ok=True)
                raise
            f.close()
            os.replace(tmp, p)  # atomic: the file appears complete or not at all
            return cls(p, _open_swmr_write(p))

    @classmethod
    def reopen(cls, path: str | Path) -> SessionWriter:
        """Open a cleanly closed session file (see :func:`repair`) to append to it.

        The file is opened straight into SWMR mode (no moment in which a kill could
        leave it flagged as open by a plain writer).
        """
        p = Path(path)
        with sigint_held():
            f = _open_swmr_write(p)
            try:
                _set_attr(f, "status", "running")
                _set_attr(f, "reason", "")
                _set_attr(f, "stopped_utc", "")
                f.attrs.modify("resumes", int(f.attrs.get("resumes", 0)) + 1)
                w = cls(p, f)
                f.flush()
            except BaseException:
                f.close()
                raise
        return w

    # -- appending --------------------------------------------------------------------------

    @property
    def steps_done(self) -> int:
        """Steps recorded so far."""
        return self._app("steps/index").n

    def _pack(self, log: StepLog) -> tuple[dict[str, NDArray[Any]], int, int]:
        """The padded per-step arrays of ``log``, its checksum and its batch size."""
        lay = self.layout
        bsz = len(log.examples)
        if bsz > lay.batch or len(log.readings) != lay.phases:
            raise ConfigError(
                f"step record does not fit the session layout (batch {bsz} > {lay.batch} "
                f"or {len(log.readings)} phases != {lay.phases})"
            )
        n_free = len(self.free_nodes)
        ex = np.full(lay.batch, -1, dtype=np.int64)
        ex[:bsz] = log.examples
        inputs = np.zeros((lay.batch, lay.n_inputs), dtype=np.float32)
        inputs[:bsz] = np.asarray(log.inputs_v).real
        n_samp = np.array([r.n_samples for r in log.readings], dtype=np.int32)
        if int(n_samp.max()) > lay.max_samples:
            raise ConfigError(f"a phase took {int(n_samp.max())} samples > {lay.max_samples}")
        out: dict[str, NDArray[Any]] = {}
        if self.options.samples == "raw":
            samples = np.full(
                (lay.batch, lay.phases, lay.max_samples, n_free), np.nan, dtype=lay.sample_dtype
            )
            flags = np.zeros(samples.shape, dtype=np.uint8)
            times = np.full((lay.phases, lay.max_samples, lay.batch), np.nan)
            for p, r in enumerate(log.readings):
                k = r.n_samples
                samples[:bsz, p, :k] = np.moveaxis(np.asarray(r.samples_v).real, 0, 1)
                flags[:bsz, p, :k] = np.moveaxis(r.flags, 0, 1)
                times[p, :k, :bsz] = r.timestamps_s
            out.update(samples_v=samples, flags=flags, sample_time_s=times)
            crc = _crc(samples, inputs)
        else:
            mean = np.full((lay.batch, lay.phases, n_free), np.nan, dtype=lay.sample_dtype)
            sem = np.full_like(mean, np.nan)
            fany = np.zeros(mean.shape, dtype=np.uint8)
            for p, r in enumerate(log.readings):
                mean[:bsz, p] = np.asarray(r.mean_v).real
                sem[:bsz, p] = r.sem_v
                fany[:bsz, p] = np.bitwise_or.reduce(r.flags, axis=0)
            out.update(mean_v=mean, sem_v=sem, flags_any=fany)
            crc = _crc(mean, inputs)
        out["examples"] = ex
        out["n_samples"] = n_samp
        out["inputs_v"] = inputs
        out["betas_s"] = np.asarray(log.betas_s, dtype=np.float64)
        nv = np.zeros((lay.phases, lay.batch, lay.n_outputs), dtype=np.float32)
        nv[:, :bsz] = np.asarray(log.nudge_values).real
        out["nudge_values"] = nv
        if self.options.updates:
            ug = np.zeros(self._n_update_g, dtype=np.float32)
            if log.update_g_s is not None:
                ug[:] = log.update_g_s
            out["update_g_s"] = ug
        ub = np.zeros(self._n_bias, dtype=np.float32)
        if log.update_b_a is not None:
            ub[:] = log.update_b_a
        out["update_b_a"] = ub
        return out, crc, bsz

    def verify_step(self, step: int, log: StepLog) -> None:
        """Check that a re-run step reproduced recorded step ``step``.

        Resume on a deterministic backend re-runs the steps after the last checkpoint.

        Raises:
            SessionError: the step differs from the recording.
        """
        _, crc, bsz = self._pack(log)
        row = self._f["steps/index"][step]
        if crc != int(row["crc32"]) or bsz != int(row["n_examples"]):
            raise SessionError(
                f"{self.path}: re-running step {step} gave different readings than recorded "
                f"(checksum {crc:#010x}, recorded {int(row['crc32']):#010x}); the backend is "
                "not deterministic or the configuration changed, so the run cannot be "
                "continued exactly"
            )

    def append_step(self, log: StepLog) -> int:
        """Append one completed step and flush; returns its step number."""
        n = self.steps_done
        arrays, crc, bsz = self._pack(log)
        with sigint_held():
            for name, arr in arrays.items():
                self._app(f"steps/{name}").append(arr)
            rows = self._programming_rows(n, log)
            recs = self._app("programming/records")
            start = recs.n
            recs.append(rows, len(rows))
            row = np.zeros((), dtype=INDEX_DTYPE)
            row["step"], row["epoch"], row["batch"] = n, log.epoch, log.batch
            row["n_examples"] = bsz
            row["t_start_unix_s"], row["duration_s"] = log.t_start_unix_s, log.duration_s
            row["loss"], row["accuracy"] = log.loss, log.accuracy
            pulses = log.prog_pulses
            row["pulses"] = 0 if pulses is None else int(np.abs(pulses).sum())
            reason = log.prog_reason
            row["bound_hits"] = 0 if reason is None else int(np.count_nonzero(reason == 1))
            row["prog_row_start"], row["prog_row_count"] = start, len(rows)
            for k, v in rng_to_fields(log.rng).items():
                row[k] = v
            row["crc32"] = crc
            self._app("steps/index").append(row)  # the commit: a step exists once its row does
            self._f.flush()
        return n

    def _programming_rows(self, step: int, log: StepLog) -> NDArray[np.void]:
        if self.options.programming == "off" or log.prog_reason is None \
                or log.prog_requested_s is None:
            return np.zeros(0, dtype=PROG_DTYPE)
        reason = np.asarray(log.prog_reason)
        k = len(reason)
        edges = np.arange(k) if log.prog_edges is None else np.asarray(log.prog_edges)
        keep = slice(None) if self.options.programming == "all" else np.flatnonzero(reason != 0)
        rows = np.zeros(len(edges[keep]), dtype=PROG_DTYPE)
        rows["step"] = step
        rows["edge"] = edges[keep]
        rows["requested_s"] = np.asarray(log.prog_requested_s)[keep]

        def opt(a: Array | None) -> Any:
            if a is None or np.size(a) != k:
                return np.nan
            return np.asarray(a)[keep]

        rows["target_s"] = opt(log.prog_target_s)
        rows["achieved_s"] = opt(log.prog_achieved_s)
        rows["pulses"] = 0 if log.prog_pulses is None else np.asarray(log.prog_pulses)[keep]
        rows["reason"] = reason[keep]
        rows["converged"] = reason[keep] == 0
        return rows

    def append_epoch(self, metrics: Mapping[str, float]) -> None:
        """Append one epoch's metrics (keys of :data:`EPOCH_FIELDS`)."""
        row = np.zeros((), dtype=EPOCH_DTYPE)
        for name, _ in EPOCH_FIELDS:
            row[name] = float(metrics.get(name, np.nan))
        app = self._app("epochs")
        if app.n >= int(row["epoch"]) > 0:
            return  # recorded before a crash; a resumed run reaches its end again
        with sigint_held():
            self._app("epochs").append(row)
            self._f.flush()

    def event(self, kind: str, step: int, message: str, *, flush: bool = True) -> None:
        """Append an event (kind one of :data:`EVENT_KINDS`; message cut at 240 bytes)."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        row = np.zeros((), dtype=EVENT_DTYPE)
        row["t_unix_s"], row["step"], row["kind"] = time.time(), step, kind.encode()
        row["message"] = message.encode("utf-8", "replace")[:240]
        with sigint_held():
            self._app("events").append(row)
            if flush:
                self._f.flush()

    def write_checkpoint(self, ckpt: Checkpoint, *, flush: bool = True) -> None:
        """Append a full-state checkpoint."""
        c = self._f["checkpoints"]
        row = np.zeros((), dtype=CKPT_DTYPE)
        row["steps_done"], row["epoch"], row["batch"] = ckpt.steps_done, ckpt.epoch, ckpt.batch
        row["t_unix_s"] = ckpt.t_unix_s or time.time()
        st = ckpt.rng_state
        s, inc = int(st["state"]["state"]), int(st["state"]["inc"])
        row["rng_state_hi"], row["rng_state_lo"] = s >> 64, s & _MASK64
        row["rng_inc_hi"], row["rng_inc_lo"] = inc >> 64, inc & _MASK64
        row["rng_has_uint32"], row["rng_uinteger"] = st["has_uint32"], st["uinteger"]
        names = [k for k, v in c.items() if isinstance(v, h5py.Dataset) and k != "index"]
        names += [
            f"{g}/{k}" for g, grp in c.items() if isinstance(grp, h5py.Group) for k in grp
        ]
        names = [n for n in names if n != "order"]
        if sorted(names) != sorted(ckpt.arrays):
            raise ConfigError(
                f"checkpoint arrays {sorted(ckpt.arrays)} differ from the file's {sorted(names)}"
            )
        with sigint_held():
            order = np.asarray(ckpt.order, dtype=np.int64)
            if order.shape != self._app("checkpoints/order").row_shape:
                raise ConfigError("checkpoint example order changed length")
            self._app("checkpoints/order").append(order)
            for name, arr in ckpt.arrays.items():
                app = self._app(f"checkpoints/{name}")
                a = np.asarray(arr)
                if a.shape != app.row_shape:
                    raise ConfigError(f"checkpoint array {name} changed shape")
                app.append(a)
            self._app("checkpoints/index").append(row)  # last: it exists once its row does
            if flush:
                self._f.flush()

    def close(self, status: str, reason: str = "") -> None:
        """Record the exit status and close the file cleanly (idempotent)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        if self._closed:
            return
        with sigint_held():
            steps = self.steps_done
            self.event("stop", steps, f"{status}: {reason}" if reason else status, flush=False)
            _set_attr(self._f, "status", status)
            _set_attr(self._f, "reason", reason)
            _set_attr(self._f, "stopped_utc", _now_iso())
            self._f.flush()
            self._f.close()
            self._closed = True


_MUTABLE_ATTRS = {"status": 16, "reason": 240, "stopped_utc": 32}
"""Root attributes changed during a session, with their fixed sizes in bytes (SWMR
mode can modify attributes in place but not create or resize them)."""


def _set_attr(f: h5py.File, name: str, value: str) -> None:
    size = _MUTABLE_ATTRS[name]
    f.attrs.modify(name, np.bytes_(value.encode("utf-8", "replace")[:size]))


def _open_swmr_write(p: Path) -> h5py.File:
    """Open ``p`` for appending directly in SWMR-write mode."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    fid = h5py.h5f.open(
        str(p).encode(), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl
    )
    return h5py.File(fid)


def _checkpoint_units(name: str) -> str:
    if "_t_" in name or name.endswith("time_s") or "_since_s" in name:
        return "s"
    if name.endswith("_s"):
        return "S"
    if name.endswith("_a"):
        return "A"
    if name.endswith("_v"):
        return "V"
    return "1 (state; see docs/session-format.md)"


# ----------------------------------------------------------------------------- reading


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

READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)
"""What h5py raises for a damaged or incomplete file."""


def first_line(exc: BaseException) -> str:
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
        except READ_ERRORS as exc:
            raise SessionError(
                f"{p} cannot be opened as HDF5 ({first_line(exc)}); the file is damaged"
            ) from None


def missing_objects(f: h5py.File, samples_mode: str) -> list[str]:
    """The required groups and datasets that ``f`` lacks, as absolute paths."""
    need = (*REQUIRED, *REQUIRED_BY_MODE.get(samples_mode, ()))
    return ["/" + name for name in need if name not in f]



def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v.item() if isinstance(v, np.generic) else v


def _open_h5(p: Path) -> tuple[h5py.File, bool]:
    """Open read-only; fall back to SWMR-read for a file whose writer was killed."""
    if not p.exists():
        raise SessionError(f"session file {p} not found; check the path")
    if not h5py.is_hdf5(p):
        raise SessionError(
            f"{p} is not an HDF5 file (truncated or another format); give a session file "
            "written by 'hwloop train'"
        )
    check_file(p)  # truncated, or closed cleanly yet unreadable: no SWMR fallback
    try:
        return h5py.File(p, "r"), True
    except OSError:
        pass
    try:
        return h5py.File(p, "r", libver=LIBVER, swmr=True), False
    except OSError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SessionError(f"{p} cannot be opened as HDF5 ({first}); the file is damaged") from None


class SessionFile:
    """A session file opened for reading (use as a context manager).

    Attributes:
        path: the file.
        clean: False when the writer did not close it (killed or still running).
        attrs: root attributes.
        description: the board description.
        steps_done: complete steps (rows of ``/steps/index`` whose data are all there).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f, self.clean = _open_h5(self.path)
        try:
            self._check_schema()
            f = self._f
            mode = json.loads(f.attrs["log_options_json"]).get("samples", "raw")
            missing = missing_objects(f, str(mode))
            if missing:
                raise SessionError(
                    f"{self.path} is an incomplete session file: {', '.join(missing)} missing "
                    "(the file was edited or not written by 'hwloop train')"
                )
            self.attrs: dict[str, Any] = {k: _attr_value(v) for k, v in f.attrs.items()}
            self.description = description_from_group(f["device"])
            s = f["steps"]
            self.layout, self.options = _layout_and_options(f)
            self.free_nodes = np.asarray(s["free_nodes"][()], dtype=np.int64)
            n = int(s["index"].shape[0])
            for name, ds in s.items():
                if name not in ("index", "free_nodes"):
                    n = min(n, int(ds.shape[0]))
            self.steps_done = n
        except SessionError:
            self._f.close()
            raise
        except READ_ERRORS as exc:
            self._f.close()
            raise SessionError(
                f"{self.path} is an incomplete or damaged session file ({first_line(exc)})"
            ) from None

    def _check_schema(self) -> None:
        schema = self._f.attrs.get("schema")
        if isinstance(schema, bytes):
            schema = schema.decode()
        if schema != SCHEMA:
            raise SessionError(
                f"{self.path} is not an hwloop session file (schema attribute {schema!r}, "
                f"expected {SCHEMA!r})"
            )
        version = int(self._f.attrs.get("schema_version", -1))
        if version > SCHEMA_VERSION:
            raise SessionError(
                f"{self.path} has session schema version {version}, newer than this hwloop "
                f"reads ({SCHEMA_VERSION}); upgrade hwloop"
            )
        if version != SCHEMA_VERSION:
            raise SessionError(
                f"{self.path} has session schema version {version}; this hwloop reads "
                f"version {SCHEMA_VERSION}"
            )

    def __enter__(self) -> SessionFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    @property
    def h5(self) -> h5py.File:
        """The underlying h5py file (read-only)."""
        return self._f

    @property
    def status(self) -> str:
        """Exit status; ``"crashed"`` when the writer was killed (status left at running)."""
        st = str(self.attrs.get("status", ""))
        if st == "running" and not self.clean:
            return "crashed"
        return st

    def index(self) -> NDArray[np.void]:
        """The rows of ``/steps/index`` of the complete steps."""
        return np.asarray(self._f["steps/index"][: self.steps_done])

    def epochs(self) -> NDArray[np.void]:
        """Per-epoch metrics."""
        return np.asarray(self._f["epochs"][()])

    def events(self) -> list[dict[str, Any]]:
        """The event log."""
        return [
            {
                "t_unix_s": float(r["t_unix_s"]),
                "step": int(r["step"]),
                "kind": r["kind"].decode(),
                "message": r["message"].decode("utf-8", "replace"),
            }
            for r in self._f["events"][()]
        ]

    def readings(self, step: int) -> list[NodeReading]:
        """The readings of each phase of ``step`` (summary files: one sample, the mean)."""
        self._check_step(step)
        s = self._f["steps"]
        n_ex = int(s["index"][step]["n_examples"])
        n_samp = s["n_samples"][step]
        out = []
        if self.options.samples == "raw":
            samples = s["samples_v"][step]
            flags = s["flags"][step]
            times = s["sample_time_s"][step]
            for p in range(self.layout.phases):
                k = int(n_samp[p])
                out.append(
                    NodeReading(
                        samples_v=np.ascontiguousarray(np.moveaxis(samples[:n_ex, p, :k], 1, 0)),
                        timestamps_s=np.asarray(times[p, :k, :n_ex], dtype=np.float64),
                        flags=np.moveaxis(flags[:n_ex, p, :k], 1, 0),
                        nodes=self.free_nodes,
                    )
                )
        else:
            mean = s["mean_v"][step]
            fany = s["flags_any"][step]
            for p in range(self.layout.phases):
                out.append(
                    NodeReading(
                        samples_v=np.ascontiguousarray(mean[None, :n_ex, p]),
                        timestamps_s=np.zeros((1, n_ex)),
                        flags=fany[None, :n_ex, p],
                        nodes=self.free_nodes,
                    )
                )
        return out

    def step_data(self, step: int) -> dict[str, Any]:
        """Inputs, nudges, betas, examples and updates of ``step``."""
        self._check_step(step)
        s = self._f["steps"]
        n_ex = int(s["index"][step]["n_examples"])
        d: dict[str, Any] = {
            "examples": s["examples"][step][:n_ex],
            "inputs_v": s["inputs_v"][step][:n_ex],
            "betas_s": s["betas_s"][step],
            "nudge_values": s["nudge_values"][step][:, :n_ex],
            "update_b_a": s["update_b_a"][step],
            "index": s["index"][step],
        }
        if "update_g_s" in s:
            d["update_g_s"] = s["update_g_s"][step]
        return d

    def programming(self, step: int) -> NDArray[np.void]:
        """The programming records of ``step``."""
        self._check_step(step)
        row = self._f["steps/index"][step]
        a, k = int(row["prog_row_start"]), int(row["prog_row_count"])
        return np.asarray(self._f["programming/records"][a : a + k])

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.steps_done:
            raise SessionError(
                f"{self.path}: step {step} is not recorded (steps 0..{self.steps_done - 1})"
            )

    def checkpoints(self) -> NDArray[np.void]:
        """Rows of ``/checkpoints/index`` (complete checkpoints only)."""
        c = self._f["checkpoints"]
        n = int(c["index"].shape[0])
        for name in [*self.checkpoint_names(), "order"]:
            n = min(n, int(c[name].shape[0]))
        rows = np.asarray(c["index"][:n])
        return rows[rows["steps_done"] <= self.steps_done]

    def checkpoint_names(self) -> list[str]:
        """Names of the checkpoint state arrays."""
        c = self._f["checkpoints"]
        names: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and name not in ("index", "order"):
                names.append(name)

        c.visititems(visit)
        return sorted(names)

    def checkpoint(self, i: int = -1) -> Checkpoint:
        """Checkpoint number ``i`` (default: the last complete one)."""
        rows = self.checkpoints()
        if len(rows) == 0:
            raise SessionError(f"{self.path} holds no complete checkpoint; it cannot be resumed")
        k = int(np.arange(len(rows))[i])
        row = rows[k]
        c = self._f["checkpoints"]
        need = ("conductances_s", "biases_a", "order")
        missing = [n for n in need if n not in c]
        if missing:
            raise SessionError(
                f"{self.path}: checkpoint arrays {', '.join(missing)} are missing; the file "
                "was edited or is damaged"
            )
        return Checkpoint(
            steps_done=int(row["steps_done"]),
            epoch=int(row["epoch"]),
            batch=int(row["batch"]),
            rng_state=rng_from_fields(row),
            order=np.asarray(c["order"][k]),
            arrays={n: np.asarray(c[n][k]) for n in self.checkpoint_names()},
            t_unix_s=float(row["t_unix_s"]),
        )

    def integrity(self, *, full: bool = False) -> list[str]:
        """Problems found in the file (empty list: intact).

        Checks that every step row has its data, the checksums (of all steps with
        ``full``, else of the last 8), the status and that a checkpoint exists.
        """
        problems: list[str] = []
        s = self._f["steps"]
        n_index = int(s["index"].shape[0])
        if self.steps_done < n_index:
            problems.append(
                f"{n_index - self.steps_done} step row(s) without all their data "
                "(the writer was cut off mid-step)"
            )
        data_name = "samples_v" if self.options.samples == "raw" else "mean_v"
        steps = range(self.steps_done) if full else range(max(0, self.steps_done - 8),
                                                           self.steps_done)
        for i in steps:
            row = s["index"][i]
            crc = _crc(s[data_name][i], s["inputs_v"][i])
            if crc != int(row["crc32"]):
                problems.append(f"step {i}: checksum mismatch (data damaged)")
            if int(row["step"]) != i:
                problems.append(f"step {i}: index row says step {int(row['step'])}")
        if self.attrs.get("status") not in STATUSES:
            problems.append(f"unknown status {self.attrs.get('status')!r}")
        if len(self.checkpoints()) == 0:
            problems.append("no complete checkpoint")
        return problems


def open_session(path: str | Path) -> SessionFile:
    """Open a session file for reading.

    Raises:
        SessionError: missing, not HDF5, not an hwloop session, newer schema, damaged.
    """
    return SessionFile(path)


def repair(path: str | Path) -> int:
    """Rewrite a file whose writer was killed as a clean file holding its complete steps.

    Copies every group into a new file, cuts the per-step datasets back to the
    complete steps, records the status ``aborted`` with the reason, and replaces the
    original atomically (``os.replace``: a kill leaves the old file or the new one).
    A cleanly closed file is left alone.

    Returns:
        The number of complete steps.
    """
    p = Path(path)
    with open_session(p) as sf:
        if sf.clean:
            return sf.steps_done
        if str(sf.attrs.get("status", "")) != "running":
            raise SessionError(
                f"{p} was not left behind by a killed writer (status "
                f"{sf.attrs.get('status')!r}) but HDF5 cannot open it normally; it is damaged"
            )
        n = sf.steps_done
        n_prog = 0
        if n:
            last = sf.h5["steps/index"][n - 1]
            n_prog = int(last["prog_row_start"]) + int(last["prog_row_count"])
        ck = sf.checkpoints()
        n_ck = len(ck)
        n_ep = int(sf.h5["epochs"].shape[0])
        tmp = p.with_name(p.name + ".repairing")
        with sigint_held(), h5py.File(tmp, "w", libver=LIBVER) as out:
            src = sf.h5
            for k, v in src.attrs.items():
                out.attrs[k] = v
            for name in src:
                src.copy(src[name], out, name=name)

            def cut(ds: h5py.Dataset, rows: int) -> None:
                if ds.maxshape[0] is None and ds.shape[0] > rows:
                    ds.resize(rows, axis=0)

            for ds in out["steps"].values():
                if ds.name != "/steps/free_nodes":
                    cut(ds, n)
            cut(out["programming/records"], n_prog)
            cut(out["epochs"], n_ep)

            def cut_ckpt(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    cut(obj, n_ck)

            out["checkpoints"].visititems(cut_ckpt)
            for name, size in _MUTABLE_ATTRS.items():  # fixed sizes, as create() makes them
                out.attrs.create(name, np.bytes_(b""), dtype=f"S{size}")
            _set_attr(out, "status", "aborted")
            _set_attr(out, "reason", f"the writer was killed; {n} complete steps recovered")
            _set_attr(out, "stopped_utc", _now_iso())
    with sigint_held():
        os.replace(tmp, p)  # atomic: the old file or the repaired one, never neither
    return n


@dataclass(frozen=True, eq=False)
class RunSummary:
    """The parts of a session file most analyses need, read into memory.

    Attributes:
        path: the file.
        attrs: root attributes.
        status: exit status (``crashed`` for a killed writer).
        config_toml: the resolved configuration.
        metrics: per-epoch metrics, one array per :data:`EPOCH_FIELDS` name.
        conductances_s: ``(n_edges,)`` conductances at the last checkpoint, S.
        biases_a: ``(n_bias,)`` bias currents at the last checkpoint, A.
        steps_done: complete steps.
    """

    path: Path
    attrs: dict[str, Any]
    status: str
    config_toml: str
    metrics: dict[str, NDArray[np.float64]]
    conductances_s: NDArray[np.float64]
    biases_a: NDArray[np.float64]
    steps_done: int


def load_run(path: str | Path) -> RunSummary:
    """Read the summary of a session file (see :class:`RunSummary`).

    Raises:
        SessionError: as :func:`open_session`, or when no checkpoint is complete.
    """
    with open_session(path) as sf:
        ck = sf.checkpoint(-1)
        ep = sf.epochs()
        return RunSummary(
            path=sf.path,
            attrs=dict(sf.attrs),
            status=sf.status,
            config_toml=str(sf.attrs["config_toml"]),
            metrics={name: np.asarray(ep[name], dtype=np.float64) for name, _ in EPOCH_FIELDS},
            conductances_s=np.asarray(ck.arrays["conductances_s"], dtype=np.float64),
            biases_a=np.asarray(ck.arrays["biases_a"], dtype=np.float64),
            steps_done=sf.steps_done,
        )
