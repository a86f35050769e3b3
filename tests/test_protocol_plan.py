"""The EP step as data: plans, dry runs, exact call sequences, sampling, programming."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hwloop.device import CurrentNudge, ResistiveNudge
from hwloop.errors import ConfigError, LimitError, UnsupportedError
from hwloop.plugins import open_board
from protocols.engine import run_step
from protocols.estimators import Centered, OneSided, RandomSign, Stencil, make_estimator
from protocols.optim import SGD, Update
from protocols.plan import (
    ApplyInputs,
    ApplyNudge,
    ComputeUpdate,
    Measure,
    Program,
    ReleaseNudge,
    Settle,
    build_step_plan,
    dry_run,
    format_plan,
)
from protocols.programming import OpenLoopProgrammer, Reason, WriteVerifyProgrammer
from simulated_device.drn import pixels_to_inputs


class Recorder:
    """Wraps a board and records every Device call with its key arguments."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if name == "apply_nudge":
                n = args[0]
                if n is None:
                    self.calls.append(("apply_nudge", None))
                elif isinstance(n, ResistiveNudge):
                    self.calls.append(("apply_nudge", "resistive", n.beta_s))
                else:
                    self.calls.append(("apply_nudge", "current"))
            elif name == "read_nodes":
                self.calls.append(("read_nodes", args[0] if args else kwargs.get("n_samples", 1)))
            elif name != "describe":
                self.calls.append((name,))
            return attr(*args, **kwargs)

        return wrapped


def small_board(preset: str = "ideal", **opts: Any) -> Any:
    return open_board(
        "emulator", {"arch": "16-8-4", "preset": preset, **opts}, np.random.default_rng(5)
    )


