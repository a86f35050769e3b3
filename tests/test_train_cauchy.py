"""``hwloop train --estimator cauchy-N``: complex nudges in training and in the session file.

The Cauchy N-point estimator (docs/estimators.md §3.2) trains on a board whose description
says ``supports_complex_nudge`` (the ``nonreciprocal`` emulator); its complex readings are
kept in the session file (``complex_samples``, docs/session-format.md), so that replay,
resume, inspect and evaluate work on the run. Every other board refuses it with one line
before a file is written.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest

from hwloop.errors import ConfigError
from hwloop.sessionlog import open_session
from protocols.engine import run_step
from protocols.estimators import Cauchy, make_estimator
from protocols.plan import ApplyNudge, ComputeUpdate, build_step_plan
from simulated_device import nonreciprocal as nr
from tests.board_helpers import central_difference, settled_nonreciprocal
from tests.procs import assert_usage_error
from tests.procs import run_cli as cli
from tests.test_train_cli import last_json
from tests.test_train_nonreciprocal import _Recorder

SMALL = ["--backend", "nonreciprocal", "--arch", "1568-16-10", "--quiet", "--json",
         "--test-limit", "200", "--input-gain", "100", "--nudge", "resistive"]


def _train(capsys: pytest.CaptureFixture[str], out: Path, *extra: str) -> str:
    """A 1-epoch cauchy-4 run of the small net on the nonreciprocal emulator; its stdout."""
    code, stdout, err = cli(capsys, "train", *SMALL, "--estimator", "cauchy-4", "--epochs", "1",
                            *extra, "--out", out)
    assert code == 0, err
    return stdout


def test_cauchy_plan_has_complex_nudges_and_weights() -> None:
    st = make_estimator("cauchy-4").stencil(0.5)
    np.testing.assert_allclose(st.betas_s, [0.5, 0.5j, -0.5], atol=1e-15)
    # e = Re (1/4) sum_k f(b_k)/b_k, conjugate pair folded: weights 1/(4r), 2/(4ir), -1/(4r)
    np.testing.assert_allclose(st.coeffs, [0.5, -1j, -0.5], atol=1e-15)
    plan = build_step_plan(st)
    nudges = [s.beta_s for s in plan if isinstance(s, ApplyNudge)]
    assert any(isinstance(b, complex) and b.imag != 0 for b in nudges)
    (upd,) = [s for s in plan if isinstance(s, ComputeUpdate)]
    assert upd.phases == (1, 2, 3)
    with pytest.raises(ConfigError, match="cauchy-1"):
        make_estimator("cauchy-1")
    with pytest.raises(ConfigError, match="cauchy-N"):
        make_estimator("cauchy-x")
    assert isinstance(make_estimator("cauchy-6"), Cauchy)


@pytest.mark.parametrize("n_points", [4, 8])
def test_training_step_gradient_matches_finite_differences(n_points: int) -> None:
    """One training step's Cauchy gradient on a tiny reciprocal net vs the true gradient.

    Reference: central differences of the emulator's loss over every conductance and bias
    (independent of EP), and the emulator's implicit-differentiation gradient. Tolerance:
    relative error 2e-2 for N = 4 and 1e-4 for N = 8 at |beta| = 0.5 (aliasing error
    O(r^N); the centered rule at the same radius is about 10x worse than N = 4).
    """
    board, v_in, y = settled_nonreciprocal("6-5-3")  # asymmetry 0: EP gradient = gradient
    net = board.network
    u0 = board.free_state()

    def loss() -> float:
        return float(nr.loss(net, nr.solve(net, v_in, start=u0).u.real, y))

    fd = np.concatenate([central_difference(net.g_flat, loss, 1e-6),
                         central_difference(net.biases_a, loss, 1e-6)])
    gt, bt = board.exact_gradient(y)
    exact = np.concatenate([gt, bt])
    assert np.linalg.norm(fd - exact) / np.linalg.norm(exact) < 1e-5  # the references agree

    def step_rel_err(name: str) -> float:
        plan = build_step_plan(make_estimator(name).stencil(0.5))
        plan = tuple(s for s in plan if type(s).__name__ != "Program")
        learner = _Recorder()
        run_step(plan, board, v_in, y, learner)
        assert learner.gradient is not None
        g = np.concatenate([learner.gradient.g, learner.gradient.b])
        return float(np.linalg.norm(g - fd) / np.linalg.norm(fd))

    err = step_rel_err(f"cauchy-{n_points}")
    assert err < (2e-2 if n_points == 4 else 1e-4), err
    assert step_rel_err("centered") > 5 * err


def test_cauchy_run_learns_replays_resumes_and_is_inspected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c4.h5"
    acc = last_json(_train(capsys, out, "--train-limit", "600", "--seed", "1"))[
        "final_test_accuracy"]
    assert acc > 0.2, acc  # chance: 0.10 (seed 1: 0.325)
    with h5py.File(out, "r") as f:
        s = f["steps"]
        assert bool(s.attrs["complex_samples"])
        g0 = float(f["device"].attrs["g_scale_s"])
        np.testing.assert_allclose(s["betas_s"][0], [0, g0, 0, -g0], atol=1e-12 * g0)
        np.testing.assert_array_equal(s["betas_imag_s"][0], [0, 0, g0, 0])
        im = s["samples_imag_v"][0]  # (B, P, N, F): only the i r phase is complex
        assert np.all(im[:, [0, 1, 3]] == 0) and np.any(im[:, 2] != 0)
    with open_session(out) as sf:
        r = sf.readings(0)
        assert np.iscomplexobj(r[2].samples_v) and not np.iscomplexobj(r[1].samples_v)
        assert sf.step_data(0)["betas_s"][2] == pytest.approx(1j * g0, abs=1e-12 * g0)
        assert sf.integrity(full=True) == []
    code, text, err = cli(capsys, "replay", out)
    assert code == 0 and text.startswith("identical: steps 0..149"), (text, err)
    code, o, e = cli(capsys, "replay", out, "--samples", "1")
    assert_usage_error(code, o, e, "complex nudges", "replay it without them")
    code, text, err = cli(capsys, "inspect", "--full", out)
    assert code == 0 and "150 complete" in text, err
    code, text, err = cli(capsys, "evaluate", out, "--dataset", "mnist-subset")
    assert code == 0 and text.startswith("accuracy"), err
    code, _, err = cli(capsys, "resume", out, "--epochs", "2", "--quiet")
    assert code == 0, err
    code, text, err = cli(capsys, "replay", out)
    assert code == 0 and text.startswith("identical: steps 0..299"), (text, err)


def test_a_damaged_imaginary_part_fails_its_checksum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.h5"
    _train(capsys, out, "--train-limit", "40", "--log-samples", "summary")
    code, text, _ = cli(capsys, "replay", out)
    assert code == 0 and text.startswith("identical"), text
    with h5py.File(out, "r+") as f:
        f["steps/mean_imag_v"][3, 0, 2, 0] += 1e-3  # only the imaginary part changes
    with open_session(out) as sf:
        assert sf.integrity(full=True) == ["step 3: checksum mismatch (data damaged)"]
    code, text, err = cli(capsys, "replay", out)
    assert code != 0 and "step 3" in text + err and "checksum" in text + err, (text, err)


def test_real_files_have_no_imaginary_datasets_and_older_files_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.h5"
    code, _, err = cli(capsys, "train", *SMALL, "--epochs", "1", "--train-limit", "40",
                       "--out", out)
    assert code == 0, err
    with h5py.File(out, "r+") as f:
        assert not bool(f["steps"].attrs["complex_samples"])
        assert not {"samples_imag_v", "betas_imag_s", "nudge_values_imag"} & set(f["steps"])
        del f["steps"].attrs["complex_samples"]  # as written before the attribute existed
    with open_session(out) as sf:
        assert not sf.layout.complex_samples and sf.integrity(full=True) == []
        assert not np.iscomplexobj(sf.readings(0)[1].samples_v)
    code, text, _ = cli(capsys, "replay", out)
    assert code == 0 and text.startswith("identical"), text


@pytest.mark.parametrize("backend", ["emulator", "mock"])
def test_boards_without_complex_nudges_refuse_cauchy(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.h5"
    code, o, e = cli(capsys, "train", "--backend", backend, "--arch", "1568-16-10",
                     "--estimator", "cauchy-4", "--out", out)
    assert_usage_error(code, o, e, "cauchy-4", "complex nudges")
    assert not out.exists()


def test_the_virtual_serial_board_refuses_cauchy_before_anything_is_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulated_device.virtual_board import VirtualBoard
    from tests.board_helpers import serial_board_text

    vb = VirtualBoard({"arch": "32-8-2", "preset": "reram"}, seed=0)
    out = tmp_path / "c.h5"
    try:
        monkeypatch.setenv("HWLOOP_BOARD_URL", vb.start_tcp())
        path = tmp_path / "board.toml"
        path.write_text(serial_board_text("32-8-2", timeout_s=5.0, v_input_max_v=120.0))
        code, o, e = cli(capsys, "train", "--backend", "board", "--board", path,
                         "--dataset", "mnist-01-4x4", "--nudge", "current",
                         "--estimator", "cauchy-4", "--out", out)
    finally:
        vb.close()
    assert_usage_error(code, o, e, "cauchy-4", "complex nudges")
    assert not out.exists()


@pytest.mark.parametrize("bad", ["cauchy-1", "cauchy", "cauchy-four"])
def test_bad_cauchy_names_are_usage_errors(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, o, e = cli(capsys, "train", *SMALL, "--estimator", bad, "--out", tmp_path / "x.h5")
    assert_usage_error(code, o, e, bad)


def _chosen_beta(capsys: pytest.CaptureFixture[str], out: Path, estimator: str,
                 noise_v: str) -> float:
    """The beta ``--beta-choice auto`` recorded (cap: beta 1), after checking the replay."""
    code, _, err = cli(capsys, "train", *SMALL, "--estimator", estimator, "--beta-choice", "auto",
                       "--read-noise", noise_v, "--epochs", "1", "--train-limit", "8",
                       "--test-limit", "10", "--seed", "1", "--out", out)
    assert code == 0, err
    with h5py.File(out, "r") as f:
        beta = float(tomllib.loads(f.attrs["config_toml"])["beta"])
    assert f"beta {beta:.4g} chosen by the bias/variance helper" in err, err
    code, text, _ = cli(capsys, "replay", out)
    assert code == 0 and text.startswith("identical"), text
    return beta


def test_beta_choice_auto_balances_bias_and_read_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/estimators.md §6: r* ~ sigma^(1/(p+1)); centered (p = 2): 4x noise, 4^(1/3) r.

    Tolerance 10 % on the ratio (the bias is measured once per run, with read noise).
    Cauchy-4's bias at beta = 1 is below the noise floor of 1e-2 V: the cap is kept.
    """
    r1 = _chosen_beta(capsys, tmp_path / "a.h5", "centered", "1e-4")
    r4 = _chosen_beta(capsys, tmp_path / "b.h5", "centered", "4e-4")
    assert r4 < 1.0 and r4 / r1 == pytest.approx(4 ** (1 / 3), rel=0.1), (r1, r4)
    assert _chosen_beta(capsys, tmp_path / "c.h5", "cauchy-4", "1e-2") == 1.0


def test_a_complex_settle_that_does_not_converge_is_warned_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulated_device.nonreciprocal_board import NonReciprocalBoard

    real = NonReciprocalBoard.last_converged

    def failing(self: NonReciprocalBoard) -> np.ndarray:
        """Every settle under a complex nudge reports non-convergence."""
        ok = real(self)
        return np.zeros_like(ok) if np.iscomplexobj(getattr(self._nudge, "beta_s", 0.0)) else ok

    monkeypatch.setattr(NonReciprocalBoard, "last_converged", failing)
    out = tmp_path / "w.h5"
    code, _, err = cli(capsys, "train", *SMALL, "--estimator", "cauchy-4", "--epochs", "1",
                       "--train-limit", "12", "--out", out)
    assert code == 0, err
    lines = [x for x in err.splitlines() if "did not converge" in x]
    assert len(lines) == 1 and lines[0].startswith("warning: step 0:"), err
    with open_session(out) as sf:
        warned = [e for e in sf.events() if e["kind"] == "warning"]
    assert len(warned) == 1 and "did not converge" in warned[0]["message"]
