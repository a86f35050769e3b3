"""``hwloop replay`` and :class:`protocols.replay_device.ReplayDevice` on fresh emulator recordings.

Two small recordings are made once per module (bundled MNIST subset, seed 0):

* ``centered``: 1568-100-10, 128 training examples, batch 32, 2 epochs (8 steps, so
  the learning-rate decay at the epoch end is replayed), 3 samples per phase, read
  noise 0.01 V, every update logged;
* ``onesided``: the realistic ``reram`` device preset (pulse programming), one-sided
  estimator, summary logging (per-phase means only), 64 examples, 1 epoch.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from numpy.typing import NDArray

from hwloop.cli import main
from hwloop.device import Device, ResistiveNudge
from hwloop.errors import ConfigError
from hwloop.sessionlog import open_session
from protocols.datasets import DATA_DIR_ENV, load_dataset
from protocols.engine import run_step
from protocols.optim import SGD
from protocols.replay_cmd import locate_examples, reanalyse, recorded_config, replay_session
from protocols.replay_device import ReplayDevice, ReplayDivergence
from protocols.training import Trainer, encode_inputs, one_hot
from protocols.updates import ep_gradient
from tests.procs import assert_usage_error as _assert_usage_error
from tests.procs import run_cli as cli

COMMON = ["--arch", "1568-100-10", "--batch-size", "32", "--read-noise", "0.01",
          "--test-limit", "20", "--quiet", "--json"]


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def _train(path: Path, *extra: str) -> Path:
    code = main(["train", *COMMON, "--out", str(path), *extra])
    assert code == 0
    return path


@pytest.fixture(scope="module")
def centered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(
        tmp_path_factory.mktemp("replay") / "centered.h5",
        "--epochs", "2", "--train-limit", "128", "--samples", "3", "--log-updates", "all",
    )


@pytest.fixture(scope="module")
def onesided(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(
        tmp_path_factory.mktemp("replay") / "onesided.h5",
        "--epochs", "1", "--train-limit", "64", "--samples", "2", "--estimator", "one-sided",
        "--device-preset", "reram", "--log-samples", "summary",
    )


def assert_usage_error(code: int, out: str, err: str, *must_contain: str) -> None:
    """A usage error of ``hwloop replay`` (see :func:`tests.procs.assert_usage_error`)."""
    _assert_usage_error(code, out, err, *must_contain, prefix="hwloop replay: error:")


def tampered(src: Path, dst: Path, edit: Any) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


# ----------------------------------------------------------------------------- replay


def test_replay_of_a_fresh_recording_is_identical(
    centered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "replay", centered)
    assert code == 0, err
    assert out.startswith("identical: steps 0..7 of ") and out.count("\n") == 1, out
    assert "bit for bit" in out

    code, out, _ = cli(capsys, "replay", centered, "--json")
    r = json.loads(out)
    assert code == 0
    assert r["status"] == "identical" and r["divergence"] is None
    assert r["steps_replayed"] == r["steps"] == 8
    # every requested change (8 steps x (157,800 edges + 110 biases)) bit-identical
    assert r["values_checked"] == 8 * (157_800 + 110)
    assert r["values_inexact"] == 0 and r["max_rel_deviation"] == 0.0

    code, out, _ = cli(capsys, "replay", centered, "--steps", "3", "--json")
    assert code == 0 and json.loads(out)["steps_replayed"] == 3


def test_replay_needs_the_learning_rate_decay_at_the_epoch_end(
    centered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without end_epoch() the learning rates at the epoch-end checkpoint differ
    monkeypatch.setattr(SGD, "end_epoch", lambda self: None)
    with open_session(centered) as sf:
        out = replay_session(sf)
    assert not out.identical and out.divergence is not None
    assert (out.divergence.step, out.divergence.operation) == (3, "checkpoint")
    msg = str(out.divergence)
    assert msg == (
        "step 3 (epoch 0, batch 3), checkpoint after the step: optimiser/epochs_decayed "
        "recorded [1], replayed [0]"
    )


def _edit_input(f: Any) -> None:
    s = f["steps"]
    v = s["inputs_v"][2]
    v[5, 17] += 1.0  # a background pixel (0 V) of example 5 of step 2
    s["inputs_v"][2] = v
    # with its checksum made to match (else replay stops at the checksum, before comparing)
    row = s["index"][2]
    row["crc32"] = zlib.crc32(v.tobytes(), zlib.crc32(s["samples_v"][2].tobytes()))
    s["index"][2] = row


def _edit_update(f: Any) -> None:
    s = f["steps"]
    u = s["update_g_s"][3]
    u[1234] = u[1234] * 1.5 + 1e-6
    s["update_g_s"][3] = u


def _edit_beta(f: Any) -> None:
    s = f["steps"]
    b = s["betas_s"][5]
    b[2] = 1.25  # the +beta phase (recorded +1 S)
    s["betas_s"][5] = b


def _edit_checkpoint(f: Any) -> None:
    c = f["checkpoints/conductances_s"]
    g = c[1]  # the epoch-end checkpoint after step 3
    g[2000] += 1e-4
    c[1] = g


@pytest.mark.parametrize(
    ("edit", "step", "operation", "parts"),
    [
        (_edit_input, 2, "apply_inputs", ["input voltage [5, 17] recorded 1 V, received 0 V",
                                          "1 of 50176 value(s) differ"]),
        (_edit_update, 3, "program_deltas", ["requested change of edge 1234 recorded",
                                             "1 of 157800 value(s) differ"]),
        (_edit_beta, 5, "apply_nudge (phase 2)", ["beta recorded +1.25 S, received +1 S"]),
        (_edit_checkpoint, 3, "checkpoint", ["conductance of edge 2000 recorded",
                                             "1 of 157800 value(s) differ",
                                             "since the previous checkpoint"]),
    ],
    ids=["input", "update", "beta", "checkpoint"],
)
def test_a_tampered_recording_diverges_at_the_right_step_and_operation(
    centered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    edit: Any, step: int, operation: str, parts: list[str],
) -> None:
    path = tampered(centered, tmp_path / "t.h5", edit)
    with open_session(path) as sf:
        out = replay_session(sf)
    div = out.divergence
    assert not out.identical and isinstance(div, ReplayDivergence)
    assert (div.step, div.operation) == (step, operation)
    # every step before it was replayed and checked
    assert out.steps_replayed == step
    msg = str(div)
    assert "\n" not in msg
    assert msg.startswith(f"step {step} (epoch ") and f", {operation}: " in msg, msg
    for part in parts:
        assert part in msg, (part, msg)

    code, stdout, err = cli(capsys, "replay", path)
    assert code == 1 and err == ""
    assert stdout == f"diverged: {msg}\n"


def test_a_changed_recorded_update_reads_the_recorded_and_the_received_value(
    centered: Path, tmp_path: Path
) -> None:
    with open_session(centered) as sf:
        before = float(sf.h5["steps/update_g_s"][3][1234])
    path = tampered(centered, tmp_path / "u.h5", _edit_update)
    with open_session(path) as sf:
        after = float(sf.h5["steps/update_g_s"][3][1234])
        div = replay_session(sf).divergence
    assert div is not None and after != before
    # recorded: the changed value; received: what the protocol asks for, the original one
    assert f"edge 1234 recorded {after:.9g} S, received {before:.9g} S;" in str(div)


# ----------------------------------------------------------------------------- the board


def test_replay_device_with_run_step_reproduces_the_recorded_step(centered: Path) -> None:
    with open_session(centered) as sf:
        cfg = recorded_config(sf)
        assert cfg.input_gain is not None
        data = load_dataset(cfg.dataset, test_fraction=cfg.test_fraction)
        dev = ReplayDevice(sf, stop_step=1)
        assert isinstance(dev, Device)
        assert dev.describe() is sf.description
        trainer = Trainer(cfg, dev, data, np.random.default_rng(cfg.seed))
        ck = sf.checkpoint(0)
        assert trainer.restore(ck)["max_abs_dg_s"] == 0.0
        rows = locate_examples(sf, cfg, data, range(1), trainer.n_in)
        d = sf.step_data(0)
        idx = np.array([rows[int(e)] for e in d["examples"]])
        v_in = encode_inputs(data.pixels("train")[idx], cfg.input_gain, trainer.n_in)
        y = one_hot(data.y_train[idx].astype(np.int64), trainer.n_out)

        rec = run_step(trainer.plan, dev, v_in, y, trainer.learner, dtype=trainer.dtype)

        readings = sf.readings(0)
        assert [r.n_samples for r in rec.readings.values()] == [3, 3, 3]
        for p, r in enumerate(readings):
            np.testing.assert_array_equal(rec.readings[p].samples_v, r.samples_v)
        assert [rec.betas_s[p] for p in range(3)] == list(d["betas_s"])
        # the gradient is the one the recorded voltages give, and its update the recorded one
        means: list[NDArray[np.floating]] = [
            np.asarray(r.mean_v, dtype=np.float64) for r in readings  # float32 values
        ]
        g = ep_gradient(sf.description, v_in, means[1:], (-0.5, 0.5), dtype=trainer.dtype)
        assert rec.gradient is not None and rec.update is not None
        np.testing.assert_array_equal(rec.gradient.g, g.g)
        np.testing.assert_array_equal(rec.gradient.b, g.b)
        np.testing.assert_array_equal(rec.update.delta_g_s.astype(np.float32), d["update_g_s"])
        np.testing.assert_array_equal(rec.update.delta_b_a.astype(np.float32), d["update_b_a"])
        # the board tracks the programmed conductances (cut at the lower bound, 0 S)
        want = np.maximum(ck.arrays["conductances_s"] + rec.update.delta_g_s, 0.0)
        np.testing.assert_allclose(dev.read_conductances(), want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(dev.read_bias_currents(),
                                   ck.arrays["biases_a"] + rec.update.delta_b_a, atol=1e-15)
        assert rec.programming is not None
        bound = np.flatnonzero(np.asarray(rec.programming.reason) == 1)
        np.testing.assert_array_equal(bound, sf.programming(0)["edge"])

        dev.finish()
        assert dev.stats.steps_completed == 1
        with pytest.raises(ReplayDivergence, match=r"step 1, apply_inputs: the replay was "
                           r"limited to steps 0\.\.0; nothing more to replay"):
            dev.apply_inputs(v_in)
        dev.safe_state()
        dev.safe_state()
        assert dev.is_safe
        dev.close()
        dev.close()
        with pytest.raises(ConfigError, match="closed"):
            dev.read_conductances()


def test_replay_device_refuses_out_of_order_requests(centered: Path) -> None:
    with open_session(centered) as sf:
        cfg = recorded_config(sf)
        assert cfg.input_gain is not None
        v_in = np.asarray(sf.step_data(0)["inputs_v"], dtype=np.float64)
        dev = ReplayDevice(sf)
        with pytest.raises(ReplayDivergence, match="before apply_inputs started"):
            dev.read_nodes(3)
        dev.apply_inputs(v_in)  # the float32 recording itself: exact after the cast
        with pytest.raises(ReplayDivergence, match=r"read_nodes \(phase 0\): asked for 4 "
                           r"sample\(s\) after 0, the recording has 3"):
            dev.read_nodes(4)
        r = dev.read_nodes(1, nodes=sf.description.output_nodes)  # chunks are fine
        assert r.samples_v.shape == (1, 32, 10)
        targets = np.asarray(sf.step_data(0)["nudge_values"][1], dtype=np.float64)
        with pytest.raises(ReplayDivergence, match=r"1 of the 3 recorded sample\(s\) were "
                           r"read before apply_nudge"):
            dev.apply_nudge(ResistiveNudge(-1.0, targets))


def test_summary_file_of_a_pulse_board_replays_identically(onesided: Path) -> None:
    with open_session(onesided) as sf:
        assert sf.options.samples == "summary" and sf.description.pulse_step_s > 0
        out = replay_session(sf)
    assert out.identical, out.divergence
    assert out.steps_replayed == 2


def test_stochastic_rounding_is_refused(onesided: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import protocols.training as training
    from protocols.programming import OpenLoopProgrammer

    monkeypatch.setattr(training, "OpenLoopProgrammer",
                        lambda: OpenLoopProgrammer(rounding="stochastic"))
    with open_session(onesided) as sf, pytest.raises(ConfigError, match="stochastic"):
        replay_session(sf)


# ----------------------------------------------------------------------------- re-analysis


def _layers(capsys: pytest.CaptureFixture[str], path: Path, *opts: object) -> dict[str, Any]:
    code, out, err = cli(capsys, "replay", path, *opts, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["mode"] == "reanalysis" and r["steps"] == 8
    return {lay["layer"]: lay for lay in r["layers"]}


def test_fewer_samples_give_gradients_closer_to_the_full_ones_as_k_grows(
    centered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    by_k = {k: _layers(capsys, centered, "--samples", k) for k in (1, 2, 3)}
    assert set(by_k[3]) == {"weights 1", "weights 2", "biases 1", "biases 2"}
    for name, full in by_k[3].items():
        # k = N: the same gradients, exactly
        assert full["median_cosine"] == full["mean_cosine"] == 1.0
        assert full["median_rel_diff"] == full["mean_rel_diff"] == 0.0
        assert full["sign_agreement"] == full["always_agree"] == 1.0
        for k in (1, 2):
            assert by_k[k][name]["median_cosine"] < 1.0
            assert by_k[k][name]["median_rel_diff"] > 0.0
        # closer as k grows, in expectation over the 8 steps (mean cosine; the tolerance
        # allows for the small layers, whose per-step cosines are noisy)
        tol = 0.02
        c1, c2 = by_k[1][name]["mean_cosine"], by_k[2][name]["mean_cosine"]
        assert c1 <= c2 + tol and c2 <= 1.0, (name, c1, c2)
        r1, r2 = by_k[1][name]["mean_rel_diff"], by_k[2][name]["mean_rel_diff"]
        assert r1 + tol >= r2 > 0.0, (name, r1, r2)
    # the large hidden layer: clearly monotone
    assert by_k[1]["weights 1"]["mean_cosine"] < by_k[2]["weights 1"]["mean_cosine"] - 0.1


def test_one_sided_reanalysis_of_a_centered_recording_differs(
    centered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = _layers(capsys, centered, "--estimator", "centered")
    assert all(lay["median_cosine"] == 1.0 for lay in same.values())
    one = _layers(capsys, centered, "--estimator", "one-sided")
    for name, lay in one.items():
        assert lay["median_cosine"] < 1.0 and lay["median_rel_diff"] > 0.0, name
    assert one["weights 1"]["median_cosine"] < 0.9
    code, out, _ = cli(capsys, "replay", centered, "--estimator", "one-sided", "--samples", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("one-sided with 2 sample(s)/phase vs recorded centered with 3")
    assert lines[1].split() == ["layer", "size", "median", "cos", "median", "rel", "diff",
                                "sign", "agreement"]
    assert [ln.split()[0:3] for ln in lines[2:]] == [
        ["weights", "1", "156800"], ["weights", "2", "1000"], ["biases", "1", "100"],
        ["biases", "2", "10"],
    ]


def test_reanalysis_uses_recorded_data_only(
    centered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import protocols.replay_cmd as cmd

    def no_data(*a: object, **k: object) -> None:
        raise AssertionError("re-analysis must not load the dataset")

    monkeypatch.setattr(cmd, "load_dataset", no_data)
    with open_session(centered) as sf:
        r = reanalyse(sf, samples=2, steps=2)
    assert r["steps"] == 2 and r["samples"] == 2 and r["recorded_samples"] == 3


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("which", "opts", "parts"),
    [
        ("centered", ["--samples", "4"],
         ["--samples 4 exceeds the 3 sample(s) recorded in phase 0 of step 0"]),
        ("centered", ["--samples", "0"], ["--samples 0 must be >= 1"]),
        ("centered", ["--estimator", "two-sided"], ["unknown estimator 'two-sided'"]),
        ("centered", ["--estimator", "random-sign"], ["needs the sign drawn in each step"]),
        ("centered", ["--steps", "9"], ["--steps 9 exceeds the 8 recorded step(s)"]),
        ("centered", ["--samples", "2", "--rtol", "0.1"], ["--rtol applies to the replay"]),
        ("centered", ["--rtol", "-1"], ["--rtol -1.0 must be a number >= 0"]),
        ("onesided", ["--samples", "1"], ["log samples = summary", "raw samples"]),
        ("onesided", ["--estimator", "centered"],
         ["--estimator centered needs a nudge of beta = -", "which step 0 did not record"]),
    ],
)
def test_impossible_requests_exit_2_with_one_line(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
    which: str, opts: list[str], parts: list[str],
) -> None:
    path = request.getfixturevalue(which)
    code, out, err = cli(capsys, "replay", path, *opts)
    assert_usage_error(code, out, err, *parts)


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "replay", tmp_path / "nope.h5")
    assert_usage_error(code, out, err, "not found")
