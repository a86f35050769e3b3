"""``hwloop monitor`` and ``hwloop report`` in a real browser (headless Chromium).

A training run is started, the monitor is started on its file, and Chromium loads the page:
the numbers it shows must update as steps are committed and agree with the session file
(read independently with ``open_session``); then the run is stopped (Ctrl-C), killed
(SIGKILL) and resumed while the page keeps following. The report is opened from a
``file://`` URL with the browser offline, and must not ask for anything. Every process is
stopped on failure too (context managers).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwloop.sessionlog import open_session
from tests.browser_helpers import CHROMIUM, Browser, wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs the chromium executable (Debian "
                       "package chromium; scripts/test.sh installs it)"),
]
websockets = pytest.importorskip("websockets", reason="needs the websockets package (test extra)")

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "HDF5_USE_FILE_LOCKING": "FALSE"}
TRAIN = ["--arch", "1568-100-10", "--batch-size", "32", "--train-limit", "1280",
         "--test-limit", "100", "--samples", "2", "--read-noise", "0.01",
         "--checkpoint-every", "5", "--seed", "3"]
STEPS_PER_EPOCH = 1280 // 32
DEADLINE_S = 240.0
EVENT_KINDS = ("[...document.querySelectorAll('#events-table tbody tr td:nth-child(3)')]"
               ".map(e => e.textContent)")  # generous: the machine may be busy


def hwloop(*argv: str) -> list[str]:
    return [sys.executable, "-m", "hwloop.cli", *argv]


@contextlib.contextmanager
def started(cmd: list[str], **kw: object) -> Iterator[subprocess.Popen[str]]:
    """A process that is stopped (SIGTERM, then SIGKILL) whatever happens."""
    p = subprocess.Popen(cmd, env=ENV, text=True, **kw)  # type: ignore[call-overload]
    try:
        yield p
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)


@contextlib.contextmanager
def monitor(target: Path, *extra: str) -> Iterator[str]:
    """``hwloop monitor`` on ``target``; yields its URL."""
    with started(hwloop("monitor", str(target), "--port", "0", "--interval", "0.5", *extra),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        assert p.stdout is not None
        line = ""

        def ready() -> bool:
            nonlocal line
            if p.poll() is not None:
                raise RuntimeError(f"hwloop monitor exited: {p.stderr.read() if p.stderr else ''}")
            r, _, _ = select.select([p.stdout], [], [], 0.5)
            if r:
                line = p.stdout.readline() if p.stdout else ""
            return line.startswith("hwloop monitor: http://127.0.0.1:")

        wait_until(ready, DEADLINE_S, "the monitor's URL")
        yield line.split()[2]


def shown_steps(b: Browser) -> int:
    t = b.text("v-steps-done") or ""
    return int(t.split("/")[0]) if t.split("/")[0].strip().isdigit() else -1


def same_percent(shown: str, fraction: float) -> bool:
    """``shown`` ("78.13 %") is ``fraction`` rounded to 2 decimals (either way at a tie:
    JavaScript's toFixed rounds half up, Python's format half to even)."""
    assert shown.endswith(" %"), shown
    return abs(float(shown[:-2]) - 100 * fraction) <= 0.005 + 1e-9


def check_against_file(b: Browser, run: Path) -> int:
    """The step, loss and accuracy shown equal those of the file at that step."""
    # one consistent view: read the values of one render
    vals = json.loads(b.eval(
        "JSON.stringify(['v-steps-done','v-last-step','v-last-loss','v-last-acc','v-test-acc']"
        ".map(i => document.getElementById(i).textContent))"))
    done, last, loss, acc, test = vals
    n = int(done.split("/")[0])
    assert int(last) == n - 1
    with open_session(run) as sf:
        assert sf.steps_done >= n
        row = sf.index()[n - 1]
        ep = sf.epochs()
        total = int(done.split("/")[1])
        cfg_epochs = int(tomllib.loads(sf.attrs["config_toml"])["epochs"])
        assert total == cfg_epochs * STEPS_PER_EPOCH
    assert math.isclose(float(loss), float(row["loss"]), rel_tol=1e-5)
    assert same_percent(acc, float(row["accuracy"]))
    n_ep = int(b.eval("document.querySelectorAll('#epochs-table tbody tr').length"))
    if n_ep:
        # the test accuracy of the last epoch shown, against /epochs
        assert same_percent(test, float(ep["test_accuracy"][n_ep - 1]))
    return n


def test_live_page_follows_a_run_then_its_stop(tmp_path: Path) -> None:
    run = tmp_path / "run.h5"
    shots = tmp_path / "shots"
    shots.mkdir()
    with started(hwloop("train", *TRAIN, "--epochs", "40", "--out", str(run), "--quiet"),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as trainer:
        wait_until(lambda: run.exists() or trainer.poll() is not None, DEADLINE_S, "the file")
        assert trainer.poll() is None, "the run ended before the monitor started"
        with monitor(run) as url, Browser(tmp_path / "profile") as b:
            b.navigate(url)
            wait_until(lambda: b.text("v-status") == "running" and shown_steps(b) >= 1,
                       DEADLINE_S, "the page to show a running step")
            first = shown_steps(b)
            # the numbers update as steps are committed (the run goes on meanwhile)
            wait_until(lambda: shown_steps(b) >= first + 3, DEADLINE_S, "newer steps")
            n = check_against_file(b, run)
            assert n > first
            # the smoothed loss curve has one point per step (no binning below 1500)
            curve_n = int(b.eval("+document.getElementById('curve-loss').dataset.n"))
            assert curve_n >= n - 2  # drawn from the render before the one just read
            wait_until(lambda: int(b.eval(
                "document.querySelectorAll('#epochs-table tbody tr').length")) >= 1,
                DEADLINE_S, "the first epoch row")
            check_against_file(b, run)
            b.screenshot(shots / "monitor-running.png")
            # Ctrl-C: the run stops after the current step; the page shows it
            trainer.send_signal(signal.SIGINT)
            trainer.wait(timeout=DEADLINE_S)
            wait_until(lambda: b.text("v-status") == "stopped", DEADLINE_S, "'stopped'")
            with open_session(run) as sf:
                assert sf.status == "stopped"
                final = sf.steps_done
            wait_until(lambda: shown_steps(b) == final, DEADLINE_S, "the final step count")
            check_against_file(b, run)
            kinds = b.eval(EVENT_KINDS)
            assert kinds[0] == "stop" and kinds[-1] == "start"


def test_page_survives_a_kill_and_a_resume(tmp_path: Path) -> None:
    run = tmp_path / "run.h5"
    with started(hwloop("train", *TRAIN, "--epochs", "3", "--out", str(run), "--quiet"),
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as trainer:
        wait_until(lambda: run.exists() or trainer.poll() is not None, DEADLINE_S, "the file")
        with monitor(run, "--stall-after", "3") as url, Browser(tmp_path / "profile") as b:
            b.navigate(url)
            wait_until(lambda: shown_steps(b) >= 5, DEADLINE_S, "five steps on the page")
            if trainer.poll() is None:
                trainer.send_signal(signal.SIGKILL)
            trainer.wait(timeout=60)
            with open_session(run) as sf:
                killed_at = sf.steps_done
                killed_status = sf.status
            if killed_status == "crashed":  # (on a very fast machine the run may have ended)
                wait_until(lambda: b.text("v-status") == "crashed", DEADLINE_S, "'crashed'")
                assert shown_steps(b) == killed_at
                assert "killed or is stalled" in (b.text("v-note") or "")
            # resume the same file while the page keeps polling it every 0.5 s
            res = subprocess.run(hwloop("resume", str(run), *(
                ["--epochs", "4"] if killed_status == "completed" else []), "--quiet"),
                env=ENV, capture_output=True, text=True, timeout=900)
            assert res.returncode == 0, res.stderr
            with open_session(run) as sf:
                assert sf.status == "completed" and int(sf.attrs["resumes"]) == 1
                final = sf.steps_done
            wait_until(lambda: b.text("v-status") == "completed" and shown_steps(b) == final,
                       DEADLINE_S, "the resumed run's end")
            assert b.text("v-resumes") == "1"
            check_against_file(b, run)
            kinds = b.eval(EVENT_KINDS)
            assert "resume" in kinds


def test_report_opens_offline_from_a_file_url(tmp_path: Path) -> None:
    run = tmp_path / "run.h5"
    res = subprocess.run(hwloop("train", *TRAIN, "--epochs", "2", "--out", str(run), "--quiet"),
                         env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    rep = tmp_path / "report.html"
    res = subprocess.run(hwloop("report", str(run), "--out", str(rep)), env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    with Browser(tmp_path / "profile") as b:
        b.call("Network.enable")
        b.call("Network.emulateNetworkConditions", offline=True, latency=0,
               downloadThroughput=-1, uploadThroughput=-1)
        b.navigate(rep.as_uri())
        wait_until(lambda: b.eval("document.body.dataset.rendered") == "1", 60, "the render")
        n = check_against_file(b, run)
        with open_session(run) as sf:
            assert n == sf.steps_done and b.text("v-status") == sf.status == "completed"
        assert int(b.eval("document.querySelectorAll('svg.plot').length")) >= 6
        b.screenshot(tmp_path / "report.png")
        urls = [e["params"]["request"]["url"] for e in b.events
                if e.get("method") == "Network.requestWillBeSent"]
        assert urls and all(u.startswith("file://") for u in urls), urls


def test_sweep_page_shows_points_as_they_finish(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    cmd = hwloop("sweep", "--read-noise", "0", "0.01", "--samples", "1", "4", "--set",
                 'arch="1568-100-10"', "--set", "epochs=1", "--set", "train_limit=320",
                 "--set", "test_limit=100", "--out", str(out), "--no-plots", "--quiet")
    with started(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as sweep:
        wait_until(lambda: (out / "index.json").exists() or sweep.poll() is not None,
                   DEADLINE_S, "index.json")
        with monitor(out) as url, Browser(tmp_path / "profile") as b:
            b.navigate(url)
            wait_until(lambda: b.text("v-points") == "4", DEADLINE_S, "the grid")
            seen = set()

            def done() -> bool:
                seen.add(b.text("v-completed"))
                return b.text("v-completed") == "4"

            wait_until(done, DEADLINE_S, "every point completed")
            assert sweep.wait(timeout=DEADLINE_S) == 0
            idx = json.loads((out / "index.json").read_text())
            wait_until(lambda: int(b.eval("+document.body.dataset.rendered")) > 0, 30, "render")
            rows = b.eval("[...document.querySelectorAll('#points-table tbody tr')].map("
                          "r => [...r.children].map(c => c.textContent))")
            assert len(rows) == 4
            for r in rows:
                p = idx["points"][r[0]]
                assert r[1] == p["status"] == "completed"
                assert same_percent(r[6], p["final_test_accuracy"])
            # the two accuracy plots and the limits table are there
            assert int(b.eval("document.querySelectorAll('#sec-plots svg.plot').length")) == 2
            assert b.text("v-predicted").endswith(" V")
            b.screenshot(tmp_path / "sweep.png")
