"""hwloop plan: the noise-limit formula, the N recommendation, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwloop.cli import main
from hwloop.errors import ConfigError
from protocols.planner import (
    critical_noise,
    effective_displacement,
    predict,
    recommend_samples,
)


def test_effective_displacement_by_hand() -> None:
    beta = 0.5
    d = 2e-4
    # centered: c = -+1/(2 beta) at -+beta, displacements -d and +d
    # signal = (d/2beta + d/2beta) = d/beta; norm = sqrt(2)/(2 beta) -> d_eff = sqrt(2) d
    centered = effective_displacement(
        {-beta: np.array([-d]), beta: np.array([d])},
        {-beta: -1 / (2 * beta), beta: 1 / (2 * beta)},
    )
    assert centered[0] == pytest.approx(math.sqrt(2) * d, rel=1e-12)
    # one-sided: c = -1/beta, +1/beta at 0, beta; signal d/beta; norm sqrt(2)/beta -> d/sqrt(2)
    one = effective_displacement({beta: np.array([d])}, {0.0: -1 / beta, beta: 1 / beta})
    assert one[0] == pytest.approx(d / math.sqrt(2), rel=1e-12)
    # asymmetric nudge response: signal |c+ d+ + c- d-|
    asym = effective_displacement(
        {-1.0: np.array([-1e-4]), 1.0: np.array([3e-4])}, {-1.0: -0.5, 1.0: 0.5}
    )
    assert asym[0] == pytest.approx(2e-4 / math.sqrt(0.5), rel=1e-12)
    assert critical_noise(2e-4, snr_c=2.0) == pytest.approx(1e-4)


def test_recommend_samples_arithmetic() -> None:
    # target (1 - 0.2) * 1e-4 = 8e-5; (1e-3 / 8e-5)^2 = 156.25 -> N = 157
    n, margin = recommend_samples(1e-3, 1e-4, 0.2)
    assert n == 157
    assert margin == pytest.approx(1 - 1e-3 / math.sqrt(157) / 1e-4, rel=1e-12)
    assert margin >= 0.2
    # an exact square stays exact: (8e-4 / 8e-5)^2 = 100
    assert recommend_samples(8e-4, 1e-4, 0.2) == (100, pytest.approx(0.2))
    # below the limit already: one sample
    assert recommend_samples(5e-5, 1e-4, 0.2) == (1, pytest.approx(0.5))
    assert recommend_samples(0.0, 1e-4, 0.2) == (1, 1.0)
    with pytest.raises(ConfigError):
        recommend_samples(1e-3, 1e-4, 1.0)
    with pytest.raises(ConfigError):
        recommend_samples(-1.0, 1e-4)


def test_prediction_scales_with_beta_and_not_with_the_noise() -> None:
    vals = {"arch": "1568-100-10", "beta": 0.25}
    p1 = predict(vals, sigma_v=1e-2, measure_timings=False)
    p2 = predict({**vals, "beta": 0.5}, sigma_v=1e-2, measure_timings=False)
    assert p1.limiting_layer == 1  # the first hidden layer limits (docs/physics.md §6.4)
    assert p1.sigma_c_v == pytest.approx(p1.layer_d_eff_v[0])
    # centered: d_eff = sqrt(2) x the one-sided displacement when d+ ~ d-
    assert p1.layer_d_eff_v[0] == pytest.approx(math.sqrt(2) * p1.layer_d_onesided_v[0], rel=0.1)
    assert p2.sigma_c_v / p1.sigma_c_v == pytest.approx(2.0, rel=0.1)  # sigma_c ~ beta
    assert p1.samples is not None and p1.margin is not None and p1.margin >= 0.2
    assert p1.sigma_v is not None
    assert p1.sigma_v / math.sqrt(p1.samples) <= 0.8 * p1.sigma_c_v


def test_plan_cli_json_with_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = tmp_path / "timings.toml"
    t.write_text("settle_s = 0.01\nread_per_sample_s = 0.002\nprogram_s = 0.5\n")
    nm = tmp_path / "noise.json"
    nm.write_text(json.dumps({"read_noise_v": 3e-3}))
    code = main(["plan", "--arch", "1568-100-10", "--noise-model", str(nm), "--timings", str(t),
                 "--train-limit", "40", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    p = json.loads(out)
    n = p["samples"]
    assert p["sigma_v"] == 3e-3 and n == recommend_samples(3e-3, p["sigma_c_v"], 0.2)[0]
    # centered: 3 phases (free, -beta, +beta), batch 4 -> 10 steps per epoch
    assert p["step_time_s"] == pytest.approx(3 * (0.01 + n * 0.002) + 0.5)
    assert p["steps_per_epoch"] == 10
    assert p["epoch_time_s"] == pytest.approx(10 * p["step_time_s"])
    code = main(["plan", "--sigma", "1e-3", "--noise-model", str(nm)])
    assert code == 2 and "not both" in capsys.readouterr().err


# --------------------------------------------------------------- through a virtual real board


def _plan_on_virtual_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    read_noise_v: float, reads: int,
) -> dict[str, Any]:
    """``hwloop plan --backend board`` on a virtual serial board (32-8-2, seed 0), as JSON."""
    from simulated_device.virtual_board import VirtualBoard
    from tests.board_helpers import serial_board_text

    vb = VirtualBoard({"arch": "32-8-2", "preset": "reram", "read_noise_v": read_noise_v},
                      seed=0)
    try:
        monkeypatch.setenv("HWLOOP_BOARD_URL", vb.start_tcp())
        path = tmp_path / "board.toml"
        path.write_text(serial_board_text("32-8-2", timeout_s=5.0, v_input_max_v=120.0))
        capsys.readouterr()
        code = main(["plan", "--backend", "board", "--board", str(path), "--nudge", "current",
                     "--dataset", "mnist-01-4x4", "--input-gain", "20", "--examples", "8",
                     "--reads", str(reads), "--sigma", "1e-3", "--json"])
    finally:
        vb.close()
    assert code == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_plan_through_the_virtual_serial_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The board backend: current nudges and averaged reads; the displacement measured under
    read noise agrees with the one measured on the same board with no added noise."""
    quiet = _plan_on_virtual_board(tmp_path, monkeypatch, capsys, 0.0, 16)
    noisy = _plan_on_virtual_board(tmp_path, monkeypatch, capsys, 2e-3, 64)
    assert noisy["reads"] == 64 and noisy["nudge"] == "current"
    assert noisy["arch"] == "32-8-2"  # from the board file
    floor = noisy["layer_d_eff_floor_v"]
    assert isinstance(floor, list) and len(floor) == 2
    # one averaged read: 2e-3 V / sqrt(64) per node (the ADC adds 1 %); allow 15 %
    assert floor[0] == pytest.approx(2e-3 / 8, rel=0.15)
    eff_q, eff_n = quiet["layer_d_eff_v"], noisy["layer_d_eff_v"]
    # layer means over nodes x 8 examples: their noise is well below one floor, and the
    # |.| bias is about floor**2 / d at most. Allow 3 floors.
    for q, n, f in zip(eff_q, eff_n, floor, strict=True):
        assert abs(n - q) < 3 * f, (q, n, f)
    assert noisy["sigma_c_v"] == pytest.approx(min(eff_n))
    assert not any("WARNING" in a for a in noisy["assumptions"])


def test_plan_names_each_assumption_with_what_the_data_say(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["plan", "--arch", "1568-100-10", "--examples", "4"])
    assert code == 0
    out = capsys.readouterr().out
    assumptions = out[out.index("assumptions:"):]
    # the assumption the project's own data contradict is named as such, with its evidence
    line = next(ln for ln in assumptions.splitlines() if "does not depend on the dataset" in ln)
    assert "NOT supported" in line and "Fashion-MNIST" in line and "docs/uncertainty.md" in line
    sqrt_line = next(ln for ln in assumptions.splitlines() if "sqrt(N)" in ln and "scales" in ln)
    assert ": supported (" in sqrt_line
    batch_line = next(ln for ln in assumptions.splitlines() if "batch size" in ln)
    assert "NOT supported" in batch_line and "docs/uncertainty.md" in batch_line
    # every pointer names a section that exists in the document
    doc = (Path(__file__).resolve().parents[1] / "docs" / "uncertainty.md").read_text()
    for pointer in ("The reproduction", "The planner against batch size and learning rate",
                    "A sigma/sqrt(N) test that could fail"):
        assert f"docs/uncertainty.md, {pointer}" in assumptions
        assert f"\n## {pointer}" in doc
