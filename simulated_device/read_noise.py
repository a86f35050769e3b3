"""Node-voltage read noise of the board emulator: the measurement chain of one read.

:class:`ReadNoise` models what a bench's node meter adds to the true voltage:
additive and relative Gaussian noise, a slow (low-frequency) additive term that stays
constant during one read's repeat samples, the converter's range (samples beyond it are
clamped and flagged ``OVERRANGE``) and ADC quantisation. Every random number comes
from the :class:`numpy.random.Generator` passed in (one seeded generator per run).
The conductance write model is separate (:mod:`simulated_device.write_model`); a
:class:`~simulated_device.device_models.DeviceModel` pairs the two.

Units: volts (``_v``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hwloop.device import SampleFlag
from hwloop.errors import ConfigError

__all__ = ["ReadNoise"]

F64: TypeAlias = NDArray[np.float64]


def _finite_nonneg(owner: str, name: str, value: float) -> None:
    """Raise ConfigError unless ``value`` is a finite number >= 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{owner}.{name}={value!r} must be a finite number >= 0")




@dataclass(frozen=True)
class ReadNoise:
    """Noise of one node-voltage sample (the measurement chain of a read).

    Attributes:
        sigma_v: additive Gaussian std per sample, V (finite, >= 0).
        relative: multiplicative Gaussian std relative to ``|v|`` (finite, >= 0).
            The two Gaussian terms are independent, so one sample has std
            ``sqrt(sigma_v**2 + (relative * |v|)**2)``.
        slow_v: std of an additive Gaussian term drawn once per node per read and
            shared by that read's ``n_samples`` repeats, V (finite, >= 0): noise whose
            correlation time is longer than one read burst (1/f-like, or a slowly
            wandering reference). Averaging repeats does not reduce it: the mean of
            ``N`` samples has variance ``sigma_v**2 / N + slow_v**2``.
        adc_bits: ADC resolution, bits (``None``: no quantisation; 2..32). Needs a
            finite ``adc_range_v``.
        adc_range_v: converter full scale, V (> 0, ``inf``: no range). Samples
            outside ``[-adc_range_v, +adc_range_v]`` are clamped to it and flagged
            :attr:`hwloop.device.SampleFlag.OVERRANGE`.

    Raises:
        ConfigError: at construction, for an invalid value (one-line message).

    """

    sigma_v: float = 0.0
    relative: float = 0.0
    adc_bits: int | None = None
    adc_range_v: float = math.inf
    slow_v: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the values; raise :class:`ConfigError` with a one-line message."""
        _finite_nonneg("ReadNoise", "sigma_v", self.sigma_v)
        _finite_nonneg("ReadNoise", "relative", self.relative)
        _finite_nonneg("ReadNoise", "slow_v", self.slow_v)
        r = self.adc_range_v
        if not (isinstance(r, int | float) and not math.isnan(r) and r > 0):
            raise ConfigError(f"ReadNoise.adc_range_v={r!r} must be > 0 V (inf for no range)")
        bits = self.adc_bits
        if bits is not None:
            if isinstance(bits, bool) or not isinstance(bits, int | np.integer):
                raise ConfigError(f"ReadNoise.adc_bits={bits!r} must be an integer or None")
            if not 2 <= bits <= 32:
                raise ConfigError(f"ReadNoise.adc_bits={bits} must be in 2..32 (or None for off)")
            if not math.isfinite(r):
                raise ConfigError(
                    "ReadNoise.adc_bits needs a finite adc_range_v (the LSB is 2*range/2**bits)"
                )

    @property
    def is_ideal(self) -> bool:
        """True when a sample is the true value: no noise, no quantisation, no range."""
        return (
            self.sigma_v == 0.0
            and self.relative == 0.0
            and self.slow_v == 0.0
            and self.adc_bits is None
            and math.isinf(self.adc_range_v)
        )

    @property
    def lsb_v(self) -> float:
        """ADC step ``2 * adc_range_v / 2**adc_bits``, V (0.0 without quantisation)."""
        if self.adc_bits is None:
            return 0.0
        return 2.0 * self.adc_range_v / 2.0**self.adc_bits

    def sample(
        self, v_true: ArrayLike, n_samples: int, rng: np.random.Generator
    ) -> tuple[NDArray[np.float64] | NDArray[np.complex128], NDArray[np.uint8]]:
        """Draw ``n_samples`` noisy samples of every true node voltage.

        Order per sample: add noise (the slow term is drawn once per element and
        added to every repeat), clamp to ``±adc_range_v`` (flag
        ``OVERRANGE``), quantise with a uniform mid-tread quantiser
        (``LSB = 2 * range / 2**bits``; output codes ``-2**(bits-1) ..
        2**(bits-1) - 1``, so the top half-LSB below ``+range`` saturates at
        ``range - LSB``). Complex voltages (holomorphic emulator): the real and
        imaginary parts get independent noise of the same std (relative part
        taken relative to the modulus ``|v|``) and are clamped and quantised as
        two converter channels; ``OVERRANGE`` is set if either part clamped.
        When :attr:`is_ideal` the samples are copies of ``v_true`` and ``rng``
        is not used; without noise terms ``rng`` is never used either.

        Args:
            v_true: ``(batch, n_nodes)`` true voltages, V (any shape is accepted;
                the samples axis is prepended). Real or complex.
            n_samples: repeat samples (>= 1).
            rng: the run's generator.

        Returns:
            ``(samples_v, flags)``: ``(n_samples, *v_true.shape)`` float64 (or
            complex128) samples, V, and uint8 :class:`SampleFlag` bits of the
            same shape.

        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer):
            raise ConfigError(f"n_samples={n_samples!r} must be an integer >= 1")
        if n_samples < 1:
            raise ConfigError(f"n_samples={n_samples} must be >= 1")
        v = np.asarray(v_true)
        shape = (int(n_samples), *v.shape)
        if np.iscomplexobj(v):
            vc = v.astype(np.complex128, copy=False)
            if self.is_ideal:
                return np.broadcast_to(vc, shape).copy(), np.zeros(shape, dtype=np.uint8)
            std = self._std(np.abs(vc))
            re, f_re = self._chain(vc.real, std, shape, rng)
            im, f_im = self._chain(vc.imag, std, shape, rng)
            out = np.empty(shape, dtype=np.complex128)
            out.real = re
            out.imag = im
            return out, f_re | f_im
        vr = v.astype(np.float64, copy=False)
        if self.is_ideal:
            return np.broadcast_to(vr, shape).copy(), np.zeros(shape, dtype=np.uint8)
        return self._chain(vr, self._std(np.abs(vr)), shape, rng)

    def _std(self, v_abs: F64) -> F64 | None:
        """Per-element noise std, V (``None`` when there is no noise)."""
        if self.sigma_v == 0.0 and self.relative == 0.0:
            return None
        if self.relative == 0.0:
            return np.full(v_abs.shape, self.sigma_v, dtype=np.float64)
        return np.asarray(np.hypot(self.sigma_v, self.relative * v_abs), dtype=np.float64)

    def _chain(
        self, v: F64, std: F64 | None, shape: tuple[int, ...], rng: np.random.Generator
    ) -> tuple[F64, NDArray[np.uint8]]:
        """Noise, clamp and quantisation of one real channel."""
        if std is None:
            samples = np.broadcast_to(v, shape).copy()
        else:
            samples = rng.standard_normal(shape)
            samples *= std
            samples += v
        if self.slow_v > 0.0:
            samples += self.slow_v * rng.standard_normal(shape[1:])
        flags = np.zeros(shape, dtype=np.uint8)
        r = self.adc_range_v
        if math.isfinite(r):
            over = np.abs(samples) > r
            flags[over] = np.uint8(SampleFlag.OVERRANGE)
            np.clip(samples, -r, r, out=samples)
        if self.adc_bits is not None:
            lsb = self.lsb_v
            half = 2.0 ** (self.adc_bits - 1)
            np.rint(samples / lsb, out=samples)
            np.clip(samples, -half, half - 1.0, out=samples)
            samples *= lsb
        return samples, flags
