"""Per-layer EP-vs-true error alignment (issue 15 part 2, ``protocols/alignment.py``).

References: on a reciprocal network with a tiny nudge the EP error equals the true
error (cosine 1, size ratio 1); on a non-reciprocal one both vectors are checked
against finite differences of the emulator's solver (the true error is minus the
derivative of each example's loss with respect to a bias current; the EP error is
the derivative of the fixed point with respect to beta), independent of the
Jacobian the metric uses. And ``hwloop train --alignment N`` records it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hwloop.plugins import open_board
from hwloop.sessionlog import open_session
from protocols.alignment import alignment, hidden_layer_positions, measure_alignment
from protocols.estimators import make_estimator
from simulated_device import nonreciprocal as nr
from simulated_device.nonreciprocal_board import NonReciprocalBoard
from tests.procs import assert_usage_error
from tests.procs import run_cli as cli
from tests.test_train_cli import last_json

_EVENT = re.compile(
    r"epoch (\d+): error alignment layer (\d+): cos (\S+), size ratio (\S+) \(EP vs true"
)


def _board(**opts: float) -> NonReciprocalBoard:
    b = open_board("nonreciprocal", {"arch": "6-5-4-3", **opts}, np.random.default_rng(3))
    assert isinstance(b, NonReciprocalBoard)
    return b


def _batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.normal(size=(4, 6)), np.eye(3)[rng.integers(0, 3, size=4)]


def _per_example_loss(net: nr.NonReciprocalNet, v_in: np.ndarray, y: np.ndarray) -> np.ndarray:
    u = nr.solve(net, v_in).u
    d = np.real(u[:, net.layer_slice(len(net.sizes) - 1)]) - y
    return np.asarray(0.5 * np.sum(d * d, axis=1))


def _fd_errors(board: NonReciprocalBoard, v_in: np.ndarray, y: np.ndarray) -> tuple[
    np.ndarray, np.ndarray
]:
    """(EP error du*/dbeta, true error -dL_b/db) by central finite differences."""
    net = board.network
    h_b, h_beta = 1e-6, 1e-6
    lam = np.zeros((v_in.shape[0], net.n_free))
    for k in range(net.n_free):
        b0 = net.biases_a[k]
        net.biases_a[k] = b0 + h_b
        lp = _per_example_loss(net, v_in, y)
        net.biases_a[k] = b0 - h_b
        lm = _per_example_loss(net, v_in, y)
        net.biases_a[k] = b0
        lam[:, k] = -(lp - lm) / (2 * h_b)
    up = nr.solve(net, v_in, nr.Nudging(h_beta, y)).u
    um = nr.solve(net, v_in, nr.Nudging(-h_beta, y)).u
    return np.real(up - um) / (2 * h_beta), lam


def test_reciprocal_network_with_tiny_beta_is_aligned() -> None:
    board = _board(asymmetry=0.0)
    v_in, y = _batch()
    rows = measure_alignment(board, make_estimator("centered").stencil(1e-4), v_in, y)
    assert [r.layer for r in rows] == [1, 2]
    for r in rows:
        assert r.cosine == pytest.approx(1.0, abs=1e-9)
        assert r.size_ratio == pytest.approx(1.0, rel=1e-6)


def test_nonreciprocal_alignment_matches_finite_differences() -> None:
    board = _board(asymmetry=0.8, bwd_gain=0.4)
    v_in, y = _batch()
    rows = measure_alignment(board, make_estimator("centered").stencil(1e-4), v_in, y)
    e_fd, lam_fd = _fd_errors(board, v_in, y)
    ref = alignment(e_fd, lam_fd, hidden_layer_positions(board.describe()))
    for r, f in zip(rows, ref, strict=True):
        assert r.cosine == pytest.approx(f.cosine, abs=1e-5)
        assert r.size_ratio == pytest.approx(f.size_ratio, rel=1e-4)
    # the metric sees the mismatch: not aligned, and the weak feedback shrinks the error
    assert min(r.cosine for r in rows) < 0.99
    assert rows[0].size_ratio < 0.8
    # a large nudge moves the EP error (one-sided, beta 1) away from the tiny-nudge one
    far = measure_alignment(board, make_estimator("one-sided").stencil(1.0), v_in, y)
    assert abs(far[0].size_ratio - rows[0].size_ratio) > 1e-3


def test_train_records_alignment_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "al.h5"
    code, stdout, _ = cli(
        capsys, "train", "--backend", "nonreciprocal", "--arch", "32-6-5-2",
        "--dataset", "mnist-01-4x4", "--epochs", "2", "--train-limit", "80",
        "--test-limit", "40", "--alignment", "12", "--asymmetry", "0.5", "--seed", "2",
        "--quiet", "--json", "--out", out,
    )
    assert code == 0
    summary = last_json(stdout)["alignment"]
    with open_session(out) as sf:
        events = [m.groups() for ev in sf.events() if (m := _EVENT.search(str(ev["message"])))]
    # epoch 0 (before training) and each epoch end, both hidden layers
    assert [(int(e), int(layer)) for e, layer, _, _ in events] == [
        (ep, layer) for ep in (0, 1, 2) for layer in (1, 2)
    ]
    for (_, _, cos, size), s in zip(events, summary, strict=True):
        assert float(cos) == pytest.approx(s["cosine"], abs=1e-6)
        assert float(size) == pytest.approx(s["size_ratio"], rel=1e-5)
        assert -1.0 <= float(cos) <= 1.0 and float(size) > 0


def test_alignment_is_refused_without_a_jacobian(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        capsys, "train", "--backend", "mock", "--arch", "16-4-2", "--dataset", "mnist-01-4x4",
        "--alignment", "4", "--out", tmp_path / "m.h5",
    )
    assert_usage_error(code, out, err, "alignment", "Jacobian")


def test_mean_one_mismatch_keeps_the_mean_feedback() -> None:
    """``asymmetry_mean_one``: backward/forward ratio exp(s xi - s^2/2) has mean 1."""
    s = 1.0
    ratios = {}
    for mean_one in (False, True):
        net = nr.initialise((4, 60, 50, 40), np.random.default_rng(7), asymmetry=s,
                            mean_one=mean_one)
        r = np.concatenate([(net.backward(li) / net.forward(li).T).ravel() for li in (1, 2)])
        ratios[mean_one] = r
    # same draws: the two differ by exactly exp(-s^2/2)
    np.testing.assert_allclose(ratios[True], ratios[False] * np.exp(-s * s / 2), rtol=1e-12)
    r = ratios[True]
    se = r.std(ddof=1) / np.sqrt(r.size)
    assert abs(r.mean() - 1.0) < 4 * se, (r.mean(), se)
    assert abs(np.log(r).mean() + s * s / 2) < 4 * s / np.sqrt(r.size)
    board = open_board("nonreciprocal", {"arch": "6-5-4-3", "asymmetry": 1.0,
                                         "asymmetry_mean_one": True}, np.random.default_rng(3))
    assert isinstance(board, NonReciprocalBoard)
    ref = nr.initialise((6, 5, 4, 3), np.random.default_rng(3), weight_gain=3.0, asymmetry=1.0,
                        mean_one=True)
    np.testing.assert_array_equal(board.network.g_flat, ref.g_flat)


def test_mnist_7x7_is_the_block_mean_of_the_subset() -> None:
    from protocols.datasets import load_dataset

    big, small = load_dataset("mnist-subset"), load_dataset("mnist-7x7")
    assert small.x_train.shape == (len(big.x_train), 7, 7)
    np.testing.assert_array_equal(small.y_test, big.y_test)
    i = 17
    block = big.x_test[i, 8:12, 20:24].astype(float).mean()
    assert small.x_test[i, 2, 5] == int(np.floor(block))


def test_alignment_runs_replay_without_noise_and_are_refused_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--backend", "nonreciprocal", "--arch", "32-6-5-2", "--dataset",
            "mnist-01-4x4", "--epochs", "2", "--train-limit", "40", "--test-limit", "20",
            "--alignment", "8", "--asymmetry", "0.5", "--quiet"]
    clean, noisy = tmp_path / "clean.h5", tmp_path / "noisy.h5"
    assert cli(capsys, *base, "--out", clean)[0] == 0
    code, out, _ = cli(capsys, "replay", clean)
    assert code == 0 and out.startswith("identical"), out
    assert cli(capsys, *base, "--read-noise", "1e-4", "--out", noisy)[0] == 0
    code, out, err = cli(capsys, "replay", noisy)
    assert_usage_error(code, out, err, "alignment", "read noise", prefix="hwloop replay")
