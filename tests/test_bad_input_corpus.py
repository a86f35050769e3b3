"""A corpus of bad inputs for every command: one line, exit code 2, files untouched.

Each case runs ``hwloop`` in-process on a corpus directory that holds broken files of
every kind the commands read (configuration, grid, board, netlist, session, dataset
and option files: binary bytes, not UTF-8, empty, wrong types, NaN, infinities,
negatives, huge values, directories where files are expected) and one real session
file. A case passes when the command exits with code 2, prints nothing on stdout and
exactly one line on stderr (``hwloop CMD: error: ...``, no traceback) that names the
problem, and every file in the corpus is byte-for-byte as it was, with nothing added.

Cases that need a running process (a closed pipe) are at the end, in a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwloop.cli import main

SMALL_RUN = ["train", "--arch", "1568-32-10", "--epochs", "1", "--train-limit", "40",
             "--test-limit", "20", "--quiet"]


def _write_corpus(d: Path) -> None:
    (d / "dir").mkdir()
    (d / "dir.h5").mkdir()
    (d / "binary.toml").write_bytes(b"\xff\xfe\x00\x81 binary \x00\x9f")
    (d / "latin1.toml").write_bytes("epochs = 1 # d\xe9j\xe0\n".encode("latin-1"))
    (d / "empty.toml").write_bytes(b"")
    (d / "invalid.toml").write_text("epochs = = 3\n")
    (d / "wrongtype.toml").write_text('epochs = "three"\n')
    (d / "unknown.toml").write_text("epochz = 3\n")
    (d / "nan.toml").write_text("lr_decay = nan\n")
    (d / "inf.toml").write_text("beta = inf\n")
    (d / "negative.toml").write_text("batch_size = -4\n")
    (d / "huge.toml").write_text("epochs = 1e400\n")
    (d / "grid-nan.toml").write_text("read_noise = [nan]\nsamples = [1]\n")
    (d / "grid-empty-axis.toml").write_text("read_noise = []\nsamples = [1]\n")
    (d / "board-unknown-kind.toml").write_text(
        '[board]\nname = "x"\n[network]\narch = "4-2-2"\ng_min_s = 1e-6\ng_max_s = 1e-4\n'
        '[instruments.a]\nkind = "no-such-kind"\nurl = "socket://127.0.0.1:9"\n'
        '[roles]\ninputs = "a"\nnudges = "a"\nbiases = "a"\n'
    )
    (d / "binary.cir").write_bytes(b"title\n\xff\xd8\xff\x00garbage\x81\n.end\n")
    (d / "empty.cir").write_bytes(b"")
    (d / "title-only.cir").write_text("just a title\n.end\n")
    (d / "inf.cir").write_text("t\nV1 1 0 1e999\nR1 1 0 1k\n.end\n")
    (d / "nan.cir").write_text("t\nV1 1 0 nan\nR1 1 0 1k\n.end\n")
    (d / "negative-r.cir").write_text("t\nV1 1 0 1\nR1 1 0 -1k\n.end\n")
    (d / "unknown-element.cir").write_text("t\nV1 1 0 1\nQ1 1 0 2 npn\n.end\n")
    (d / "random.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "empty.h5").write_bytes(b"")
    (d / "text.h5").write_text("not a session file\n")
    (d / "random.npz").write_bytes(np.random.default_rng(1).bytes(600))
    np.savez(d / "nokeys.npz", a=np.zeros(3))
    np.savez(d / "nanpixels.npz", x=np.full((5, 784), np.nan), y=np.zeros(5, dtype=int))
    np.savez(d / "badlabels.npz", x=np.zeros((5, 784)), y=np.full(5, 99))
    np.savez(d / "shape.npz", x=np.zeros((5, 3)), y=np.zeros(5, dtype=int))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    _write_corpus(d)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*SMALL_RUN, "--out", str(d / "run.h5")])
    assert code == 0, err.getvalue()
    return d


def _snapshot(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): (
            "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        )
        for p in sorted(d.rglob("*"))
    }


# (case id, argv with {d} for the corpus directory, words the error line must contain)
CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    # ---- configuration files
    ("config-binary", ["train", "--config", "{d}/binary.toml", "--out", "{d}/o.h5"], ("UTF-8",)),
    ("config-latin1", ["train", "--config", "{d}/latin1.toml", "--out", "{d}/o.h5"], ("UTF-8",)),
    ("config-dir", ["train", "--config", "{d}/dir", "--out", "{d}/o.h5"], ("directory",)),
    ("config-missing", ["train", "--config", "{d}/nope.toml", "--out", "{d}/o.h5"],
     ("not found",)),
    ("config-invalid", ["train", "--config", "{d}/invalid.toml", "--out", "{d}/o.h5"],
     ("TOML",)),
    ("config-wrongtype", ["train", "--config", "{d}/wrongtype.toml", "--out", "{d}/o.h5"],
     ("epochs",)),
    ("config-unknown", ["train", "--config", "{d}/unknown.toml", "--out", "{d}/o.h5"],
     ("epochz",)),
    ("config-nan", ["train", "--config", "{d}/nan.toml", "--out", "{d}/o.h5"], ("lr_decay",)),
    ("config-inf", ["train", "--config", "{d}/inf.toml", "--out", "{d}/o.h5"], ("beta",)),
    ("config-negative", ["train", "--config", "{d}/negative.toml", "--out", "{d}/o.h5"],
     ("batch_size",)),
    ("config-huge", ["train", "--config", "{d}/huge.toml", "--out", "{d}/o.h5"], ("epochs",)),
    ("plan-config-binary", ["plan", "--config", "{d}/binary.toml"], ("UTF-8",)),
    # ---- train options
    ("train-epochs-word", ["train", "--epochs", "abc", "--out", "{d}/o.h5"], ("epochs",)),
    ("train-beta-nan", ["train", "--beta", "nan", "--out", "{d}/o.h5"], ("beta",)),
    ("train-beta-inf", ["train", "--beta", "inf", "--out", "{d}/o.h5"], ("beta",)),
    ("train-beta-negative", ["train", "--beta", "-1", "--out", "{d}/o.h5"], ("beta",)),
    ("train-lr-nan", ["train", "--lr", "nan", "--out", "{d}/o.h5"], ("lr",)),
    ("train-samples-zero", ["train", "--samples", "0", "--out", "{d}/o.h5"], ("samples",)),
    ("train-batch-huge", ["train", "--batch-size", "10000000", "--out", "{d}/o.h5"],
     ("batch",)),
    ("train-arch-binary", ["train", "--arch", "\udcff\udcfe", "--out", "{d}/o.h5"], ("arch",)),
    ("train-arch-zero", ["train", "--arch", "1568-0-10", "--out", "{d}/o.h5"], ("arch",)),
    ("train-out-dir", ["train", "--out", "{d}/dir.h5"], ("directory",)),
    ("train-out-exists", [*SMALL_RUN, "--out", "{d}/run.h5"], ("--overwrite",)),
    ("train-unknown-dataset", ["train", "--dataset", "nope", "--out", "{d}/o.h5"],
     ("dataset",)),
    ("train-npz-random", ["train", "--dataset", "{d}/random.npz", "--out", "{d}/o.h5"],
     ("random.npz",)),
    ("train-npz-nokeys", ["train", "--dataset", "{d}/nokeys.npz", "--out", "{d}/o.h5"],
     ("nokeys.npz",)),
    ("train-npz-nan", ["train", "--dataset", "{d}/nanpixels.npz", "--out", "{d}/o.h5"],
     ("nanpixels.npz",)),
    ("train-npz-labels", ["train", "--dataset", "{d}/badlabels.npz", "--out", "{d}/o.h5"],
     ("label",)),
    ("train-data-dir-file", ["train", "--dataset", "mnist", "--data-dir", "{d}/binary.toml",
                             "--out", "{d}/o.h5"], ("binary.toml",)),
    ("train-board-unknown-kind", ["train", "--backend", "board", "--board",
                                  "{d}/board-unknown-kind.toml", "--out", "{d}/o.h5"],
     ("no-such-kind",)),
    ("train-board-binary", ["train", "--backend", "board", "--board", "{d}/binary.toml",
                            "--out", "{d}/o.h5"], ("binary.toml",)),
    ("train-unknown-backend", ["train", "--backend", "nope", "--out", "{d}/o.h5"],
     ("backend",)),
    # ---- session files
    ("inspect-random", ["inspect", "{d}/random.h5"], ("random.h5",)),
    ("inspect-empty", ["inspect", "{d}/empty.h5"], ("empty.h5",)),
    ("inspect-text", ["inspect", "{d}/text.h5"], ("text.h5",)),
    ("inspect-dir", ["inspect", "{d}/dir.h5"], ("dir.h5",)),
    ("inspect-missing", ["inspect", "{d}/nope.h5"], ("nope.h5",)),
    ("replay-random", ["replay", "{d}/random.h5"], ("random.h5",)),
    ("replay-steps-negative", ["replay", "{d}/run.h5", "--steps", "-3"], ("steps",)),
    ("resume-random", ["resume", "{d}/random.h5"], ("random.h5",)),
    ("resume-epochs-negative", ["resume", "{d}/run.h5", "--epochs", "-1"], ("epochs",)),
    ("evaluate-random", ["evaluate", "{d}/random.h5", "--dataset", "mnist-subset"],
     ("random.h5",)),
    ("evaluate-dir", ["evaluate", "{d}/dir.h5", "--dataset", "mnist-subset"], ("dir.h5",)),
    ("evaluate-npz-shape", ["evaluate", "{d}/run.h5", "--dataset", "{d}/shape.npz"],
     ("shape.npz",)),
    ("evaluate-read-noise-nan", ["evaluate", "{d}/run.h5", "--dataset", "mnist-subset",
                                 "--read-noise", "nan"], ("read",)),
    ("evaluate-samples-zero", ["evaluate", "{d}/run.h5", "--dataset", "mnist-subset",
                               "--samples", "0"], ("samples",)),
    # ---- netlists
    ("op-binary", ["op", "{d}/binary.cir"], ("binary.cir",)),
    ("op-empty", ["op", "{d}/empty.cir"], ("empty.cir",)),
    ("op-title-only", ["op", "{d}/title-only.cir"], ("title-only.cir",)),
    ("op-dir", ["op", "{d}/dir"], ("dir",)),
    ("op-inf", ["op", "{d}/inf.cir"], ("inf.cir",)),
    ("op-nan", ["op", "{d}/nan.cir"], ("nan.cir",)),
    ("op-negative-r", ["op", "{d}/negative-r.cir"], ("negative-r.cir",)),
    ("op-unknown-element", ["op", "{d}/unknown-element.cir"], ("Q1",)),
    ("op-temp-nan", ["op", "--temp", "nan", "{d}/inf.cir"], ("temp",)),
    # ---- solve-drn
    ("solve-drn-arch", ["solve-drn", "--arch", "4-x-2"], ("arch",)),
    ("solve-drn-gain-nan", ["solve-drn", "--input-gain", "nan"], ("gain",)),
    ("solve-drn-batch-negative", ["solve-drn", "--batch", "-1"], ("batch",)),
    ("solve-drn-sweeps-zero", ["solve-drn", "--sweeps", "0"], ("sweeps",)),
    # ---- plan
    ("plan-sigma-nan", ["plan", "--sigma", "nan"], ("sigma",)),
    ("plan-sigma-negative", ["plan", "--sigma", "-1"], ("sigma",)),
    ("plan-examples-zero", ["plan", "--examples", "0"], ("examples",)),
    # ---- characterize
    ("characterize-option-word", ["characterize", "--option", "read_noise_v=abc",
                                  "--out", "{d}/c1"], ("read_noise_v",)),
    ("characterize-option-unknown", ["characterize", "--option", "no_such_option=1",
                                     "--out", "{d}/c2"], ("no_such_option",)),
    ("characterize-option-nan", ["characterize", "--option", "read_noise_v=NaN",
                                 "--out", "{d}/c3"], ("read_noise_v",)),
    ("characterize-options-binary", ["characterize", "--options", "{d}/binary.toml",
                                     "--out", "{d}/c4"], ("UTF-8",)),
    ("characterize-batch-zero", ["characterize", "--batch", "0", "--out", "{d}/c5"],
     ("batch",)),
    # ---- gradcheck
    ("gradcheck-betas-nan", ["gradcheck", "--betas", "nan"], ("beta",)),
    ("gradcheck-points-zero", ["gradcheck", "--points", "0"], ("points",)),
    ("gradcheck-asymmetry-negative", ["gradcheck", "--asymmetry", "-1"], ("asymmetry",)),
    # ---- sweep
    ("sweep-grid-binary", ["sweep", "--grid", "{d}/binary.toml", "--out", "{d}/s1"],
     ("UTF-8",)),
    ("sweep-grid-dir", ["sweep", "--grid", "{d}/dir", "--out", "{d}/s2"], ("directory",)),
    ("sweep-grid-nan", ["sweep", "--grid", "{d}/grid-nan.toml", "--out", "{d}/s3"],
     ("read_noise",)),
    ("sweep-grid-empty-axis", ["sweep", "--grid", "{d}/grid-empty-axis.toml",
                               "--out", "{d}/s4"], ("read_noise",)),
    ("sweep-read-noise-nan", ["sweep", "--read-noise", "nan", "--out", "{d}/s5"],
     ("read",)),
    ("sweep-workers-zero", ["sweep", "--workers", "0", "--out", "{d}/s6"], ("workers",)),
    ("sweep-set-unknown", ["sweep", "--set", "foo=1", "--out", "{d}/s7"], ("foo",)),
    # ---- virtual-board (refused before anything is served)
    ("virtual-board-arch", ["virtual-board", "--arch", "0-1"], ("arch",)),
    ("virtual-board-port", ["virtual-board", "--port", "99999"], ("port",)),
    ("virtual-board-preset", ["virtual-board", "--preset", "nope"], ("preset",)),
]


@pytest.mark.parametrize(("argv", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(
    corpus: Path, capfd: pytest.CaptureFixture[str], argv: list[str], words: tuple[str, ...]
) -> None:
    before = _snapshot(corpus)
    args = [a.replace("{d}", str(corpus)) for a in argv]
    try:
        code: int | str = main(args)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # what escaped is the failure
        code = f"traceback: {type(exc).__name__}: {exc}"
    finally:
        after = _snapshot(corpus)
        for name in sorted(set(after) - set(before), reverse=True):  # keep the next case clean
            path = corpus / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out, err = capfd.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "HDF5-DIAG" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("hwloop") and "error:" in line, line
    for w in words:
        assert w.lower() in line.lower(), f"{w!r} not in {line!r}"
    assert after == before, "a bad input changed or added files"


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    """``hwloop solve-drn | head -1``: the reader is gone; no traceback, no hang.

    The read end of the pipe is closed before the command writes anything, so its
    first write fails (deterministically, not only when the reader wins a race).
    """
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from hwloop.cli import main; sys.exit(main())",
             "solve-drn", "--arch", "1568-100-10", "--batch", "64"],
            stdout=w, stderr=subprocess.PIPE, cwd=tmp_path,
        )
    finally:
        os.close(w)
    try:
        _, err_b = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_b.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 1, (proc.returncode, err)
