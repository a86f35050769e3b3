"""hwloop characterize recovers the emulator's read noise; noise-model file round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwloop.cli import main
from hwloop.errors import ConfigError
from hwloop.plugins import open_board
from protocols.characterize import characterize, fit_read_noise, measure_c2c, measure_drift
from simulated_device.noise_model import emulator_options


def test_recovers_known_read_noise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sigma = 2e-4
    code = main(["characterize", "--option", f"read_noise_v={sigma}", "--repeats", "50",
                 "--seed", "3", "--out", str(tmp_path), "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    rn = rep["node_read_noise"]
    se = rn["sigma_v_rel_se"]  # 1/sqrt(2 B n) = 1/sqrt(2*49*4*110) = 0.48 %
    assert se == pytest.approx(1 / np.sqrt(2 * 49 * 4 * 110))
    assert abs(rn["sigma_v_pooled"] / sigma - 1) < 4 * se  # within 4 standard errors
    assert abs(rn["fit"]["sigma_v"] / sigma - 1) < 0.03
    assert rn["fit"]["relative"] < 1e-4  # no multiplicative term in this model
    # ideal devices: exact conductance reads and exact programming
    assert rep["conductance_read_noise"]["std_s_mean"] < 1e-15
    assert rep["programming"]["error_relative_rms"] < 1e-9
    for name in ("report.json", "noise_model.toml", "timings.json", "read_noise.png"):
        assert (tmp_path / name).exists()
    # the noise-model file maps onto the emulator's options and gives a working board
    opts, notes = emulator_options(tmp_path / "noise_model.toml")
    assert opts["read_noise_v"] == pytest.approx(sigma, rel=0.03) and notes == []
    board = open_board("emulator", {"arch": "1568-100-10", **opts}, np.random.default_rng(0))
    board.close()
    # hwloop plan reads the same file
    code = main(["plan", "--noise-model", str(tmp_path / "noise_model.toml"), "--timings",
                 str(tmp_path / "timings.json"), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["sigma_v"] == pytest.approx(sigma, rel=0.03)


def test_fit_separates_additive_and_relative_terms() -> None:
    v = np.linspace(0, 2, 50)
    var = (1e-3) ** 2 + (0.01 * v) ** 2
    s0, rel = fit_read_noise(v, var)
    assert s0 == pytest.approx(1e-3, rel=1e-6) and rel == pytest.approx(0.01, rel=1e-6)


class _NoClock:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "clock_s":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_drift_is_skipped_without_a_clock() -> None:
    board = open_board("emulator", {"arch": "1568-20-10"}, np.random.default_rng(0))
    v = np.zeros((1, 1568))
    assert measure_drift(_NoClock(board), v, 5.0) == "skipped: the backend has no clock"
    d = measure_drift(board, v, 5.0)
    assert isinstance(d, dict) and d["elapsed_s"] == pytest.approx(5.0)
    board.close()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        characterize("emulator", {"arch": "1568-20-10"}, repeats=1)
    bad = tmp_path / "nm.toml"
    bad.write_text("sigma = 1\n")
    with pytest.raises(ConfigError, match="read_noise_v"):
        emulator_options(bad)
    bad.write_text("read_noise_v = 1e-4\n[read]\nrelative = 0.01\n")
    assert "not an emulator option" in emulator_options(bad)[1][0]


def test_train_loads_a_noise_model_into_the_emulator(tmp_path: Path) -> None:
    """characterize -> noise_model.toml -> the emulator reads with that noise."""
    import numpy as np

    from hwloop.plugins import open_board
    from protocols.config import make_config, resolve
    from protocols.training import backend_options

    model = tmp_path / "nm.toml"
    model.write_text("read_noise_v = 0.003\n\n[read]\nsigma_v = 0.003\nrelative = 0.0\n")
    cfg, _ = resolve(make_config({"arch": "8-4-2", "noise_model": str(model)}))
    opts = backend_options(cfg)
    assert opts["noise_model"] == str(model)
    board = open_board("emulator", {**opts, "dtype": "float64"}, np.random.default_rng(0))
    board.apply_inputs(np.ones((1, 8)))
    board.settle()
    r = board.read_nodes(4000)
    # std of a 4000-sample std estimate: sigma / sqrt(2 * 4000) ~ 1.1 %; allow 5 %
    assert float(r.samples_v.std(axis=0).mean()) == pytest.approx(0.003, rel=0.05)
    explicit = open_board("emulator", {**opts, "read_noise_v": 0.0}, np.random.default_rng(0))
    explicit.apply_inputs(np.ones((1, 8)))
    explicit.settle()
    assert float(np.ptp(explicit.read_nodes(10).samples_v, axis=0).max()) == 0.0  # flag wins


# --------------------------------------------------------------- through a virtual real board

ADC_LSB_V = 20.0 / 2**16  # the reram preset's meter: 16 bit on +-10 V


@pytest.fixture
def served_serial_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """A virtual serial board (32-8-2, reram, read noise 2e-4 V) and its board file."""
    from simulated_device.virtual_board import VirtualBoard
    from tests.board_helpers import serial_board_text

    vb = VirtualBoard({"arch": "32-8-2", "preset": "reram", "read_noise_v": 2e-4}, seed=0)
    url = vb.start_tcp()
    monkeypatch.setenv("HWLOOP_BOARD_URL", url)
    path = tmp_path / "board.toml"
    path.write_text(serial_board_text("32-8-2", timeout_s=5.0, v_input_max_v=120.0))
    try:
        yield path
    finally:
        vb.close()


def test_characterize_the_virtual_serial_board_and_twin_it(
    served_serial_board: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """board backend -> configured read noise recovered; noise_model.toml -> emulator twin.

    Tolerance: 4 relative standard errors. With R = 200 reads, B = 4 examples and n = 10
    nodes the pooled std has s.e. 1/sqrt(2 * 199 * 40) = 0.79 %; removing the 16-bit
    quantisation (LSB**2 / 12) raises it to 0.95 % for the additive part.
    """
    from protocols.config import make_config, resolve
    from protocols.training import backend_options

    sigma = 2e-4
    out = tmp_path / "char"
    code = main(["characterize", "--backend", "board", "--option",
                 f"board={served_serial_board}", "--repeats", "200", "--adc-lsb",
                 repr(ADC_LSB_V), "--drift-time", "0", "--no-plots", "--json",
                 "--out", str(out)])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["board"] == "test serial board"
    rn = rep["node_read_noise"]
    assert (rn["n_nodes"], rn["batch"], rn["flagged_samples"]) == (10, 4, 0)
    assert rn["sigma_v_rel_se"] == pytest.approx(1 / np.sqrt(2 * 199 * 4 * 10))
    se_add = rn["sigma_v_additive_rel_se"]
    assert se_add < 0.011
    # the configured additive noise, once the ADC's quantisation is taken out
    assert abs(rn["sigma_v_additive"] / sigma - 1) < 4 * se_add
    # what a read sees: sigma and the quantisation together
    total = float(np.sqrt(sigma**2 + ADC_LSB_V**2 / 12))
    assert abs(rn["sigma_v_pooled"] / total - 1) < 4 * rn["sigma_v_rel_se"]
    model = out / "noise_model.toml"
    text = model.read_text()
    assert "adc_lsb_v" in text and "sigma_v_additive" in text

    # the twin: hwloop train --noise-model FILE on the emulator (default preset, ideal:
    # no quantisation) reads with the board's per-sample noise
    cfg, _ = resolve(make_config({"arch": "32-8-2", "dataset": "mnist-01-4x4",
                                  "noise_model": str(model)}))
    opts = backend_options(cfg)
    twin = characterize("emulator", opts, repeats=200, drift_time_s=0.0, seed=1)
    tn = twin["node_read_noise"]
    se_both = float(np.hypot(rn["sigma_v_rel_se"], tn["sigma_v_rel_se"]))
    assert abs(tn["sigma_v_pooled"] / rn["sigma_v_pooled"] - 1) < 4 * se_both


def test_hwloop_train_reads_with_the_characterized_noise(tmp_path: Path) -> None:
    """``hwloop train --noise-model FILE``: the recorded raw samples have that std."""
    import h5py

    sigma = 2.2e-4  # as the virtual serial board's characterization gives (above)
    model = tmp_path / "noise_model.toml"
    model.write_text(f"read_noise_v = {sigma!r}\n\n[read]\nsigma_v = {sigma!r}\n"
                     "relative = 0.0\n")
    run = tmp_path / "twin.h5"
    code = main(["train", "--arch", "32-8-2", "--dataset", "mnist-01-4x4", "--noise-model",
                 str(model), "--samples", "32", "--epochs", "1", "--train-limit", "16",
                 "--test-limit", "16", "--nudge", "current", "--input-gain", "20",
                 "--out", str(run)])
    assert code == 0
    with h5py.File(run, "r") as f:
        s = np.asarray(f["/steps/samples_v"], dtype=np.float64)  # (S, B, P, N, F)
    var = np.nanvar(s, axis=3, ddof=1)
    dof = int(np.isfinite(var).sum()) * (s.shape[3] - 1)
    se = 1 / np.sqrt(2 * dof)
    assert se < 0.01
    assert abs(float(np.sqrt(np.nanmean(var))) / sigma - 1) < 4 * se


# --------------------------------------------------------------- programming probe

RERAM = {"g_min": 1e-6, "g_max": 1e-4, "n_states": 100, "c2c": 0.3, "d2d": 0.3,
         "write_noise": 0.02, "read_relative": 0.01, "stuck": 0.01}
"""The reram preset's write model (simulated_device/presets/reram.toml)."""


