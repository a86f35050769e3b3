"""The session writer: creates the file, enters SWMR mode and appends steps.

Crash safety (decision record DR-12 in ``docs/architecture.md``): every dataset is
created before writing starts, under a temporary name, renamed into place and opened
straight into HDF5's SWMR mode (single writer, multiple readers), in which the library
orders its metadata writes so that the file on disk is always consistent and readable.
A step counts as complete once its row in ``/steps/index`` exists (written last).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import h5py
import numpy as np
from numpy.typing import NDArray

from hwloop import __version__
from hwloop.device import BoardDescription
from hwloop.errors import ConfigError
from hwloop.session import sigint_held
from hwloop.sessionlog.description import description_to_group
from hwloop.sessionlog.schema import (
    CKPT_DTYPE,
    EPOCH_DTYPE,
    EPOCH_FIELDS,
    EVENT_DTYPE,
    EVENT_KINDS,
    INDEX_DTYPE,
    INDEX_UNITS,
    LIBVER,
    MASK64,
    MUTABLE_ATTRS,
    PROG_DTYPE,
    SCHEMA,
    SCHEMA_VERSION,
    STATUSES,
    Array,
    Checkpoint,
    LogOptions,
    SessionError,
    StepLayout,
    StepLog,
    checkpoint_units,
    crc32_of,
    layout_and_options,
    now_iso,
    rng_to_fields,
    set_units,
)

__all__ = [
    "SessionWriter",
    "check_session_path",
    "git_commit",
]


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
    if p.is_dir():
        raise ConfigError(f"session file {p} is a directory; give a file name ending in .h5")
    if p.exists() and not overwrite:
        raise ConfigError(
            f"session file {p} already exists; choose another --out, add --overwrite, "
            "or continue it with 'hwloop resume'"
        )
    return p


try:  # zlib-compatible deflate with SIMD (the same stream format), about 2x faster
    from zlib_ng.zlib_ng import compress as _deflate
except ImportError:  # pragma: no cover - a dependency of hwloop
    from zlib import compress as _deflate

STEP_DEFLATE: Final[dict[str, Any]] = {"compression": "gzip", "compression_opts": 1}
"""Filter of the compressed per-step datasets (one step per chunk): deflate level 1."""


class _Appender:
    """Appends rows to one resizable dataset through h5py's low-level API.

    The high-level ``resize`` + ``__setitem__`` pair costs about 0.5 ms per call
    (selection and dtype bookkeeping); this keeps the handle, dtype and row count.
    A deflate dataset of one row per chunk (the compressed per-step arrays) gets its
    chunks compressed here and written as they are (``H5Dwrite_chunk``): no pass
    through the chunk cache, whose flush would compress them later (with LZF that
    was most of a commit's time).
    """

    __slots__ = ("direct_level", "dsid", "dtype", "n", "row_shape")

    def __init__(self, ds: h5py.Dataset) -> None:
        self.dsid = ds.id
        self.dtype = ds.dtype
        self.row_shape: tuple[int, ...] = tuple(ds.shape[1:])
        self.n = int(ds.shape[0])
        self.direct_level = -1  # deflate level of direct chunk writes, -1: none
        filters = ds.id.get_create_plist().get_nfilters()
        if (
            ds.compression == "gzip"
            and filters == 1
            and ds.chunks == (1, *self.row_shape)
            and self.dtype.isnative
        ):
            self.direct_level = int(ds.compression_opts)

    def append(self, value: Any, rows: int = 1) -> None:
        """Append ``rows`` rows (``value`` of shape ``(rows, *row_shape)`` or one row)."""
        if rows == 0:
            return
        arr = np.ascontiguousarray(value, dtype=self.dtype).reshape((rows, *self.row_shape))
        n = self.n
        self.dsid.set_extent((n + rows, *self.row_shape))
        if self.direct_level >= 0:
            rest = (0,) * len(self.row_shape)
            for i in range(rows):
                chunk = _deflate(arr[i].data, self.direct_level)
                self.dsid.write_direct_chunk((n + i, *rest), chunk)
            self.n = n + rows
            return
        fspace = self.dsid.get_space()
        fspace.select_hyperslab((n,) + (0,) * len(self.row_shape), arr.shape)
        mspace = h5py.h5s.create_simple(arr.shape)
        self.dsid.write(mspace, fspace, arr)
        self.n = n + rows


CHUNK_BYTES = 512 * 1024
"""Target size of one chunk of the uncompressed per-step arrays, bytes."""


def chunk_steps(layout: StepLayout, n_free: int, options: LogOptions) -> int:
    """Steps per chunk of the uncompressed per-step arrays (samples, means, times).

    Compressed chunks are written once (one step each): rewriting a compressed chunk
    moves it, and the freed space could be reused under data a crash must keep.
    Uncompressed chunks are rewritten in place with the same bytes for the committed
    rows, so several steps can share one; fewer, larger chunks keep the per-step cost
    flat. One step per chunk when every step is committed on its own (a partial
    chunk would be rewritten at every step) or the samples are compressed.
    """
    if options.commit_steps == 1 or options.compress_samples:
        return 1
    per_step = layout.batch * layout.phases * layout.max_samples * n_free * 8
    return int(min(256, max(1, CHUNK_BYTES // max(1, per_step))))


class _Block:
    """The steps waiting for their commit: one preallocated array per dataset.

    Each step's padded rows are written straight into the next row of every array
    (no per-step arrays to allocate, no stacking at the commit). The arrays are made
    for ``capacity`` steps at once (what the commit budget lets wait; untouched
    memory costs nothing until a step is written there) and double should more wait.
    """

    def __init__(
        self, rows: dict[str, tuple[tuple[int, ...], np.dtype[Any]]], capacity: int = 16
    ) -> None:
        self.specs = rows
        self.capacity = 0
        self.n = 0
        self.arrays: dict[str, NDArray[Any]] = {}
        self._grow(max(1, capacity))

    def _grow(self, capacity: int) -> None:
        new = {name: np.empty((capacity, *shape), dtype=dt)
               for name, (shape, dt) in self.specs.items()}
        for name, a in self.arrays.items():
            new[name][: self.n] = a[: self.n]
        self.arrays, self.capacity = new, capacity

    def next_row(self) -> dict[str, NDArray[Any]]:
        """Views of the next free row of every array (the caller fills them)."""
        if self.n == self.capacity:
            self._grow(2 * self.capacity)
        i = self.n
        return {name: a[i] for name, a in self.arrays.items()}

    def take(self) -> None:
        """The row handed out by :meth:`next_row` now holds a step."""
        self.n += 1


class SessionWriter:
    """Writes one session file; see the module docstring for the guarantees.

    Use :meth:`create` for a new run and :meth:`reopen` to append to a stopped or
    crashed one. Every write holds Ctrl-C back until it is on disk.
    """

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path = path
        self._f = f
        self._closed = False
        self.layout, self.options = layout_and_options(f)
        self.run_id = str(f.attrs["run_id"])
        self.free_nodes = np.asarray(f["steps/free_nodes"][()], dtype=np.int64)
        self._apps: dict[str, _Appender] = {}
        self._n_update_g = int(f["steps/update_g_s"].shape[1]) if "update_g_s" in f["steps"] else 0
        self._n_bias = int(f["steps/update_b_a"].shape[1])
        # group commit: completed steps waiting in memory
        specs = {name: (tuple(ds.shape[1:]), ds.dtype) for name, ds in f["steps"].items()
                 if name != "free_nodes"}
        self._step_bytes = sum(int(np.prod(sh)) * dt.itemsize for sh, dt in specs.values())
        opts = self.options
        waiting = -(-opts.commit_bytes // max(1, self._step_bytes))  # the byte budget's steps
        if opts.commit_steps:
            waiting = min(waiting, opts.commit_steps)
        self._block = _Block(specs, min(waiting, 1 << 16))
        self._scratch = _Block(specs, 1)  # for verify_step
        self._pending_prog: list[NDArray[np.void]] = []
        self._pending_since = 0.0
        self._prog_next = self._app("programming/records").n
        self._committed = self._app("steps/index").n

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
        zip1 = STEP_DEFLATE if opts.compress else {}  # per-step arrays, one step a chunk
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
                    started_utc=now_iso(),
                    seed=int(seed),
                    config_toml=config_toml,
                    defaults_source=defaults_source,
                    backend_options_json=json.dumps(dict(backend_options or {}), default=str),
                    log_options_json=json.dumps(opts.__dict__),
                    resumes=0,
                )
                # changed while the file is in SWMR mode: fixed-size, created up front
                for name, size in MUTABLE_ATTRS.items():
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
                s.attrs["complex_samples"] = layout.complex_samples  # older files: absent
                g = chunk_steps(layout, n_free, opts)
                s.attrs["chunk_steps"] = g
                set_units(s.create_dataset("free_nodes", data=free), "1 (node indices)")

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
                    set_units(ds, units)

                sdt = np.dtype(layout.sample_dtype)
                if sdt not in (np.dtype("<f4"), np.dtype("<f8")):
                    raise ConfigError(f"sample dtype {layout.sample_dtype} must be <f4 or <f8")
                grow("index", (), INDEX_DTYPE, json.dumps(INDEX_UNITS), chunk_rows=256)
                grow("examples", (b,), "<i8", "1 (training-set index; -1 pads)", 64)
                if opts.samples == "raw":
                    zs = zip1 if opts.compress_samples else {}
                    grow("samples_v", (b, ph, ms, n_free), sdt, "V", g, fillvalue=np.nan, **zs)
                    grow("flags", (b, ph, ms, n_free), "u1", "SampleFlag bits", **zip1)
                    grow("sample_time_s", (ph, ms, b), "<f8", "s (board clock)", g,
                         fillvalue=np.nan)
                else:
                    grow("mean_v", (b, ph, n_free), sdt, "V", g, fillvalue=np.nan)
                    grow("sem_v", (b, ph, n_free), "<f4", "V", g, fillvalue=np.nan)
                    grow("flags_any", (b, ph, n_free), "u1", "SampleFlag bits (OR)", **zip1)
                if layout.complex_samples:  # imaginary parts, beside the real datasets
                    if opts.samples == "raw":
                        grow("samples_imag_v", (b, ph, ms, n_free), sdt, "V (imaginary part)",
                             g, fillvalue=np.nan, **(zip1 if opts.compress_samples else {}))
                    else:
                        grow("mean_imag_v", (b, ph, n_free), sdt, "V (imaginary part)", g,
                             fillvalue=np.nan)
                    grow("betas_imag_s", (ph,), "<f8", "S (imaginary part)", 256)
                    grow("nudge_values_imag", (ph, b, layout.n_outputs), "<f4",
                         "A (imaginary part)", 16)
                grow("n_samples", (ph,), "<i4", "1", 256)
                grow("inputs_v", (b, layout.n_inputs), "<f4", "V", **zip1)
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
                set_units(ds, json.dumps({"requested_s": "S", "target_s": "S",
                                       "achieved_s": "S", "pulses": "1", "reason": "Reason"}))
                ep = f.create_dataset(
                    "epochs", shape=(0,), maxshape=(None,), chunks=(64,), dtype=EPOCH_DTYPE
                )
                set_units(ep, json.dumps(dict(EPOCH_FIELDS)))
                ev = f.create_dataset(
                    "events", shape=(0,), maxshape=(None,), chunks=(64,), dtype=EVENT_DTYPE
                )
                set_units(ev, json.dumps({"t_unix_s": "s (Unix time)", "step": "1"}))
                c = f.create_group("checkpoints")
                ci = c.create_dataset(
                    "index", shape=(0,), maxshape=(None,), chunks=(64,), dtype=CKPT_DTYPE
                )
                set_units(ci, "see docs/session-format.md")
                order = np.asarray(first_checkpoint.order, dtype=np.int64)
                ds = c.create_dataset(
                    "order", shape=(0, len(order)), maxshape=(None, len(order)),
                    chunks=(1, len(order)), dtype="<i8", **lzf,
                )
                set_units(ds, "1 (training-set indices)")
                for name, arr in first_checkpoint.arrays.items():
                    a = np.asarray(arr)
                    ds = c.create_dataset(
                        name, shape=(0, *a.shape), maxshape=(None, *a.shape),
                        chunks=(1, *a.shape) if a.size else None, dtype=a.dtype,
                    )
                    set_units(ds, checkpoint_units(name))
                w = cls(tmp, f)
                w.event("start", 0, f"session started (hwloop {__version__})", flush=False)
                w.write_checkpoint(first_checkpoint, flush=False)
            except BaseException:
                f.close()
                tmp.unlink(missing_ok=True)
                raise
            f.close()
            os.replace(tmp, p)  # atomic: the file appears complete or not at all
            return cls(p, open_swmr_write(p))

    @classmethod
    def reopen(cls, path: str | Path) -> SessionWriter:
        """Open a cleanly closed session file (see :func:`repair`) to append to it.

        The file is opened straight into SWMR mode (no moment in which a kill could
        leave it flagged as open by a plain writer).
        """
        p = Path(path)
        with sigint_held():
            f = open_swmr_write(p)
            try:
                set_attr(f, "status", "running")
                set_attr(f, "reason", "")
                set_attr(f, "stopped_utc", "")
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
        """Steps handed to the writer so far (committed or waiting for the next commit)."""
        return self._committed + self._block.n

    @property
    def steps_committed(self) -> int:
        """Steps on disk: a crash now keeps exactly these."""
        return self._committed

    def _pack(self, log: StepLog, out: dict[str, NDArray[Any]]) -> tuple[int, int]:
        """Write the padded rows of ``log`` into ``out``; its checksum and batch size."""
        lay = self.layout
        bsz = len(log.examples)
        if bsz > lay.batch or len(log.readings) != lay.phases:
            raise ConfigError(
                f"step record does not fit the session layout (batch {bsz} > {lay.batch} "
                f"or {len(log.readings)} phases != {lay.phases})"
            )
        ks = [r.n_samples for r in log.readings]
        if max(ks) > lay.max_samples:
            raise ConfigError(f"a phase took {max(ks)} samples > {lay.max_samples}")
        if not lay.complex_samples and np.iscomplexobj(log.betas_s) \
                and np.any(np.imag(log.betas_s)):
            raise ConfigError("complex nudges need a session layout with complex_samples=True")
        out["n_samples"][:] = ks
        full = bsz == lay.batch and min(ks) == lay.max_samples  # no padding
        ex = out["examples"]
        ex[:bsz] = log.examples
        ex[bsz:] = -1
        inputs = out["inputs_v"]
        inputs[:bsz] = np.asarray(log.inputs_v).real
        inputs[bsz:] = 0
        if self.options.samples == "raw":
            samples, flags, times = out["samples_v"], out["flags"], out["sample_time_s"]
            if not full:
                samples[...] = np.nan
                flags[...] = 0
                times[...] = np.nan
            for p, r in enumerate(log.readings):
                k = r.n_samples
                samples[:bsz, p, :k] = np.asarray(r.samples_v).real.swapaxes(0, 1)
                flags[:bsz, p, :k] = r.flags.swapaxes(0, 1)
                times[p, :k, :bsz] = r.timestamps_s
            if lay.complex_samples:
                crc = crc32_of(samples, self._imag(out["samples_imag_v"], log, full, bsz),
                               inputs)
            else:
                crc = crc32_of(samples, inputs)
        else:
            mean, sem, fany = out["mean_v"], out["sem_v"], out["flags_any"]
            if not full:
                mean[...] = np.nan
                sem[...] = np.nan
                fany[...] = 0
            for p, r in enumerate(log.readings):
                mean[:bsz, p] = np.asarray(r.mean_v).real
                sem[:bsz, p] = r.sem_v
                fany[:bsz, p] = np.bitwise_or.reduce(r.flags, axis=0)
            if lay.complex_samples:
                crc = crc32_of(mean, self._imag(out["mean_imag_v"], log, full, bsz), inputs)
            else:
                crc = crc32_of(mean, inputs)
        out["betas_s"][:] = np.real(log.betas_s)
        nv = out["nudge_values"]
        nv[:, :bsz] = np.asarray(log.nudge_values).real
        nv[:, bsz:] = 0
        if lay.complex_samples:
            out["betas_imag_s"][:] = np.imag(log.betas_s)
            nvi = out["nudge_values_imag"]
            nvi[:, :bsz] = np.asarray(log.nudge_values).imag
            nvi[:, bsz:] = 0
        if "update_g_s" in out:
            out["update_g_s"][:] = 0 if log.update_g_s is None else log.update_g_s
        out["update_b_a"][:] = 0 if log.update_b_a is None else log.update_b_a
        return crc, bsz

    @staticmethod
    def _imag(dst: NDArray[Any], log: StepLog, full: bool, bsz: int) -> NDArray[Any]:
        """Fill ``dst`` (the samples' or means' imaginary part, padded like the real one)."""
        if not full:
            dst[...] = np.nan
        raw = dst.ndim == 4  # (batch, phases, samples, nodes); summary: (batch, phases, nodes)
        for p, r in enumerate(log.readings):
            im = np.asarray(r.samples_v).imag  # zeros for a real phase
            if raw:
                dst[:bsz, p, : r.n_samples] = im.swapaxes(0, 1)
            else:
                dst[:bsz, p] = im.mean(axis=0)
        return dst

    def verify_step(self, step: int, log: StepLog) -> None:
        """Check that a re-run step reproduced recorded step ``step``.

        Resume on a deterministic backend re-runs the steps after the last checkpoint.

        Raises:
            SessionError: the step differs from the recording.
        """
        crc, bsz = self._pack(log, self._scratch.next_row())
        row = self._f["steps/index"][step]
        if crc != int(row["crc32"]) or bsz != int(row["n_examples"]):
            raise SessionError(
                f"{self.path}: re-running step {step} gave different readings than recorded "
                f"(checksum {crc:#010x}, recorded {int(row['crc32']):#010x}); the backend is "
                "not deterministic or the configuration changed, so the run cannot be "
                "continued exactly"
            )

    def append_step(self, log: StepLog) -> int:
        """Hand one completed step to the writer; returns its step number.

        The step is committed with the steps waiting before it when the commit budget
        of :class:`LogOptions` is reached (time, steps or bytes; every step with
        ``commit_steps == 1``), else at the next checkpoint, epoch row, event or
        :meth:`close`, whichever comes first.
        """
        n = self.steps_done
        block = self._block
        out = block.next_row()
        crc, bsz = self._pack(log, out)
        rows = self._programming_rows(n, log)
        row = out["index"]
        row["step"], row["epoch"], row["batch"] = n, log.epoch, log.batch
        row["n_examples"] = bsz
        row["t_start_unix_s"], row["duration_s"] = log.t_start_unix_s, log.duration_s
        row["loss"], row["accuracy"] = log.loss, log.accuracy
        row["pulses"], row["bound_hits"] = log.n_pulses, log.n_bound_hits
        row["prog_row_start"], row["prog_row_count"] = self._prog_next, len(rows)
        for k, v in rng_to_fields(log.rng).items():
            row[k] = v
        row["crc32"] = crc
        self._prog_next += len(rows)
        if len(rows):
            self._pending_prog.append(rows)
        if block.n == 0:
            self._pending_since = time.monotonic()
        block.take()
        opts = self.options
        if (
            (opts.commit_steps and block.n >= opts.commit_steps)
            or block.n * self._step_bytes >= opts.commit_bytes
            or time.monotonic() - self._pending_since >= opts.commit_interval_s
        ):
            self.commit()
        return n

    def commit(self) -> int:
        """Write the waiting steps and flush: one append per dataset, then the index rows.

        The index rows are written last: a step exists once its row does, so a kill
        at any moment leaves the steps of earlier commits and none of this one (or,
        should it die inside the index write, a prefix whose checksums match).
        Ctrl-C is held back meanwhile. Returns the number of steps committed.
        """
        block = self._block
        k = block.n
        if k == 0:
            return 0
        with sigint_held():
            for name, a in block.arrays.items():
                if name != "index":
                    self._app(f"steps/{name}").append(a[:k], k)
            if self._pending_prog:
                prog = np.concatenate(self._pending_prog)
                self._app("programming/records").append(prog, len(prog))
            self._app("steps/index").append(block.arrays["index"][:k], k)  # the commit
            self._f.flush()
            self._committed += k
            block.n = 0
            self._pending_prog = []
        return k

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
            self.commit()
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
            self.commit()
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
        row["rng_state_hi"], row["rng_state_lo"] = s >> 64, s & MASK64
        row["rng_inc_hi"], row["rng_inc_lo"] = inc >> 64, inc & MASK64
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
            self.commit()  # the steps before a checkpoint are on disk before it
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
            set_attr(self._f, "status", status)
            set_attr(self._f, "reason", reason)
            set_attr(self._f, "stopped_utc", now_iso())
            self._f.flush()
            self._f.close()
            self._closed = True


def set_attr(f: h5py.File, name: str, value: str) -> None:
    """Set the fixed-size mutable root attribute ``name`` (cut to its size in bytes)."""
    size = MUTABLE_ATTRS[name]
    f.attrs.modify(name, np.bytes_(value.encode("utf-8", "replace")[:size]))


OPEN_LOCK_WAIT_S = 10.0
"""How long the writer waits for a reader that holds the file's lock when it opens it, s."""


def open_swmr_write(p: Path) -> h5py.File:
    """Open ``p`` for appending directly in SWMR-write mode.

    A reader that opens the file at that very moment (``hwloop inspect``, a monitor, a
    test polling the step count) holds HDF5's file lock for a few milliseconds; the
    open is retried with back-off for up to ``OPEN_LOCK_WAIT_S`` instead of failing the
    run. A lock held longer than that is reported.
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_LATEST)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    deadline = time.monotonic() + OPEN_LOCK_WAIT_S
    pause_s = 0.01
    while True:
        try:
            fid = h5py.h5f.open(
                str(p).encode(), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl
            )
            return h5py.File(fid)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise SessionError(
                    f"session file {p} stays locked by another process; close the program "
                    "that holds it open (a reader without SWMR) and resume the run"
                ) from None
            time.sleep(pause_s)
            pause_s = min(2 * pause_s, 0.5)
