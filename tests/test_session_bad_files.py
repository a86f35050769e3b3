"""``hwloop inspect``, ``resume`` and ``evaluate`` on files that are not usable session files.

Every case must end in exit code 2 with exactly one line on stderr that names the
file and the problem, no traceback, and the file left as it was; ``inspect`` of a
file that opens but fails its integrity check exits with 1 and lists the problem.
Nothing in a session file is ever unpickled or evaluated.

Known bugs are marked ``xfail(strict=True)`` with the reason: when one is fixed the
mark fails the suite, so it is removed together with the bug.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from hwloop.cli import main
from hwloop.sessionlog import open_session

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--arch", "1568-100-10", "--epochs", "1", "--batch-size", "32", "--train-limit", "64",
    "--test-limit", "32", "--samples", "2", "--read-noise", "0.01", "--quiet",
]
COMMANDS = {
    "inspect": ["inspect", "{run}"],
    # --epochs 2: the tiny run is complete; this makes resume go past that check
    "resume": ["resume", "{run}", "--epochs", "2", "--quiet"],
    "evaluate": ["evaluate", "{run}", "--dataset", "mnist-subset"],
}
METADATA_SIGNATURES = (
    b"OHDR", b"OCHK", b"EAHD", b"EAIB", b"EASB", b"EADB", b"FAHD", b"FADB",
    b"BTHD", b"BTIN", b"BTLF", b"FRHP", b"FHDB", b"FHIB", b"GCOL", b"TREE", b"HEAP", b"SNOD",
)
"""Signatures that open HDF5 metadata blocks: object headers, chunk indices (extensible
and fixed arrays, v2 B-trees), fractal and global heaps, v1 B-trees and symbol nodes."""


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("real") / "run.h5"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", *TINY, "--out", str(path)])
    assert code == 0, err.getvalue()
    return path


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def run_cli(capfd: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int | str, str, str]:
    """``hwloop`` in-process; an escaping exception counts as a traceback."""
    try:
        code: int | str = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # the test then fails with what escaped
        code = f"traceback: {type(exc).__name__}: {exc}"
    out, err = capfd.readouterr()  # file descriptors: HDF5's own messages would show here
    return code, out, err


def assert_one_line_error(code: int | str, out: str, err: str, command: str,
                          *words: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "HDF5-DIAG" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hwloop {command}: error: "), lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


# --------------------------------------------------------------------------- bad files


def _text(real: Path, path: Path) -> None:
    path.write_text("this is not an HDF5 file\n")


def _truncated(real: Path, path: Path) -> None:
    data = real.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_metadata(data: bytes, lo: float = 0.05, hi: float = 0.95) -> tuple[bytes, int]:
    """Overwrite the first 32 bytes of every metadata block between ``lo`` and ``hi``."""
    buf = bytearray(data)
    garbage = bytes((i * 37 + 11) & 0xFF for i in range(32))
    hits = 0
    for sig in METADATA_SIGNATURES:
        for m in re.finditer(re.escape(sig), data):
            if lo * len(data) <= m.start() < hi * len(data):
                buf[m.start() : m.start() + 32] = garbage
                hits += 1
    return bytes(buf), hits


def _corrupted(real: Path, path: Path) -> None:
    data, hits = corrupt_metadata(real.read_bytes())
    assert hits >= 3, f"only {hits} metadata blocks in the middle of the file; adapt the test"
    path.write_bytes(data)


def _foreign(real: Path, path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["measurements"] = np.arange(10.0)
        f.attrs["title"] = "somebody else's data"


def _edited(change: Callable[[h5py.File], None]) -> Callable[[Path, Path], None]:
    def make(real: Path, path: Path) -> None:
        shutil.copy(real, path)
        with h5py.File(path, "r+") as f:
            change(f)

    return make


def _without(name: str) -> Callable[[Path, Path], None]:
    def drop(f: h5py.File) -> None:
        del f[name]

    return _edited(drop)


def _v2(f: h5py.File) -> None:
    f.attrs["schema_version"] = 2


CASES: dict[str, tuple[Callable[[Path, Path], None] | None, tuple[str, ...]]] = {
    # name: (how to make the file from a real one (None: no file), words the error names)
    "missing-file": (None, ("not found",)),
    "text-file": (_text, ("not an HDF5 file",)),
    "truncated": (_truncated, ("truncated",)),
    "corrupted-metadata": (_corrupted, ()),
    "foreign-hdf5": (_foreign, ("not an hwloop session file",)),
    "schema-version-2": (_edited(_v2), ("version 2", "upgrade hwloop")),
    **{f"no-{g}": (_without(g), (g,))
       for g in ("device", "steps", "programming", "epochs", "events", "checkpoints")},
    "no-checkpoint-conductances": (_without("checkpoints/conductances_s"), ("conductances_s",)),
    "no-optimiser-state": (_without("checkpoints/optimiser"), ("optimiser",)),
}

NOT_APPLICABLE = {
    # a file without optimiser state can be inspected and evaluated (neither needs it)
    ("no-optimiser-state", "inspect"),
    ("no-optimiser-state", "evaluate"),
}

KNOWN_BUGS: dict[tuple[str, str], str] = {}
"""(case, command) pairs that still fail, with the reason (none at present)."""


def _params() -> list[Any]:
    out = []
    for case in CASES:
        for command in COMMANDS:
            if (case, command) in NOT_APPLICABLE:
                continue
            bug = KNOWN_BUGS.get((case, command))
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            out.append(pytest.param(case, command, marks=marks, id=f"{case}-{command}"))
    return out


@pytest.mark.parametrize(("case", "command"), _params())
def test_bad_file_gives_one_line_error(
    real: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], case: str, command: str
) -> None:
    make, words = CASES[case]
    path = tmp_path / f"{case}.h5"
    if make is not None:
        make(real, path)
    before = _digest(path)
    argv = [a.format(run=path) for a in COMMANDS[command]]
    code, out, err = run_cli(capfd, argv)
    assert_one_line_error(code, out, err, command, str(path), *words)
    assert _digest(path) == before, f"hwloop {command} changed the file it refused"
    assert sorted(p.name for p in tmp_path.iterdir()) == ([path.name] if make else [])


def test_known_bug_list_is_current() -> None:
    assert {c for c, _ in KNOWN_BUGS} | {c for c, _ in NOT_APPLICABLE} <= set(CASES)


def test_inspect_lists_a_checksum_mismatch(
    real: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Damaged sample data (metadata intact): the file opens, the integrity check fails."""
    path = tmp_path / "damaged-data.h5"
    shutil.copy(real, path)
    with h5py.File(path, "r") as f:
        ds = f["steps/samples_v"]
        last = ds.shape[0] - 1
        info = ds.id.get_chunk_info_by_coord((last, 0, 0, 0, 0))
        assert ds.compression is None and info.size > 4096
        offset = info.byte_offset + info.size // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x7f" * 64)
    code, out, err = run_cli(capfd, ["inspect", str(path)])
    assert code == 1, (code, out, err)
    assert err == ""
    assert f"step {last}: checksum mismatch" in out and "PROBLEMS" in out
    code, out, err = run_cli(capfd, ["inspect", str(path), "--json", "--full"])
    assert code == 1 and err == ""
    assert f"step {last}: checksum mismatch (data damaged)" in out


