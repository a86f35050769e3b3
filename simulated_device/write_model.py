"""Conductance write model of the board emulator: pulsed updates of crosspoint devices.

:class:`WriteModel` (a frozen dataclass) and :class:`DeviceArray` (the state of ``n``
devices): pulsed conductance updates of ``n`` crosspoint devices, following the
aihwkit ``PulsedDevice`` family (docs/devices.md §1.2): a nominal step per
pulse with device-to-device (d2d) spread, cycle-to-cycle (c2c) noise on each pulse,
up/down asymmetry, hard or soft bounds with d2d spread, stuck devices,
persistent-vs-apparent write noise, per-read conductance noise and power-law drift.

Every random number comes from the :class:`numpy.random.Generator` passed in by
the caller (one seeded generator per run; nothing here creates a generator or
touches numpy's global state). Node-voltage read noise is separate
(:mod:`simulated_device.read_noise`); presets pairing the two are in
:mod:`simulated_device.device_models`.

Units are SI throughout: conductances in siemens (``_s`` after a conductance
name), voltages in volts (``_v``), times in seconds (``_s`` after a time name).

Pulse-update law (per device, direction ``d = +1`` up / ``-1`` down)
-------------------------------------------------------------------
Let ``s = (g_max - g_min) / n_states`` be the nominal step. Each device draws
once, at construction, its mean step ``s_i = s (1 + d2d xi)`` and asymmetry
``beta_i = up_down + up_down_d2d xi`` (aihwkit ``dw_min_dtod``/``up_down_dtod``),
so its up step is ``s_i (1 + beta_i)`` and its down step ``s_i (1 - beta_i)``
(both clipped at >= 0). Its bounds ``[a_i, b_i]`` are the nominal bounds with a
relative Gaussian spread ``bounds_d2d`` (factor truncated at 0.1 for ``g_max``
and at 0 for ``g_min``; a device whose drawn bounds would not be ordered keeps
the nominal ones).

*Hard bounds* (aihwkit ``ConstantStepDevice``): every pulse adds
``d s_d (1 + c2c xi_j)``. A train of ``k`` pulses is therefore exactly
``g_k = g_0 + d k s_d + sqrt(k) c2c s_d xi`` (a sum of Gaussians), then clipped
to ``[a_i, b_i]`` with ``AT_MAX``/``AT_MIN`` where the clip acted. Clipping
once at the end equals clipping after every pulse except when a single noisy
pulse steps backwards (probability ``Phi(-1/c2c)``, 4e-4 for c2c = 0.3).

*Soft bounds* (aihwkit ``SoftBoundsDevice``, ``mult_noise=True``): the step
shrinks linearly to zero at the bound it moves towards and equals ``s_d`` at
mid-range. With ``h = (b - a)/2``, ``r = s_d / h`` and ``x`` the distance to
the bound approached (``b - g`` up, ``g - a`` down), one pulse maps
``x -> x (1 - r (1 + c2c xi_j))``. For ``k`` pulses, by independence of the
``xi_j``::

    E[x_k]   = x_0 (1 - r)^k
    E[x_k^2] = x_0^2 ((1 - r)^2 + r^2 c2c^2)^k
    Var[x_k] = E[x_k]^2 ((1 + q^2)^k - 1),   q = r c2c / (1 - r)

so for small ``q`` the std is ``~ sqrt(k) c2c r E[x_k] / (1 - r)``: the
``sqrt(k) * c2c * step`` growth of a random walk, shrunk by the soft bound.
A train is drawn as one Gaussian with exactly these two moments (exact for
``k = 1``; moment-matched for ``k > 1``), then clipped to the bounds. Without
c2c noise the closed form is exact. ``r`` is capped just below 1 (a single
pulse can at most take a device to its bound). Soft-bound devices report
``AT_MAX``/``AT_MIN`` when the pulses leave them within one nominal step of the
bound they moved towards (the next pulse would change them by less than
``2/n_states`` of a nominal step) or when the clip acted.

Write noise (aihwkit "persistent vs apparent", docs/devices.md §1.3): pulses update a
hidden persistent conductance; the apparent conductance that the circuit and
every read see is ``persistent + write_noise (g_max - g_min) xi``, re-drawn each
time that device is written and clipped to its bounds.

Random-number draw order (fixed, for bit-identical reproduction): construction
draws step d2d, asymmetry d2d, ``g_max`` d2d, ``g_min`` d2d, then the stuck
mask, then the drift exponents (``drift_nu_d2d``), each only when its parameter is
non-zero. A write draws c2c noise, then
write noise, one number per written device each, only when non-zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hwloop.device import ProgramStatus
from hwloop.errors import ConfigError, UnsupportedError

__all__ = ["DeviceArray", "WriteModel"]

F64: TypeAlias = NDArray[np.float64]
I64: TypeAlias = NDArray[np.int64]
I8: TypeAlias = NDArray[np.int8]
Param: TypeAlias = float | F64
"""A per-device parameter: a scalar when every device shares it, else ``(n,)``."""

_R_MAX = 1.0 - 1e-9
"""Cap of the soft-bound per-pulse factor ``r = step / half-range``."""

_OK = np.int8(ProgramStatus.OK)
_AT_MAX = np.int8(ProgramStatus.AT_MAX)
_AT_MIN = np.int8(ProgramStatus.AT_MIN)
_NO_CHANGE = np.int8(ProgramStatus.NO_CHANGE)


def _finite_nonneg(owner: str, name: str, value: float) -> None:
    """Raise ConfigError unless ``value`` is a finite number >= 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{owner}.{name}={value!r} must be a finite number >= 0")




