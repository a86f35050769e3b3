"""Backends under the Device contract.

Each entry of ``BACKENDS`` builds a small board from a seeded generator. A
backend joins the contract suite by adding a factory here: the real board
(``instruments.real_board``) joins on the virtual serial board and on the virtual
SCPI bench (``tests/board_helpers.py``); the replay board adds its own later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from hwloop.device import Device
from hwloop.plugins import open_board

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


BACKENDS: dict[str, BoardFactory] = {
    # settled to 1e-12 V: exact physics, so the strict checks below apply
    "emulator-ideal": _emulator("ideal", tol_v=1e-12),
    # 4 sweeps per settle, as in training, with the realistic device model
    "emulator-reram": _emulator("reram"),
    # RealBoard (instruments.real_board) over the virtual serial board, reram devices
    "board-serial": _board_serial,
    # RealBoard over the virtual SCPI bench: 2600B SMUs, DAQ6510, 707B + pulsing SMU
    "board-scpi": _board_scpi,
    # non-reciprocal layered network (issue 7): Newton-exact, complex nudges
    "nonreciprocal": lambda rng: open_board(
        "nonreciprocal", {"arch": "16-8-6-4", "asymmetry": 0.3}, rng
    ),
}

# backends that cannot do resistive nudges (current sources on the outputs, no switched
# pull resistors): the resistive-nudge physics test is skipped for them, explicitly; they
# must still refuse a resistive nudge with UnsupportedError
NO_RESISTIVE_NUDGE = {"board-serial", "board-scpi"}

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


@pytest.fixture
def board(backend: str) -> Iterator[Device]:
    dev = BACKENDS[backend](np.random.default_rng(1234))
    try:
        yield dev
    finally:
        dev.close()
