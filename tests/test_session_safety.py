"""Every exit path ends in the safe state; Ctrl-C stops after the current step and keeps the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hwloop.datasets import load_dataset
from hwloop.errors import ConfigError
from hwloop.plugins import open_board
from hwloop.session import StopRequest, safe_session
from hwloop.sessionlog import load_run as read_run
from protocols.config import TrainConfig, resolve
from protocols.training import Trainer


class FailingBoard:
    """Delegates to an emulated board but fails on the n-th read."""

    def __init__(self, inner, fail_at: int, exc: BaseException) -> None:
        self.inner = inner
        self.reads = 0
        self.fail_at = fail_at
        self.exc = exc

    def read_nodes(self, *args, **kwargs):
        self.reads += 1
        if self.reads == self.fail_at:
            raise self.exc
        return self.inner.read_nodes(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _trainer(board) -> Trainer:
    cfg, _ = resolve(TrainConfig(arch="1568-100-10", epochs=1, train_limit=64, test_limit=50))
    data = load_dataset("mnist-subset")
    return Trainer(cfg, board, data, np.random.default_rng(0))


@pytest.mark.parametrize(
    "exc", [RuntimeError("instrument fault"), KeyboardInterrupt(), ConfigError("bad")]
)
def test_exceptions_mid_step_leave_the_board_safe(exc: BaseException) -> None:
    inner = open_board("emulator", {"arch": "1568-100-10"}, np.random.default_rng(0))
    board = FailingBoard(inner, fail_at=5, exc=exc)  # in the middle of the second step
    with pytest.raises(type(exc)), safe_session(board):
        _trainer(board).run()
    assert inner.is_safe
    with pytest.raises(ConfigError, match="closed"):
        inner.apply_inputs(np.zeros((1, 1568)))


def test_stop_request_ends_after_the_current_step() -> None:
    board = open_board("emulator", {"arch": "1568-100-10"}, np.random.default_rng(0))
    stop = StopRequest()
    steps = []

    def on_step(i, rec, loss, acc):
        steps.append(i)
        if i == 2:
            stop.request("test")

    with safe_session(board):
        tr = _trainer(board)
        tr.stop, tr.on_step = stop, on_step
        result = tr.run()
    assert steps == [0, 1, 2]
    assert result.status == "stopped" and result.reason == "test"
    assert board.is_safe


def test_ctrl_c_stops_a_cli_run_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "run.h5"
    cmd = [
        sys.executable,
        "-m",
        "hwloop.cli",
        "train",
        "--arch",
        "1568-100-10",
        "--epochs",
        "50",
        "--out",
        str(out),
        "--test-limit",
        "100",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a few steps into the first epoch
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "stopping after the current step" in stderr
    run = read_run(out)
    assert run.attrs["status"] == "stopped"
    assert "Ctrl-C" in run.attrs["reason"]
    assert run.conductances_s is not None and run.conductances_s.shape == (1568 * 100 + 1000,)
    assert "stopped" in stdout
