"""``docs/session-format.md`` matches the session files ``hwloop train`` writes.

Five tiny runs (64 training examples, batch 32, one epoch: two steps each) cover
the optional parts: raw samples with the default logging, summary samples with
every update logged and current nudges, two Cauchy runs on the ``nonreciprocal``
emulator (complex nudges, raw and summary), and an emulated device model with drift
(the only way to get the ``board/drift_*`` checkpoint arrays) with write-verify
programming, every programming row and sampling to a standard-error target
(compressed samples). The doc's tables are parsed (first column: the path or name in
backticks) and compared with the files both ways: every dataset and attribute in
the files is documented, every documented dataset occurs, and the documented
shapes, dtypes, units and storage agree with the files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import simulated_device.board as board_module
from hwloop.cli import main
from hwloop.sessionlog import REQUIRED, REQUIRED_BY_MODE

DOC = Path(__file__).resolve().parent.parent / "docs" / "session-format.md"
TINY = [
    "--arch", "1568-100-10", "--epochs", "1", "--batch-size", "32", "--train-limit", "64",
    "--test-limit", "32", "--samples", "2", "--read-noise", "0.01", "--quiet",
]
PRESENCE = {"always", "raw", "summary", "updates", "layered", "emulator", "drift", "refresh",
            "complex", "complex-raw", "complex-summary"}

TEXT_DATASETS = {"/device/node_names", "/device/node_roles", "/device/node_clamps"}
"""String datasets: their units say what the text is."""

TIME_ARRAYS = {"/checkpoints/board/drift_t_since_s": "s"}
"""Checkpoint arrays holding times (the ``_s`` suffix here means seconds, not siemens)."""


# --------------------------------------------------------------------------- the files


def _train(out: Path, *extra: str) -> None:
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        code = main(["train", *TINY, *extra, "--out", str(out)])
    assert code == 0, buf_err.getvalue()


def _drifting(real: Any) -> Any:
    """``get_preset`` whose device models drift (no built-in preset does)."""

    def get_preset(name: str) -> Any:
        m = real(name)
        return dataclasses.replace(m, write=dataclasses.replace(m.write, drift_nu=0.05))

    return get_preset


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("format")
    out = {"raw": d / "raw.h5", "summary": d / "summary.h5", "drift": d / "drift.h5",
           "complex": d / "complex.h5", "complex-summary": d / "complex-summary.h5"}
    _train(out["raw"])
    _train(out["summary"], "--log-samples", "summary", "--log-updates", "all",
           "--nudge", "current")
    cauchy = ("--backend", "nonreciprocal", "--estimator", "cauchy-4", "--nudge", "current")
    _train(out["complex"], *cauchy)  # complex nudges: the imaginary parts
    _train(out["complex-summary"], *cauchy, "--log-samples", "summary")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(board_module, "get_preset", _drifting(board_module.get_preset))
        _train(out["drift"], "--device-preset", "reram", "--programming", "write-verify",
               "--log-updates", "off", "--log-programming", "all", "--sem-target", "0.005",
               "--max-samples", "4", "--wv-refresh-every", "5")
    return out


@contextlib.contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    with h5py.File(path, "r") as f:
        yield f


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found["/" + name] = obj

    f.visititems(visit)
    return found


def _groups(f: h5py.File) -> dict[str, h5py.Group]:
    found: dict[str, h5py.Group] = {"/": f}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group):
            found["/" + name] = obj

    f.visititems(visit)
    return found


def _weight_layers(f: h5py.File) -> int:
    """Layer blocks, less the backward arrays of a board with directed couplings."""
    if "layers" not in f["device"]:
        return 1
    couplings = json.loads(f["device"].attrs["info_json"]).get("couplings") or []
    return len(f["device/layers"]) - sum(c["kind"] == "backward" for c in couplings)


def _symbols(f: h5py.File) -> dict[str, int]:
    s = f["steps"]
    return {
        "S": s["index"].shape[0],
        "B": int(s.attrs["batch"]),
        "P": int(s.attrs["phases"]),
        "N": int(s.attrs["max_samples"]),
        "F": s["free_nodes"].shape[0],
        "I": int(s.attrs["n_inputs"]),
        "O": int(s.attrs["n_outputs"]),
        "M": f["device/node_names"].shape[0],
        "E": f["device/edge_nodes"].shape[0],
        "K": f["device/bias_nodes"].shape[0],
        "Y": _weight_layers(f),
        "T": f["checkpoints/order"].shape[1],
        "R": f["programming/records"].shape[0],
        "C": f["checkpoints/index"].shape[0],
        "Q": f["epochs"].shape[0],
        "V": f["events"].shape[0],
        "G": int(s.attrs["chunk_steps"]),
    }


# --------------------------------------------------------------------------- the doc


@dataclasses.dataclass
class DocDataset:
    path: str
    shape: str
    dtype: str
    units: str
    storage: str
    present: str

    def matches(self, path: str) -> bool:
        pattern = re.escape(self.path).replace("NNN", r"\d{3}")
        return re.fullmatch(pattern, path) is not None


@dataclasses.dataclass
class Doc:
    symbols: set[str]
    root_attrs: dict[str, str]
    group_attrs: dict[str, dict[str, str]]
    datasets: list[DocDataset]
    fields: dict[str, dict[str, tuple[str, str]]]
    python: list[str]

    def dataset(self, path: str) -> DocDataset | None:
        hits = [d for d in self.datasets if d.matches(path)]
        assert len(hits) <= 1, f"{path} matches several rows of the doc"
        return hits[0] if hits else None


def _ticks(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def _first(cell: str) -> str:
    ticks = _ticks(cell)
    assert ticks, f"first cell {cell!r} has no name in backticks"
    return ticks[0]


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    tables: list[tuple[list[str], list[list[str]]]] = []
    rows: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if rows:
            header, body = rows[0], [r for r in rows[1:] if not set("".join(r)) <= {"-", ":"}]
            tables.append((header, body))
            rows = []
    return tables


@pytest.fixture(scope="module")
def doc() -> Doc:
    text = DOC.read_text(encoding="utf-8")
    out = Doc(set(), {}, {}, [], {}, re.findall(r"```python\n(.*?)```", text, re.S))
    for header, body in _tables(text):
        head = header[0]
        if head == "symbol":
            out.symbols |= {_first(r[0]) for r in body}
        elif head == "root attribute":
            out.root_attrs.update({_first(r[0]): r[1] for r in body})
        elif head.endswith(" attribute"):
            out.group_attrs[_first(head)] = {_first(r[0]): r[1] for r in body}
        elif head == "dataset":
            assert header[1:6] == ["shape", "dtype", "unit (`units` attribute)", "storage",
                                   "present"], header
            out.datasets += [DocDataset(_first(r[0]), *r[1:6]) for r in body]
        elif head.startswith("field of"):
            out.fields[_first(head)] = {_first(r[0]): (r[1], r[2]) for r in body}
    assert out.root_attrs and out.group_attrs and out.datasets and out.fields, "doc not parsed"
    return out


# --------------------------------------------------------------------------- coverage


def test_every_dataset_in_the_files_is_documented(files: dict[str, Path], doc: Doc) -> None:
    missing = []
    for name, path in files.items():
        with _open(path) as f:
            missing += [f"{name}: {p}" for p in _datasets(f) if doc.dataset(p) is None]
    assert not missing, "datasets not in docs/session-format.md: " + ", ".join(missing)


def test_every_documented_dataset_occurs(files: dict[str, Path], doc: Doc) -> None:
    seen: set[str] = set()
    for path in files.values():
        with _open(path) as f:
            for p in _datasets(f):
                row = doc.dataset(p)
                if row is not None:
                    seen.add(row.path)
    unseen = [d.path for d in doc.datasets if d.path not in seen]
    assert not unseen, f"documented but in none of the generated files: {unseen}"


def test_presence_column(files: dict[str, Path], doc: Doc) -> None:
    for name, path in files.items():
        with _open(path) as f:
            opts = json.loads(f.attrs["log_options_json"])
            have = {
                "always": True,
                "raw": opts["samples"] == "raw",
                "summary": opts["samples"] == "summary",
                "updates": bool(opts["updates"]),
                "layered": "layers" in f["device"],
                "emulator": f["device"].attrs["backend"] == "emulator",
                "drift": name == "drift",
                "refresh": name == "drift",
                "complex": name.startswith("complex"),
                "complex-raw": name == "complex",
                "complex-summary": name == "complex-summary",
            }
            paths = list(_datasets(f))
            for row in doc.datasets:
                assert row.present in PRESENCE, f"{row.path}: unknown presence {row.present!r}"
                exists = any(row.matches(p) for p in paths)
                assert exists == have[row.present], (
                    f"{name}: {row.path} ({row.present}) {'present' if exists else 'missing'}"
                )


def test_attributes_are_documented(files: dict[str, Path], doc: Doc) -> None:
    kinds = {"string": str, "bytes": np.bytes_, "int64": np.int64, "float64": np.float64,
             "bool": np.bool_}
    for name, path in files.items():
        with _open(path) as f:
            assert set(f.attrs) == set(doc.root_attrs), name
            for key, value in f.attrs.items():
                assert isinstance(value, kinds[doc.root_attrs[key]]), (name, key, type(value))
            for gpath, grp in _groups(f).items():
                if gpath == "/" or not grp.attrs:
                    continue
                documented = [v for k, v in doc.group_attrs.items()
                              if re.fullmatch(re.escape(k).replace("NNN", r"\d{3}"), gpath)]
                assert documented, f"{name}: attributes of {gpath} are not documented"
                assert set(grp.attrs) == set(documented[0]), (name, gpath)
                for key, value in grp.attrs.items():
                    assert isinstance(value, kinds[documented[0][key]]), (name, gpath, key)
            for dpath, ds in _datasets(f).items():
                assert set(ds.attrs) == {"units"}, f"{name}: {dpath} has {set(ds.attrs)}"


def test_inspect_checks_what_the_doc_calls_required(doc: Doc) -> None:
    always = {d.path for d in doc.datasets if d.present == "always"}
    for name in REQUIRED:
        if doc.dataset("/" + name) is not None:
            assert "/" + name in always, name
    for mode, names in REQUIRED_BY_MODE.items():
        assert {"/" + n for n in names} == {d.path for d in doc.datasets if d.present == mode}


# --------------------------------------------------------------------------- agreement


def _dtype_ok(spec: str, dt: np.dtype[Any]) -> bool:
    for tok in _ticks(spec):
        if tok == "compound":
            ok = dt.names is not None
        elif tok == "bytes":
            ok = dt.kind == "S"
        else:
            ok = dt == np.dtype(tok)
        if ok:
            return True
    return False


def _shape(spec: str, sym: dict[str, int]) -> list[int | None]:
    text = next(t for t in _ticks(spec) if t.startswith("("))
    dims = [t.strip() for t in text.strip("()").split(",") if t.strip()]
    return [int(t) if t.isdigit() else sym.get(t) for t in dims]


def test_shape_symbols_are_defined(doc: Doc) -> None:
    for row in doc.datasets:
        for spec in (row.shape, row.storage):
            for text in [t for t in _ticks(spec) if t.startswith("(")]:
                for t in text.strip("()").split(","):
                    t = t.strip()
                    if t and not t.isdigit() and t.isupper():
                        assert t in doc.symbols, f"{row.path}: symbol {t} not in the table"


def test_dtypes_shapes_and_storage(files: dict[str, Path], doc: Doc) -> None:
    for name, path in files.items():
        with _open(path) as f:
            sym = _symbols(f)
            for p, ds in _datasets(f).items():
                row = doc.dataset(p)
                assert row is not None
                where = f"{name}: {p}"
                assert _dtype_ok(row.dtype, ds.dtype), f"{where}: {ds.dtype} vs {row.dtype}"
                want = _shape(row.shape, sym)
                assert len(want) == ds.ndim, f"{where}: shape {ds.shape} vs {row.shape}"
                for got, w in zip(ds.shape, want, strict=True):
                    assert w is None or got == w, f"{where}: shape {ds.shape} vs {row.shape}"
                comp = "lzf" if "lzf" in row.storage else "gzip" if "gzip" in row.storage else None
                cond = re.search(r"only when `(\w+)`", row.storage)
                if cond and not json.loads(f.attrs["log_options_json"])[cond.group(1)]:
                    comp = None
                assert ds.compression == comp, f"{where}: {ds.compression} vs {row.storage}"
                if row.storage.startswith("contiguous"):
                    assert ds.chunks is None, where
                elif row.storage.startswith("chunks"):
                    assert ds.chunks == tuple(_shape(row.storage, sym)), (
                        f"{where}: chunks {ds.chunks} vs {row.storage}")
                    assert ds.maxshape[0] is None, f"{where}: first dimension not growable"
                else:
                    assert ds.chunks is not None, where


def test_units(files: dict[str, Path], doc: Doc) -> None:
    for name, path in files.items():
        with _open(path) as f:
            for p, ds in _datasets(f).items():
                row = doc.dataset(p)
                assert row is not None
                units = ds.attrs["units"]
                assert isinstance(units, str), f"{name}: {p} units {units!r}"
                if "(empty)" in row.units:
                    assert units == "", f"{name}: {p}"
                elif _ticks(row.units):
                    assert units in _ticks(row.units), f"{name}: {p}: {units!r} vs {row.units}"
                else:
                    assert row.units.startswith("JSON"), row.units
                    assert isinstance(json.loads(units), dict), f"{name}: {p}"


def test_every_dataset_has_units(files: dict[str, Path]) -> None:
    for name, path in files.items():
        with _open(path) as f:
            for p, ds in _datasets(f).items():
                units = ds.attrs.get("units")
                assert isinstance(units, str), f"{name}: {p} has no string units"
                assert units, f"{name}: {p} has empty units"


def test_string_datasets_have_units(files: dict[str, Path]) -> None:
    with _open(files["raw"]) as f:
        assert all(f[p].attrs["units"].startswith("text") for p in TEXT_DATASETS)


def test_time_checkpoint_arrays_are_labelled_seconds(files: dict[str, Path]) -> None:
    with _open(files["drift"]) as f:
        for p, right in TIME_ARRAYS.items():
            assert f[p].attrs["units"] == right


def test_structured_fields(files: dict[str, Path], doc: Doc) -> None:
    for name, path in files.items():
        with _open(path) as f:
            for p, ds in _datasets(f).items():
                if ds.dtype.names is None:
                    continue
                fields = doc.fields.get(p)
                assert fields is not None, f"{p}: no field table"
                assert list(fields) == list(ds.dtype.names), f"{name}: {p} fields"
                for field, (dtype, _) in fields.items():
                    assert _dtype_ok(dtype, ds.dtype[field]), f"{name}: {p}.{field}"
                units = ds.attrs["units"]
                if not units.startswith("{"):
                    continue
                for key, unit in json.loads(units).items():
                    documented = [v for k, v in fields.items()
                                  if k == key or (key.endswith("*") and k.startswith(key[:-1]))]
                    assert documented, f"{name}: {p}: units key {key!r} matches no field"
                    for _, doc_unit in documented:
                        assert _ticks(doc_unit) == [unit], f"{name}: {p}.{key}: {unit!r}"


def test_doc_example_runs(files: dict[str, Path], doc: Doc,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert len(doc.python) == 1
    for name in ("raw", "summary"):
        code = doc.python[0].replace('"run.h5"', repr(str(files[name])))
        exec(compile(code, str(DOC), "exec"), {})
        assert "steps; loss of the last" in capsys.readouterr().out
