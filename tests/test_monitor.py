"""``hwloop monitor`` / ``hwloop report`` without a browser: CLI errors, the snapshot's
numbers against the session file read with h5py, the HTTP server's read-only surface."""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from hwloop.cli import main
from hwloop.sessionlog import open_session
from protocols.monitor.page import render_page
from protocols.monitor.server import MonitorServer, SnapshotCache
from protocols.monitor.snapshot import RunWatcher, bin_mean, ema

RUN = ["--arch", "1568-100-10", "--batch-size", "16", "--train-limit", "160", "--test-limit",
       "50", "--samples", "3", "--read-noise", "0.01", "--checkpoint-every", "4", "--seed", "5",
       "--epochs", "2", "--log-programming", "all"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mon") / "run.h5"
    res = subprocess.run([sys.executable, "-m", "hwloop.cli", "train", *RUN, "--out", str(out),
                          "--quiet"], capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr
    return out


def test_ema_matches_the_weighted_mean_it_defines() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=60)
    y[7] = np.nan
    a = 2 / (20 + 1)
    ref = []
    for k in range(len(y)):  # s_k = sum (1-a)^(k-i) y_i / sum (1-a)^(k-i) over finite y_i
        i = np.arange(k + 1)
        w = (1 - a) ** (k - i)
        ok = np.isfinite(y[: k + 1])
        ref.append(np.sum(w[ok] * y[: k + 1][ok]) / np.sum(w[ok]))
    np.testing.assert_allclose(ema(y, 20), ref, rtol=1e-12)
    np.testing.assert_allclose(bin_mean(np.arange(10.0), 4), [1.5, 5.5, 8.5])


def test_snapshot_numbers_match_the_file(run_file: Path) -> None:
    d = RunWatcher(run_file).snapshot()
    with h5py.File(run_file, "r") as f:
        idx = f["steps/index"][()]
        n = len(idx)
        assert d["progress"]["steps_done"] == n == d["progress"]["total_steps"] == 2 * 10
        assert d["last_step"]["loss"] == float(idx["loss"][-1])
        assert d["steps"]["loss"] == [float(x) for x in idx["loss"]]  # no binning for 20 steps
        assert d["epochs"]["test_accuracy"] == [float(x) for x in f["epochs"]["test_accuracy"]]
        # conductances of the last checkpoint, first layer block
        g = f["checkpoints/conductances_s"][-1]
        blk = f["device/layers/000"]
        a, m = int(blk.attrs["edge_offset"]), len(blk["src"]) * len(blk["dst"])
        lay = d["conductance"]["layers"][0]
        assert lay["n_edges"] == m
        assert math.isclose(lay["mean_s"], float(np.mean(g[a:a + m])), rel_tol=1e-12)
        assert math.isclose(lay["p95_s"], float(np.percentile(g[a:a + m], 95)), rel_tol=1e-12)
        assert sum(lay["hist_last"]) == m
        g0 = f["checkpoints/conductances_s"][0]
        assert math.isclose(lay["mean_abs_change_vs_first_s"],
                            float(np.mean(np.abs(g[a:a + m] - g0[a:a + m]))), rel_tol=1e-12)
        # read-noise spread of the last step, free phase: std over the 3 samples (ddof 1)
        k = int(idx["n_examples"][-1])
        v = f["steps/samples_v"][n - 1][:k, 0, :3].astype(np.float64)  # (B, N, F)
        sd = np.std(v, axis=1, ddof=1)
        assert math.isclose(d["noise"]["series"]["spread_median_v"][0][-1],
                            float(np.median(sd)), rel_tol=1e-12)
        # 10 mV read noise: the sample spread is that, within the sampling error of
        # the median of ~16 x 110 two-degree-of-freedom estimates
        assert 0.006 < d["noise"]["phases"][0]["spread_median_v"] < 0.012
        # programming records of the window (all logged): reasons add up to its rows
        w0 = d["noise"]["window_steps"][0]
        rows = int(idx["prog_row_start"][-1] + idx["prog_row_count"][-1]
                   - idx["prog_row_start"][w0])
        assert sum(d["noise"]["programming"]["reasons"].values()) == rows
        assert d["noise"]["programming"]["pulses_total"] == int(np.sum(idx["pulses"]))
    with open_session(run_file) as sf:
        assert [e["kind"] for e in d["events"]] == [e["kind"] for e in sf.events()]
    assert d["status"]["shown"] == "completed"
    json.dumps(d, allow_nan=False)  # valid JSON for the browser (no NaN)


def test_report_is_one_self_contained_file(run_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(run_file), "--out", str(out)]) == 0
    text = out.read_text()
    assert "kB" in capsys.readouterr().out
    # nothing loaded from elsewhere: no src/href attribute, a policy forbidding fetches
    assert " src=" not in text and " href=" not in text and "@import" not in text
    assert "default-src 'none'" in text and "connect-src" not in text
    data = json.loads(text.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    with open_session(run_file) as sf:
        assert data["progress"]["steps_done"] == sf.steps_done


def test_script_text_cannot_end_the_data_block() -> None:
    page = render_page(title="<x>", mode="report", data={"m": "</script><b>{{SCRIPT}}"})
    block = page.split('type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(block) == {"m": "</script><b>{{SCRIPT}}"}
    assert "<title>&lt;x&gt;</title>" in page


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["monitor", "{missing}"], "not found"),
        (["report", "{missing}"], "not found"),
        (["monitor", "{dir}"], "without index.json"),
        (["monitor", "{run}", "--bind", "0.0.0.0"], "--allow-remote"),
        (["monitor", "{run}", "--port", "70000"], "0..65535"),
        (["monitor", "{run}", "--interval", "0"], "--interval"),
        (["report", "{run}", "--out", "{dir}/no/such/r.html"], "does not exist"),
        (["report", "{notsession}"], "not an HDF5 file"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], needle: str, run_file: Path,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    bad = tmp_path / "x.h5"
    bad.write_text("not hdf5")
    subs = {"{missing}": str(tmp_path / "nope.h5"), "{dir}": str(tmp_path),
            "{run}": str(run_file), "{notsession}": str(bad)}
    args = [a.replace("{dir}", str(tmp_path)) if a.startswith("{dir}/") else subs.get(a, a)
            for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


@pytest.fixture
def server(run_file: Path) -> Iterator[MonitorServer]:
    srv = MonitorServer(("127.0.0.1", 0), SnapshotCache(RunWatcher(run_file), 0.5),
                        title="t", interval_s=0.5)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    th.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(timeout=30)


def _req(url: str, method: str = "GET") -> tuple[int, bytes, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def test_server_is_read_only(server: MonitorServer, run_file: Path) -> None:
    code, body, headers = _req(server.url)
    assert code == 200 and b'data-mode="live"' in body
    assert headers["Cache-Control"] == "no-store"
    code, body, _ = _req(server.url + "api/snapshot")
    assert code == 200
    with open_session(run_file) as sf:
        assert json.loads(body)["progress"]["steps_done"] == sf.steps_done
    for method in ("POST", "PUT", "DELETE"):
        assert _req(server.url + "api/snapshot", method)[0] == 405
    assert _req(server.url + "api/other")[0] == 404
    # two polls within the interval: the file is read once
    reads = server.cache.reads
    _req(server.url + "api/snapshot")
    assert server.cache.reads <= reads + 1


def test_a_change_within_one_clock_tick_is_not_missed(run_file: Path, tmp_path: Path) -> None:
    # file times advance in ticks: a write right after a read can leave size and time
    # unchanged; the watcher must read again until the file has been quiet for a while
    run = tmp_path / "run.h5"
    run.write_bytes(run_file.read_bytes())
    now_ns = time.time_ns()
    os.utime(run, ns=(now_ns, now_ns))
    w = RunWatcher(run)
    assert w.snapshot()["status"]["reason"] == ""
    size = run.stat().st_size
    with h5py.File(run, "r+") as f:  # same fixed-size attribute: the size stays
        f.attrs.modify("reason", np.bytes_(b"edited"))
    os.utime(run, ns=(now_ns, now_ns))
    assert run.stat().st_size == size
    assert w.snapshot()["status"]["reason"] == "edited"
    # once quiet for longer than SETTLE_S, an unchanged file is not read again
    old_ns = now_ns - 10**10
    os.utime(run, ns=(old_ns, old_ns))
    w.snapshot()
    w.snapshot()
    with h5py.File(run, "r+") as f:
        f.attrs.modify("reason", np.bytes_(b"again"))
    os.utime(run, ns=(old_ns, old_ns))
    assert w.snapshot()["status"]["reason"] == "edited"  # the cached view (by design)


def test_a_real_board_run_through_the_virtual_serial_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A board without Checkpointable (no /checkpoints/board), write-verify programming rows,
    current nudges, 3 samples per phase: every view is filled from what the file has."""
    from simulated_device.virtual_board import VirtualBoard

    vb = VirtualBoard({"arch": "1568-16-10", "preset": "reram"}, seed=0)
    run = tmp_path / "board-run.h5"
    try:
        monkeypatch.setenv("HWLOOP_BOARD_URL", vb.start_tcp())
        code = main(["train", "--backend", "board", "--board",
                     str(Path(__file__).parents[1] / "examples/boards/virtual-serial.toml"),
                     "--nudge", "current", "--epochs", "1", "--train-limit", "40",
                     "--test-limit", "20", "--checkpoint-every", "5", "--samples", "3",
                     "--programming", "write-verify", "--log-programming", "all",
                     "--out", str(run), "--quiet"])
    finally:
        vb.close()
    assert code == 0, capsys.readouterr().err
    d = RunWatcher(run).snapshot()
    with h5py.File(run, "r") as f:
        assert "board" not in f["checkpoints"]
        idx = f["steps/index"][()]
        w0 = d["noise"]["window_steps"][0]
        rec = f["programming/records"][int(idx["prog_row_start"][w0]):]
        reasons = np.bincount(rec["reason"].astype(int), minlength=6)
        conv = float(np.mean(rec["converged"] != 0))
    pg = d["noise"]["programming"]
    assert list(pg["reasons"].values()) == reasons.tolist()
    assert math.isclose(pg["converged_fraction"], conv)
    assert d["board"]["backend"] == "board" and d["status"]["shown"] == "completed"
    assert [L["n_edges"] for L in d["conductance"]["layers"]] == [1568 * 16, 16 * 10]
    assert all(p["spread_median_v"] is not None for p in d["noise"]["phases"])
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0


def test_another_address_needs_the_flag_and_warns(run_file: Path) -> None:
    cmd = [sys.executable, "-m", "hwloop.cli", "monitor", str(run_file), "--port", "0",
           "--bind", "0.0.0.0", "--allow-remote"]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stderr is not None
        ready, _, _ = select.select([p.stderr], [], [], 120)
        assert ready, "no warning within 120 s"
        warning = p.stderr.readline()
        assert "warning: listening on 0.0.0.0" in warning and "read the run" in warning
        line = p.stdout.readline()  # printed right after the warning
        assert line.startswith("hwloop monitor: http://0.0.0.0:")
    finally:
        p.terminate()
        p.wait(timeout=30)
