"""Backends under the Device contract.

Each entry of ``BACKENDS`` builds a small board from a seeded generator. A
backend joins the contract suite by adding a factory here: the real board
(``instruments.real_board``) joins on the virtual serial board and on the virtual
SCPI bench (``tests/board_helpers.py``); the scriptable mock (backend ``mock``)
joins with a scripted response that stands in for the physics the contract checks
(a linear divider: every test runs against it unchanged); the replay device joins
on a recording of a short training run: it serves only what was recorded, so the
tests that apply stimuli of their own are skipped for it, by name
(``REPLAY_SKIPS``), and ``test_replay_contract.py`` checks it against its recording.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwloop.device import CurrentNudge, Device, ResistiveNudge
from hwloop.plugins import open_board
from simulated_device.mock_board import MockBoard

BoardFactory = Callable[[np.random.Generator], Device]


def _emulator(preset: str, **extra: object) -> BoardFactory:
    def make(rng: np.random.Generator) -> Device:
        return open_board("emulator", {"arch": "16-8-4", "preset": preset, **extra}, rng)

    return make


def _board_serial(rng: np.random.Generator) -> Device:
    from tests.board_helpers import open_serial

    return open_serial(int(rng.integers(2**31)), "16-8-4")[0]


def _board_scpi(rng: np.random.Generator) -> Device:
    from tests.board_helpers import open_scpi

    return open_scpi(int(rng.integers(2**31)), "16-8-4")[0]


def _board_scpi_2400(rng: np.random.Generator) -> Device:
    from tests.board_helpers import open_scpi

    return open_scpi(int(rng.integers(2**31)), "16-8-4", crosspoint_smu="keithley2400")[0]


def _linear_response(state: Any) -> np.ndarray:
    """Every node's voltage on a scripted stand-in for the physics (V).

    Free nodes sit at ``w_k * mean(inputs) * (1 + mean(g) / g_max)`` (a divider whose
    ratio follows the conductances); a resistive nudge pulls the outputs to
    ``(v + beta y) / (1 + beta)``, a current nudge raises them by ``i / g_scale``;
    input nodes read the applied inputs.
    """
    d = state.desc
    v_in = state.inputs_v
    full = np.zeros((v_in.shape[0], d.n_nodes))
    full[:, d.input_nodes] = v_in
    w = np.linspace(0.2, 1.0, len(d.free_nodes))
    scale = 1.0 + float(np.mean(state.conductances_s)) / d.g_max_s
    free = np.outer(v_in.mean(axis=1), w) * scale
    out = np.searchsorted(d.free_nodes, d.output_nodes)
    nudge = state.nudge
    if isinstance(nudge, ResistiveNudge):
        beta = float(np.real(nudge.beta_s))
        free[:, out] = (free[:, out] + beta * nudge.targets_v) / (1.0 + beta)
    elif isinstance(nudge, CurrentNudge):
        free[:, out] += np.real(nudge.currents_a) / d.g_scale_s
    full[:, d.free_nodes] = free
    return full


def _mock(rng: np.random.Generator) -> Device:
    board = open_board("mock", {"arch": "16-8-4", "pulse_step_s": 0.01}, rng)
    assert isinstance(board, MockBoard)
    board.set_response(_linear_response)
    return board


BACKENDS: dict[str, BoardFactory] = {
    # settled to 1e-12 V: exact physics, so the strict checks below apply
    "emulator-ideal": _emulator("ideal", tol_v=1e-12),
    # 4 sweeps per settle, as in training, with the realistic device model
    "emulator-reram": _emulator("reram"),
    # RealBoard (instruments.real_board) over the virtual serial board, reram devices
    "board-serial": _board_serial,
    # RealBoard over the virtual SCPI bench: 2600B SMUs, DAQ6510, 707B + pulsing SMU
    "board-scpi": _board_scpi,
    # the same bench with the virtual 2400 (SCPI) as the 707B's pulsing SMU: hwloop's
    # keithley2400 driver programs and reads every crosspoint
    "board-scpi-2400": _board_scpi_2400,
    # non-reciprocal layered network (issue 7): Newton-exact, complex nudges
    "nonreciprocal": lambda rng: open_board(
        "nonreciprocal", {"arch": "16-8-6-4", "asymmetry": 0.3}, rng
    ),
    # the scriptable mock (backend "mock") with a linear stand-in for the physics
    "mock": _mock,
    # the replay device on a recording (see replay_session)
    "replay": lambda rng: _open_replay(),
}

REPLAY = "replay"
REPLAY_SKIPS = "the replay device serves only its recording; its contract is checked " \
    "against the recording in test_replay_contract.py"
REPLAY_TESTS = {"test_is_a_device", "test_description_is_consistent",
                "test_conductances_within_bounds"}
"""Contract tests the replay device runs as they are (they apply no stimulus of their
own, or only refused ones); every other test is skipped for it with ``REPLAY_SKIPS``."""

_REPLAY_PATH: list[Path] = []


def _record_replay_session(out: Path) -> Path:
    """A short emulator run (32-8-2, 4x4 digits, 3 steps), every sample recorded."""
    from hwloop.cli import main

    path = out / "recorded.h5"
    code = main(["train", "--arch", "32-8-2", "--dataset", "mnist-01-4x4", "--train-limit",
                 "12", "--test-limit", "8", "--epochs", "1", "--beta", "0.1", "--input-gain",
                 "2", "--log-updates", "all", "--log-programming", "all", "--out", str(path),
                 "--quiet"])
    assert code == 0, "recording the replay session failed"
    return path


def _open_replay() -> Device:
    from hwloop.sessionlog import open_session
    from protocols.replay_device import ReplayDevice

    sf = open_session(_REPLAY_PATH[0])
    return ReplayDevice(sf)

# backends that cannot do resistive nudges (current sources on the outputs, no switched
# pull resistors): the resistive-nudge physics test is skipped for them, explicitly; they
# must still refuse a resistive nudge with UnsupportedError
NO_RESISTIVE_NUDGE = {"board-serial", "board-scpi", "board-scpi-2400"}

# backends whose reads and writes are exact (no noise): stricter checks apply
EXACT = {"emulator-ideal", "nonreciprocal"}


HARDWARE = "hardware"
"""The real board given with ``--hwloop-board BOARD.toml`` (opt-in; marker ``hardware``)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    params: list[object] = list(sorted(BACKENDS))
    board_file = metafunc.config.getoption("--hwloop-board")
    if board_file:
        BACKENDS[HARDWARE] = lambda rng: open_board("board", {"board": board_file}, rng)
        NO_RESISTIVE_NUDGE.add(HARDWARE)
        params.append(pytest.param(HARDWARE, marks=pytest.mark.hardware))
    metafunc.parametrize("backend", params)


@pytest.fixture(scope="session")
def replay_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recording the replay device serves (made once per test session)."""
    if not _REPLAY_PATH:
        _REPLAY_PATH.append(_record_replay_session(tmp_path_factory.mktemp("replay")))
    return _REPLAY_PATH[0]


@pytest.fixture
def board(backend: str, request: pytest.FixtureRequest) -> Iterator[Device]:
    if backend == REPLAY:
        if request.node.originalname not in REPLAY_TESTS:
            pytest.skip(REPLAY_SKIPS)
        request.getfixturevalue("replay_session")
    dev = BACKENDS[backend](np.random.default_rng(1234))
    try:
        yield dev
    finally:
        dev.close()