def predicted_programming_error(prog: dict[str, Any], k: int) -> tuple[float, float]:
    """Mean and rms of ``achieved/requested - 1`` the reram write law predicts.

    From the soft-bounds law of ``simulated_device/write_model.py`` (module doc): ``k``
    pulses towards a bound at distance ``x`` change ``g`` by ``x (1 - (1 - r)^k)``,
    ``r = step / half-range``; spread from d2d and c2c (relative to that change), the
    write noise re-drawn on the first write (``write_noise * range``), the conductance
    read noise of the two reads; stuck devices (1 %) do not move. Neglected: the d2d
    spread of the bounds and clipping at the bounds.
    """
    g0, req = prog["_g0_s"], prog["_requested_s"]
    a, b = RERAM["g_min"], RERAM["g_max"]
    r = (b - a) / RERAM["n_states"] / ((b - a) / 2)
    x = np.clip(np.where(req > 0, b - g0, g0 - a), 0.0, None)
    expect = np.sign(req) * x * (1 - (1 - r) ** k)
    var = ((RERAM["d2d"] ** 2 + RERAM["c2c"] ** 2 / k) * expect**2
           + (RERAM["write_noise"] * (b - a)) ** 2
           + RERAM["read_relative"] ** 2 * (g0**2 + (g0 + expect) ** 2))
    p = RERAM["stuck"]
    ms = (1 - p) * ((expect - req) ** 2 + var) / req**2 + p * 1.0
    mean = (1 - p) * expect / req - 1
    return float(mean.mean()), float(np.sqrt(ms.mean()))


