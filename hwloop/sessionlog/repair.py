"""Repair: rewrite a killed writer's file as a clean file holding its complete steps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hwloop.session import sigint_held
from hwloop.sessionlog.reader import open_session
from hwloop.sessionlog.schema import LIBVER, MUTABLE_ATTRS, SessionError, now_iso
from hwloop.sessionlog.writer import set_attr

__all__ = [
    "repair",
]


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
            for name, size in MUTABLE_ATTRS.items():  # fixed sizes, as create() makes them
                out.attrs.create(name, np.bytes_(b""), dtype=f"S{size}")
            set_attr(out, "status", "aborted")
            set_attr(out, "reason", f"the writer was killed; {n} complete steps recovered")
            set_attr(out, "stopped_utc", now_iso())
    with sigint_held():
        os.replace(tmp, p)  # atomic: the old file or the repaired one, never neither
    return n
