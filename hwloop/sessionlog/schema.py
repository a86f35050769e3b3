"""Session-file schema: names, record types, units and the checksum (no I/O but attributes).

What every other module of :mod:`hwloop.sessionlog` agrees on: the schema name and
version, the structured dtypes of the index, programming, event, checkpoint and epoch
tables with their units, the logging options and per-step layout, the in-memory step
and checkpoint records, the objects every file must hold, and the step checksum.
``docs/session-format.md`` documents the same, group by group.
"""

from __future__ import annotations

import datetime as _dt
import json
import zlib
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from hwloop.device import NodeReading
from hwloop.errors import ConfigError

__all__ = [
    "CKPT_DTYPE",
    "EPOCH_DTYPE",
    "EPOCH_FIELDS",
    "EVENT_DTYPE",
    "EVENT_KINDS",
    "IMAG_DATASETS",
    "INDEX_DTYPE",
    "INDEX_UNITS",
    "LIBVER",
    "PROG_DTYPE",
    "REQUIRED",
    "REQUIRED_BY_MODE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STATUSES",
    "Checkpoint",
    "LogOptions",
    "SessionError",
    "StepLayout",
    "StepLog",
    "rng_from_fields",
    "rng_to_fields",
]

SCHEMA = "hwloop-session"
SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "stopped", "aborted", "failed")
LIBVER = ("v110", "latest")

Array = NDArray[np.floating]

# ----------------------------------------------------------------------------- record types

_RNG_FIELDS = [
        ("rng_state_hi", "<u8"),
        ("rng_state_lo", "<u8"),
        ("rng_inc_hi", "<u8"),
        ("rng_inc_lo", "<u8"),
        ("rng_has_uint32", "u1"),
        ("rng_uinteger", "<u4"),
]
"""The PCG64 generator state as columns (see :func:`rng_to_fields`)."""

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
        *_RNG_FIELDS,
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
        *_RNG_FIELDS,
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

MASK64 = (1 << 64) - 1
"""The low 64 bits of a 128-bit PCG64 state or increment."""