def check_programming(prog: dict[str, Any], tol: float) -> None:
    k = prog["pulses_per_edge"]
    assert prog["probe"] == "whole pulses" and prog["pulse_step_s"] == pytest.approx(0.99e-6)
    assert k == 5  # 5 % of the 99 uS range in 0.99 uS pulses
    assert np.allclose(np.abs(prog["_requested_s"]), k * 0.99e-6)
    mean, rms = predicted_programming_error(prog, k)
    assert abs(prog["error_relative_rms"] / rms - 1) < tol
    assert abs(prog["error_relative_mean"] - mean) < tol * rms


def test_programming_probe_on_reram_matches_the_write_law() -> None:
    """Whole pulses on the emulator's reram preset: error as the write law predicts.

    Tolerance 10 % of the predicted rms (about 1.1): with 2000 edges the rms has a
    sampling s.e. near 2 %, and the neglected bound spread and clipping moved it by
    under 3 % in trials; 10 % is well beyond both yet far below the 179 % of a probe
    that rounds to no pulse.
    """
    rep = characterize("emulator", {"preset": "reram"}, repeats=2, program_edges=2000,
                       drift_time_s=0.0, seed=5)
    check_programming(rep["programming"], 0.10)


def test_programming_probe_on_the_virtual_serial_board(
    served_serial_board: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same probe through the serial board protocol; granularity in every output.

    Tolerance 20 %: the 32-8-2 board has 272 edges, 256 probed, so the rms has a sampling
    s.e. near 5 %; 20 % is 4 of those.
    """
    rep = characterize("board", {"board": str(served_serial_board)}, repeats=2,
                       drift_time_s=0.0, seed=2)
    check_programming(rep["programming"], 0.20)
    out = tmp_path / "char"
    assert main(["characterize", "--backend", "board", "--option",
                 f"board={served_serial_board}", "--repeats", "2", "--drift-time", "0",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pulse granularity 9.9e-07 S per pulse" in text and "5 whole pulses" in text
    prog = json.loads((out / "report.json").read_text())["programming"]
    assert (prog["pulse_step_s"], prog["pulses_per_edge"]) == (0.99e-6, 5)
    assert "pulse granularity 9.9e-07 S per pulse" in (out / "preset.toml").read_text()
    assert (out / "programming.png").stat().st_size > 10_000


def test_a_sub_pulse_step_is_warned_about_and_options_are_exclusive() -> None:
    with pytest.warns(UserWarning, match="round to no pulse"):
        rep = characterize("emulator", {"arch": "1568-20-10", "preset": "reram"}, repeats=2,
                           program_step=0.05, drift_time_s=0.0)
    assert rep["programming"]["requested_pulses_mean"] < 1
    with pytest.raises(ConfigError, match="not both"):
        characterize("emulator", {"arch": "1568-20-10", "preset": "reram"}, repeats=2,
                     program_step=0.05, program_pulses=3)
    with pytest.raises(ConfigError, match="pulse step"):
        characterize("emulator", {"arch": "1568-20-10"}, repeats=2, program_pulses=3)


@pytest.mark.parametrize(("opts", "max_se"), [
    # the reram preset: soft bounds, d2d 0.3, write noise 2 % of the range (2 steps) and
    # 1 % read noise: both far larger than one pulse's own noise (0.3 of a step)
    ({"preset": "reram"}, 0.06),
    ({"preset": "reram", "bound_mode": "hard"}, 0.08),
    ({"preset": "reram", "c2c": 0.6}, 0.06),
    # without read and write noise the estimate is tight (hard bounds: no model bias)
    ({"preset": "reram", "bound_mode": "hard", "write_noise": 0.0, "g_read_relative": 0.0},
     0.01),
])
def test_c2c_separates_read_and_write_noise(opts: dict[str, Any], max_se: float) -> None:
    board = open_board("emulator", {"arch": "1568-8-10", **opts}, np.random.default_rng(3))
    want = float(opts.get("c2c", 0.3))
    r = measure_c2c(board, 2000, np.random.default_rng(0), n_pulses=100)
    assert isinstance(r, dict)
    assert 0 < r["c2c_se"] < max_se, r
    assert abs(r["c2c"] - want) < 3 * r["c2c_se"], r  # within 3 standard errors
    # the old probe's spread of one step (read, write noise and d2d included) is no estimate
    if opts.get("write_noise", 0.02) > 0:
        assert r["per_state_noise_s"] > 1.5 * r["step_mean_s"]  # 2 steps of write noise
    board.close()


def test_c2c_probe_restores_the_edges_and_needs_a_pulse_step() -> None:
    board = open_board("emulator", {"arch": "32-8-2", "preset": "reram", "write_noise": 0.0,
                                    "g_read_relative": 0.0}, np.random.default_rng(1))
    g = board.read_conductances()
    measure_c2c(board, 64, np.random.default_rng(0), n_pulses=10)
    step = board.describe().pulse_step_s
    moved = np.abs(board.read_conductances() - g)[~board.devices.stuck]
    assert np.median(moved) < step and np.mean(moved < 3 * step) > 0.9  # back, about
    ideal = open_board("emulator", {"arch": "32-8-2"}, np.random.default_rng(1))
    assert "skipped" in str(measure_c2c(ideal, 64, np.random.default_rng(0)))
    with pytest.raises(ConfigError, match="even number of pulses"):
        measure_c2c(board, 64, np.random.default_rng(0), n_pulses=5)