@dataclass(frozen=True)
class WriteModel:
    """Pulsed conductance-update model of one device kind (aihwkit-like).

    Field semantics follow aihwkit ``PulsedDevice`` (docs/devices.md
    §1.2), expressed in siemens instead of normalised weights. See the module
    docstring for the update law.

    Attributes:
        g_min_s: mean lower bound, S (finite, >= 0).
        g_max_s: mean upper bound, S (> g_min_s; ``inf`` only for continuous devices).
        n_states: nominal pulse states over the range, ``(g_max - g_min) / step``
            (>= 1 for hard, >= 2 for soft bounds; needs a finite g_max). ``None``:
            ideal continuous device, programmed only by deltas (applied exactly).
        bound_mode: ``"hard"`` (constant step, clipped) or ``"soft"`` (step
            shrinks linearly to 0 at the bound; equals the nominal step at mid-range).
        c2c: cycle-to-cycle std of each pulse's step, relative to that step (>= 0).
        d2d: device-to-device std of the mean step, relative (>= 0).
        up_down: systematic asymmetry: up steps ``*(1 + up_down)``, down
            ``*(1 - up_down)`` (``|up_down| < 1``).
        up_down_d2d: device-to-device std of the asymmetry (>= 0).
        bounds_d2d: device-to-device relative std of g_max (and of g_min if > 0) (>= 0).
        write_noise: persistent-vs-apparent noise std, fraction of
            ``g_max - g_min``, re-drawn at every write of a device (>= 0; needs a
            finite g_max).
        stuck_fraction: probability that a device is stuck (ignores every write), 0..1.
        read_relative: relative std of one conductance read, fresh every read (>= 0).
        drift_nu: power-law drift exponent: ``g(t) = g_prog ((t + t0)/t0)**-nu``
            with ``t`` the time since the device was last programmed (>= 0).
        drift_t0_s: drift reference time ``t0``, s (> 0).
        drift_nu_d2d: device-to-device std of the drift exponent, absolute (>= 0):
            each device drifts with its own ``max(drift_nu + drift_nu_d2d xi, 0)``.
            A spread of exponents is what makes drift change the *ratios* of
            conductances (a common power law scales every device alike).

    Raises:
        ConfigError: at construction (via :meth:`validate`) for an invalid value.

    """

    g_min_s: float = 0.0
    g_max_s: float = math.inf
    n_states: float | None = None
    bound_mode: Literal["hard", "soft"] = "hard"
    c2c: float = 0.0
    d2d: float = 0.0
    up_down: float = 0.0
    up_down_d2d: float = 0.0
    bounds_d2d: float = 0.0
    write_noise: float = 0.0
    stuck_fraction: float = 0.0
    read_relative: float = 0.0
    drift_nu: float = 0.0
    drift_t0_s: float = 20.0
    drift_nu_d2d: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raise :class:`ConfigError` with a one-line message."""
        w = "WriteModel"
        _finite_nonneg(w, "g_min_s", self.g_min_s)
        gmax = self.g_max_s
        if not (isinstance(gmax, int | float) and not math.isnan(gmax) and gmax > self.g_min_s):
            raise ConfigError(
                f"{w}.g_max_s={gmax!r} must be greater than g_min_s={self.g_min_s!r} "
                "(inf allowed only for a continuous device)"
            )
        if self.bound_mode not in ("hard", "soft"):
            raise ConfigError(f"{w}.bound_mode={self.bound_mode!r} must be 'hard' or 'soft'")
        for name in (
            "c2c",
            "d2d",
            "up_down_d2d",
            "bounds_d2d",
            "write_noise",
            "read_relative",
            "drift_nu",
            "drift_nu_d2d",
        ):
            _finite_nonneg(w, name, getattr(self, name))
        ud = self.up_down
        if not (isinstance(ud, int | float) and math.isfinite(ud) and abs(ud) < 1):
            raise ConfigError(f"{w}.up_down={ud!r} must be a finite number with |up_down| < 1")
        p = self.stuck_fraction
        if not (isinstance(p, int | float) and 0 <= p <= 1):
            raise ConfigError(f"{w}.stuck_fraction={p!r} must be a probability in 0..1")
        t0 = self.drift_t0_s
        if not (isinstance(t0, int | float) and math.isfinite(t0) and t0 > 0):
            raise ConfigError(f"{w}.drift_t0_s={t0!r} must be a finite time > 0 s")
        ns = self.n_states
        if ns is None:
            for name in ("c2c", "d2d", "up_down", "up_down_d2d"):
                if getattr(self, name) != 0:
                    raise ConfigError(
                        f"{w}.{name}={getattr(self, name)!r} needs n_states: pulse-step "
                        "parameters have no meaning for a continuous device (n_states=None)"
                    )
        else:
            if isinstance(ns, bool) or not (isinstance(ns, int | float) and math.isfinite(ns)):
                raise ConfigError(f"{w}.n_states={ns!r} must be a finite number or None")
            if not math.isfinite(gmax):
                raise ConfigError(
                    f"{w}.n_states={ns!r} needs a finite g_max_s (the step is range/n_states); "
                    "set g_max_s or use n_states=None"
                )
            low = 2 if self.bound_mode == "soft" else 1
            if ns < low:
                raise ConfigError(
                    f"{w}.n_states={ns!r} must be >= {low} for {self.bound_mode} bounds"
                )
        if self.write_noise > 0 and not math.isfinite(gmax):
            raise ConfigError(
                f"{w}.write_noise={self.write_noise!r} is a fraction of g_max - g_min and "
                "needs a finite g_max_s"
            )

    @property
    def is_continuous(self) -> bool:
        """True for an ideal continuous device (``n_states is None``)."""
        return self.n_states is None

    @property
    def range_s(self) -> float:
        """Nominal range ``g_max_s - g_min_s``, S (may be ``inf``)."""
        return self.g_max_s - self.g_min_s

    @property
    def nominal_step_s(self) -> float:
        """Nominal step ``(g_max - g_min) / n_states``, S (0.0 for a continuous device)."""
        if self.n_states is None:
            return 0.0
        return (self.g_max_s - self.g_min_s) / self.n_states


# ---------------------------------------------------------------------------
# The state of n devices
# ---------------------------------------------------------------------------


def _take(p: Param, idx: I64) -> Param:
    """Gather a per-device parameter (scalars pass through)."""
    if isinstance(p, np.ndarray):
        return p[idx]
    return p


class DeviceArray:
    """The state of ``n`` devices of one :class:`WriteModel`.

    Device-to-device parameters (step size, asymmetry, bounds, stuck mask) are
    drawn once at construction from ``rng``. The state is a hidden persistent
    conductance per device (float64) and the apparent conductance :attr:`g_s`
    that the circuit and reads see (see the module docstring for the update
    law, write noise and drift).

    Initial state: apparent = persistent = ``g_init_s`` (no write noise until a
    device is first written), clipped to each device's own drawn bounds (a
    device cannot sit beyond its bound; with ``bounds_d2d = 0`` nothing is
    clipped). Stuck devices keep that initial value for ever: they ignore
    pulses and deltas (still reporting ``OK``, as a real board that cannot tell
    a stuck device from a noisy one would) and do not drift. Reads of them are
    still noisy.

    Args:
        model: the write model (validated).
        g_init_s: ``(n,)`` initial conductances, S, within the nominal
            ``[g_min_s, g_max_s]``.
        rng: the run's generator (d2d draws).
        out: optional ``(n,)`` float32/float64 writeable array that holds the
            apparent conductances and is updated in place (never replaced), so
            views of it (the solver's layer matrices) stay current.

    Raises:
        ConfigError: bad shapes, non-finite or out-of-range initial values, bad ``out``.

    """

    def __init__(
        self,
        model: WriteModel,
        g_init_s: ArrayLike,
        rng: np.random.Generator,
        *,
        out: NDArray[np.floating] | None = None,
    ) -> None:
        model.validate()
        self._model = model
        g0 = np.asarray(g_init_s)
        if g0.ndim != 1:
            raise ConfigError(f"g_init_s must have shape (n,), got {g0.shape}")
        if not np.issubdtype(g0.dtype, np.floating) and not np.issubdtype(g0.dtype, np.integer):
            raise ConfigError(f"g_init_s must be a real float array, got dtype {g0.dtype}")
        g0 = g0.astype(np.float64)
        n = int(g0.shape[0])
        self._n = n
        if n and not np.all(np.isfinite(g0)):
            raise ConfigError("g_init_s contains NaN or inf; pass finite conductances in S")
        # bounds as the buffer's dtype represents them (1e-6 S is 9.99999997e-7 in float32)
        kind = out.dtype.type if out is not None and isinstance(out, np.ndarray) else np.float64
        lo_ok = float(kind(model.g_min_s)) if math.isfinite(model.g_min_s) else model.g_min_s
        hi_ok = float(kind(model.g_max_s)) if math.isfinite(model.g_max_s) else model.g_max_s
        bad = np.flatnonzero((g0 < min(lo_ok, model.g_min_s)) | (g0 > max(hi_ok, model.g_max_s)))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(
                f"g_init_s[{i}]={g0[i]!r} S is outside [g_min_s, g_max_s] = "
                f"[{model.g_min_s!r}, {model.g_max_s!r}] S ({bad.size} values out of range)"
            )
        if out is None:
            buf: NDArray[np.floating] = np.empty(n, dtype=np.float64)
        else:
            if not isinstance(out, np.ndarray) or out.dtype not in (np.float32, np.float64):
                raise ConfigError("out must be a float32 or float64 numpy array")
            if out.shape != (n,):
                raise ConfigError(f"out must have shape ({n},), got {out.shape}")
            if not out.flags.writeable:
                raise ConfigError("out must be writeable (it holds the apparent conductances)")
            buf = out

        # --- device-to-device draws (fixed order, see module docstring) ---
        s = model.nominal_step_s
        step: Param = s
        if model.d2d > 0:
            step = np.maximum(s * (1.0 + model.d2d * rng.standard_normal(n)), 0.0)
        beta: Param = model.up_down
        if model.up_down_d2d > 0:
            beta = model.up_down + model.up_down_d2d * rng.standard_normal(n)
        s_up = step * (1.0 + beta)
        s_dn = step * (1.0 - beta)
        self._s_up: Param = np.maximum(s_up, 0.0) if isinstance(s_up, np.ndarray) else s_up
        self._s_dn: Param = np.maximum(s_dn, 0.0) if isinstance(s_dn, np.ndarray) else s_dn
        a: Param = model.g_min_s
        b: Param = model.g_max_s
        if model.bounds_d2d > 0 and math.isfinite(model.g_max_s):
            fb = np.maximum(1.0 + model.bounds_d2d * rng.standard_normal(n), 0.1)
            b = model.g_max_s * fb
        if model.bounds_d2d > 0 and model.g_min_s > 0:
            fa = np.maximum(1.0 + model.bounds_d2d * rng.standard_normal(n), 0.0)
            a = model.g_min_s * fa
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            a_arr = np.broadcast_to(np.asarray(a, dtype=np.float64), (n,)).copy()
            b_arr = np.broadcast_to(np.asarray(b, dtype=np.float64), (n,)).copy()
            unordered = a_arr >= b_arr
            a_arr[unordered] = model.g_min_s
            b_arr[unordered] = model.g_max_s
            a, b = a_arr, b_arr
        self._a: Param = a
        self._b: Param = b
        if model.stuck_fraction > 0:
            stuck = rng.random(n) < model.stuck_fraction
        else:
            stuck = np.zeros(n, dtype=bool)
        stuck.setflags(write=False)
        self.stuck: NDArray[np.bool_] = stuck
        """``(n,)`` True where the device is stuck (read-only)."""
        self._any_stuck = bool(stuck.any())

        # --- state ---
        persistent = np.clip(g0, a, b)
        self._persistent: F64 = persistent
        buf[...] = persistent
        self.g_s: NDArray[np.floating] = buf
        """``(n,)`` apparent conductances, S (the buffer passed as ``out``, updated in place)."""
        self._drift = model.drift_nu > 0 or model.drift_nu_d2d > 0
        nu: Param = model.drift_nu
        if model.drift_nu_d2d > 0:
            nu = np.maximum(model.drift_nu + model.drift_nu_d2d * rng.standard_normal(n), 0.0)
        self._nu: Param = nu
        self._persistent_stale = False
        self._dense_exact = (
            model.is_continuous
            and not self._any_stuck
            and model.write_noise == 0
            and not self._drift
            and np.ndim(self._a) == 0
            and np.ndim(self._b) == 0
        )
        if self._drift:
            self._t_since_s: F64 = np.zeros(n, dtype=np.float64)
            self._persistent_prog: F64 = persistent.copy()
            self._apparent_prog: F64 = persistent.copy()

    # ----------------------------------------------------------------- info

    @property
    def model(self) -> WriteModel:
        """The write model."""
        return self._model

    @property
    def n(self) -> int:
        """Number of devices."""
        return self._n

    def __len__(self) -> int:
        return self._n

    def _full(self, p: Param) -> F64:
        out = np.broadcast_to(np.asarray(p, dtype=np.float64), (self._n,))
        return out

    @property
    def g_persistent_s(self) -> F64:
        """``(n,)`` hidden persistent conductances, S (read-only view)."""
        self._sync()
        v = self._persistent.view()
        v.setflags(write=False)
        return v

    @property
    def g_min_dev_s(self) -> F64:
        """``(n,)`` each device's drawn lower bound, S (read-only)."""
        return self._full(self._a)

    @property
    def g_max_dev_s(self) -> F64:
        """``(n,)`` each device's drawn upper bound, S (read-only)."""
        return self._full(self._b)

    @property
    def step_up_s(self) -> F64:
        """``(n,)`` each device's mean up step (at mid-range for soft bounds), S (read-only)."""
        return self._full(self._s_up)

    @property
    def step_down_s(self) -> F64:
        """``(n,)`` each device's mean down step magnitude (mid-range for soft), S (read-only)."""
        return self._full(self._s_dn)

    # ------------------------------------------------------------- checking

    def _check_idx(self, idx: ArrayLike | None) -> I64:
        """Validate device indices: integers in ``0..n-1``, no repeats."""
        if idx is None:
            return np.arange(self._n, dtype=np.int64)
        ix = np.asarray(idx)
        if ix.ndim != 1:
            raise ConfigError(f"device indices must have shape (k,), got {ix.shape}")
        if ix.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(ix.dtype, np.integer):
            raise ConfigError(f"device indices must be integers, got dtype {ix.dtype}")
        ix = ix.astype(np.int64, copy=False)
        lo, hi = int(ix.min()), int(ix.max())
        if lo < 0 or hi >= self._n:
            raise ConfigError(f"device index {lo if lo < 0 else hi} is outside 0..{self._n - 1}")
        if ix.size > 1 and not bool(np.all(ix[1:] > ix[:-1])):
            counts = np.bincount(ix, minlength=self._n)
            if int(counts.max()) > 1:
                dup = int(np.argmax(counts))
                raise ConfigError(
                    f"device index {dup} appears {int(counts[dup])} times; "
                    "each device may appear once per call"
                )
        return ix

    @staticmethod
    def _check_values(name: str, values: ArrayLike, k: int) -> NDArray[np.generic]:
        v = np.asarray(values)
        if v.shape != (k,):
            raise ConfigError(f"{name} must have shape ({k},) like the indices, got {v.shape}")
        return v

    # --------------------------------------------------------------- writes

    def apply_pulses(
        self, idx: ArrayLike | None, pulses: ArrayLike, rng: np.random.Generator
    ) -> tuple[F64, F64, I8]:
        """Apply signed pulse counts (+ potentiates, - depresses).

        Args:
            idx: ``(k,)`` device indices, each at most once (``None``: all devices).
            pulses: ``(k,)`` signed integer pulse counts.
            rng: the run's generator (c2c and write noise).

        Returns:
            ``(g_before_s, g_after_s, status)``: ``(k,)`` apparent conductances
            before and after, S (float64), and :class:`ProgramStatus` codes
            (int8): ``NO_CHANGE`` for zero pulses, ``AT_MAX``/``AT_MIN`` where the
            bound stopped the change (see module docstring), else ``OK``.

        Raises:
            ConfigError: bad indices or non-integer pulse counts.
            UnsupportedError: non-zero pulses on a continuous device (``n_states=None``).

        """
        self._sync()
        ix = self._check_idx(idx)
        p = self._check_values("pulses", pulses, ix.shape[0])
        if not np.issubdtype(p.dtype, np.integer) and not (
            np.issubdtype(p.dtype, np.floating) and np.all(p == np.rint(p))
        ):
            raise ConfigError("pulses must be integer pulse counts")
        k = p.astype(np.int64, copy=False)
        nonzero = k != 0
        w = np.flatnonzero(nonzero)
        if w.size and self._model.is_continuous:
            raise UnsupportedError(
                "a continuous device model (n_states=None) has no pulse step; program "
                "conductance deltas instead or give the model n_states"
            )
        g_before = self.g_s[ix].astype(np.float64)
        status = np.where(nonzero, _OK, _NO_CHANGE).astype(np.int8)
        if self._any_stuck and w.size:
            w = w[~self.stuck[ix[w]]]
        if w.size == 0:
            return g_before, g_before.copy(), status
        dev = ix[w]
        new, st = self._pulse_update(dev, k[w], self._persistent[dev], rng)
        status[w] = st
        self._persistent[dev] = new
        self._after_write(dev, rng)
        g_after = g_before.copy()
        g_after[w] = self.g_s[dev]
        return g_before, g_after, status

    def _pulse_update(self, dev: I64, k: I64, g0: F64, rng: np.random.Generator) -> tuple[F64, I8]:
        """Return the new persistent conductances and status after ``k`` pulses (k != 0)."""
        m = self._model
        up = k > 0
        kk = np.abs(k).astype(np.float64)
        s = np.where(up, _take(self._s_up, dev), _take(self._s_dn, dev))
        a = _take(self._a, dev)
        b = _take(self._b, dev)
        st = np.full(dev.shape, _OK, dtype=np.int8)
        if m.bound_mode == "hard":
            new = g0 + np.where(up, kk, -kk) * s
            if m.c2c > 0:
                new += (m.c2c * np.sqrt(kk) * s) * rng.standard_normal(dev.shape[0])
        else:
            h = 0.5 * (b - a)
            r = np.minimum(s / h, _R_MAX)
            x0 = np.maximum(np.where(up, b - g0, g0 - a), 0.0)
            # single pulses (the common case): mean x0 (1 - r), std x0 r c2c
            x = x0 * (1.0 - r)
            sd = x0 * (r * m.c2c) if m.c2c > 0 else None
            multi = np.flatnonzero(kk > 1.0)
            if multi.size:
                km = kk[multi]
                rm = r[multi] if isinstance(r, np.ndarray) else r
                x0m = x0[multi]
                log_m = km * np.log1p(-rm)
                x[multi] = x0m * np.exp(log_m)
                if sd is not None:
                    q = rm * m.c2c / (1.0 - rm)
                    y = km * np.log1p(q * q)
                    with np.errstate(divide="ignore"):
                        # log(expm1(y)), stable for small and large y
                        log_e = y + np.log(-np.expm1(-y))
                    sd[multi] = x0m * np.exp(log_m + 0.5 * log_e)
            if sd is not None:
                x += sd * rng.standard_normal(dev.shape[0])
            near = x <= m.nominal_step_s
            st[near & up] = _AT_MAX
            st[near & ~up] = _AT_MIN
            new = np.where(up, b - x, a + x)
        st[new > b] = _AT_MAX
        st[new < a] = _AT_MIN
        np.clip(new, a, b, out=new)
        return new, st

    def _after_write(self, dev: I64, rng: np.random.Generator) -> None:
        """Redraw the apparent conductance of written devices; restart their drift clock."""
        m = self._model
        p = self._persistent[dev]
        if m.write_noise > 0:
            app = p + (m.write_noise * m.range_s) * rng.standard_normal(dev.shape[0])
            np.clip(app, _take(self._a, dev), _take(self._b, dev), out=app)
        else:
            app = p
        self.g_s[dev] = app
        if self._drift:
            self._persistent_prog[dev] = p
            self._apparent_prog[dev] = app
            self._t_since_s[dev] = 0.0

    def pulses_for_delta(self, delta_g_s: ArrayLike) -> I64:
        """Nominal open-loop conversion ``rint(delta / nominal_step_s)`` (int64).

        The host knows only the nominal model: the device's d2d/c2c spread and
        the soft-bound state dependence are not taken into account. Ties round
        to even. A continuous device returns zeros.

        Raises:
            ConfigError: non-finite deltas or a count beyond int64.

        """
        d = np.asarray(delta_g_s, dtype=np.float64)
        if not np.all(np.isfinite(d)):
            raise ConfigError("delta_g_s contains NaN or inf; pass finite changes in S")
        s = self._model.nominal_step_s
        if s == 0.0:
            return np.zeros(d.shape, dtype=np.int64)
        c = np.rint(d / s)
        if c.size and float(np.max(np.abs(c))) > 2.0**62:
            raise ConfigError("delta_g_s asks for more than 2**62 pulses; check the units (S)")
        return c.astype(np.int64)

    def apply_deltas(
        self, idx: ArrayLike | None, delta_g_s: ArrayLike, rng: np.random.Generator
    ) -> tuple[I64, F64, F64, I8]:
        """Open-loop programming of requested conductance changes.

        A continuous device (``n_states=None``) gets ``g += delta`` exactly,
        clipped to its bounds with ``AT_MAX``/``AT_MIN`` where clipped
        (``NO_CHANGE`` for a zero delta). Otherwise the deltas become nominal
        pulse counts (:meth:`pulses_for_delta`) applied with :meth:`apply_pulses`.

        Args:
            idx: ``(k,)`` device indices, each at most once (``None``: all devices).
            delta_g_s: ``(k,)`` requested changes, S.
            rng: the run's generator.

        Returns:
            ``(requested_pulses, g_before_s, g_after_s, status)``;
            ``requested_pulses`` is all 0 for a continuous device.

        """
        if idx is None and self._dense_exact:
            return self._apply_all_exact(delta_g_s)
        self._sync()
        ix = self._check_idx(idx)
        d = self._check_values("delta_g_s", delta_g_s, ix.shape[0])
        pulses = self.pulses_for_delta(d)
        if not self._model.is_continuous:
            g_before, g_after, status = self.apply_pulses(ix, pulses, rng)
            return pulses, g_before, g_after, status
        dd = d.astype(np.float64, copy=False)
        g_before = self.g_s[ix].astype(np.float64)
        nonzero = dd != 0
        status = np.where(nonzero, _OK, _NO_CHANGE).astype(np.int8)
        w = np.flatnonzero(nonzero)
        if self._any_stuck and w.size:
            w = w[~self.stuck[ix[w]]]
        if w.size == 0:
            return pulses, g_before, g_before.copy(), status
        dev = ix[w]
        target = self._persistent[dev] + dd[w]
        a = _take(self._a, dev)
        b = _take(self._b, dev)
        st = np.full(w.shape, _OK, dtype=np.int8)
        st[target > b] = _AT_MAX
        st[target < a] = _AT_MIN
        np.clip(target, a, b, out=target)
        status[w] = st
        self._persistent[dev] = target
        self._after_write(dev, rng)
        g_after = g_before.copy()
        g_after[w] = self.g_s[dev]
        return pulses, g_before, g_after, status

    def _apply_all_exact(self, delta_g_s: ArrayLike) -> tuple[I64, F64, F64, I8]:
        """Dense fast path of :meth:`apply_deltas` for every device of an exact model.

        Used when the model is continuous with scalar bounds, no stuck devices,
        no write noise and no drift, so the apparent conductance *is* the
        persistent one: ``g += delta`` in place on the whole buffer, then the
        bounds, with the clipped devices marked (``NO_CHANGE`` is not marked in
        this bulk mode). Per-device conductances are not copied out (empty
        arrays are returned for before/after; read them with :meth:`read`), and
        the requested pulse counts are a zero view.
        """
        d = np.asarray(delta_g_s)
        if d.shape != (self._n,):
            raise ConfigError(f"delta_g_s must have shape ({self._n},), got {d.shape}")
        g = self.g_s
        g += d
        a, b = float(self._a), float(self._b)
        # mask arithmetic, not index lists: after training a large share of the
        # devices sits at a bound and is pushed against it every step
        below = g < a
        np.maximum(g, a, out=g)
        status = below.view(np.int8)
        status *= np.int8(_AT_MIN)
        if math.isfinite(b):
            above = g > b
            np.minimum(g, b, out=g)
            status[above] = _AT_MAX
        self._persistent_stale = True
        empty = np.zeros(0, dtype=np.float64)
        return np.broadcast_to(np.int64(0), (self._n,)), empty, empty, status

    def _sync(self) -> None:
        """Bring the persistent state up to date after dense exact updates."""
        if self._persistent_stale:
            self._persistent[...] = self.g_s
            self._persistent_stale = False

    def state_arrays(self) -> dict[str, NDArray[np.floating]]:
        """The mutable state (apparent and persistent conductances, drift clocks), copied.

        The device-to-device draws are not included: they follow from the seed.
        """
        self._sync()
        out: dict[str, NDArray[np.floating]] = {
            "g_s": self.g_s.copy(),
            "persistent_s": self._persistent.copy(),
        }
        if self._drift:
            out["drift_t_since_s"] = self._t_since_s.copy()
            out["drift_persistent_prog_s"] = self._persistent_prog.copy()
            out["drift_apparent_prog_s"] = self._apparent_prog.copy()
        return out

    def load_state_arrays(self, state: dict[str, NDArray[np.floating]]) -> None:
        """Restore :meth:`state_arrays` exactly (in place: views stay valid)."""
        want = set(self.state_arrays())
        if set(state) != want:
            raise ConfigError(f"device state needs arrays {sorted(want)}, got {sorted(state)}")
        for name, arr in state.items():
            if np.shape(arr) != (self._n,):
                raise ConfigError(f"device state {name} must have shape ({self._n},)")
        self.g_s[...] = state["g_s"]
        self._persistent[...] = state["persistent_s"]
        self._persistent_stale = False
        if self._drift:
            self._t_since_s[...] = state["drift_t_since_s"]
            self._persistent_prog[...] = state["drift_persistent_prog_s"]
            self._apparent_prog[...] = state["drift_apparent_prog_s"]

    # ---------------------------------------------------------- reads, time

    def read(self, idx: ArrayLike | None, rng: np.random.Generator) -> F64:
        """One read of the apparent conductances, S.

        Each value is ``g_s * (1 + read_relative * xi)`` with a fresh ``xi`` per
        read (no draw when ``read_relative == 0``).

        Args:
            idx: ``(k,)`` device indices (``None``: all devices, in order).
            rng: the run's generator.

        Returns:
            ``(k,)`` float64 conductances, S.

        """
        if idx is None:
            g = self.g_s.astype(np.float64)
        else:
            ix = np.asarray(idx)
            if ix.ndim != 1 or (ix.size and not np.issubdtype(ix.dtype, np.integer)):
                raise ConfigError("device indices must be a (k,) integer array")
            if ix.size and (int(ix.min()) < 0 or int(ix.max()) >= self._n):
                raise ConfigError(f"a device index is outside 0..{self._n - 1}")
            g = self.g_s[ix].astype(np.float64)
        rel = self._model.read_relative
        if rel > 0:
            g *= 1.0 + rel * rng.standard_normal(g.shape[0])
        return g

    def advance_time(self, dt_s: float) -> None:
        """Let ``dt_s`` seconds pass: apply power-law drift since each device's last write.

        ``g(t) = g_prog ((t + t0)/t0)**-nu`` for the apparent and the persistent
        conductance, with ``t`` the time since the device was last written (or
        since construction) and ``g_prog`` the value just after that write. Not
        clipped to the bounds. ``nu`` is per device with ``drift_nu_d2d > 0``.
        No-op without drift (``drift_nu == drift_nu_d2d == 0``); stuck devices do
        not drift.

        Raises:
            ConfigError: ``dt_s`` negative or not finite.

        """
        if not (isinstance(dt_s, int | float) and math.isfinite(dt_s) and dt_s >= 0):
            raise ConfigError(f"dt_s={dt_s!r} must be a finite time >= 0 s")
        if not self._drift or dt_s == 0:
            return
        m = self._model
        self._t_since_s += dt_s
        f = ((self._t_since_s + m.drift_t0_s) / m.drift_t0_s) ** (-self._nu)
        if self._any_stuck:
            f[self.stuck] = 1.0
        np.multiply(self._persistent_prog, f, out=self._persistent)
        np.multiply(self._apparent_prog, f, out=self.g_s, casting="same_kind")
