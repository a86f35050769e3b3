"""hwloop sweep: a tiny grid on local processes and on Dask, resume, and bad grids."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hwloop.cli import main
from hwloop.errors import ConfigError
from protocols.sweep import _worker_env, build_spec, parse_set, point_id

TINY = ["--set", "epochs=1", "--set", "train_limit=8", "--set", "test_limit=16"]
GRID = ["--read-noise", "0", "1e-3", "--samples", "1", "3"]


def _sweep(out: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code = main(["sweep", *GRID, *TINY, "--out", str(out), "--json", "--quiet", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return dict(json.loads(captured.out.strip().splitlines()[-1]))


def _index(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "index.json").read_text()))


def test_local_grid_then_resume_runs_only_the_missing_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sw"
    s = _sweep(out, "--workers", "2", capsys=capsys)
    assert s["points"] == 4 and s["ran"] == 4 and s["completed"] == 4
    idx = _index(out)
    assert len(idx["points"]) == 4
    for pid, p in idx["points"].items():
        assert p["status"] == "completed" and 0 <= p["final_test_accuracy"] <= 1
        assert (out / p["session"]).exists() and pid == point_id(p)
    assert (out / "table.csv").read_text().count("\n") == 5
    assert (out / "accuracy_mnist-subset.png").stat().st_size > 1000
    assert s["predicted_limit_v"] > 0
    assert s["limit_drop"] == 0.02 and [m["samples"] for m in s["measured_limits"]] == [1, 3]

    # interrupt: one point's result is lost, another point's index entry too
    runs = out / "runs"
    lost = "mnist-subset_rn0.001_N3_s0"
    (runs / f"{lost}.h5").unlink()
    del idx["points"]["mnist-subset_rn0_N1_s0"]
    (out / "index.json").write_text(json.dumps(idx))
    mtimes = {p: p.stat().st_mtime_ns for p in runs.glob("*.h5")}
    s2 = _sweep(out, "--workers", "1", "--no-plots", capsys=capsys)
    assert s2["ran"] == 1 and s2["completed"] == 4
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert (runs / f"{lost}.h5").exists()
    idx2 = _index(out)
    assert idx2["points"]["mnist-subset_rn0_N1_s0"]["status"] == "completed"
    assert idx2["points"][lost]["status"] == "completed"

    # a point killed mid-write leaves a file that is not a complete session: run again
    broken = "mnist-subset_rn0_N3_s0"
    (runs / f"{broken}.h5").write_bytes(b"not an HDF5 file")
    s3 = _sweep(out, "--no-plots", capsys=capsys)
    assert s3["ran"] == 1 and s3["completed"] == 4
    assert _index(out)["points"][broken]["status"] == "completed"


def test_worker_env_sets_and_restores_blas_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with _worker_env(1):
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_dask_local_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    distributed = _distributed()
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        s = _sweep(tmp_path / "dk", "--scheduler", cluster.scheduler_address, "--no-plots",
                   capsys=capsys)
    assert s["ran"] == 4 and s["completed"] == 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_scheduler_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("distributed")
    code = main(["sweep", "--out", str(tmp_path / "x"), "--timeout", "1",
                 "--scheduler", f"tcp://127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "cannot reach the Dask scheduler" in err[-1]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[grid]\nread_noise = []\n", "is empty"),
        ("[grid]\nread_noise = [1e-4, -1e-4]\n", ">= 0 V"),
        ("[grid]\nsamples = [0]\n", ">= 1"),
        ("[grid]\nsigma = [1e-4]\n", "unknown sweep axis"),
        ("[train]\nepoch = 1\n", "unknown training option"),
        ("[train]\nseed = 1\n", "are sweep axes"),
        ("[grdi]\nseed = [1]\n", "unknown table"),
        ("[train]\nbeta = -1.0\n", "beta"),
        ("[grid]\nseed = [1, 1]\n", "repeats"),
    ],
)
def test_bad_grids_fail_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, message: str
) -> None:
    f = tmp_path / "g.toml"
    f.write_text(toml)
    code = main(["sweep", "--grid", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1] and len([e for e in err if "error" in e]) == 1
    assert not (tmp_path / "o").exists()


def test_bad_limit_drop_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sweep", "--read-noise", "0", *TINY, "--out", str(tmp_path / "o"),
                 "--limit-drop", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--limit-drop 5.0 must be a fraction in (0, 1)" in err[-1]
    assert not (tmp_path / "o").exists()


def test_other_fixed_options_in_the_same_directory_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sw"
    code = main(["sweep", "--read-noise", "0", *TINY, "--out", str(out), "--quiet",
                 "--no-plots"])
    assert code == 0
    code = main(["sweep", "--read-noise", "0", *TINY, "--set", "beta=0.5", "--out", str(out)])
    assert code == 2
    assert "other fixed options" in capsys.readouterr().err


def test_grid_file_and_set_parsing() -> None:
    assert parse_set(["epochs=2", "arch=1568-20-10", "lr_weights=[0.1, 0.2]"]) == {
        "epochs": 2, "arch": "1568-20-10", "lr_weights": [0.1, 0.2]}
    spec = build_spec({"read_noise": [0.0, 1e-4], "seed": [0, 1, 2]}, {"epochs": 1})
    assert len(spec.points()) == 6 and spec.fixed["backend"] == "emulator"
    assert len({point_id(p) for p in spec.points()}) == 6
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["epochs"])


def _idx(rows: list[tuple[str, float, int, int, float]]) -> dict[str, Any]:
    pts = {}
    for ds, s, n, seed, acc in rows:
        pts[f"{ds}_{s}_{n}_{seed}"] = dict(dataset=ds, read_noise=s, samples=n, seed=seed,
                                           status="completed", final_test_accuracy=acc)
    return {"points": pts}


def test_measured_limit_interpolates_the_crossing_in_log_sigma() -> None:
    from protocols.sweep import format_limits, measured_limits

    rows = [("m", 0.0, 1, 0, 0.90), ("m", 0.0, 1, 1, 0.92),  # reference 0.91
            ("m", 1e-4, 1, 0, 0.90), ("m", 1e-4, 1, 1, 0.90),  # 0.90 > 0.89
            ("m", 4e-4, 1, 0, 0.85), ("m", 4e-4, 1, 1, 0.87),  # 0.86 < 0.89
            # N = 4 at sigma/sqrt(N) = 5e-5 and 2e-4 V, against the same sigma = 0 mean
            ("m", 1e-4, 4, 0, 0.91), ("m", 8e-4, 4, 0, 0.80)]
    lim = {r["samples"]: r for r in measured_limits(_idx(rows), drop=0.02)}
    # fall from 0.90 at 1e-4 to 0.86 at 4e-4; threshold 0.89 is a quarter of the way
    expect = math.exp(math.log(1e-4) + 0.25 * math.log(4.0))
    assert lim[1]["reference_acc"] == pytest.approx(0.91)
    assert lim[1]["limit_sigma_eff_v"] == pytest.approx(expect, rel=1e-12)
    assert lim[1]["bracket_v"] == [1e-4, 4e-4]
    # N = 4: 0.91 at 5e-5, 0.80 at 4e-4; (0.91-0.89)/(0.11) of the log-way
    t = 0.02 / 0.11
    assert lim[4]["limit_sigma_eff_v"] == pytest.approx(
        math.exp(math.log(5e-5) + t * math.log(8.0)), rel=1e-12)
    assert lim[4]["limit_sigma_v"] == pytest.approx(2 * lim[4]["limit_sigma_eff_v"])
    text = format_limits(list(lim.values()), 0.02)
    assert "m, N = 1 (reference sigma = 0): sigma/sqrt(N) = 1.41e-04 V" in text


def test_measured_limit_says_when_the_grid_does_not_cross() -> None:
    from protocols.sweep import measured_limits

    flat = [("m", 0.0, 1, 0, 0.9), ("m", 1e-4, 1, 0, 0.895)]
    (r,) = measured_limits(_idx(flat), drop=0.02)
    assert r["limit_sigma_eff_v"] is None and "above the grid" in r["note"]
    (r,) = measured_limits(_idx([("m", 1e-4, 1, 0, 0.9), ("m", 4e-4, 1, 0, 0.8)]), 0.02)
    assert r["reference"] == "sigma/sqrt(N) = 0.0001 V" and r["limit_sigma_eff_v"] is not None
    early = [("m", 0.0, 1, 0, 0.9), ("m", 1e-4, 1, 0, 0.5)]
    (r,) = measured_limits(_idx(early), drop=0.02)
    assert r["limit_sigma_eff_v"] is None and "below the grid" in r["note"]
    with pytest.raises(ConfigError, match="fraction"):
        measured_limits(_idx(flat), drop=2.0)


def test_two_grids_share_one_store_and_report_their_own_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same fixed options, other axis values: the second grid adds to the store, and its
    exit status and counts are about its own points (the store's others are not failures)."""
    out = tmp_path / "store"
    for sigma, store in (("0", 1), ("1e-3", 2)):
        code = main(["sweep", "--read-noise", sigma, *TINY, "--out", str(out), "--json",
                     "--quiet", "--no-plots"])
        s = json.loads(capsys.readouterr().out)
        assert code == 0
        assert (s["points"], s["completed"], s["failed"], s["store_points"]) == (1, 1, 0, store)
    assert len(_index(out)["points"]) == 2
    assert [m["samples"] for m in s["measured_limits"]] == [1]  # over the whole store