# --------------------------------------------------------------------------- no unpickling

_FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib",
                      "marshal", "shelve", "jsonpickle"}
_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def unsafe_calls(source: str) -> list[str]:
    """Imports of pickle-like modules, eval/exec/compile, and ``allow_pickle=True``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in _FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in _FORBIDDEN_MODULES:
                found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in _FORBIDDEN_CALLS:
                found.append(f"{node.lineno}: {node.func.id}()")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{node.lineno}: allow_pickle={ast.unparse(kw.value)}")
        elif (isinstance(node, ast.Attribute) and node.attr in ("loads", "load")
              and isinstance(node.value, ast.Name) and node.value.id in _FORBIDDEN_MODULES):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def _session_readers() -> list[Path]:
    """The modules that read or write session files: the named ones and every module of
    hwloop/ and protocols/ that imports h5py or hwloop.sessionlog."""
    named = [*sorted((ROOT / "hwloop" / "sessionlog").glob("*.py")),
             ROOT / "hwloop" / "inspect_cmd.py", ROOT / "hwloop" / "cli.py"]
    found = set(named)
    for path in [*sorted((ROOT / "hwloop").rglob("*.py")),
                 *sorted((ROOT / "protocols").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m == "h5py" or m.startswith("hwloop.sessionlog") for m in mods):
                found.add(path)
    return sorted(found)


def test_session_code_never_unpickles_or_evaluates() -> None:
    readers = _session_readers()
    assert ROOT / "hwloop" / "sessionlog" / "reader.py" in readers
    bad = [f"{p.relative_to(ROOT)}:{hit}" for p in readers
           for hit in unsafe_calls(p.read_text(encoding="utf-8"))]
    assert not bad, bad


def test_the_unpickling_checker_catches_violations() -> None:
    src = ("import pickle\nfrom dill import loads\nimport numpy as np\n"
           "x = np.load('a.npy', allow_pickle=True)\ny = eval('1')\nz = pickle.loads(b'')\n"
           "ok = np.load('b.npy', allow_pickle=False)\n")
    hits = unsafe_calls(src)
    assert [h.split(":")[0] for h in hits] == ["1", "2", "4", "5", "6"], hits


class _Payload:
    """Unpickling this creates ``marker`` (proof that something was executed)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_planted_pickles_are_never_executed(
    real: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe))).close()  # the payload is live
    assert probe.exists()
    marker = tmp_path / "EXECUTED"
    binary = pickle.dumps(_Payload(marker))  # protocol 5: NUL bytes
    text = pickle.dumps(_Payload(marker), protocol=0).decode("ascii")  # no NUL: a string
    path = tmp_path / "planted.h5"
    shutil.copy(real, path)
    with h5py.File(path, "r+") as f:
        n_steps, n_ckpt = f["steps/index"].shape[0], f["checkpoints/index"].shape[0]

        def as_bytes(n: int) -> Any:
            data = np.empty(n, dtype=object)
            data[:] = [np.frombuffer(binary, dtype=np.uint8)] * n
            return data

        # object-dtype datasets where readers iterate: every /steps and /checkpoints dataset
        f.create_dataset("steps/planted", data=as_bytes(n_steps),
                         dtype=h5py.vlen_dtype(np.uint8), maxshape=(None,))
        f.create_dataset("checkpoints/planted", data=np.array([text] * n_ckpt, dtype=object),
                         dtype=h5py.string_dtype(), maxshape=(None,))
        f.create_dataset("device/planted", data=np.void(binary))  # opaque
        f["steps/planted"].attrs["units"] = text
        f.attrs["planted"] = np.void(binary)
        f.attrs["planted_text"] = text

    for argv in (["inspect", str(path)], ["inspect", str(path), "--json", "--full"],
                 ["evaluate", str(path), "--dataset", "mnist-subset", "--json"]):
        code, _, err = run_cli(capfd, argv)
        assert code == 0, (argv, code, err)
        assert "Traceback" not in err
    with open_session(path) as sf:
        sf.readings(0)
        sf.step_data(0)
        sf.programming(0)
        sf.events()
        sf.epochs()
        ck = sf.checkpoint(-1)
        assert ck.arrays["planted"].item() == text.encode()  # left as data, never unpickled
        assert sf.integrity(full=True) == []
    assert not marker.exists(), "a pickle planted in the session file was executed"
