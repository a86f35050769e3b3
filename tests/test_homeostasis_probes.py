"""Clamped-node probe estimate of the Jacobian (docs/estimators.md §4.2) and its use in training."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hwloop.errors import ConfigError
from hwloop.plugins import open_board
from hwloop.sessionlog import open_session
from protocols.homeostasis import NodeClamp, check_supported, probe_jacobian
from tests.board_helpers import settled_nonreciprocal
from tests.test_train_cli import assert_usage_error, cli

_ASYM = re.compile(r"epoch (\d+): jacobian asymmetry L_homeo = (\S+) S\^2")


def test_full_probe_set_recovers_the_exact_jacobian_to_second_order_in_h() -> None:
    board, _, _ = settled_nonreciprocal(asymmetry=0.5, bwd_gain=0.5)
    assert isinstance(board, NodeClamp)
    u0, exact = board.free_state(), board.jacobian()
    scale = np.abs(exact).max()
    errs = []
    for h in (4e-3, 2e-3):
        est = probe_jacobian(board, u0, np.random.default_rng(0), h_v=h)
        errs.append(np.abs(est - exact).max() / scale)
    assert errs[1] < 1e-4
    assert errs[0] / errs[1] == pytest.approx(4.0, rel=0.1)  # central differences: O(h^2)
    np.testing.assert_allclose(board.clamp_node_currents(u0), 0.0, atol=1e-10 * scale)


def test_a_few_random_probes_are_unbiased() -> None:
    """P = 3 of n = 17 directions: the mean of 400 estimates is J within its standard
    error (mean z^2 about 1 over all 1,156 entries)."""
    board, _, _ = settled_nonreciprocal(asymmetry=0.5)
    u0, exact = board.free_state(), board.jacobian()
    rng = np.random.default_rng(1)
    draws = np.stack([probe_jacobian(board, u0, rng, n_probes=3) for _ in range(400)])
    sem = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    ok = sem > 1e-12 * np.abs(exact).max()  # entries a probe cannot vary are exact
    z2 = ((draws.mean(axis=0) - exact)[ok] / sem[ok]) ** 2
    assert 0.8 < z2.mean() < 1.25, z2.mean()


def test_probe_arguments_and_boards_without_clamps_are_refused() -> None:
    board, _, _ = settled_nonreciprocal()
    u0 = board.free_state()
    with pytest.raises(ConfigError, match=r"1\.\.17"):
        probe_jacobian(board, u0, np.random.default_rng(0), n_probes=18)
    with pytest.raises(ConfigError, match="positive"):
        probe_jacobian(board, u0, np.random.default_rng(0), h_v=0.0)
    emu = open_board("emulator", {"arch": "6-4-3"}, np.random.default_rng(0))
    assert not isinstance(emu, NodeClamp)
    with pytest.raises(ConfigError, match="non-reciprocal"):
        check_supported(emu.describe(), emu, probes=True)


def _asym(path: Path) -> list[float]:
    with open_session(path) as sf:
        events = sf.events()
    return [float(m.group(2)) for e in events if (m := _ASYM.match(e["message"]))]


def test_training_with_probed_homeostasis_lowers_the_asymmetry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bench path (26 probe pairs per step, no exact Jacobian) against no homeostasis,
    same seed and network: the epoch-end asymmetry falls below 30 % as with the exact path
    (tests/test_train_nonreciprocal.py)."""
    finals = {}
    for name, extra in (("none", ["--homeostasis", "0"]),
                        ("probes", ["--homeostasis", "10", "--homeostasis-probes", "26"])):
        out = tmp_path / f"{name}.h5"
        code, _, _ = cli(
            capsys, "train", "--backend", "nonreciprocal", "--arch", "1568-16-10", "--quiet",
            "--json", "--test-limit", "200", "--epochs", "2", "--train-limit", "200",
            "--asymmetry", "1.0", "--write-noise", "0.5", *extra, "--seed", "2", "--out", out,
        )
        assert code == 0
        finals[name] = _asym(out)
    a0, ap = finals["none"], finals["probes"]
    assert len(a0) == len(ap) == 2
    assert ap[1] < ap[0] and ap[1] < 0.3 * a0[1], finals


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--backend", "nonreciprocal", "--homeostasis-probes", "4"], "homeostasis_probes needs"),
        (["--backend", "nonreciprocal", "--homeostasis", "1", "--homeostasis-probes", "-1"],
         "homeostasis_probes"),
        (["--backend", "nonreciprocal", "--homeostasis", "1", "--homeostasis-probes", "27"],
         "exceeds the board's 26 free nodes"),
    ],
)
def test_bad_probe_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    out = tmp_path / "bad.h5"
    code, stdout, err = cli(capsys, "train", "--arch", "1568-16-10", *argv, "--out", out,
                            "--quiet")
    assert_usage_error(code, stdout, err, needle)
    assert not out.exists()
