"""Reading session files: opening (also a killed writer's), schema checks, steps, checkpoints.

A file left behind by a killed writer is opened read-only in SWMR mode (plain
``h5py.File`` refuses it because its "open for writing" flag is still set).
Nothing in a session file is ever executed or unpickled: configuration is TOML
text, structured data are numeric tables, JSON is only parsed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from hwloop.device import NodeReading
from hwloop.sessionlog.description import description_from_group
from hwloop.sessionlog.schema import (
    IMAG_DATASETS,
    LIBVER,
    REQUIRED,
    REQUIRED_BY_MODE,
    SCHEMA,
    SCHEMA_VERSION,
    STATUSES,
    Checkpoint,
    SessionError,
    crc32_of,
    imag_required,
    layout_and_options,
    rng_from_fields,
)

__all__ = [
    "READ_ERRORS",
    "SessionFile",
    "StepBlock",
    "check_file",
    "first_line",
    "missing_objects",
    "open_session",
]

VERIFY_S_PER_GB = 3.0
"""``hwloop inspect`` checks every step's checksum when that takes at most this long per
GB of samples and inputs, s (else as many of the last steps as fit that budget)."""

VERIFY_MIN_S = 10.0
"""Checking is always allowed this long, s."""

BLOCK_BYTES = 16 << 20
"""Step data a :meth:`SessionFile.block` read holds by default, bytes."""

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
    if "steps" in f:
        need = (*need, *imag_required(f, samples_mode))
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
            self.layout, self.options = layout_and_options(f)
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
        return self.block(step, step + 1).readings(step)

    def step_data(self, step: int) -> dict[str, Any]:
        """Inputs, nudges, betas, examples and updates of ``step``."""
        self._check_step(step)
        return self.block(step, step + 1).step_data(step)

    def programming(self, step: int) -> NDArray[np.void]:
        """The programming records of ``step``."""
        self._check_step(step)
        return self.block(step, step + 1).programming(step)

    def block(self, lo: int, hi: int) -> StepBlock:
        """Steps ``lo..hi-1`` read in bulk: one read per dataset (on first use), not per step.

        Raises:
            SessionError: the range is not within the complete steps.
        """
        if not 0 <= lo < hi <= self.steps_done:
            raise SessionError(
                f"{self.path}: steps {lo}..{hi - 1} are not recorded "
                f"(steps 0..{self.steps_done - 1})"
            )
        return StepBlock(self, lo, hi)

    def block_steps(self, budget_bytes: int = BLOCK_BYTES) -> int:
        """How many steps a :meth:`block` of about ``budget_bytes`` of step data holds (>= 1)."""
        s = self._f["steps"]
        row: int = sum(
            int(np.prod(d.shape[1:])) * int(d.dtype.itemsize)
            for d in s.values()
            if isinstance(d, h5py.Dataset) and d.ndim >= 1 and d.shape[0] >= self.steps_done
        )
        return max(1, int(budget_bytes) // max(1, row))

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

    def step_checksum(self, step: int) -> tuple[int, int]:
        """The CRC-32 of ``step``'s stored samples (means) and inputs, and the recorded one."""
        self._check_step(step)
        return self.block(step, step + 1).checksum(step)

    def verify_checksums(self, *, full: bool = False) -> tuple[list[str], int]:
        """Check the recorded checksum and step number of the complete steps, newest first.

        Every step is checked when that goes at :data:`VERIFY_S_PER_GB` or faster
        (reading plus CRC-32; at least :data:`VERIFY_MIN_S` is always allowed);
        otherwise, unless ``full``, checking stops at that time budget.

        Returns:
            The problems found (oldest step first) and the number of steps checked
            (the last ones).
        """
        s = self._f["steps"]
        name = "samples_v" if self.options.samples == "raw" else "mean_v"
        data = s[name]
        imag = s[IMAG_DATASETS[name]] if self.layout.complex_samples else None
        inputs = s["inputs_v"]
        n = self.steps_done
        row_bytes = (int(np.prod(data.shape[1:])) * data.dtype.itemsize * (1 + (imag is not None))
                     + int(np.prod(inputs.shape[1:])) * inputs.dtype.itemsize)
        budget_s = max(VERIFY_MIN_S, VERIFY_S_PER_GB * n * row_bytes / 1e9)
        rows = max(1, (32 << 20) // max(1, row_bytes))
        t0 = time.monotonic()
        bad: list[tuple[int, str]] = []
        hi = n
        while hi > 0:
            lo = max(0, hi - rows)
            d, x, idx = data[lo:hi], inputs[lo:hi], s["index"][lo:hi]
            im = None if imag is None else imag[lo:hi]
            for r in range(hi - lo):
                i = lo + r
                parts = (d[r], x[r]) if im is None else (d[r], im[r], x[r])
                if crc32_of(*parts) != int(idx["crc32"][r]):
                    bad.append((i, f"step {i}: checksum mismatch (data damaged)"))
                if int(idx["step"][r]) != i:
                    bad.append((i, f"step {i}: index row says step {int(idx['step'][r])}"))
            hi = lo
            if not full and hi > 0 and time.monotonic() - t0 > budget_s:
                break
        return [msg for _, msg in sorted(bad)], n - hi

    def integrity(self, *, full: bool = False) -> list[str]:
        """Problems found in the file (empty list: intact); see :meth:`integrity_report`."""
        return self.integrity_report(full=full)[0]

    def integrity_report(self, *, full: bool = False) -> tuple[list[str], int]:
        """Problems found in the file (empty list: intact) and the steps verified.

        Checks that every step row has its data, the checksums and step numbers (of
        every step, or of as many of the last ones as :meth:`verify_checksums` checks
        in its time budget unless ``full``), the status and that a checkpoint exists.
        """
        problems: list[str] = []
        n_index = int(self._f["steps/index"].shape[0])
        if self.steps_done < n_index:
            problems.append(
                f"{n_index - self.steps_done} step row(s) without all their data "
                "(the writer was cut off mid-step)"
            )
        bad, verified = self.verify_checksums(full=full)
        problems += bad
        if self.attrs.get("status") not in STATUSES:
            problems.append(f"unknown status {self.attrs.get('status')!r}")
        if len(self.checkpoints()) == 0:
            problems.append("no complete checkpoint")
        return problems, verified


def _phase(
    real: NDArray[Any], imag: NDArray[Any] | None, sel: tuple[Any, ...], raw: bool
) -> NDArray[Any]:
    """One phase's samples (raw: ``(k, b, F)``) or means (``(b, F)``) from a step's rows.

    Complex only where the phase was measured at a complex nudge (a nonzero imaginary
    part), as the board returned it; a real phase stays real, in the stored type.
    """
    out = real[sel]
    if imag is not None:
        im = imag[sel]
        if np.any(im):
            out = out + 1j * im
    return np.ascontiguousarray(np.moveaxis(out, 1, 0)) if raw else np.ascontiguousarray(out)


def open_session(path: str | Path) -> SessionFile:
    """Open a session file for reading.

    Raises:
        SessionError: missing, not HDF5, not an hwloop session, newer schema, damaged.
    """
    return SessionFile(path)


class StepBlock:
    """Steps ``lo..hi-1`` of a session file, each dataset read in one slice on first use.

    Serving many consecutive steps (replay, re-analysis) from blocks costs one HDF5 read
    per dataset per block instead of one per dataset per step. The arrays are those of
    the file (samples V, times s, conductances S, currents A), row ``step - lo``.
    """

    def __init__(self, sf: SessionFile, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self._sf = sf
        self._steps = sf.h5["steps"]
        self._cache: dict[str, NDArray[Any]] = {}
        self._prog: tuple[int, NDArray[np.void]] | None = None
        self._has_updates = "update_g_s" in self._steps

    def _get(self, name: str) -> NDArray[Any]:
        a = self._cache.get(name)
        if a is None:
            a = self._cache[name] = np.asarray(self._steps[name][self.lo : self.hi])
        return a

    def _row(self, step: int) -> int:
        if not self.lo <= step < self.hi:
            raise SessionError(f"step {step} is not in the block of steps {self.lo}..{self.hi - 1}")
        return step - self.lo

    @property
    def index(self) -> NDArray[np.void]:
        """The index rows of the block."""
        return self._get("index")

    def n_samples(self, step: int) -> NDArray[Any]:
        """Samples recorded per phase of ``step``."""
        return np.asarray(self._get("n_samples")[self._row(step)])

    def readings(self, step: int) -> list[NodeReading]:
        """The readings of each phase of ``step`` (summary files: one sample, the mean)."""
        r = self._row(step)
        sf = self._sf
        n_ex = int(self.index[r]["n_examples"])
        n_samp = self.n_samples(step)
        out = []
        cplx = sf.layout.complex_samples
        if sf.options.samples == "raw":
            samples, flags = self._get("samples_v")[r], self._get("flags")[r]
            imag = self._get("samples_imag_v")[r] if cplx else None
            times = self._get("sample_time_s")[r]
            for p in range(sf.layout.phases):
                k = int(n_samp[p])
                out.append(
                    NodeReading(
                        samples_v=_phase(samples, imag, (slice(n_ex), p, slice(k)), True),
                        timestamps_s=np.asarray(times[p, :k, :n_ex], dtype=np.float64),
                        flags=np.moveaxis(flags[:n_ex, p, :k], 1, 0),
                        nodes=sf.free_nodes,
                    )
                )
        else:
            mean, fany = self._get("mean_v")[r], self._get("flags_any")[r]
            imag = self._get("mean_imag_v")[r] if cplx else None
            for p in range(sf.layout.phases):
                out.append(
                    NodeReading(
                        samples_v=_phase(mean, imag, (slice(n_ex), p), False)[None],
                        timestamps_s=np.zeros((1, n_ex)),
                        flags=fany[None, :n_ex, p],
                        nodes=sf.free_nodes,
                    )
                )
        return out

    def step_data(self, step: int) -> dict[str, Any]:
        """Inputs, nudges, betas, examples and updates of ``step``."""
        r = self._row(step)
        n_ex = int(self.index[r]["n_examples"])
        d: dict[str, Any] = {
            "examples": self._get("examples")[r][:n_ex],
            "inputs_v": self._get("inputs_v")[r][:n_ex],
            "betas_s": self._get("betas_s")[r],
            "nudge_values": self._get("nudge_values")[r][:, :n_ex],
            "update_b_a": self._get("update_b_a")[r],
            "index": self.index[r],
        }
        if self._has_updates:
            d["update_g_s"] = self._get("update_g_s")[r]
        if self._sf.layout.complex_samples:  # complex nudges: betas and currents are complex
            d["betas_s"] = d["betas_s"] + 1j * self._get("betas_imag_s")[r]
            d["nudge_values"] = d["nudge_values"] + 1j * self._get("nudge_values_imag")[r][
                :, :n_ex]
        return d

    def programming(self, step: int) -> NDArray[np.void]:
        """The programming records of ``step`` (one read of the block's records)."""
        r = self._row(step)
        if self._prog is None:
            start, count = self.index["prog_row_start"], self.index["prog_row_count"]
            used = count > 0
            a = int(start[used].min()) if used.any() else 0
            b = int((start + count)[used].max()) if used.any() else 0
            self._prog = (a, np.asarray(self._sf.h5["programming/records"][a:b]))
        a0, rows = self._prog
        a, k = int(self.index[r]["prog_row_start"]), int(self.index[r]["prog_row_count"])
        return rows[a - a0 : a - a0 + k] if k else rows[:0]

    def checksum(self, step: int) -> tuple[int, int]:
        """The CRC-32 of ``step``'s stored samples (means) and inputs, and the recorded one."""
        r = self._row(step)
        name = "samples_v" if self._sf.options.samples == "raw" else "mean_v"
        rec = int(self.index[r]["crc32"])
        if self._sf.layout.complex_samples:
            imag = self._get(IMAG_DATASETS[name])[r]
            return crc32_of(self._get(name)[r], imag, self._get("inputs_v")[r]), rec
        return crc32_of(self._get(name)[r], self._get("inputs_v")[r]), rec
