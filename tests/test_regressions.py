"""Regression tests for defects found in review (each fails on the code before its fix)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from hwloop.cli import main
from hwloop.device import NodeReading, ResistiveNudge
from hwloop.errors import ConfigError, LimitError
from hwloop.plugins import open_board
from hwloop.sessionlog import load_run as read_run
from protocols.optim import Update
from protocols.programming import OpenLoopProgrammer
from simulated_device.board import EmulatedBoard
from simulated_device.drn import DRN, pixels_to_inputs


def _inputs(batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pixels_to_inputs(rng.uniform(size=(batch, 784)) * (rng.uniform(size=(batch, 784)) < 0.2),
                            100.0)


def test_free_settles_warm_start_from_the_last_free_state_not_the_nudged_one() -> None:
    """docs/physics.md §2.4: V_free of a batch starts from the previous batch's V_free."""
    opts = {"arch": "1568-100-10", "n_sweeps": 1}
    a = open_board("emulator", opts, np.random.default_rng(0))
    b = open_board("emulator", opts, np.random.default_rng(0))
    v1, v2 = _inputs(2, 1), _inputs(2, 2)
    y = np.eye(10)[[1, 2]]
    for board in (a, b):
        board.apply_inputs(v1)
        board.settle()
    a.apply_nudge(ResistiveNudge(1.0, y))  # a takes a nudged detour, b does not
    a.settle()
    a.apply_nudge(None)
    for board in (a, b):
        board.apply_inputs(v2)
        board.settle()
    assert np.array_equal(a.read_nodes(1).samples_v, b.read_nodes(1).samples_v)


def test_a_node_without_conductance_does_not_poison_the_solve() -> None:
    net = DRN.initialise((8, 3, 2), np.random.default_rng(0))
    net.weights[0][:, 1] = 0.0
    net.weights[1][1, :] = 0.0  # hidden node 1 is isolated
    net.weights_changed()
    V, _ = net.relax(np.ones((1, 8)), n_sweeps=10)
    assert all(np.all(np.isfinite(v)) for v in V)
    assert V[0][0, 1] == 0.0


def test_non_convex_negative_beta_is_refused_before_it_is_applied() -> None:
    board = open_board("emulator", {"arch": "16-8-4"}, np.random.default_rng(0))
    assert isinstance(board, EmulatedBoard)
    board.apply_inputs(np.ones((1, 16)))
    with pytest.raises(ConfigError, match="not convex"):
        board.apply_nudge(ResistiveNudge(-100.0, np.zeros((1, 4))))
    assert board.is_safe is False and board._nudge is None


def test_standard_error_is_not_folded_at_zero_volts() -> None:
    rng = np.random.default_rng(0)
    n, sigma = 4000, 1e-3
    samples = rng.normal(0.0, sigma, size=(n, 1, 1))  # a node sitting at 0 V
    r = NodeReading(samples, np.zeros((n, 1)), np.zeros((n, 1, 1), np.uint8), np.array([0]))
    # the estimate of sigma/sqrt(n) from 4000 samples is within 5 % (> 4 standard errors)
    assert abs(float(r.sem_v[0, 0]) / (sigma / np.sqrt(n)) - 1) < 0.05


def test_bias_limit_is_checked_before_any_conductance_is_programmed() -> None:
    board = open_board("emulator", {"arch": "16-8-4"}, np.random.default_rng(0))
    desc = board.describe()
    g0 = board.read_conductances()
    big = np.full(len(desc.bias_nodes), 2 * desc.limits.i_nudge_max_a)
    with pytest.raises(LimitError, match="bias current"):
        OpenLoopProgrammer().program(board, Update(np.full(desc.n_edges, 0.01), big),
                                     np.random.default_rng(0))
    assert np.array_equal(board.read_conductances(), g0)


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999"])
def test_seeds_out_of_range_fail_cleanly(seed: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.h5"
    code = main(["train", "--seed", seed, "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "seed" in err and err.count("\n") == 1
    assert not out.exists()


def test_realistic_preset_trains_through_the_cli(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """float32 rounding of g_min and the conductance scale (docs/physics.md §7.1) stopped it."""
    out = tmp_path / "r.h5"
    code = main(["train", "--device-preset", "reram", "--epochs", "1", "--train-limit", "1000",
                 "--test-limit", "300", "--seed", "0", "--out", str(out), "--json", "--quiet"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert summary["final_test_accuracy"] > 0.4  # chance is 0.1
    run = read_run(out)
    g = run.conductances_s
    # physical conductances of the ReRAM-like devices (each device has its own bounds around
    # the nominal 1-100 uS, device-to-device spread 20 %)
    assert g is not None and g.min() > 0 and g.max() < 2e-4 and np.median(g) > 1e-6


def test_run_files_of_another_schema_or_damaged_fail_cleanly(tmp_path: Path) -> None:
    p = tmp_path / "old.h5"
    with h5py.File(p, "w") as f:
        f.attrs["schema"] = "hwloop-session"
        f.attrs["schema_version"] = 99
    with pytest.raises(ConfigError, match="schema version 99, newer"):
        read_run(p)
    with h5py.File(p, "w") as f:
        f.attrs["schema"] = "hwloop-session"
        f.attrs["schema_version"] = 1
    with pytest.raises(ConfigError, match="damaged"):
        read_run(p)
