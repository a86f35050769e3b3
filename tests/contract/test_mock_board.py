"""The scriptable mock backend: protocol code tested without physics.

The mock records every call and serves scripted readings, so these tests check
what an EP step commands, in order, and that the current nudges it computes come
from the readings it was served (``beta * (target - free output)``, exactly).
"""

from __future__ import annotations

import numpy as np
import pytest

from hwloop.device import CurrentNudge, ResistiveNudge
from hwloop.errors import ConfigError, UnsupportedError
from hwloop.plugins import open_board
from protocols.engine import run_step
from protocols.estimators import make_estimator
from protocols.plan import ComputeUpdate, build_step_plan
from simulated_device.mock_board import MockBoard


def _mock(**opts: object) -> MockBoard:
    board = open_board("mock", {"arch": "6-4-3", **opts}, np.random.default_rng(0))
    assert isinstance(board, MockBoard)
    return board


def test_an_ep_step_commands_exactly_the_plan_and_uses_the_served_readings() -> None:
    board = _mock()
    d = board.describe()
    n_free = len(d.free_nodes)
    free = np.arange(2 * n_free, dtype=float).reshape(2, n_free) / 10
    plus, minus = free + 0.01, free - 0.01
    board.script_readings(free, plus, minus)
    beta = 0.5
    plan = build_step_plan(make_estimator("centered").stencil(beta, np.random.default_rng(0)),
                           nudge_kind="current")
    plan = plan[: [isinstance(s, ComputeUpdate) for s in plan].index(True)]
    v_in = np.full((2, 6), 0.3)
    targets = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    rec = run_step(plan, board, v_in, targets, learner=None)
    assert [c.name for c in board.calls] == [
        "apply_inputs", "settle", "read_nodes",
        "apply_nudge", "settle", "read_nodes",
        "apply_nudge", "settle", "read_nodes",
        "apply_nudge",
    ]
    np.testing.assert_array_equal(board.calls[0].args["v_inputs"], v_in)
    out = np.searchsorted(d.free_nodes, d.output_nodes)
    nudges = [c.args["nudge"] for c in board.calls_named("apply_nudge")]
    assert isinstance(nudges[0], CurrentNudge) and isinstance(nudges[1], CurrentNudge)
    # the step's nudges come from the free reading it was served, with the stencil's signs
    assert sorted([rec.betas_s[1], rec.betas_s[2]]) == [-beta, beta]
    for phase, nudge in ((1, nudges[0]), (2, nudges[1])):
        np.testing.assert_array_equal(nudge.currents_a,
                                      rec.betas_s[phase] * (targets - free[:, out]))
    assert nudges[2] is None
    np.testing.assert_array_equal(rec.mean_v(1), plus)
    np.testing.assert_array_equal(rec.mean_v(2), minus)


def test_scripted_samples_and_recorded_state() -> None:
    board = _mock(pulse_step_s=0.01, dtype="float32")
    d = board.describe()
    assert d.sample_dtype == "<f4" and d.deterministic
    board.apply_inputs(np.zeros((1, 6)))
    samples = np.random.default_rng(1).normal(size=(3, 1, len(d.free_nodes)))
    board.script_readings(samples)
    r = board.read_nodes(3)
    np.testing.assert_array_equal(r.samples_v, samples.astype(np.float32))
    assert np.all(np.diff(r.timestamps_s.ravel()) > 0)
    with pytest.raises(ConfigError, match="does not fit"):
        board.script_readings(samples)
        board.read_nodes(2)
    # pulses move by whole steps, clipped at the bounds and flagged
    res = board.program_pulses(np.array([0, 1]), np.array([3, -100]))
    np.testing.assert_allclose(board.read_conductances(np.array([0, 1])), [0.53, 0.0])
    assert res.status.tolist() == [0, 2] and res.applied_pulses.tolist() == [3, -50]


def test_capabilities_come_from_the_options() -> None:
    board = _mock(resistive_nudge=False)
    board.apply_inputs(np.zeros((1, 6)))
    assert not board.describe().supports_resistive_nudge
    with pytest.raises(UnsupportedError, match="--nudge current"):
        board.apply_nudge(ResistiveNudge(0.1, np.zeros((1, 3))))
    with pytest.raises(UnsupportedError):
        _mock().program_pulses(np.array([0]), np.array([1]))  # no pulse step: deltas only
