"""Backends under the Device contract.

Each entry of ``BACKENDS`` builds a small board from a seeded generator. A
backend joins the contract suite by adding a factory here (the real board on
virtual instruments and the replay board add theirs in later issues).
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


BACKENDS: dict[str, BoardFactory] = {
    # settled to 1e-12 V: exact physics, so the strict checks below apply
    "emulator-ideal": _emulator("ideal", tol_v=1e-12),
    # 4 sweeps per settle, as in training, with the realistic device model
    "emulator-reram": _emulator("reram"),
}

# backends whose reads and writes are exact (no noise): stricter checks apply
EXACT = {"emulator-ideal"}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def board(backend: str) -> Iterator[Device]:
    dev = BACKENDS[backend](np.random.default_rng(1234))
    try:
        yield dev
    finally:
        dev.close()