def test_sweep_through_the_virtual_serial_board(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An N axis on the board backend (each point a training run on the served board);
    added read noise is refused there, since a board's noise is its own."""
    from simulated_device.virtual_board import VirtualBoard
    from tests.board_helpers import serial_board_text

    vb = VirtualBoard({"arch": "32-8-2", "preset": "reram", "read_noise_v": 2e-4}, seed=0)
    monkeypatch.setenv("HWLOOP_BOARD_URL", vb.start_tcp())
    board = tmp_path / "board.toml"
    board.write_text(serial_board_text("32-8-2", timeout_s=5.0, v_input_max_v=120.0,
                                       i_nudge_max_a=1e-3))
    fixed = [
        "--set", 'backend="board"', "--set", f'board="{board}"', "--set", 'nudge="current"',
        "--set", "input_gain=20.0", "--set", "beta=0.2", "--set", "epochs=1",
        "--set", "train_limit=40",
        "--set", "test_limit=20",
    ]
    try:
        out = tmp_path / "sw"
        code = main(["sweep", "--dataset", "mnist-01-4x4", "--samples", "1", "4", *fixed,
                     "--out", str(out), "--json", "--quiet", "--no-plots"])
        s = json.loads(capsys.readouterr().out)
        assert code == 0 and (s["points"], s["completed"]) == (2, 2)
        for p in _index(out)["points"].values():
            assert p["status"] == "completed" and p["steps"] == 10
        code = main(["sweep", "--dataset", "mnist-01-4x4", "--read-noise", "1e-4", *fixed,
                     "--out", str(tmp_path / "sw2"), "--quiet", "--no-plots"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and "backend board has no option 'read_noise_v'" in err[-1]
        assert not (tmp_path / "sw2").exists()
    finally:
        vb.close()


# ----------------------------------------------------------------------------- Dask, no shared FS


def _distributed() -> Any:
    if os.environ.get("CI"):
        import distributed  # CI installs the test extra: a skip would hide a missing install

        return distributed
    return pytest.importorskip("distributed")


# Run in each worker before Dask starts: a Python audit hook logs every write, rename,
# mkdir or removal under the watched directories (the sweep's, and the worker's own
# local directory, to show the hook sees the worker's writes).
_AUDITED_WORKER = """
import os, sys
watch = [os.path.realpath(p) for p in os.environ["HWLOOP_TEST_WATCH"].split(os.pathsep)]
log = os.environ["HWLOOP_TEST_AUDIT"]
busy = []
def hook(event, args):
    if busy:
        return
    if event == "open":
        path, mode, flags = args
        w = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if not w or not isinstance(path, (str, bytes, os.PathLike)):
            return
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.copyfile"):
        path = args[1] if event in ("os.rename", "shutil.copyfile") else args[0]
    else:
        return
    busy.append(1)
    try:
        p = os.path.realpath(os.fsdecode(path))
        if any(p == d or p.startswith(d + os.sep) for d in watch):
            with open(log, "a") as f:
                f.write(event + " " + p + "\\n")
    finally:
        busy.pop()
sys.addaudithook(hook)
from distributed.cli.dask_worker import main
main()
"""


@dataclass
class DaskProcesses:
    address: str
    worker_pids: list[int]
    worker_cwds: list[Path]
    worker_locals: list[Path]
    audit_logs: list[Path]
    watched: Path
    """The directory the workers must not write into (the test's sweep directory)."""


def _wait_for(what: str, ok: Any, procs: list[subprocess.Popen[bytes]],
              deadline_s: float) -> Any:
    """Poll ``ok()`` until it returns a truthy value; fail when a process died or time ran out."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        v = ok()
        if v:
            return v
        dead = [p.pid for p in procs if p.poll() is not None]
        assert not dead, f"Dask process(es) {dead} exited while waiting for {what} (their " \
            "output is in the test's tmp_path, dask/*/*.out)"
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {deadline_s:g} s")


def _read_scheduler_file(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["address"])
    except (OSError, ValueError, KeyError):  # not there yet, or half written
        return None


@pytest.fixture
def dask_processes(tmp_path: Path) -> Iterator[DaskProcesses]:
    """A ``dask scheduler`` and two ``dask worker`` processes on loopback, each worker
    with its own working and local directory; all stopped (process groups) at the end."""
    distributed = _distributed()
    base = tmp_path / "dask"
    base.mkdir()
    watched = tmp_path / "sweep"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "DASK_SCHEDULER__IDLE_TIMEOUT": "900s",
           "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "120s",
           "DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP": "120s",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start(argv: list[str], cwd: Path, extra: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (cwd.parent / f"{cwd.parent.name}.out").open("wb")
        logs.append(out)
        p = subprocess.Popen([sys.executable, *argv], cwd=cwd, env={**env, **extra},
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        procs.append(p)
        return p

    try:
        sdir = base / "scheduler" / "cwd"
        sdir.mkdir(parents=True)
        sfile = sdir.parent / "scheduler.json"
        start(["-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
               "--no-dashboard", "--scheduler-file", str(sfile)], sdir, {})
        address = _wait_for("scheduler file", lambda: _read_scheduler_file(sfile), procs, 120)
        assert address.startswith("tcp://127.0.0.1:")
        cwds, locs, audits, pids = [], [], [], []
        for i in range(2):
            cwd, loc = base / f"worker{i}" / "cwd", base / f"worker{i}" / "local"
            cwd.mkdir(parents=True)
            loc.mkdir()
            audit = cwd.parent / "audit.log"
            audit.touch()
            p = start(["-c", _AUDITED_WORKER, address, "--nthreads", "1", "--no-nanny",
                       "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(loc),
                       "--death-timeout", "120"], cwd,
                      {"HWLOOP_TEST_WATCH": os.pathsep.join([str(watched), str(loc)]),
                       "HWLOOP_TEST_AUDIT": str(audit)})
            cwds.append(cwd)
            locs.append(loc)
            audits.append(audit)
            pids.append(p.pid)
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=180)
            assert sorted(client.run(os.getpid).values()) == sorted(pids)
        yield DaskProcesses(address, pids, cwds, locs, audits, watched)
    finally:
        for p in reversed(procs):  # workers first, then the scheduler
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=60)
        for f in logs:
            f.close()


def test_dask_workers_without_a_shared_file_system(
    dask_processes: DaskProcesses, capsys: pytest.CaptureFixture[str]
) -> None:
    """Points reach two separate ``dask worker`` processes as data; the session files come
    back through the futures and this process stores them; no worker writes to OUT."""
    from hwloop.sessionlog import load_run

    dk = dask_processes
    out = dk.watched
    code = main(["sweep", "--read-noise", "0", "1e-3", "--seed", "0",
                 "--set", 'arch="1568-16-10"', "--set", "beta=0.1", "--set", "train_limit=100",
                 "--set", "test_limit=50", "--set", "epochs=1",
                 "--out", str(out), "--scheduler", dk.address, "--timeout", "60",
                 "--json", "--no-plots"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    s = json.loads(captured.out.strip().splitlines()[-1])
    assert (s["points"], s["ran"], s["completed"], s["failed"]) == (2, 2, 2, 0)
    assert s["deliver"] == "client" and s["log_samples"] == "summary"
    assert 'log_samples = "summary"' in captured.err  # stated in the output
    idx = _index(out)
    for pid, p in idx["points"].items():
        assert p["status"] == "completed" and p["steps"] > 0 and p["stored_by"] == "client"
        ran = p["ran_on"]
        assert ran["pid"] in dk.worker_pids and ran["pid"] != os.getpid()
        w = dk.worker_pids.index(ran["pid"])
        assert Path(ran["cwd"]).resolve() == dk.worker_cwds[w].resolve()
        assert Path(ran["scratch"]).resolve().is_relative_to(dk.worker_locals[w].resolve())
        # the store (OUT by default) holds the file, its record and configuration
        h5 = out / "runs" / f"{pid}.h5"
        data = h5.read_bytes()
        rec = json.loads((out / "runs" / f"{pid}.json").read_text())
        assert rec["session_sha256"] == hashlib.sha256(data).hexdigest() == p["session_sha256"]
        assert rec["session_bytes"] == len(data) and rec["status"] == "completed"
        cfg = tomllib.loads(rec["config_toml"])
        assert cfg["log_samples"] == "summary"
        assert cfg["backend"]["read_noise_v"] == p["read_noise"]  # in the backend table
        run = load_run(h5)
        assert run.status == "completed"
        assert float(run.metrics["test_accuracy"][-1]) == p["final_test_accuracy"]
    # no worker wrote into the sweep directory; the hook did see their own writes
    seen = [f.read_text().splitlines() for f in dk.audit_logs]
    assert not [e for lines in seen for e in lines if str(out.resolve()) in e], seen
    assert sum(len(lines) for lines in seen) > 0
    for loc, cwd in zip(dk.worker_locals, dk.worker_cwds, strict=True):
        assert not list(loc.rglob("hwloop-sweep-*"))  # temporary files removed
        assert not list(cwd.iterdir())

    # resume: nothing to run
    code = main(["sweep", "--read-noise", "0", "1e-3", "--seed", "0",
                 "--set", 'arch="1568-16-10"', "--set", "beta=0.1", "--set", "train_limit=100",
                 "--set", "test_limit=50", "--set", "epochs=1",
                 "--out", str(out), "--scheduler", dk.address, "--json", "--quiet",
                 "--no-plots"])
    s2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and (s2["ran"], s2["completed"]) == (0, 2)

    # control: with --deliver worker (a file system the workers share) the workers write
    # the store themselves, and the audit hook reports it
    shared = out / "shared"
    code = main(["sweep", "--read-noise", "0", "--seed", "0",
                 "--set", 'arch="1568-16-10"', "--set", "beta=0.1", "--set", "train_limit=100",
                 "--set", "test_limit=50", "--set", "epochs=1",
                 "--out", str(shared), "--scheduler", dk.address, "--deliver", "worker",
                 "--json", "--quiet", "--no-plots"])
    s3 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and (s3["ran"], s3["completed"], s3["deliver"]) == (1, 1, "worker")
    (p,) = _index(shared)["points"].values()
    assert p["stored_by"] == "worker" and p["ran_on"]["pid"] in dk.worker_pids
    h5 = shared / "runs" / "mnist-subset_rn0_N1_s0.h5"
    assert hashlib.sha256(h5.read_bytes()).hexdigest() == p["session_sha256"]
    audit_text = "".join(f.read_text() for f in dk.audit_logs)
    assert str(h5.resolve()) in audit_text


def test_fsspec_url_store_workers_write_and_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL store (fsspec's in-memory file system, shared by in-process Dask workers):
    the workers write session files and records there; a rerun trusts a record only when
    the stored file has the recorded size."""
    distributed = _distributed()
    import fsspec

    root = f"/hwloop-test-{os.getpid()}-{tmp_path.name}"
    url = f"memory://{root}"
    fs = fsspec.filesystem("memory")
    out = tmp_path / "o"
    try:
        with distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster:
            args = ("--scheduler", cluster.scheduler_address, "--store", url, "--no-plots")
            s = _sweep(out, *args, capsys=capsys)
            assert (s["completed"], s["deliver"], s["store"]) == (4, "worker", url)
            assert not (out / "runs").exists()  # only the index and table stay in OUT
            idx = _index(out)
            assert idx["store"] == url
            for pid, p in idx["points"].items():
                assert p["session"] == f"{url}/runs/{pid}.h5" and p["stored_by"] == "worker"
                data = fs.cat_file(f"{root}/runs/{pid}.h5")
                assert hashlib.sha256(data).hexdigest() == p["session_sha256"]
                rec = json.loads(fs.cat_file(f"{root}/runs/{pid}.json"))
                assert rec["status"] == "completed" and rec["session_bytes"] == len(data)
                assert tomllib.loads(fs.cat_file(f"{root}/runs/{pid}.toml").decode()) == \
                    tomllib.loads(rec["config_toml"])
            assert _sweep(out, *args, capsys=capsys)["ran"] == 0
            fs.rm(f"{root}/runs/mnist-subset_rn0_N1_s0.h5")
            fs.pipe_file(f"{root}/runs/mnist-subset_rn0_N3_s0.h5", b"truncated")
            s3 = _sweep(out, *args, capsys=capsys)
            assert (s3["ran"], s3["completed"]) == (2, 4)
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)


def test_client_delivery_from_local_processes_and_the_ship_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, store = tmp_path / "o", tmp_path / "store"
    s = _sweep(out, "--workers", "1", "--deliver", "client", "--store", str(store),
               "--no-plots", capsys=capsys)
    assert s["completed"] == 4 and s["deliver"] == "client"
    assert not (out / "runs").exists()
    for pid, p in _index(out)["points"].items():
        assert Path(p["session"]) == store / "runs" / f"{pid}.h5"
        assert hashlib.sha256(Path(p["session"]).read_bytes()).hexdigest() == \
            p["session_sha256"]
        assert (store / "runs" / f"{pid}.log").stat().st_size > 0  # the process worker's log
    code = main(["sweep", "--read-noise", "0", *TINY, "--out", str(tmp_path / "o2"),
                 "--deliver", "client", "--ship-limit-mb", "0.01", "--json", "--quiet",
                 "--no-plots"])
    s2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and s2["failed"] == 1
    (p,) = _index(tmp_path / "o2")["points"].values()
    assert p["status"] == "failed" and "over the --ship-limit-mb of 0.01 MB" in p["error"]
    assert p["session_bytes"] > 10_000 and not list((tmp_path / "o2" / "runs").glob("*.h5"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--store", "nosuchfs://bucket/x"], "fsspec cannot open protocol 'nosuchfs'"),
        (["--ship-limit-mb", "0"], "--ship-limit-mb 0.0 must be > 0 MB"),
    ],
)
def test_bad_store_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = main(["sweep", "--read-noise", "0", *TINY, "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and len(err) == 1
    assert not (tmp_path / "o").exists()
