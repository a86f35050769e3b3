"""Backend option tables: every emulator device and noise field from TOML and the CLI,
one-line errors, presets as data files, characterised boards as presets (issue 13 part 3)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwloop.device_preset import parse_preset, preset_toml
from hwloop.errors import ConfigError
from hwloop.plugins import open_board, parse_option_assignments
from protocols.config import make_config
from protocols.training import backend_options
from simulated_device.board import READ_OPTIONS, WRITE_OPTIONS, EmulatedBoard
from simulated_device.device_models import PRESET_SOURCES, PRESETS, get_preset, preset_tables

# option -> (a valid value away from the reram preset's, model part, field, expected value)
CASES: dict[str, tuple[Any, str, str, Any]] = {
    "read_noise_v": (2e-3, "read", "sigma_v", 2e-3),
    "read_noise_relative": (0.05, "read", "relative", 0.05),
    "read_noise_slow_v": (1e-4, "read", "slow_v", 1e-4),
    "adc_bits": (12, "read", "adc_bits", 12),
    "adc_range_v": (5.0, "read", "adc_range_v", 5.0),
    "g_min_s": (2e-6, "write", "g_min_s", 2e-6),
    "g_max_s": (2e-4, "write", "g_max_s", 2e-4),
    "n_states": (50.0, "write", "n_states", 50.0),
    "bound_mode": ("hard", "write", "bound_mode", "hard"),
    "c2c": (0.1, "write", "c2c", 0.1),
    "d2d": (0.05, "write", "d2d", 0.05),
    "up_down": (-0.2, "write", "up_down", -0.2),
    "up_down_d2d": (0.01, "write", "up_down_d2d", 0.01),
    "bounds_d2d": (0.1, "write", "bounds_d2d", 0.1),
    "write_noise": (0.05, "write", "write_noise", 0.05),
    "stuck_fraction": (0.2, "write", "stuck_fraction", 0.2),
    "g_read_relative": (0.03, "write", "read_relative", 0.03),
    "drift_nu": (0.06, "write", "drift_nu", 0.06),
    "drift_t0_s": (5.0, "write", "drift_t0_s", 5.0),
    "drift_nu_d2d": (0.02, "write", "drift_nu_d2d", 0.02),
}


def test_every_read_and_write_field_has_an_option() -> None:
    names = {o.name for o in (*READ_OPTIONS, *WRITE_OPTIONS)}
    assert names == set(CASES)
    reram = PRESETS["reram"]
    fields = {("read", f) for f in vars(reram.read)} | {("write", f) for f in vars(reram.write)}
    assert {(part, field) for _, part, field, _ in CASES.values()} == fields


def _model(table: dict[str, Any]) -> Any:
    cfg = make_config({"arch": "16-8-4", "backend": {"name": "emulator", "preset": "reram",
                                                    **table}})
    board = open_board("emulator", backend_options(cfg), np.random.default_rng(0))
    assert isinstance(board, EmulatedBoard)
    return board.model


@pytest.mark.parametrize("key", sorted(CASES))
def test_each_option_reaches_its_field_from_toml_and_the_cli(key: str) -> None:
    value, part, field, expected = CASES[key]
    assert getattr(getattr(PRESETS["reram"], part), field) != expected
    # a [backend] table as TOML parses it
    toml_value = f'"{value}"' if isinstance(value, str) else repr(value)
    table = tomllib.loads(f"[backend]\n{key} = {toml_value}\n")["backend"]
    model = _model(table)
    assert getattr(getattr(model, part), field) == expected
    assert key.replace("_v", "") in model.name  # the model's name records the change
    # --backend-opt KEY=VALUE (a string, parsed by the declaration)
    parsed = parse_option_assignments("emulator", [f"{key}={value}"])
    assert getattr(getattr(_model(parsed), part), field) == expected
    # every other field keeps the preset's value
    for other, (_, p2, f2, _) in CASES.items():
        if other != key and key not in ("g_min_s", "g_max_s", "n_states"):
            assert getattr(getattr(model, p2), f2) == getattr(getattr(PRESETS["reram"], p2), f2)


def test_special_values_turn_features_off() -> None:
    m = _model({"adc_bits": 0, "adc_range_v": math.inf})
    assert m.read.adc_bits is None and math.isinf(m.read.adc_range_v)
    m = _model({"n_states": 0, "c2c": 0.0, "d2d": 0.0, "up_down_d2d": 0.0,
                "g_max_s": math.inf, "write_noise": 0.0})
    assert m.write.n_states is None and m.write.is_continuous


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("c2c=-1", "backend emulator option c2c = -1 is out of range; pass [0, 10]"),
        ("adc_range_v=abc", "option adc_range_v = abc must be a number; pass > 0 V"),
        ("drift_t0_s=0", "option drift_t0_s = 0 is out of range; pass (0, 1e+09] s"),
        ("up_down=1", "option up_down = 1 is out of range; pass (-1, 1)"),
        ("bound_mode=medium",
         "option bound_mode = 'medium' is not allowed; pass one of hard, soft"),
        ("adc_bits=40", "option adc_bits = 40 is out of range; pass [0, 32] bit"),
        ("adc_bits=12.5", "option adc_bits = 12.5 must be an integer"),
        ("read_noise_v=nan", "option read_noise_v = nan must be a number; pass [0, 1] V"),
        ("g_max_s=-inf", "option g_max_s = -inf must be a number"),
        ("cc2=0.1", "backend emulator has no option 'cc2'"),
    ],
)
def test_bad_values_are_one_line_errors_naming_key_unit_and_range(item: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_option_assignments("emulator", [item])
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_a_combination_the_model_refuses_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"n_states=50\.0 needs a finite g_max_s") as err:
        _model({"preset": "ideal", "n_states": 50.0})
    assert "\n" not in str(err.value)


def test_cli_lists_and_validates(tmp_path: Path) -> None:
    def hw(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hwloop.cli", *a], capture_output=True,
                              text=True, timeout=300)

    r = hw("backends", "emulator")
    assert r.returncode == 0, r.stderr
    for line in ("drift_t0_s (float, s; (0, 1e+09] s; unset)", "adc_bits (int, bit; [0, 32] bit",
                 "g_max_s (float, S; > 0 S (inf allowed)", "preset pcm: phase-change memory"):
        assert line in r.stdout, line
    out = tmp_path / "r.h5"
    r = hw("train", "--arch", "32-8-2", "--dataset", "mnist-01-4x4", "--backend-opt",
           "stuck_fraction=2", "--out", str(out))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and not out.exists()
    assert "stuck_fraction = 2 is out of range; pass [0, 1]" in r.stderr


# ----------------------------------------------------------------------------- presets


def test_packaged_presets_are_data_files_with_sources() -> None:
    assert {"ideal", "reram", "pcm", "taox"} <= set(PRESETS)
    for name in PRESETS:
        assert len(PRESET_SOURCES[name]) > 20, name
    # the reram file carries the device-models notes' section 6 numbers
    w, r = PRESETS["reram"].write, PRESETS["reram"].read
    assert (w.g_min_s, w.g_max_s, w.n_states, w.bound_mode) == (1e-6, 1e-4, 100, "soft")
    assert (w.c2c, w.d2d, w.up_down_d2d, w.bounds_d2d) == (0.3, 0.3, 0.05, 0.2)
    assert (w.write_noise, w.stuck_fraction, w.read_relative, w.drift_nu) == (0.02, 0.01, 0.01, 0)
    assert (r.adc_bits, r.adc_range_v, r.sigma_v) == (16, 10.0, 20 / 2**16)
    pcm = PRESETS["pcm"].write
    assert pcm.drift_nu == 0.05 and pcm.drift_t0_s == 20.0 and pcm.g_max_s == 25e-6
    assert PRESETS["taox"].write.g_max_s == 150e-6
    assert PRESETS["ideal"].read.is_ideal and PRESETS["ideal"].write.is_continuous


def test_a_users_preset_file_by_path_round_trips(tmp_path: Path) -> None:
    read, write = preset_tables(PRESETS["pcm"])
    write["drift_nu"] = 0.08
    text = preset_toml("my pcm", "my lab, 2026", read, write)
    path = tmp_path / "mine.toml"
    path.write_text(text)
    model = get_preset(str(path))
    assert model.name == "my pcm" and model.write.drift_nu == 0.08
    assert model.read == PRESETS["pcm"].read
    board = open_board("emulator", {"arch": "16-8-4", "preset": str(path)},
                       np.random.default_rng(0))
    assert board.describe().g_max_s == 25e-6


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[write]\nc3c = 0.1\n", "unknown key write.c3c"),
        ("[write]\nc2c = \"x\"\n", "write.c2c = 'x' must be a number"),
        ("[read]\nadc_bits = 12.5\n", "read.adc_bits = 12.5 must be an integer"),
        ("color = 1\n", "unknown key 'color'"),
        ("[write\n", "is not valid TOML"),
    ],
)
def test_bad_preset_files_are_one_line_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        get_preset(str(path))
    assert needle in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"cannot be read .* UTF-8"):
        get_preset(str(path))
    with pytest.raises(ConfigError, match="known presets: ideal, pcm, reram, taox, or a "):
        get_preset("rerram")


def test_characterize_writes_a_preset_the_emulator_takes(tmp_path: Path) -> None:
    from hwloop.cli import main

    out = tmp_path / "char"
    code = main(["characterize", "--backend-opt", "arch=32-8-2", "--backend-opt",
                 "preset=reram", "--repeats", "20", "--edges", "64", "--adc-lsb",
                 str(20 / 2**16), "--no-plots", "--out", str(out)])
    assert code == 0
    data = parse_preset((out / "preset.toml").read_text(), "preset.toml")
    assert data["read"]["adc_bits"] == 16 and data["read"]["adc_range_v"] == 10.0
    assert data["write"]["g_min_s"] == 1e-6 and data["write"]["n_states"] == pytest.approx(100)
    # the measured additive noise is the preset's 1 LSB within the estimate's error (~4 %)
    assert data["read"]["sigma_v"] == pytest.approx(20 / 2**16, rel=0.15)
    assert data["write"]["read_relative"] == pytest.approx(0.01, rel=0.3)
    model = get_preset(str(out / "preset.toml"))
    assert model.read.adc_bits == 16
    board = open_board("emulator", {"arch": "32-8-2", "preset": str(out / "preset.toml")},
                       np.random.default_rng(0))
    assert re.match("characterised", board.describe().info["device_model"])  # type: ignore[arg-type]


def test_a_preset_path_is_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stores its option table; a relative preset path would break a resume elsewhere."""
    read, write = preset_tables(PRESETS["reram"])
    (tmp_path / "mine.toml").write_text(preset_toml("mine", "test", read, write))
    monkeypatch.chdir(tmp_path)
    table = parse_option_assignments("emulator", ["preset=mine.toml", "n_sweeps=3"])
    assert table["preset"] == str(tmp_path / "mine.toml")
    assert parse_option_assignments("emulator", ["preset=reram"])["preset"] == "reram"
    with pytest.raises(ConfigError, match="unknown device preset 'rerram'"):
        get_preset(parse_option_assignments("emulator", ["preset=rerram"])["preset"])
