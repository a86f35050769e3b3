"""The five commands on the session file of every backend (issue 14, part 4).

A short run of each installed backend (``hwloop backends``; the real board on the
virtual serial board and on the virtual SCPI bench, each served by a
``hwloop virtual-board`` process) goes through ``train -> inspect -> evaluate ->
resume -> replay``: every command exits 0, ``inspect`` verifies every step's checksum,
``evaluate`` reports an accuracy, ``resume`` appends an epoch to the same file and
``replay`` finds the whole run, resumed part included, identical to its recording.
A backend installed later fails :func:`test_every_installed_backend_is_covered` until
it has a run here.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hwloop.plugins import backend_names
from hwloop.sessionlog import open_session
from tests.board_helpers import scpi_board_text, serial_board_text
from tests.procs import child, run_cli, steps_recorded, wait_until

ARCH = "32-8-2"
COMMON = ["--dataset", "mnist-01-4x4", "--train-limit", "24", "--test-limit", "8",
          "--batch-size", "4", "--seed", "3", "--quiet"]
STEPS_PER_EPOCH = 24 // 4

RUNS: dict[str, list[str]] = {
    "emulator": ["--backend", "emulator", "--arch", ARCH],
    # one more hidden layer: the amplifiers sit between layers
    "nonreciprocal": ["--backend", "nonreciprocal", "--arch", "32-8-6-2"],
    # the mock refuses inputs above 10 V: the generic input gain (28 V) does not fit
    "mock": ["--backend", "mock", "--arch", ARCH, "--input-gain", "2"],
    # board files: 10 V inputs and 0.2 mA nudge currents at most
    "board-serial": ["--backend", "board", "--arch", ARCH, "--input-gain", "2", "--beta", "0.1"],
    "board-scpi": ["--backend", "board", "--arch", ARCH, "--input-gain", "2", "--beta", "0.1"],
}
"""Training options of each backend's short run (2 epochs of 6 steps)."""

COVERS = {"emulator": "emulator", "nonreciprocal": "nonreciprocal", "mock": "mock",
          "board-serial": "board", "board-scpi": "board"}


def test_every_installed_backend_is_covered() -> None:
    assert set(backend_names()) == set(COVERS.values())


@contextlib.contextmanager
def virtual_board(kind: str, tmp_path: Path, seed: int = 2) -> Iterator[Path]:
    """A ``hwloop virtual-board`` process for the block and a board file naming it."""
    cmd = [sys.executable, "-m", "hwloop.cli", "virtual-board", "--kind", kind, "--arch", ARCH,
           "--seed", str(seed), "--json"]
    with child(cmd) as proc:  # the whole group is killed when the block ends
        info = json.loads(proc.wait_line(lambda line: line.endswith("\n")))
        text = serial_board_text(ARCH) if kind == "serial" else scpi_board_text(ARCH)
        for name, value in info["env"].items():
            text = text.replace("${" + name + "}", value)
        assert "${" not in text
        board = tmp_path / f"{kind}.toml"
        board.write_text(text)
        yield board


@contextlib.contextmanager
def backend_run(name: str, tmp_path: Path) -> Iterator[list[str]]:
    """The ``hwloop train`` options of ``name``'s run, its instruments served for the block."""
    opts = list(RUNS[name])
    if name.startswith("board-"):
        with virtual_board(name.removeprefix("board-"), tmp_path) as board:
            yield [*opts, "--board", str(board)]
    else:
        yield opts


