"""The run file written by ``hwloop train --out RUN.h5`` (HDF5, h5py).

Layout (every dataset carries a ``units`` attribute):

* root attributes: ``schema`` (``"hwloop-run"``), ``schema_version``,
  ``hwloop_version``, ``run_id``, ``created_utc``, ``finished_utc``,
  ``status`` (running / completed / stopped / aborted / failed), ``reason``,
  ``seed``, ``config_toml`` (the resolved configuration), ``defaults_source``;
* ``/device``: attribute ``summary_json`` (the board description summary);
* ``/metrics/epoch/<name>``: one value per finished epoch (``epoch``,
  ``train_loss``, ``train_accuracy``, ``test_accuracy``, ``time_s``, ...);
* ``/params/conductances_s`` ``(n_edges,)`` S and ``/params/biases_a``
  ``(n_bias,)`` A: the latest parameters, rewritten after every epoch, with the
  attribute ``epoch``.

The file is opened, written and closed at each epoch boundary, so an
interrupted run keeps every finished epoch.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from hwloop import __version__
from hwloop.errors import ConfigError
from hwloop.session import sigint_held

SCHEMA = "hwloop-run"
SCHEMA_VERSION = 0
STATUSES = ("running", "completed", "stopped", "aborted", "failed")

_UNITS = {
    "epoch": "1",
    "train_loss": "V^2",
    "test_loss": "V^2",
    "train_accuracy": "1",
    "test_accuracy": "1",
    "time_s": "s",
    "examples_per_s": "1/s",
    "pulses": "1",
    "bound_hits": "1",
}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def check_run_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """Validate a run-file path before any work starts.

    Raises:
        ConfigError: wrong suffix, missing directory, or an existing file without ``overwrite``.
    """
    p = Path(path)
    if p.suffix not in (".h5", ".hdf5"):
        raise ConfigError(f"run file {p} must end in .h5 or .hdf5")
    if not p.parent.exists():
        raise ConfigError(f"directory {p.parent} does not exist; create it first")
    if p.exists() and not overwrite:
        raise ConfigError(f"run file {p} already exists; choose another --out or add --overwrite")
    return p


class RunWriter:
    """Writes a run file step by step; every method opens and closes the file.

    Args:
        path: the ``.h5`` file to create (an existing file is refused unless
            ``overwrite``).
        config_toml: the resolved configuration as TOML text.
        seed: the run's seed.
        device_summary: JSON-able board summary.
        defaults_source: where the default hyper-parameters came from.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        config_toml: str,
        seed: int,
        device_summary: dict[str, Any],
        defaults_source: str = "",
        overwrite: bool = False,
    ) -> None:
        self.path = check_run_path(path, overwrite=overwrite)
        self.run_id = uuid.uuid4().hex
        with h5py.File(self.path, "w") as f:
            f.attrs.update(
                schema=SCHEMA,
                schema_version=SCHEMA_VERSION,
                hwloop_version=__version__,
                run_id=self.run_id,
                created_utc=_now(),
                finished_utc="",
                status="running",
                reason="",
                seed=seed,
                config_toml=config_toml,
                defaults_source=defaults_source,
            )
            f.create_group("device").attrs["summary_json"] = json.dumps(device_summary)
            f.create_group("metrics").create_group("epoch")
            f.create_group("params")

    def append_epoch(self, metrics: dict[str, float]) -> None:
        """Append one epoch's metrics (same keys every epoch)."""
        with h5py.File(self.path, "a") as f:
            grp = f["metrics/epoch"]
            for key, value in metrics.items():
                if key not in grp:
                    ds = grp.create_dataset(
                        key, shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,)
                    )
                    ds.attrs["units"] = _UNITS.get(key, "1")
                ds = grp[key]
                ds.resize((ds.shape[0] + 1,))
                ds[-1] = float(value)

    def write_params(
        self,
        g_s: NDArray[np.floating],
        b_a: NDArray[np.floating],
        epoch: int,
        *,
        complete: bool = True,
    ) -> None:
        """Store the latest conductances (S) and bias currents (A).

        The datasets are created once and then overwritten in place (never deleted
        and re-created), with SIGINT held back while the file is open, so an
        interrupt cannot leave the file without parameters.

        Args:
            g_s: conductances, S.
            b_a: bias currents, A.
            epoch: epochs completed when the parameters were read.
            complete: False when the parameters were saved in the middle of an epoch
                (after a stop or a failure).
        """
        with sigint_held(), h5py.File(self.path, "a") as f:
            grp = f["params"]
            for name, arr, unit in (("conductances_s", g_s, "S"), ("biases_a", b_a, "A")):
                data = np.asarray(arr, dtype=np.float64)
                if name not in grp:
                    ds = grp.create_dataset(name, shape=data.shape, dtype="f8", chunks=True,
                                            compression="gzip", compression_opts=1, shuffle=True)
                    ds.attrs["units"] = unit
                ds = grp[name]
                if ds.shape != data.shape:
                    raise ConfigError(f"{self.path}: parameter {name} changed shape")
                ds[...] = data
            grp.attrs["epoch"] = epoch
            grp.attrs["epoch_complete"] = complete

    def finish(self, status: str, reason: str = "") -> None:
        """Record the exit status (one of :data:`STATUSES`) and the stop time."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with sigint_held(), h5py.File(self.path, "a") as f:
            f.attrs["status"] = status
            f.attrs["reason"] = reason
            f.attrs["finished_utc"] = _now()


@dataclass(frozen=True, eq=False)
class RunData:
    """A run file read back."""

    path: Path
    attrs: dict[str, Any]
    config_toml: str
    device_summary: dict[str, Any]
    metrics: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    conductances_s: NDArray[np.float64] | None = None
    biases_a: NDArray[np.float64] | None = None


def read_run(path: str | Path) -> RunData:
    """Read a run file.

    Raises:
        ConfigError: missing file, not HDF5, or not an hwloop run file.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"run file {p} not found; check the path")
    try:
        f = h5py.File(p, "r")
    except OSError:
        raise ConfigError(f"{p} is not a readable HDF5 file") from None
    with f:
        if f.attrs.get("schema") != SCHEMA:
            raise ConfigError(f"{p} is not an hwloop run file (no schema attribute {SCHEMA!r})")
        version = f.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{p} has run-file schema version {version}; this hwloop reads version "
                f"{SCHEMA_VERSION} (use the hwloop version that wrote it)"
            )
        try:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            metrics = {k: np.asarray(v[()]) for k, v in f["metrics/epoch"].items()}
            params = f["params"]
            g = np.asarray(params["conductances_s"][()]) if "conductances_s" in params else None
            b = np.asarray(params["biases_a"][()]) if "biases_a" in params else None
            summary = json.loads(f["device"].attrs["summary_json"])
            config_toml = str(attrs["config_toml"])
        except (KeyError, ValueError, OSError) as exc:
            raise ConfigError(f"{p} is an incomplete or damaged run file ({exc})") from None
    return RunData(
        path=p,
        attrs=attrs,
        config_toml=config_toml,
        device_summary=summary,
        metrics=metrics,
        conductances_s=g,
        biases_a=b,
    )