def data(batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return pixels_to_inputs(rng.uniform(0, 1, (batch, 8)), 5.0), np.eye(4)[
        rng.integers(0, 4, batch)
    ]


class FixedLearner:
    def __init__(self, desc: Any) -> None:
        self.opt = SGD(desc, (0.01,), (0.01,))
        self.prog = OpenLoopProgrammer()

    def update(self, gradient: Any) -> Update:
        return self.opt.step(gradient)

    def program(self, device: Any, update: Update) -> Any:
        return self.prog.program(device, update, np.random.default_rng(0))


def test_centered_plan_is_the_documented_sequence() -> None:
    plan = build_step_plan(Centered().stencil(0.5, None), n_samples=3)
    assert plan == (
        ApplyInputs(),
        Settle(),
        Measure(0, 3, None, 3),
        ApplyNudge(1, -0.5, "resistive"),
        Settle(),
        Measure(1, 3, None, 3),
        ApplyNudge(2, 0.5, "resistive"),
        Settle(),
        Measure(2, 3, None, 3),
        ReleaseNudge(),
        ComputeUpdate((1, 2), (-1.0, 1.0)),
        Program(),
    )
    text = format_plan(plan)
    assert "nudge #1: resistive pull, beta = -0.5 S" in text
    assert text.count("measure") == 3


def test_one_sided_plan_uses_the_free_phase() -> None:
    plan = build_step_plan(OneSided().stencil(0.25, None))
    cu = next(s for s in plan if isinstance(s, ComputeUpdate))
    assert cu.phases == (0, 1) and cu.coeffs == (-4.0, 4.0)
    assert sum(isinstance(s, ApplyNudge) for s in plan) == 1


def test_engine_calls_the_device_in_plan_order() -> None:
    dev = Recorder(small_board())
    v, y = data()
    plan = build_step_plan(Centered().stencil(0.1, None), n_samples=2)
    rec = run_step(plan, dev, v, y, FixedLearner(dev.describe()))
    assert dev.calls == [
        ("apply_inputs",),
        ("settle",),
        ("read_nodes", 2),
        ("apply_nudge", "resistive", -0.1),
        ("settle",),
        ("read_nodes", 2),
        ("apply_nudge", "resistive", 0.1),
        ("settle",),
        ("read_nodes", 2),
        ("apply_nudge", None),
        # biases are checked against the limits before any conductance is programmed
        ("read_bias_currents",),
        ("program_deltas",),
        ("set_bias_currents",),
    ]
    assert rec.executed == list(plan)
    assert set(rec.readings) == {0, 1, 2}
    assert rec.readings[1].samples_v.shape == (2, 2, 12)


def test_current_nudge_uses_the_free_phase_measurement() -> None:
    dev = Recorder(small_board())
    v, y = data()
    plan = build_step_plan(Centered().stencil(0.1, None), nudge_kind="current")
    rec = run_step(plan, dev, v, y, FixedLearner(dev.describe()))
    nudge = rec.nudges[2]
    assert isinstance(nudge, CurrentNudge)
    desc = dev.describe()
    out = np.searchsorted(desc.free_nodes, desc.output_nodes)
    assert np.allclose(nudge.currents_a, 0.1 * (y - rec.mean_v(0)[:, out]))
    assert np.allclose(rec.nudges[1].currents_a, -nudge.currents_a)


def test_dry_run_rejects_before_anything_is_applied() -> None:
    dev = Recorder(small_board())
    v, y = data()
    lim = dev.describe().limits
    plan = build_step_plan(Centered().stencil(2 * lim.beta_max_s, None))
    with pytest.raises(LimitError, match="beta"):
        dry_run(plan, dev.describe(), v, y)
    with pytest.raises(LimitError, match="input voltage"):
        dry_run(
            build_step_plan(Centered().stencil(0.5, None)),
            dev.describe(),
            v * 10 * lim.v_input_max_v,
            y,
        )
    worst = build_step_plan(Centered().stencil(lim.beta_max_s, None), nudge_kind="current")
    big = np.full_like(v, lim.v_input_max_v)
    with pytest.raises(LimitError, match="nudge current"):
        dry_run(worst, dev.describe(), big, y)
    assert dev.calls == []  # describe() only


def test_sem_target_stops_sampling_early() -> None:
    dev = Recorder(small_board(read_noise_v=1e-3))
    v, y = data()
    plan = build_step_plan(
        Centered().stencil(0.1, None), n_samples=4, sem_target_v=2e-4, max_samples=400
    )
    rec = run_step(plan, dev, v, y, FixedLearner(dev.describe()))
    n = rec.readings[0].n_samples
    # sigma/sqrt(n) < 2e-4 needs n > 25: the reading stops soon after, far below the cap
    assert 25 <= n <= 60
    assert float(np.max(rec.readings[0].sem_v)) < 2e-4
    reads = [c for c in dev.calls if c[0] == "read_nodes"]
    assert all(c[1] == 4 for c in reads)


def test_estimator_factory() -> None:
    assert isinstance(make_estimator("random-sign"), RandomSign)
    with pytest.raises(ConfigError, match="unknown estimator"):
        make_estimator("cauchy")


def test_write_verify_converges_on_the_realistic_preset() -> None:
    board = small_board("reram")
    desc = board.describe()
    n = desc.n_edges
    edges = np.arange(n)
    mid = 0.5 * (desc.g_min_s + desc.g_max_s)
    board.program_deltas(edges, mid - board.read_conductances(edges))
    tol = 0.02 * (desc.g_max_s - desc.g_min_s)
    wv = WriteVerifyProgrammer(tolerance_s=tol, max_iterations=30)
    rng = np.random.default_rng(1)
    delta = rng.uniform(-0.2, 0.2, n) * (desc.g_max_s - desc.g_min_s)
    rep = wv.program(board, Update(delta, np.zeros(len(desc.bias_nodes))), rng)
    # changes within the tolerance are not programmed but carried, in full
    small = np.abs(delta) <= tol
    assert set(rep.edges.tolist()) == set(np.flatnonzero(~small).tolist())
    carried = wv.state(n)["residual_s"]
    np.testing.assert_array_equal(carried[small], delta[small])
    stuck = board.devices.stuck[rep.edges]
    ok = ~stuck & (rep.reason != Reason.AT_BOUND)
    assert rep.converged[ok].mean() > 0.97
    true_g = board.devices.g_s[rep.edges]
    # converged edges are within tolerance of the target up to the read noise (1 %)
    good = rep.converged & ok
    assert np.all(np.abs(true_g[good] - rep.target_s[good]) < tol + 0.05 * desc.g_max_s)
    assert rep.pulses[good].any()


def test_write_verify_reports_a_stuck_device() -> None:
    board = small_board("reram")
    desc = board.describe()
    stuck = np.flatnonzero(board.devices.stuck)
    if stuck.size == 0:  # make sure there is one: find a seed with a stuck device
        for seed in range(50):
            board = open_board(
                "emulator", {"arch": "16-8-4", "preset": "reram"}, np.random.default_rng(seed)
            )
            stuck = np.flatnonzero(board.devices.stuck)
            if stuck.size:
                break
        desc = board.describe()
    assert stuck.size
    delta = np.zeros(desc.n_edges)
    delta[stuck[0]] = (
        0.3
        * (desc.g_max_s - desc.g_min_s)
        * (1 if board.devices.g_s[stuck[0]] < 0.5 * desc.g_max_s else -1)
    )
    wv = WriteVerifyProgrammer(tolerance_s=0.02 * desc.g_max_s, max_iterations=20, patience=3)
    rep = wv.program(board, Update(delta, np.zeros(len(desc.bias_nodes))), np.random.default_rng(0))
    i = int(np.flatnonzero(rep.edges == stuck[0])[0])
    assert not rep.converged[i]
    assert rep.reason[i] == Reason.NO_RESPONSE
    assert rep.counts.get("no_response") == 1


def test_open_loop_pulses_carry_the_rounding_residual() -> None:
    board = small_board("reram")
    desc = board.describe()
    step = desc.pulse_step_s
    prog = OpenLoopProgrammer()
    delta = np.zeros(desc.n_edges)
    delta[0] = 0.4 * step  # rounds to 0 pulses ...
    zero_b = np.zeros(len(desc.bias_nodes))
    r1 = prog.program(board, Update(delta, zero_b), np.random.default_rng(0))
    assert r1.total_pulses == 0
    r2 = prog.program(board, Update(delta, zero_b), np.random.default_rng(0))
    assert r2.total_pulses == 1 and r2.edges.tolist() == [0]  # ... 0.8 steps: one pulse


def test_open_loop_records_saturation_at_the_bound() -> None:
    board = small_board("ideal")
    desc = board.describe()
    g = board.read_conductances()
    delta = np.zeros(desc.n_edges)
    delta[:3] = -(g[:3] + 1.0)  # below 0 S
    rep = OpenLoopProgrammer().program(
        board, Update(delta, np.zeros(len(desc.bias_nodes))), np.random.default_rng(0)
    )
    assert np.all(rep.reason[:3] == Reason.AT_BOUND)
    assert rep.counts["at_bound"] == 3
    assert np.all(board.read_conductances(np.arange(3)) == 0.0)


def test_write_verify_accumulates_changes_below_one_pulse() -> None:
    """Requests far below the window add up across steps until they are worth a pulse."""
    board = small_board("reram")
    desc = board.describe()
    step = desc.pulse_step_s
    edge = int(np.flatnonzero(~board.devices.stuck)[0])
    wv = WriteVerifyProgrammer()  # window sized from the device: one nominal pulse step
    zero_b = np.zeros(len(desc.bias_nodes))
    delta = np.zeros(desc.n_edges)
    delta[edge] = 0.3 * step
    rng = np.random.default_rng(4)
    reports = [wv.program(board, Update(delta, zero_b), rng) for _ in range(8)]
    addressed = [i for i, r in enumerate(reports) if r.edges.size]
    # 0.3, 0.6, 0.9 steps are within the window; the fourth request (1.2 steps) is not
    assert addressed and addressed[0] == 3
    assert reports[3].edges.tolist() == [edge]
    assert reports[3].total_pulses >= 1
    # after programming, the carried residual is target minus the last verify read
    r = reports[3]
    assert r.residual_s is not None
    np.testing.assert_allclose(r.residual_s, r.target_s - r.achieved_s)


def test_write_verify_window_is_one_pulse_step_by_default() -> None:
    from protocols.programming import default_tolerance_s

    board = small_board("reram")
    desc = board.describe()
    assert default_tolerance_s(desc.pulse_step_s, desc.g_scale_s) == desc.pulse_step_s
    ideal = small_board("ideal").describe()
    assert ideal.pulse_step_s == 0
    assert default_tolerance_s(0.0, ideal.g_scale_s) == pytest.approx(1e-6 * ideal.g_scale_s)


def test_write_verify_warns_once_when_updates_vanish() -> None:
    board = small_board("reram")
    desc = board.describe()
    messages: list[str] = []
    # a window wider than the whole range: nothing will ever be programmed
    wv = WriteVerifyProgrammer(tolerance_s=10 * desc.g_max_s, warn=messages.append)
    zero_b = np.zeros(len(desc.bias_nodes))
    delta = np.full(desc.n_edges, 1e-12)
    rng = np.random.default_rng(0)
    for _ in range(99):
        wv.program(board, Update(delta, zero_b), rng)
    assert messages == []
    for _ in range(150):
        wv.program(board, Update(delta, zero_b), rng)
    assert len(messages) == 1
    assert "programmed no edge in 100 steps" in messages[0] and "\n" not in messages[0]


def test_the_record_counts_pulses_and_bound_hits_of_the_programming_report() -> None:
    """Pulses and bound hits are counted once, by the engine, from the program report."""
    board = small_board("reram")
    desc = board.describe()
    v, y = data()

    class BigLearner(FixedLearner):
        def update(self, gradient: Any) -> Update:
            # every edge asked to move 3 pulses up; edge 0 far beyond the upper bound
            dg = np.full(desc.n_edges, 3 * desc.pulse_step_s)
            dg[0] = 10 * (desc.g_max_s - desc.g_min_s)
            return Update(delta_g_s=dg, delta_b_a=np.zeros(len(desc.bias_nodes)))

    self_prog = BigLearner(desc)
    self_prog.prog = OpenLoopProgrammer(max_pulses=100_000)
    rec = run_step(build_step_plan(OneSided().stencil(1e-6)), board, v, y, self_prog)
    rep = rec.programming
    assert rep is not None
    assert rec.n_pulses == int(np.abs(rep.pulses).sum()) > 3 * desc.n_edges
    assert rec.n_bound_hits == int(np.count_nonzero(rep.reason == Reason.AT_BOUND)) >= 1


def test_a_random_sign_is_data_of_the_step_and_mirrors_the_plan() -> None:
    """The plan is built at +beta; sign -1 negates every nudge and coefficient."""
    v, y = data()
    plan = build_step_plan(make_estimator("random-sign").stencil(0.1))
    a, b = Recorder(small_board()), Recorder(small_board())
    mirrored = run_step(plan, a, v, y, FixedLearner(a.describe()), sign=-1.0)
    direct = run_step(
        build_step_plan(Stencil((0.0, -0.1), (-1 / -0.1, 1 / -0.1))), b, v, y,
        FixedLearner(b.describe()),
    )
    assert a.calls == b.calls and ("apply_nudge", "resistive", -0.1) in a.calls
    assert mirrored.betas_s == direct.betas_s == {0: 0.0, 1: -0.1}
    assert mirrored.gradient is not None and direct.gradient is not None
    np.testing.assert_array_equal(mirrored.gradient.g, direct.gradient.g)
    # the sign drawn is the one value the estimator takes from the generator
    rs = make_estimator("random-sign")
    draws = np.random.default_rng(7).random(50)
    rng = np.random.default_rng(7)
    assert [rs.draw_sign(rng) for _ in range(50)] == [1.0 if d < 0.5 else -1.0 for d in draws]


def test_the_measurement_plan_of_a_cauchy_stencil_runs_complex_nudges_in_the_engine() -> None:
    """One executor: complex ApplyNudge steps reach the board; boards without refuse first."""
    from protocols.engine import nudged_phases
    from protocols.holomorphic import make_stencil
    from protocols.plan import measurement_plan
    from tests.board_helpers import settled_nonreciprocal

    st = make_stencil("cauchy", 0.1, 4)  # points +r, i r, -r
    plan = measurement_plan(st.betas_s, n_samples=2)
    nudges = [s for s in plan if isinstance(s, ApplyNudge)]
    assert [s.beta_s for s in nudges] == list(st.betas_s) and nudges[1].beta_s.imag != 0
    assert isinstance(plan[0], ReleaseNudge) and isinstance(plan[-1], ReleaseNudge)
    board, _, y = settled_nonreciprocal()
    rec = Recorder(board)
    readings, ok = nudged_phases(rec, st.betas_s, y, n_samples=2)
    assert ok and all(r is not None and r.samples_v.shape[0] == 2 for r in readings)
    applied = [c for c in rec.calls if c[0] == "apply_nudge"]
    assert [c[2] for c in applied[:-1]] == [0.1, st.betas_s[1], -0.1]
    assert isinstance(applied[1][2], complex) and isinstance(applied[0][2], float)
    assert applied[-1] == ("apply_nudge", None)
    # the imaginary-axis point gives a complex response, the real ones a real one
    r1, r2 = readings[0], readings[1]
    assert r1 is not None and r2 is not None
    assert np.iscomplexobj(r2.samples_v) and np.abs(np.imag(r2.mean_v)).max() > 0
    # a board without complex nudges: the dry run refuses the plan before anything is applied
    real = small_board()
    v, yy = data()
    with pytest.raises(UnsupportedError, match="complex-valued nudges"):
        dry_run(measurement_plan(st.betas_s), real.describe(), v, yy)


def test_write_verify_with_held_targets_undoes_drift() -> None:
    """``refresh_every``: verify against the intended conductance, refresh every N steps."""
    board = small_board("reram", drift_nu=0.1, drift_t0_s=1.0, g_read_relative=0.0)
    desc = board.describe()
    n, step = desc.n_edges, desc.pulse_step_s
    zero_b = np.zeros(len(desc.bias_nodes))
    live = ~board.devices.stuck
    mid = 0.5 * (desc.g_min_s + desc.g_max_s)
    board.program_deltas(np.arange(n), mid - board.read_conductances())
    g_start = board.read_conductances()
    rng = np.random.default_rng(2)
    held = WriteVerifyProgrammer(refresh_every=3)
    plain = WriteVerifyProgrammer()
    nothing = Update(np.zeros(n), zero_b)
    held.program(board, nothing, rng)  # step 1: the intended state is the board's
    board.wait(100.0)  # drifts every device by (101)^-0.1 = 0.63
    drifted = board.read_conductances()
    lost = g_start - drifted
    assert np.all(lost[live] > 5 * step)
    # plain write-verify asked for nothing addresses nothing: the drift stays
    assert plain.program(board, nothing, rng).edges.size == 0
    # held targets: an edge addressed by a request is verified against intended + request
    delta = np.zeros(n)
    delta[0] = 2 * step
    r = held.program(board, Update(delta, zero_b), rng)  # step 2
    assert r.edges.tolist() == [0]
    assert r.target_s[0] == pytest.approx(g_start[0] + 2 * step)
    if live[0] and r.reason[0] == Reason.CONVERGED:
        assert abs(board.read_conductances(np.array([0]))[0] - r.target_s[0]) <= step
    # step 3 is a refresh: every edge is read and the drifted ones are pulled back
    r3 = held.program(board, nothing, rng)
    assert r3.edges.tolist() == list(range(n))
    ok = live & (r3.reason == Reason.CONVERGED)
    assert ok.mean() > 0.9
    want = g_start.copy()
    want[0] += 2 * step
    assert np.all(np.abs(board.read_conductances()[ok] - want[ok]) <= step * (1 + 1e-9))
    # its state survives a checkpoint round trip
    st = held.state(n)
    assert int(st["steps"][0]) == 3 and bool(st["has_g_known"][0])
    again = WriteVerifyProgrammer(refresh_every=3)
    again.load_state(st)
    assert again._steps == 3
    np.testing.assert_array_equal(again._g_known, held._g_known)
    with pytest.raises(ConfigError, match="refresh_every"):
        WriteVerifyProgrammer(refresh_every=-1)
