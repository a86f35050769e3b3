"""Resume on a backend that cannot restore its state (a real board): the device is the truth.

The board is not rewound: its conductances are re-read, their distance from the
checkpoint is recorded in the ``resume`` event, and training continues from the
device's own state, appending to the same file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import protocols.commands as commands
from hwloop.cli import main
from hwloop.device import Checkpointable
from hwloop.plugins import open_board
from hwloop.sessionlog import open_session

RUN = ["--arch", "1568-100-10", "--batch-size", "32", "--train-limit", "128", "--test-limit", "32",
       "--samples", "2", "--read-noise", "0.01", "--seed", "5", "--quiet"]


class _NoStateBoard:
    """An emulator seen through the Device interface only (no checkpoint_state)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("checkpoint_state", "restore_state"):
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_resume_without_exact_state_continues_from_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.h5"
    boards: list[Any] = []

    def fake_open(backend: str, options: dict[str, Any], rng: np.random.Generator) -> Any:
        b = _NoStateBoard(open_board(backend, options, rng))  # fresh: untrained conductances
        boards.append(b)
        return b

    monkeypatch.setattr(commands, "open_board", fake_open)
    assert main(["train", *RUN, "--epochs", "1", "--out", str(out)]) == 0
    with open_session(out) as sf:
        g_trained = sf.checkpoint(-1).arrays["conductances_s"]
        steps_before = sf.steps_done
        assert not any(n.startswith("board/") for n in sf.checkpoint_names())

    assert not isinstance(_NoStateBoard(object()), Checkpointable)
    assert main(["resume", str(out), "--epochs", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "continuing from the board's state" in err
    with open_session(out) as sf:
        assert sf.status == "completed" and sf.steps_done == 2 * steps_before
        assert len(sf.epochs()) == 2
        ev = [e for e in sf.events() if e["kind"] == "resume"]
        assert len(ev) == 1
        m = re.search(r"at most ([0-9.e+-]+) S", ev[0]["message"])
        assert m is not None
        # the fresh board's conductances are its initial ones: the recorded distance is
        # exactly the change that training made to them
        g0 = sf.checkpoint(0).arrays["conductances_s"]
        assert float(m.group(1)) == pytest.approx(np.max(np.abs(g0 - g_trained)), rel=1e-2)
        assert float(m.group(1)) > 0
    assert len(boards) == 2
