"""Statistical tests of the emulator's device and read-noise models.

Every random test uses a fixed seed. Tolerances are 5 standard errors of the
estimator being checked ("5 sigma"), so a correct model fails with probability
below 1e-6 per check, while a wrong factor (e.g. sqrt(2), or a missing sqrt(k))
is detected by a wide margin:

* mean of N draws with std sigma: 5 * sigma / sqrt(N);
* sample std of N Gaussian draws with std sigma: 5 * sigma / sqrt(2 (N - 1));
* fraction of N Bernoulli(p) draws: 5 * sqrt(p (1 - p) / N).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwloop.device import ProgramStatus, SampleFlag
from hwloop.errors import ConfigError, UnsupportedError
from simulated_device.device_models import (
    PRESETS,
    DeviceArray,
    DeviceModel,
    ReadNoise,
    WriteModel,
    get_preset,
)

OK = ProgramStatus.OK
AT_MAX = ProgramStatus.AT_MAX
AT_MIN = ProgramStatus.AT_MIN
NO_CHANGE = ProgramStatus.NO_CHANGE

G_MAX = 100e-6
STEP = 1e-6  # nominal step of the 100-state models below


def se_mean(sigma: float, n: int) -> float:
    return sigma / math.sqrt(n)


def se_std(sigma: float, n: int) -> float:
    return sigma / math.sqrt(2.0 * (n - 1))


def assert_within(value: float, expected: float, tol: float, what: str) -> None:
    assert abs(value - expected) <= tol, f"{what}: {value!r} vs {expected!r} (tol {tol!r})"


def pulsed(**kw: object) -> WriteModel:
    """A 0..100 µS, 100-state model (step 1 µS) with the given overrides."""
    base: dict[str, object] = {"g_min_s": 0.0, "g_max_s": G_MAX, "n_states": 100}
    base.update(kw)
    return WriteModel(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# ReadNoise
# ---------------------------------------------------------------------------


class TestReadNoise:
    def test_additive_std_matches_sigma(self) -> None:
        sigma = 1e-3
        rng = np.random.default_rng(1)
        v = np.linspace(-2.0, 2.0, 200).reshape(4, 50)
        samples, flags = ReadNoise(sigma_v=sigma).sample(v, 2000, rng)
        assert samples.shape == (2000, 4, 50) and samples.dtype == np.float64
        assert flags.shape == samples.shape and flags.dtype == np.uint8 and not flags.any()
        err = (samples - v).ravel()
        n = err.size
        assert_within(float(err.mean()), 0.0, 5 * se_mean(sigma, n), "mean error")
        assert_within(float(err.std(ddof=1)), sigma, 5 * se_std(sigma, n), "std")

    @pytest.mark.parametrize("n_avg", [1, 10, 100])
    def test_averaging_reduces_noise_as_sqrt_n(self, n_avg: int) -> None:
        sigma = 2e-3
        rng = np.random.default_rng(2)
        v = np.full((100, 100), 0.3)
        samples, _ = ReadNoise(sigma_v=sigma).sample(v, n_avg, rng)
        means = samples.mean(axis=0).ravel() - 0.3
        expected = sigma / math.sqrt(n_avg)
        assert_within(float(means.std(ddof=1)), expected, 5 * se_std(expected, means.size), "sem")

    @pytest.mark.parametrize("n_avg", [1, 16, 256])
    def test_slow_term_sets_a_floor_under_averaging(self, n_avg: int) -> None:
        # var(mean of N) = sigma^2 / N + slow^2: the slow term is shared by the repeats
        sigma, slow = 2e-3, 5e-4
        rng = np.random.default_rng(21)
        v = np.full((60, 50), 0.3)
        samples, _ = ReadNoise(sigma_v=sigma, slow_v=slow).sample(v, n_avg, rng)
        means = samples.mean(axis=0).ravel() - 0.3
        expected = math.sqrt(sigma**2 / n_avg + slow**2)
        assert_within(float(means.std(ddof=1)), expected, 5 * se_std(expected, means.size), "sem")
        # within one read the repeats differ only by the white term
        spread = samples.std(axis=0, ddof=1).ravel() if n_avg > 1 else None
        if spread is not None:
            assert_within(float(np.sqrt(np.mean(spread**2))), sigma, 0.05 * sigma, "repeat std")

    def test_relative_noise_scales_with_abs_v(self) -> None:
        rel = 0.01
        rng = np.random.default_rng(3)
        levels = np.array([-4.0, -0.5, 0.25, 1.0, 3.0])
        v = np.tile(levels, (10, 1))
        samples, _ = ReadNoise(relative=rel).sample(v, 4000, rng)
        err = (samples - v).transpose(2, 0, 1).reshape(levels.size, -1)
        n = err.shape[1]
        for lev, e in zip(levels, err, strict=True):
            expected = rel * abs(lev)
            assert_within(float(e.std(ddof=1)), expected, 5 * se_std(expected, n), f"v={lev}")
        # a zero voltage gets no relative noise at all
        zero, _ = ReadNoise(relative=rel).sample(np.zeros((1, 3)), 10, rng)
        assert np.all(zero == 0.0)

    def test_additive_and_relative_add_in_quadrature(self) -> None:
        rng = np.random.default_rng(4)
        noise = ReadNoise(sigma_v=0.03, relative=0.01)
        samples, _ = noise.sample(np.full((50, 40), 4.0), 100, rng)
        err = (samples - 4.0).ravel()
        expected = math.hypot(0.03, 0.04)
        assert_within(float(err.std(ddof=1)), expected, 5 * se_std(expected, err.size), "std")

    def test_quantisation_error_bounded_by_half_lsb(self) -> None:
        noise = ReadNoise(adc_bits=8, adc_range_v=1.0)
        lsb = 2.0 / 256
        assert noise.lsb_v == lsb
        rng = np.random.default_rng(5)
        # the whole range except the top half LSB, which saturates at the top code
        v = rng.uniform(-1.0, 1.0 - lsb / 2, size=(20, 500))
        samples, flags = noise.sample(v, 1, rng)
        err = samples[0] - v
        assert float(np.max(np.abs(err))) <= lsb / 2 * (1 + 1e-12)
        codes = samples / lsb
        np.testing.assert_array_equal(codes, np.rint(codes))
        assert codes.min() >= -128 and codes.max() <= 127
        assert not flags.any()
        # quantisation alone draws nothing: the output is deterministic
        again, _ = noise.sample(v, 1, np.random.default_rng(999))
        np.testing.assert_array_equal(again, samples)

    def test_top_of_range_saturates_at_top_code(self) -> None:
        noise = ReadNoise(adc_bits=4, adc_range_v=1.0)
        s, f = noise.sample(np.array([[1.0, -1.0, 0.0]]), 1, np.random.default_rng(0))
        np.testing.assert_allclose(s[0, 0], [1.0 - 2.0 / 16, -1.0, 0.0], rtol=0, atol=1e-15)
        assert not f.any()

    def test_overrange_clamps_and_flags(self) -> None:
        noise = ReadNoise(adc_range_v=2.0)
        v = np.array([[-3.0, -2.0, 0.0, 2.0, 2.5]])
        s, f = noise.sample(v, 3, np.random.default_rng(0))
        np.testing.assert_array_equal(s[1, 0], [-2.0, -2.0, 0.0, 2.0, 2.0])
        over = np.uint8(SampleFlag.OVERRANGE)
        np.testing.assert_array_equal(f[2, 0], [over, 0, 0, 0, over])

    def test_overrange_with_noise_flags_exactly_the_clamped_samples(self) -> None:
        rng = np.random.default_rng(6)
        v = np.full((10, 10), 1.0)
        noisy = ReadNoise(sigma_v=0.05, adc_range_v=1.0)
        s, f = noisy.sample(v, 200, rng)
        assert float(np.max(np.abs(s))) <= 1.0
        flagged = f.astype(bool)
        np.testing.assert_array_equal(flagged, s == 1.0)
        frac = float(flagged.mean())  # half the samples land above the range
        assert_within(frac, 0.5, 5 * math.sqrt(0.25 / flagged.size), "overrange fraction")

    def test_ideal_draws_nothing(self) -> None:
        noise = ReadNoise()
        assert noise.is_ideal
        rng = np.random.default_rng(7)
        before = rng.bit_generator.state
        v = np.arange(6.0).reshape(2, 3)
        s, f = noise.sample(v, 4, rng)
        assert rng.bit_generator.state == before
        np.testing.assert_array_equal(s, np.broadcast_to(v, (4, 2, 3)))
        assert not f.any() and f.dtype == np.uint8
        s[0, 0, 0] = 99.0  # a real, writeable copy
        assert v[0, 0] == 0.0
        vc = v + 1j * v
        sc, _ = noise.sample(vc, 2, rng)
        assert rng.bit_generator.state == before
        np.testing.assert_array_equal(sc[1], vc)

    def test_noise_free_range_and_adc_draw_nothing(self) -> None:
        noise = ReadNoise(adc_bits=12, adc_range_v=5.0)
        assert not noise.is_ideal
        rng = np.random.default_rng(8)
        before = rng.bit_generator.state
        noise.sample(np.ones((3, 3)) * 7.0, 5, rng)
        assert rng.bit_generator.state == before

    def test_complex_parts_get_independent_noise(self) -> None:
        sigma = 0.01
        rng = np.random.default_rng(9)
        v = np.full((20, 20), 0.3 - 0.2j)
        s, f = ReadNoise(sigma_v=sigma).sample(v, 1000, rng)
        assert s.dtype == np.complex128 and not f.any()
        err = (s - v).ravel()
        n = err.size
        assert_within(float(err.real.std(ddof=1)), sigma, 5 * se_std(sigma, n), "real std")
        assert_within(float(err.imag.std(ddof=1)), sigma, 5 * se_std(sigma, n), "imag std")
        corr = float(np.corrcoef(err.real, err.imag)[0, 1])
        assert abs(corr) <= 5 / math.sqrt(n)

    def test_complex_overrange_flags_either_part(self) -> None:
        noise = ReadNoise(adc_range_v=1.0)
        s, f = noise.sample(
            np.array([[2.0 + 0j, 0.5 - 3j, 0.5 + 0.5j]]), 1, np.random.default_rng()
        )
        np.testing.assert_array_equal(s[0, 0], [1.0 + 0j, 0.5 - 1j, 0.5 + 0.5j])
        np.testing.assert_array_equal(f[0, 0].astype(bool), [True, True, False])

    def test_reproducible(self) -> None:
        noise = get_preset("reram").read
        v = np.linspace(-9.99, 9.99, 60).reshape(3, 20)
        a = noise.sample(v, 5, np.random.default_rng(42))
        b = noise.sample(v, 5, np.random.default_rng(42))
        c = noise.sample(v, 5, np.random.default_rng(43))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.array_equal(a[0], c[0])

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"sigma_v": -1e-3}, "sigma_v"),
            ({"sigma_v": math.nan}, "sigma_v"),
            ({"relative": -0.1}, "relative"),
            ({"slow_v": -1e-4}, "slow_v"),
            ({"slow_v": math.inf}, "slow_v"),
            ({"adc_range_v": 0.0}, "adc_range_v"),
            ({"adc_range_v": math.nan}, "adc_range_v"),
            ({"adc_bits": 1, "adc_range_v": 1.0}, "2..32"),
            ({"adc_bits": 33, "adc_range_v": 1.0}, "2..32"),
            ({"adc_bits": True, "adc_range_v": 1.0}, "integer"),
            ({"adc_bits": 16}, "finite adc_range_v"),
        ],
    )
    def test_validation(self, kwargs: dict[str, object], match: str) -> None:
        with pytest.raises(ConfigError, match=match) as info:
            ReadNoise(**kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)

    def test_bad_n_samples(self) -> None:
        with pytest.raises(ConfigError, match="n_samples"):
            ReadNoise().sample(np.zeros((1, 1)), 0, np.random.default_rng())


# ---------------------------------------------------------------------------
# WriteModel, presets
# ---------------------------------------------------------------------------


class TestWriteModel:
    def test_nominal_step(self) -> None:
        assert pulsed().nominal_step_s == pytest.approx(STEP, rel=1e-15)
        assert WriteModel().nominal_step_s == 0.0
        assert WriteModel(g_min_s=1e-6, g_max_s=101e-6, n_states=50).nominal_step_s == (
            pytest.approx(2e-6, rel=1e-15)
        )

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"g_min_s": -1e-6}, "g_min_s"),
            ({"g_min_s": math.nan}, "g_min_s"),
            ({"g_min_s": 1e-4, "g_max_s": 1e-4}, "g_max_s"),
            ({"g_max_s": math.nan}, "g_max_s"),
            ({"n_states": 100}, "finite g_max_s"),
            ({"g_max_s": 1e-4, "n_states": 0.5}, "n_states"),
            ({"g_max_s": 1e-4, "n_states": 1.5, "bound_mode": "soft"}, ">= 2"),
            ({"g_max_s": 1e-4, "n_states": math.inf}, "n_states"),
            ({"g_max_s": 1e-4, "c2c": 0.3}, "needs n_states"),
            ({"g_max_s": 1e-4, "n_states": 10, "c2c": -0.3}, "c2c"),
            ({"g_max_s": 1e-4, "n_states": 10, "d2d": math.nan}, "d2d"),
            ({"g_max_s": 1e-4, "n_states": 10, "up_down": 1.0}, "up_down"),
            ({"g_max_s": 1e-4, "n_states": 10, "up_down_d2d": -0.1}, "up_down_d2d"),
            ({"bounds_d2d": -0.2}, "bounds_d2d"),
            ({"write_noise": 0.02}, "finite g_max_s"),
            ({"stuck_fraction": 1.5}, "stuck_fraction"),
            ({"read_relative": -0.01}, "read_relative"),
            ({"drift_nu": -0.05}, "drift_nu"),
            ({"drift_t0_s": 0.0}, "drift_t0_s"),
            ({"bound_mode": "squishy"}, "bound_mode"),
        ],
    )
    def test_validation(self, kwargs: dict[str, object], match: str) -> None:
        with pytest.raises(ConfigError, match=match) as info:
            WriteModel(**kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)

    def test_validate_is_callable_on_valid_model(self) -> None:
        get_preset("reram").write.validate()

    def test_presets(self) -> None:
        assert {"ideal", "reram"} <= set(PRESETS)
        ideal = get_preset("ideal")
        assert isinstance(ideal, DeviceModel)
        assert ideal.read.is_ideal
        assert ideal.write.n_states is None and ideal.write.g_min_s == 0.0
        assert math.isinf(ideal.write.g_max_s)
        w = get_preset("reram").write
        assert (w.g_min_s, w.g_max_s, w.n_states, w.bound_mode) == (1e-6, 100e-6, 100, "soft")
        assert (w.c2c, w.d2d, w.up_down, w.up_down_d2d, w.bounds_d2d) == (0.3, 0.3, 0, 0.05, 0.2)
        assert (w.write_noise, w.stuck_fraction, w.read_relative) == (0.02, 0.01, 0.01)
        r = get_preset("reram").read
        assert (r.adc_bits, r.adc_range_v, r.sigma_v) == (16, 10.0, 20.0 / 2**16)
        assert r.lsb_v == r.sigma_v
        with pytest.raises(TypeError):
            PRESETS["mine"] = ideal  # type: ignore[index]

    def test_unknown_preset_lists_names(self) -> None:
        with pytest.raises(ConfigError, match=r"ideal.*reram"):
            get_preset("nope")


# ---------------------------------------------------------------------------
# DeviceArray
# ---------------------------------------------------------------------------


def steps_from_mid(model: WriteModel, pulses: int, n: int, seed: int) -> np.ndarray:
    """Conductance change of ``n`` devices at mid-range after one call of ``pulses``."""
    rng = np.random.default_rng(seed)
    mid = 0.5 * (model.g_min_s + model.g_max_s)
    dev = DeviceArray(model, np.full(n, mid), rng)
    before, after, status = dev.apply_pulses(None, np.full(n, pulses), rng)
    assert np.all(status == OK)
    return np.asarray(after - before)


class TestPulses:
    N = 40_000

    @pytest.mark.parametrize("mode", ["hard", "soft"])
    @pytest.mark.parametrize("direction", [1, -1])
    def test_single_pulse_mean_and_c2c_std_from_mid_range(self, mode: str, direction: int) -> None:
        c2c = 0.3
        d = steps_from_mid(pulsed(bound_mode=mode, c2c=c2c), direction, self.N, seed=10)
        sigma = c2c * STEP
        assert_within(float(d.mean()), direction * STEP, 5 * se_mean(sigma, self.N), "mean step")
        assert_within(float(d.std(ddof=1)), sigma, 5 * se_std(sigma, self.N), "c2c std")

    def test_no_noise_step_is_exact(self) -> None:
        for mode in ("hard", "soft"):
            d = steps_from_mid(pulsed(bound_mode=mode), 1, 10, seed=0)
            np.testing.assert_allclose(d, STEP, rtol=1e-9)

    def test_d2d_spread_of_per_device_mean_steps(self) -> None:
        d2d, c2c, n_dev, m = 0.3, 0.3, 4000, 40
        model = WriteModel(g_min_s=0.0, g_max_s=1e-3, n_states=1000, c2c=c2c, d2d=d2d)
        rng = np.random.default_rng(11)
        dev = DeviceArray(model, np.full(n_dev, 2e-4), rng)
        # drawn parameters: relative spread of the mean step
        rel = dev.step_up_s / STEP
        assert_within(float(rel.mean()), 1.0, 5 * se_mean(d2d, n_dev), "mean of steps")
        assert_within(float(rel.std(ddof=1)), d2d, 5 * se_std(d2d, n_dev), "d2d (drawn)")
        # measured: per-device mean of m single pulses
        start = dev.g_s.copy()
        for _ in range(m):
            dev.apply_pulses(None, np.ones(n_dev, dtype=np.int64), rng)
        mean_step = (dev.g_s - start) / m
        # each per-device mean scatters around that device's drawn step by c2c/sqrt(m)
        resid = mean_step / dev.step_up_s - 1.0
        expected = c2c / math.sqrt(m)
        assert_within(float(resid.std(ddof=1)), expected, 5 * se_std(expected, n_dev), "resid")
        # Var(per-device mean) = (d2d s)^2 + E[(c2c s_i)^2] / m,  E[s_i^2] = s^2 (1 + d2d^2)
        var_c2c = (c2c * STEP) ** 2 * (1 + d2d**2) / m
        var = float(mean_step.var(ddof=1))
        est = math.sqrt(var - var_c2c) / STEP
        # SE(var) = var sqrt(2/(N-1)); propagated through sqrt(var - c)/s
        tol = 5 * var * math.sqrt(2 / (n_dev - 1)) / (2 * d2d * STEP**2)
        assert_within(est, d2d, tol, "d2d (measured)")

    def test_soft_step_shrinks_linearly_and_vanishes_at_bounds(self) -> None:
        model = pulsed(bound_mode="soft", g_min_s=10e-6)  # range 90 µS, step 0.9 µS
        g = np.linspace(10e-6, 100e-6, 91)
        rng = np.random.default_rng(0)
        h = 45e-6
        s = model.nominal_step_s
        up = DeviceArray(model, g, rng)
        b, a, st = up.apply_pulses(None, np.ones(91, dtype=np.int64), rng)
        np.testing.assert_allclose(a - b, s * (100e-6 - g) / h, rtol=1e-9, atol=1e-20)
        assert a[-1] == 100e-6 and st[-1] == AT_MAX
        down = DeviceArray(model, g, rng)
        b, a, st = down.apply_pulses(None, -np.ones(91, dtype=np.int64), rng)
        np.testing.assert_allclose(b - a, s * (g - 10e-6) / h, rtol=1e-9, atol=1e-20)
        assert a[0] == 10e-6 and st[0] == AT_MIN

    def test_soft_bounds_never_crossed_under_noise(self) -> None:
        model = pulsed(bound_mode="soft", c2c=0.6, d2d=0.2, bounds_d2d=0.2, g_min_s=1e-6)
        rng = np.random.default_rng(12)
        n = 5000
        dev = DeviceArray(model, np.full(n, 50e-6), rng)
        lo, hi = dev.g_min_dev_s, dev.g_max_dev_s
        for k in (1, 3, 50, 1000):
            for sign in (1, -1):
                dev.apply_pulses(None, np.full(n, sign * k), rng)
                assert np.all(dev.g_s >= lo) and np.all(dev.g_s <= hi)
        # a long up train saturates every device and reports AT_MAX
        _, after, st = dev.apply_pulses(None, np.full(n, 5000), rng)
        assert np.all(st == AT_MAX)
        assert np.all(hi - after <= model.nominal_step_s)

    def test_hard_bounds_clip_and_flag(self) -> None:
        model = pulsed(bound_mode="hard", c2c=0.3)
        rng = np.random.default_rng(13)
        g0 = np.array([99.5e-6, 0.5e-6, 50e-6, 50e-6, 100e-6])
        dev = DeviceArray(model, g0, rng)
        p = np.array([10, -10, 0, 1, 1])
        before, after, st = dev.apply_pulses(None, p, rng)
        np.testing.assert_array_equal(before, g0)
        assert st.dtype == np.int8
        np.testing.assert_array_equal(st, [AT_MAX, AT_MIN, NO_CHANGE, OK, AT_MAX])
        np.testing.assert_array_equal(after[[0, 1, 2, 4]], [G_MAX, 0.0, 50e-6, G_MAX])

    def test_up_down_asymmetry(self) -> None:
        ud = 0.2
        model = pulsed(up_down=ud)
        up = steps_from_mid(model, 1, 4, seed=0)
        down = steps_from_mid(model, -1, 4, seed=0)
        np.testing.assert_allclose(up / -down, (1 + ud) / (1 - ud), rtol=1e-12)
        # with c2c noise: ratio of the mean steps
        noisy = pulsed(up_down=ud, c2c=0.3, bound_mode="soft")
        up = steps_from_mid(noisy, 1, self.N, seed=1)
        down = -steps_from_mid(noisy, -1, self.N, seed=2)
        assert_within(float(up.mean()), (1 + ud) * STEP, 5 * se_mean(0.3 * 1.2e-6, self.N), "up")
        assert_within(float(down.mean()), (1 - ud) * STEP, 5 * se_mean(0.3 * 0.8e-6, self.N), "dn")

    def test_up_down_d2d_spread(self) -> None:
        n, spread = 20_000, 0.05
        dev = DeviceArray(pulsed(up_down_d2d=spread), np.full(n, 5e-5), np.random.default_rng(14))
        beta = (dev.step_up_s - dev.step_down_s) / (dev.step_up_s + dev.step_down_s)
        assert_within(float(beta.mean()), 0.0, 5 * se_mean(spread, n), "mean asymmetry")
        assert_within(float(beta.std(ddof=1)), spread, 5 * se_std(spread, n), "asymmetry d2d")

    @pytest.mark.parametrize("mode", ["hard", "soft"])
    @pytest.mark.parametrize("k", [5, 20])
    def test_train_of_k_pulses_matches_k_single_pulses(self, mode: str, k: int) -> None:
        n, c2c = 20_000, 0.3
        model = pulsed(bound_mode=mode, c2c=c2c)
        rng = np.random.default_rng(100 + k)
        train = DeviceArray(model, np.full(n, 40e-6), rng)
        train.apply_pulses(None, np.full(n, k), rng)
        single = DeviceArray(model, np.full(n, 40e-6), rng)
        for _ in range(k):
            single.apply_pulses(None, np.ones(n, dtype=np.int64), rng)
        a, b = train.g_s - 40e-6, single.g_s - 40e-6
        # analytic moments of the change
        if mode == "hard":
            mean, std = k * STEP, math.sqrt(k) * c2c * STEP
        else:
            r, x0 = STEP / 50e-6, 60e-6
            mean = x0 * (1 - (1 - r) ** k)
            std = x0 * math.sqrt(((1 - r) ** 2 + (r * c2c) ** 2) ** k - (1 - r) ** (2 * k))
        for name, x in (("train", a), ("single", b)):
            assert_within(float(x.mean()), mean, 5 * se_mean(std, n), f"{name} mean")
            assert_within(float(x.std(ddof=1)), std, 5 * se_std(std, n), f"{name} std")
        diff_tol = 5 * math.sqrt(2) * se_mean(std, n)
        assert_within(float(a.mean() - b.mean()), 0.0, diff_tol, "mean difference")
        ratio_tol = 5 * math.sqrt(2) / math.sqrt(2 * (n - 1))
        assert_within(float(a.std() / b.std()), 1.0, ratio_tol, "std ratio")
        assert std > 0.9 * math.sqrt(k) * c2c * STEP * (1 - STEP / 50e-6) ** k

    def test_stuck_devices_do_not_move(self) -> None:
        n, p = 20_000, 0.3
        model = pulsed(stuck_fraction=p, c2c=0.3, write_noise=0.02)
        rng = np.random.default_rng(15)
        g0 = rng.uniform(10e-6, 90e-6, n)
        dev = DeviceArray(model, g0, rng)
        assert dev.stuck.dtype == np.bool_ and dev.stuck.shape == (n,)
        frac = float(dev.stuck.mean())
        assert_within(frac, p, 5 * math.sqrt(p * (1 - p) / n), "stuck fraction")
        _, _, st = dev.apply_pulses(None, np.full(n, 3), rng)
        dev.apply_deltas(None, np.full(n, -7e-6), rng)
        assert np.all(st == OK)  # a board cannot tell a stuck device from a noisy one
        np.testing.assert_array_equal(dev.g_s[dev.stuck], g0[dev.stuck])
        assert np.all(dev.g_s[~dev.stuck] != g0[~dev.stuck])
        with pytest.raises(ValueError):
            dev.stuck[0] = True

    def test_write_noise_persistent_vs_apparent(self) -> None:
        n, wn = 40_000, 0.02
        model = pulsed(write_noise=wn)  # no c2c: the persistent state is deterministic
        rng = np.random.default_rng(16)
        dev = DeviceArray(model, np.full(n, 50e-6), rng)
        np.testing.assert_array_equal(dev.g_s, dev.g_persistent_s)  # none before a write
        dev.apply_pulses(None, np.full(n, 2), rng)
        np.testing.assert_allclose(dev.g_persistent_s, 52e-6, rtol=1e-12)
        e1 = dev.g_s - dev.g_persistent_s
        sigma = wn * G_MAX
        assert_within(float(e1.mean()), 0.0, 5 * se_mean(sigma, n), "write noise mean")
        assert_within(float(e1.std(ddof=1)), sigma, 5 * se_std(sigma, n), "write noise std")
        # re-drawn at the next write (independent), and it does not accumulate
        dev.apply_pulses(None, np.full(n, -2), rng)
        np.testing.assert_allclose(dev.g_persistent_s, 50e-6, rtol=1e-12)
        e2 = dev.g_s - dev.g_persistent_s
        assert abs(float(np.corrcoef(e1, e2)[0, 1])) <= 5 / math.sqrt(n)
        assert_within(float(e2.std(ddof=1)), sigma, 5 * se_std(sigma, n), "second write std")
        # devices not written keep their apparent value
        keep = dev.g_s.copy()
        dev.apply_pulses(np.arange(10), np.ones(10, dtype=np.int64), rng)
        np.testing.assert_array_equal(dev.g_s[10:], keep[10:])
        assert np.all(dev.g_s[:10] != keep[:10])

    def test_write_noise_clipped_to_bounds(self) -> None:
        dev = DeviceArray(pulsed(write_noise=0.5), np.full(1000, 50e-6), np.random.default_rng(0))
        dev.apply_pulses(None, np.ones(1000, dtype=np.int64), np.random.default_rng(1))
        assert dev.g_s.min() == 0.0 and dev.g_s.max() == G_MAX

    def test_continuous_device_rejects_pulses(self) -> None:
        dev = DeviceArray(WriteModel(), np.ones(3) * 1e-6, np.random.default_rng())
        with pytest.raises(UnsupportedError, match="n_states"):
            dev.apply_pulses(None, np.array([0, 1, 0]), np.random.default_rng())
        _, _, st = dev.apply_pulses(None, np.zeros(3, dtype=np.int64), np.random.default_rng())
        assert np.all(st == NO_CHANGE)


class TestDeltas:
    def test_ideal_deltas_are_exact(self) -> None:
        rng = np.random.default_rng(17)
        n = 10_000
        g0 = rng.uniform(1e-6, 1e-4, n)
        dev = DeviceArray(get_preset("ideal").write, g0, rng)
        delta = rng.normal(0, 1e-5, n)
        delta[:5] = [0.0, -2e-4, 3e-4, 1e-20, -g0[4]]
        state = rng.bit_generator.state
        twin = DeviceArray(get_preset("ideal").write, g0, np.random.default_rng(17))
        req, before, after, st = dev.apply_deltas(None, delta, rng)
        assert rng.bit_generator.state == state  # nothing random in an ideal device
        assert req.dtype == np.int64 and np.all(req == 0)
        # the dense call (idx=None) returns statuses only; the indexed call returns values
        assert before.size == 0 and after.size == 0
        expect = np.maximum(g0 + delta, 0.0)
        np.testing.assert_allclose(dev.g_s, expect, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(dev.g_persistent_s, dev.g_s)
        _, before, after, st2 = twin.apply_deltas(np.arange(n), delta, rng)
        np.testing.assert_array_equal(before, g0)
        np.testing.assert_array_equal(after, dev.g_s)
        np.testing.assert_array_equal(np.where(st2 == NO_CHANGE, OK, st2), st)
        clipped = g0 + delta < 0
        assert clipped.sum() > 1
        np.testing.assert_array_equal(st[clipped], AT_MIN)
        # bulk mode marks bounds only (no NO_CHANGE for the zero delta)
        assert st[0] == OK and st[2] == OK and st[3] == OK and st[4] == OK
        assert after[3] == g0[3] + 1e-20 and after[4] == 0.0

    def test_ideal_bounded_continuous_clips_at_max(self) -> None:
        dev = DeviceArray(WriteModel(g_max_s=1e-4), np.array([9e-5, 9e-5]), np.random.default_rng())
        _, _, _, st = dev.apply_deltas(None, np.array([2e-5, 1e-5]), np.random.default_rng())
        np.testing.assert_array_equal(dev.g_s, [1e-4, 9e-5 + 1e-5])
        np.testing.assert_array_equal(st, [AT_MAX, OK])

    def test_nominal_conversion_to_pulses(self) -> None:
        model = pulsed(c2c=0.3, d2d=0.3, bound_mode="soft")
        dev = DeviceArray(model, np.full(6, 50e-6), np.random.default_rng(18))
        delta = np.array([0.0, 0.4e-6, 0.6e-6, -2.4e-6, 10e-6, -1.5e-6])
        np.testing.assert_array_equal(dev.pulses_for_delta(delta), [0, 0, 1, -2, 10, -2])
        req, before, after, st = dev.apply_deltas(None, delta, np.random.default_rng(19))
        np.testing.assert_array_equal(req, [0, 0, 1, -2, 10, -2])
        np.testing.assert_array_equal(st[:2], NO_CHANGE)
        np.testing.assert_array_equal(after[:2], before[:2])

    def test_deltas_without_noise_move_by_whole_steps(self) -> None:
        dev = DeviceArray(pulsed(), np.full(4, 50e-6), np.random.default_rng())
        _, before, after, _ = dev.apply_deltas(
            None, np.array([3.2e-6, -1.7e-6, 0.2e-6, 7e-6]), np.random.default_rng()
        )
        np.testing.assert_allclose(after - before, [3e-6, -2e-6, 0.0, 7e-6], rtol=1e-9)

    def test_bad_deltas(self) -> None:
        dev = DeviceArray(pulsed(), np.full(2, 50e-6), np.random.default_rng())
        with pytest.raises(ConfigError, match="NaN"):
            dev.apply_deltas(None, np.array([math.nan, 0.0]), np.random.default_rng())
        with pytest.raises(ConfigError, match="shape"):
            dev.apply_deltas(None, np.zeros(3), np.random.default_rng())


class TestDeviceArrayMisc:
    def test_out_buffer_updated_in_place(self) -> None:
        flat = np.zeros(12, dtype=np.float32)
        w1 = flat[:6].reshape(2, 3)  # the solver's layer matrices are views
        w2 = flat[6:].reshape(3, 2)
        rng = np.random.default_rng(20)
        dev = DeviceArray(pulsed(c2c=0.3), np.full(12, 50e-6), rng, out=flat)
        assert dev.g_s is flat
        np.testing.assert_allclose(w1, 50e-6, rtol=1e-6)
        dev.apply_pulses(np.array([0, 7]), np.array([5, -5]), rng)
        assert dev.g_s is flat
        assert w1[0, 0] > 52e-6 and w2[0, 1] < 48e-6
        assert np.all(w1.ravel()[1:] == np.float32(50e-6))
        dev.apply_deltas(np.array([11]), np.array([4e-6]), rng)
        assert w2[2, 1] != np.float32(50e-6)

    @pytest.mark.parametrize(
        "out",
        [np.zeros(5, dtype=np.float64), np.zeros(4, dtype=np.int64), np.zeros((2, 2))],
    )
    def test_bad_out_buffer(self, out: np.ndarray) -> None:
        with pytest.raises(ConfigError, match="out"):
            DeviceArray(pulsed(), np.full(4, 1e-6), np.random.default_rng(), out=out)

    def test_initial_values_validated(self) -> None:
        rng = np.random.default_rng()
        with pytest.raises(ConfigError, match=r"g_init_s\[1\]"):
            DeviceArray(pulsed(g_min_s=1e-6), np.array([1e-6, 0.5e-6]), rng)
        with pytest.raises(ConfigError, match="outside"):
            DeviceArray(pulsed(), np.array([2e-4]), rng)
        with pytest.raises(ConfigError, match="NaN"):
            DeviceArray(pulsed(), np.array([math.nan]), rng)
        with pytest.raises(ConfigError, match="shape"):
            DeviceArray(pulsed(), np.zeros((2, 2)), rng)

    def test_initial_values_clipped_to_device_bounds(self) -> None:
        dev = DeviceArray(
            pulsed(bounds_d2d=0.2, g_min_s=1e-6), np.full(5000, G_MAX), np.random.default_rng(21)
        )
        lo, hi = dev.g_min_dev_s, dev.g_max_dev_s
        assert np.all(lo < hi)
        np.testing.assert_array_equal(dev.g_s, np.minimum(G_MAX, hi))
        rel = hi / G_MAX
        assert_within(float(rel.std(ddof=1)), 0.2, 5 * se_std(0.2, 5000), "g_max d2d")
        assert_within(float((lo / 1e-6).std(ddof=1)), 0.2, 5 * se_std(0.2, 5000), "g_min d2d")

    def test_bad_indices(self) -> None:
        dev = DeviceArray(pulsed(), np.full(5, 5e-5), np.random.default_rng())
        rng = np.random.default_rng()
        with pytest.raises(ConfigError, match="appears 2 times"):
            dev.apply_pulses(np.array([3, 1, 3]), np.array([1, 1, 1]), rng)
        with pytest.raises(ConfigError, match="outside"):
            dev.apply_pulses(np.array([5]), np.array([1]), rng)
        with pytest.raises(ConfigError, match="outside"):
            dev.apply_pulses(np.array([-1]), np.array([1]), rng)
        with pytest.raises(ConfigError, match="integer"):
            dev.apply_pulses(np.array([1.0]), np.array([1]), rng)
        with pytest.raises(ConfigError, match="integer pulse counts"):
            dev.apply_pulses(np.array([1]), np.array([0.5]), rng)
        with pytest.raises(ConfigError, match="shape"):
            dev.apply_pulses(np.array([1, 2]), np.array([1]), rng)
        b, a, st = dev.apply_pulses(np.array([], dtype=np.int64), np.array([], dtype=np.int64), rng)
        assert b.shape == a.shape == st.shape == (0,)

    def test_conductance_read_noise(self) -> None:
        n, rel = 50_000, 0.01
        rng = np.random.default_rng(22)
        g0 = rng.uniform(1e-6, 1e-4, n)
        dev = DeviceArray(pulsed(read_relative=rel), g0, rng)
        r1 = dev.read(None, rng)
        err = r1 / g0 - 1.0
        assert_within(float(err.mean()), 0.0, 5 * se_mean(rel, n), "read mean")
        assert_within(float(err.std(ddof=1)), rel, 5 * se_std(rel, n), "read std")
        r2 = dev.read(None, rng)  # fresh every read
        assert abs(float(np.corrcoef(r1 / g0, r2 / g0)[0, 1])) <= 5 / math.sqrt(n)
        np.testing.assert_array_equal(dev.g_s, g0)  # reads do not disturb
        sub = dev.read(np.array([4, 2]), rng)
        assert sub.shape == (2,)
        quiet = DeviceArray(pulsed(), g0[:10], rng)
        state = rng.bit_generator.state
        np.testing.assert_array_equal(quiet.read(np.array([3, 1]), rng), g0[[3, 1]])
        assert rng.bit_generator.state == state

    def test_drift_power_law(self) -> None:
        nu, t0 = 0.05, 20.0
        model = pulsed(drift_nu=nu, drift_t0_s=t0)
        g0 = np.linspace(10e-6, 90e-6, 9)
        dev = DeviceArray(model, g0, np.random.default_rng())
        dev.advance_time(100.0)
        np.testing.assert_allclose(dev.g_s, g0 * (120.0 / 20.0) ** -nu, rtol=1e-14)
        dev.advance_time(50.0)
        np.testing.assert_allclose(dev.g_s, g0 * (170.0 / 20.0) ** -nu, rtol=1e-14)
        # a write restarts the clock of that device only, from its drifted value
        drifted = dev.g_s[0]
        dev.apply_pulses(np.array([0]), np.array([2]), np.random.default_rng())
        g_prog = drifted + 2e-6
        assert dev.g_s[0] == pytest.approx(g_prog, rel=1e-12)
        dev.advance_time(30.0)
        assert dev.g_s[0] == pytest.approx(g_prog * (50.0 / 20.0) ** -nu, rel=1e-13)
        np.testing.assert_allclose(dev.g_s[1:], g0[1:] * (200.0 / 20.0) ** -nu, rtol=1e-14)
        np.testing.assert_allclose(dev.g_persistent_s, dev.g_s, rtol=1e-15)

    def test_drift_exponent_spread_between_devices(self) -> None:
        """Each device drifts by its own exponent ``max(nu + nu_d2d xi, 0)``."""
        nu, sd, t0 = 0.1, 0.05, 1.0
        g0 = np.full(4000, 50e-6)
        dev = DeviceArray(pulsed(drift_nu=nu, drift_nu_d2d=sd, drift_t0_s=t0), g0,
                          np.random.default_rng(7))
        dev.advance_time(99.0)
        nu_dev = -np.log(dev.g_s / g0) / np.log(100.0)  # each device's exponent, exactly
        # the same draws, made independently (construction draws only this, in this order)
        want = np.maximum(nu + sd * np.random.default_rng(7).standard_normal(4000), 0.0)
        np.testing.assert_allclose(nu_dev, want, rtol=1e-12, atol=1e-15)
        # mean and spread as configured within 4 standard errors (n = 4000; clipping at 0
        # is 2.3 % of the draws and shifts the moments by < 1e-3)
        assert abs(nu_dev.mean() - nu) < 4 * sd / np.sqrt(4000) + 1e-3
        assert abs(nu_dev.std(ddof=1) - sd) < 4 * sd / np.sqrt(2 * 3999) + 1e-3
        # a spread with drift_nu = 0 still drifts the devices with a positive draw
        half = DeviceArray(pulsed(drift_nu_d2d=0.1), np.full(100, 5e-5),
                           np.random.default_rng(1))
        half.advance_time(10.0)
        assert np.any(half.g_s < 5e-5) and np.any(half.g_s == 5e-5)
        with pytest.raises(ConfigError, match="drift_nu_d2d"):
            pulsed(drift_nu_d2d=-0.1)

    def test_no_drift_is_a_no_op(self) -> None:
        dev = DeviceArray(pulsed(), np.full(3, 5e-5), np.random.default_rng())
        buf = dev.g_s
        dev.advance_time(1e6)
        assert dev.g_s is buf and np.all(buf == 5e-5)
        with pytest.raises(ConfigError, match="dt_s"):
            dev.advance_time(-1.0)

    def test_stuck_devices_do_not_drift(self) -> None:
        model = pulsed(drift_nu=0.1, stuck_fraction=0.5)
        dev = DeviceArray(model, np.full(200, 5e-5), np.random.default_rng(23))
        dev.advance_time(1000.0)
        assert np.all(dev.g_s[dev.stuck] == 5e-5)
        assert np.all(dev.g_s[~dev.stuck] < 5e-5)


def run_script(seed: int) -> tuple[np.ndarray, ...]:
    """A short programming session on the reram preset."""
    rng = np.random.default_rng(seed)
    model = get_preset("reram")
    dev = DeviceArray(model.write, np.full(500, 50e-6), rng)
    p = rng.integers(-5, 6, 500)
    _, _, s1 = dev.apply_pulses(None, p, rng)
    _, _, _, s2 = dev.apply_deltas(np.arange(0, 500, 2), rng.normal(0, 5e-6, 250), rng)
    reads = dev.read(None, rng)
    volts, flags = model.read.sample(rng.uniform(-11, 11, (3, 7)), 4, rng)
    return dev.g_s.copy(), dev.stuck.copy(), s1, s2, reads, volts, flags


def test_same_seed_bit_identical_different_seed_differs() -> None:
    a, b, c = run_script(7), run_script(7), run_script(8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[4], c[4])
    assert not np.array_equal(a[5], c[5])
