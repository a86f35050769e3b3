"""Records that check themselves: a sample altered on disk is found by replay and inspect.

The reference is the file as written: one float32 sample of one step is changed in place
with h5py (as a bit flip on disk or an edit would), and both commands must name exactly
that step; the untouched file passes both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hwloop.cli import main
from hwloop.sessionlog import open_session

RUN = ["--arch", "1568-100-10", "--batch-size", "32", "--read-noise", "0.01", "--samples", "2",
       "--epochs", "1", "--train-limit", "256", "--test-limit", "20", "--seed", "5", "--quiet"]
TAMPERED_STEP = 5


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    out, _ = capsys.readouterr()
    return code, out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crc") / "run.h5"
    assert main(["train", *RUN, "--out", str(out)]) == 0
    return out


def _tamper(src: Path, dst: Path) -> None:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        ds = f["steps/samples_v"]
        row = ds[TAMPERED_STEP]
        row[0, 1, 0, 3] = np.nextafter(row[0, 1, 0, 3], np.float32(np.inf))  # one ulp
        ds[TAMPERED_STEP] = row


def test_the_untouched_recording_passes_replay_and_inspect(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _cli(capsys, "inspect", recorded, "--json")
    report = json.loads(out)
    assert code == 0 and report["integrity"] == []
    assert report["steps_verified"] == report["steps_done"] == 8  # all, by default
    code, out = _cli(capsys, "replay", recorded)
    assert code == 0 and out.startswith("identical"), out


def test_a_tampered_sample_is_named_by_replay_and_inspect(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "tampered.h5"
    _tamper(recorded, bad)
    with open_session(bad) as sf:
        crc, rec = sf.step_checksum(TAMPERED_STEP)
        assert crc != rec
        assert sf.integrity() == [f"step {TAMPERED_STEP}: checksum mismatch (data damaged)"]
    code, out = _cli(capsys, "replay", bad)
    assert code == 1
    assert out.startswith(f"diverged: step {TAMPERED_STEP}: the recorded samples and inputs "
                          "do not match their checksum"), out
    code, out = _cli(capsys, "inspect", bad, "--json")
    report = json.loads(out)
    assert code == 1
    assert report["integrity"] == [f"step {TAMPERED_STEP}: checksum mismatch (data damaged)"]
    assert report["steps_verified"] == 8
    code, out = _cli(capsys, "inspect", bad)
    assert code == 1
    assert (f"integrity   PROBLEMS: step {TAMPERED_STEP}: checksum mismatch (data damaged) "
            "(checksums of all 8 steps verified)") in out
