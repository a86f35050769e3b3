"""Defaults that work on any network (issue 13 part 4): ``hwloop train --arch 1568-N-10``
with no other option, ``--dry-run`` refusing what step 0 would, a run that fails before
its first step leaving a file the next ``hwloop train`` replaces without ``--overwrite``,
and resistive nudges refused before anything is energised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwloop.cli import main

SHORT = ("--epochs", "1", "--train-limit", "400", "--test-limit", "200", "--quiet", "--json")


def _train(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["train", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("n", "floor"), [(4, 0.12), (8, 0.15), (16, 0.2), (20, 0.25),
                                          (32, 0.4)])
def test_train_with_defaults_on_narrow_networks(
    n: int, floor: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 0, 100 steps, 200 test examples (binomial s.e. 2.7 points at 18 %). Measured:
    18.5 % (N = 4), 20.5, 33, 46.5, 60 % (N = 32); chance is 10 %. Before the output
    biases' rate followed the output fan-in, N = 4 stayed at chance (9.5 %); before
    the nudge choice every N below ~32 failed at step 0 (a resistive beta of -1 S is not
    convex there)."""
    out = tmp_path / "run.h5"
    code, stdout, err = _train(capsys, "--arch", f"1568-{n}-10", *SHORT, "--out", out)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["steps"] == 100
    # the header says what was chosen and why
    assert "nudge: current (a resistive nudge with beta -1 makes an output node's total " \
           "conductance non-positive" in err
    assert f"10 V x sqrt({n} hidden)" in err
    if n < 16:
        assert f"output biases not learned ({n} < 16 units into the output layer" in err
    else:
        assert f"output bias learning rate {0.006 * n / 100:g} = 0.006 x {n}/100" in err
    assert summary["final_test_accuracy"] > floor


def test_published_settings_stay_where_they_are_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, err = _train(capsys, "--arch", "1568-100-10", "--dry-run", "--out",
                               tmp_path / "x.h5")
    assert code == 0, err
    assert "resistive" in stdout and "current" not in stdout
    assert not (tmp_path / "x.h5").exists()


def test_dry_run_refuses_what_step_0_would_and_no_file_blocks_a_retry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.h5"
    for extra in (["--dry-run"], []):
        code, _, err = _train(capsys, "--arch", "1568-20-10", "--nudge", "resistive",
                                   *SHORT, *extra, "--out", out)
        assert code == 2 and err.count("\n") == 1, err
        assert "makes an output node's total conductance non-positive" in err
        assert "--nudge current" in err
        assert not out.exists()
    code, _, err = _train(capsys, "--arch", "1568-20-10", "--nudge", "current", *SHORT,
                          "--out", out)
    assert code == 0, err


def test_a_file_of_a_run_that_failed_before_its_first_step_does_not_block_a_retry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hwloop.errors import LimitError
    from hwloop.sessionlog import open_session
    from protocols.training import Trainer

    out = tmp_path / "run.h5"
    small = ("--arch", "32-8-2", "--dataset", "mnist-01-4x4", "--input-gain", "9", *SHORT)

    def fail_at_step_0(self: Trainer, **kwargs: object) -> None:
        raise LimitError("a limit tripped during step 0 (as a board would report it)")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "run", fail_at_step_0)
        code, _, err = _train(capsys, *small, "--out", out)
    assert code == 2 and "during step 0" in err
    with open_session(out) as sf:  # the failure is recorded, with no step ...
        assert sf.status == "failed" and sf.steps_done == 0
        assert "during step 0" in str(sf.attrs["reason"])
    code, _, err = _train(capsys, *small, "--out", out)  # ... and replaced without --overwrite
    assert code == 0, err
    with open_session(out) as sf:
        assert sf.status == "completed" and sf.steps_done == 100
    # a completed run still needs --overwrite
    code, _, err = _train(capsys, *small, "--out", out)
    assert code == 2 and "--overwrite" in err


def test_a_board_without_resistive_nudges_refuses_them_before_anything_is_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    board = ("--backend", "mock", "--backend-opt", "arch=32-8-2", "--backend-opt",
             "resistive_nudge=false", "--dataset", "mnist-01-4x4", "--input-gain", "2",
             "--beta", "0.1")
    out = tmp_path / "run.h5"
    code, _, err = _train(capsys, *board, "--nudge", "resistive", "--dry-run", "--out", out)
    assert code == 2 and "cannot apply resistive nudges" in err and "--nudge current" in err
    code, _, err = _train(capsys, *board, "--nudge", "resistive", "--out", out)
    assert code == 2 and "cannot apply resistive nudges" in err and not out.exists()
    # left unset, the nudge is chosen for the board
    code, stdout, err = _train(capsys, *board, "--dry-run", "--out", out)
    assert code == 0, err
    assert "current" in stdout