@pytest.mark.parametrize("name", sorted(RUNS))
def test_five_commands(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run.h5"
    with backend_run(name, tmp_path) as opts:
        code, out, err = run_cli(capsys, "train", *opts, *COMMON, "--epochs", "2", "--out", run)
        assert code == 0, err
        with open_session(run) as sf:
            assert sf.status == "completed" and sf.steps_done == 2 * STEPS_PER_EPOCH

        code, out, err = run_cli(capsys, "inspect", "--json", run)
        assert code == 0, err
        info = json.loads(out)
        assert info["integrity"] == [] and info["steps_verified"] == 2 * STEPS_PER_EPOCH
        assert info["board"]["backend"] == COVERS[name]

        code, out, err = run_cli(capsys, "evaluate", "--json", "--dataset", "mnist-01-4x4", run)
        assert code == 0, err
        ev = json.loads(out)
        assert ev["backend"] == COVERS[name] and ev["n"] > 0 and 0.0 <= ev["accuracy"] <= 1.0
        assert np.isfinite(ev["loss"])

        code, out, err = run_cli(capsys, "resume", "--epochs", "3", "--quiet", run)
        assert code == 0, err
        with open_session(run) as sf:
            assert sf.status == "completed" and sf.steps_done == 3 * STEPS_PER_EPOCH
            assert len(sf.epochs()) == 3
            assert [e["kind"] for e in sf.events()].count("resume") == 1

    # replay needs no board: it serves the recording
    code, out, err = run_cli(capsys, "replay", run)
    assert code == 0, out + err
    assert re.match(rf"identical: steps 0\.\.{3 * STEPS_PER_EPOCH - 1} ", out), out


def test_evaluate_takes_noisy_reads_at_a_bound_and_rejects_far_outside(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hwloop.errors import ConfigError
    from hwloop.plugins import open_board
    from protocols.commands import READ_MARGIN, _programmable_targets

    board = open_board("emulator", {"arch": "4-2-1", "preset": "reram"},
                       np.random.default_rng(0))
    try:
        desc = board.describe()
    finally:
        board.close()
    lo, hi = desc.g_min_s, desc.g_max_s
    width = hi - lo
    g = np.full(desc.n_edges, 0.5 * (lo + hi))
    g[0], g[1] = lo - 0.5 * READ_MARGIN * width, hi + 0.25 * READ_MARGIN * width
    out = _programmable_targets(g, desc, "r.h5")
    assert out[0] == lo and out[1] == hi and np.array_equal(out[2:], g[2:])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 stored conductance(s)" in err and "warning" in err
    g[1] = hi + 1.01 * READ_MARGIN * width
    with pytest.raises(ConfigError, match="outside the board's range"):
        _programmable_targets(g, desc, "r.h5")
    g[1] = np.nan
    with pytest.raises(ConfigError, match="not finite"):
        _programmable_targets(g, desc, "r.h5")


KILL_RUNS: dict[str, list[str]] = {
    # fast backends: many short steps, so the kill lands well before the end
    "emulator": ["--train-limit", "300", "--batch-size", "1", "--commit-every", "7"],
    "nonreciprocal": ["--train-limit", "300", "--batch-size", "2", "--commit-every", "7"],
    "mock": ["--train-limit", "300", "--batch-size", "1", "--commit-every", "7"],
    # a bench step takes milliseconds to seconds: the default commit (every step)
    "board-serial": ["--train-limit", "80", "--batch-size", "4"],
    "board-scpi": ["--train-limit", "48", "--batch-size", "4"],
}
"""Options of the run that is killed (2 epochs), over those of :data:`RUNS`."""

RESTORABLE = {"emulator"}
"""Backends whose state a checkpoint restores exactly: resume re-verifies the steps after it."""

KILL_AFTER = 10
"""The run is killed as soon as it has committed this many steps."""


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_killed_and_resumed_run_replays_identical(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL mid-run, ``hwloop resume``, then ``hwloop replay``: identical, no divergence.

    The resumed part starts from the checkpoint (a restorable backend recomputes the
    uncommitted tail) or from the board's re-read conductances (recorded in the resume
    event and the checkpoint after it): replay follows the recording across the resume.
    """
    run = tmp_path / "killed.h5"
    with backend_run(name, tmp_path) as opts:
        argv = [*opts, *COMMON, *KILL_RUNS[name], "--epochs", "2", "--out", str(run)]
        cmd = [sys.executable, "-m", "hwloop.cli", "train", *argv]
        with child(cmd) as proc:  # killed with its group however the block ends
            assert wait_until(lambda: steps_recorded(run) >= KILL_AFTER
                              or proc.proc.poll() is not None)
            proc.signal(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL, proc.text("stderr")
        with open_session(run) as sf:
            assert sf.status in ("running", "crashed")
            killed_at = sf.steps_done
            kill_opts = KILL_RUNS[name]
            total = 2 * int(kill_opts[1]) // int(kill_opts[3])  # 2 epochs
            assert KILL_AFTER <= killed_at < total

        code, out, err = run_cli(capsys, "resume", run)
        assert code == 0, err
    if name in RESTORABLE:  # the committed steps after the checkpoint are re-run and checked
        assert re.search(r"re-verified (\d+) step\(s\)", err), err
    with open_session(run) as sf:
        # a board that cannot restore its state keeps the steps it applied after the
        # checkpoint and trains their examples again: more steps than the plain run
        assert sf.status == "completed" and total <= sf.steps_done <= total + killed_at
        assert len(sf.epochs()) == 2 and sf.integrity(full=True) == []
        total = sf.steps_done
        assert [e["kind"] for e in sf.events()].count("resume") == 1

    code, out, err = run_cli(capsys, "replay", run)
    assert code == 0, out + err
    assert re.match(rf"identical: steps 0\.\.{total - 1} ", out), out


def test_replay_shows_progress_unless_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into a pipe or a file (not a terminal) replay writes a line per interval, none quiet."""
    import protocols.progress

    run = tmp_path / "run.h5"
    code, _, err = run_cli(capsys, "train", *RUNS["emulator"], *COMMON, "--epochs", "2",
                           "--out", run)
    assert code == 0, err
    monkeypatch.setattr(protocols.progress, "LINE_EVERY_S", 0.0)  # a line per step
    code, out, err = run_cli(capsys, "replay", run)
    assert code == 0 and out.startswith("identical"), out + err
    n = 2 * STEPS_PER_EPOCH
    lines = [ln for ln in err.splitlines() if ln.startswith("hwloop replay: ")]
    assert [ln.split()[2] for ln in lines] == [f"{k}/{n}" for k in range(n)], err
    code, out, err = run_cli(capsys, "replay", "--quiet", run)
    assert code == 0 and out.startswith("identical") and err == "", out + err
