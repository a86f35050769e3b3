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
from protocols.characterize import characterize, fit_read_noise, measure_drift
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