def rng_to_fields(rng: np.random.Generator) -> dict[str, int]:
    """The PCG64 state of ``rng`` as integer fields (exact)."""
    st = rng.bit_generator.state
    if st.get("bit_generator") != "PCG64":
        raise ConfigError("session logs need a PCG64 generator (numpy.random.default_rng)")
    s, inc = int(st["state"]["state"]), int(st["state"]["inc"])
    return {
        "rng_state_hi": s >> 64,
        "rng_state_lo": s & MASK64,
        "rng_inc_hi": inc >> 64,
        "rng_inc_lo": inc & MASK64,
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
        compress_samples: LZF on the samples too (``--sem-target`` runs, whose
            sample axis is mostly NaN padding).
        commit_interval_s: group commit (DR-38): completed steps are kept
            in memory and committed together once the oldest of them waited this
            long, s (>= 0; 0 commits every step).
        commit_steps: ... or once this many are waiting (>= 0; 0: no step limit;
            1: every step, the default on a board that cannot restore its state).
        commit_bytes: ... or once they hold this many bytes (>= 1).
            A commit also happens before every checkpoint, epoch row and event and
            when the file is closed (clean stop, error, Ctrl-C, SIGTERM).
    """

    samples: str = "raw"
    updates: bool = True
    programming: str = "all"
    checkpoint_every: int = 100
    compress: bool = True
    compress_samples: bool = False
    commit_interval_s: float = 1.0
    commit_steps: int = 0
    commit_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        if self.samples not in ("raw", "summary"):
            raise ConfigError(f"log samples = {self.samples!r} must be 'raw' or 'summary'")
        if self.programming not in ("all", "exceptions", "off"):
            raise ConfigError(
                f"log programming = {self.programming!r} must be 'all', 'exceptions' or 'off'"
            )
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every = {self.checkpoint_every} must be >= 1")
        if not self.commit_interval_s >= 0:
            raise ConfigError(f"commit_interval_s = {self.commit_interval_s} must be >= 0")
        if self.commit_steps < 0:
            raise ConfigError(f"commit_steps = {self.commit_steps} must be >= 0 (0: no limit)")
        if self.commit_bytes < 1:
            raise ConfigError(f"commit_bytes = {self.commit_bytes} must be >= 1")


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
    complex_samples: bool = False
    """The run applies complex nudges (Cauchy estimator): the imaginary parts of the
    samples (means), betas and nudge values are kept in the :data:`IMAG_DATASETS`."""


@dataclass(eq=False)
class StepLog:
    """Everything one step measured and did, as the session file stores it.

    Attributes:
        epoch: epoch number, from 0.
        batch: mini-batch number within the epoch, from 0.
        examples: ``(b,)`` training-set indices of the batch.
        inputs_v: ``(b, n_inputs)`` input voltages applied, V.
        readings: one :class:`NodeReading` per phase (free first).
        betas_s: ``(phases,)`` signed nudge strength per phase, S (0: free; complex
            in a layout with ``complex_samples``).
        nudge_values: ``(phases, b, n_outputs)`` targets (V) or currents (A) per
            phase (zeros for the free phase; complex currents likewise).
        update_g_s: ``(n_edges,)`` requested conductance changes, S, or None.
        update_b_a: ``(n_bias,)`` requested bias changes, A, or None.
        prog_edges, prog_requested_s, prog_target_s, prog_achieved_s,
        prog_pulses, prog_reason: the programming record of the addressed edges
            (``prog_reason`` codes are the caller's; 0 means "as requested").
        n_pulses: pulses applied in the step (the caller counts them).
        n_bound_hits: edges whose change was cut at a device bound (the caller
            counts them).
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
    betas_s: NDArray[np.floating] | NDArray[np.complexfloating]
    nudge_values: NDArray[np.floating] | NDArray[np.complexfloating]
    rng: np.random.Generator
    update_g_s: Array | None = None
    update_b_a: Array | None = None
    prog_edges: NDArray[np.integer] | None = None
    prog_requested_s: Array | None = None
    prog_target_s: Array | None = None
    prog_achieved_s: Array | None = None
    prog_pulses: NDArray[np.integer] | None = None
    prog_reason: NDArray[np.integer] | None = None
    n_pulses: int = 0
    n_bound_hits: int = 0
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


class SessionError(ConfigError):
    """A session file that cannot be used (not hwloop, newer schema, damaged)."""


MUTABLE_ATTRS = {"status": 16, "reason": 240, "stopped_utc": 32}
"""Root attributes changed during a session, with their fixed sizes in bytes (SWMR
mode can modify attributes in place but not create or resize them)."""


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

IMAG_DATASETS = {
    "samples_v": "samples_imag_v",
    "mean_v": "mean_imag_v",
    "betas_s": "betas_imag_s",
    "nudge_values": "nudge_values_imag",
}
"""Real per-step dataset -> the dataset of its imaginary part, present (in ``/steps``)
only in a file whose ``/steps`` attribute ``complex_samples`` is true (a run with
complex nudges); files without the attribute are real (schema 1 as before)."""


def imag_required(f: h5py.File, samples_mode: str) -> tuple[str, ...]:
    """The imaginary-part datasets ``f`` must hold (none in a real file)."""
    if not bool(f["steps"].attrs.get("complex_samples", False)):
        return ()
    data = "samples_v" if samples_mode == "raw" else "mean_v"
    return tuple(f"steps/{IMAG_DATASETS[n]}" for n in (data, "betas_s", "nudge_values"))


def now_iso() -> str:
    """The present UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def set_units(ds: h5py.Dataset | h5py.Group, units: str) -> None:
    """Record the units of ``ds`` in its ``units`` attribute."""
    ds.attrs["units"] = units


def layout_and_options(f: h5py.File) -> tuple[StepLayout, LogOptions]:
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
        complex_samples=bool(a.get("complex_samples", False)),
    )
    return layout, LogOptions(**json.loads(f.attrs["log_options_json"]))


try:  # the same CRC-32 as zlib's (polynomial, init, values), with SIMD: over 10x faster
    from zlib_ng.zlib_ng import crc32 as _crc32
except ImportError:  # pragma: no cover - a dependency of hwloop
    _crc32 = zlib.crc32


def crc32_of(*arrays: NDArray[Any]) -> int:
    """CRC-32 of the bytes of ``arrays`` in order (C order), as the index stores it.

    zlib's CRC-32 (``zlib.crc32`` gives the same value), computed by zlib-ng when it is
    installed: at DRN-XS batch 32, N = 10 (0.4 MB a step) zlib's took 0.1-0.15 ms a
    step, about 10 % of the engine's step.
    """
    c = 0
    for a in arrays:
        c = _crc32(np.ascontiguousarray(a).data, c)  # the bytes in C order, no copy
    return c


def checkpoint_units(name: str) -> str:
    """The units of the checkpoint array ``name``, from its suffix."""
    if "_t_" in name or name.endswith("time_s") or "_since_s" in name:
        return "s"
    if name.endswith("_s"):
        return "S"
    if name.endswith("_a"):
        return "A"
    if name.endswith("_v"):
        return "V"
    return "1 (state; see docs/session-format.md)"
