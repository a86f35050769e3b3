"""The replay device under the contract, on its recording (``conftest.replay_session``).

The replay device serves what a session recorded and checks every command against
it, so its contract is: the recorded protocol runs against it identically, its
readings are the recorded samples bit for bit, anything else is refused in one line
(``ReplayDivergence``, limits first), and it ends in the safe state like every board.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwloop.cli import main
from hwloop.device import Device
from hwloop.errors import LimitError
from hwloop.plugins import open_board
from hwloop.sessionlog import open_session
from protocols.replay_device import ReplayDevice, ReplayDivergence


def test_the_recorded_protocol_replays_identically(
    replay_session: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    code = main(["replay", str(replay_session), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "identical" and out["steps_replayed"] == 3


def test_readings_are_the_recorded_samples(replay_session: Path) -> None:
    with open_session(replay_session) as sf:
        dev = ReplayDevice(sf)
        assert isinstance(dev, Device)
        recorded = sf.readings(0)
        dev.apply_inputs(sf.step_data(0)["inputs_v"].astype(np.float64))
        dev.settle()
        r = dev.read_nodes(recorded[0].n_samples)
        assert r.samples_v.dtype == recorded[0].samples_v.dtype
        assert np.array_equal(r.samples_v, recorded[0].samples_v)
        assert np.array_equal(r.timestamps_s, recorded[0].timestamps_s)
        dev.close()
        assert dev.is_safe


def test_departures_are_refused_in_one_line_limits_first(replay_session: Path) -> None:
    with open_session(replay_session) as sf:
        dev = ReplayDevice(sf)
        v = sf.step_data(0)["inputs_v"].astype(np.float64)
        with pytest.raises(LimitError):  # limits are checked before the recording is
            dev.apply_inputs(np.full_like(v, 2 * sf.description.limits.v_input_max_v))
        other = v.copy()
        other[0, 0] += 0.5
        with pytest.raises(ReplayDivergence) as err:
            dev.apply_inputs(other)
        msg = str(err.value)
        assert msg.startswith("step 0") and "apply_inputs" in msg and "\n" not in msg
        dev.safe_state()
        dev.safe_state()
        assert dev.is_safe
        dev.close()
        dev.close()
        assert dev.is_safe


def test_the_replay_device_describes_the_recorded_board_exactly(tmp_path: Path) -> None:
    """Capabilities recorded in the session file come back as the live board reported them."""
    out = tmp_path / "run.h5"
    code = main(["train", "--arch", "1568-32-10", "--epochs", "1", "--train-limit", "8",
                      "--test-limit", "8", "--quiet", "--out", str(out)])
    assert code == 0
    live = open_board("emulator", {"arch": "1568-32-10", "dtype": "float32"},
                      np.random.default_rng(0)).describe()
    with open_session(out) as sf:
        rec = sf.description
    assert (rec.sample_dtype, rec.deterministic, rec.supports_resistive_nudge) == (
        live.sample_dtype, live.deterministic, live.supports_resistive_nudge)
    assert rec.sample_dtype == "<f4" and rec.deterministic
