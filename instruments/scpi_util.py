"""Small helpers shared by the SCPI/TSP drivers: argument checks, number format, parsing.

Every driver checks its arguments against the instrument's ranges *before* it
writes anything and raises :class:`hwloop.errors.LimitError` (never clips).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import ConfigError, LimitError

if TYPE_CHECKING:
    from instruments.visa_transport import VisaTransport

OVERFLOW_THRESHOLD = 9.9e37
"""SCPI reports an overflowed reading as +9.9E37 (and NaN as 9.91E37); |x| >= this
is not a measurement (SCPI-99 vol. 1, 7.2.1.5; 2400 manual, status bit OFLO)."""


PON_BIT = 0x80
"""Power-on bit (PON, bit 7) of the IEEE 488.2 standard event status register: set when
the instrument powers on, cleared when the register is read (``*ESR?``; 2600B:
``status.standard.event``)."""


def check_power_on(instrument: str, esr: float, register: str) -> None:
    """Raise :class:`InstrumentRestartedError` when ``esr`` (a register read) has PON set.

    The register was read once when the instrument was configured, so a PON bit now
    means a restart since: the settings are the defaults again and the writes since the
    last read are lost, which the (emptied) error queue does not show.
    """
    from instruments.visa_transport import InstrumentRestartedError

    if int(esr) & PON_BIT:
        raise InstrumentRestartedError(
            f"{instrument}: the instrument restarted (power-on bit of {register} set): its"
            " settings and the last levels were lost; check its power and mains supply, then"
            " start a new run"
        )


def num(x: float) -> str:
    """A number as sent to an instrument: shortest round-trip form up to 9 digits."""
    return f"{float(x):.9g}"


def check_finite(instrument: str, what: str, value: float) -> float:
    """Return ``value`` as float, or raise ConfigError if it is NaN or infinite."""
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{instrument}: {what} = {value!r} must be a finite number")
    return v


def check_range(
    instrument: str, what: str, value: float, lo: float, hi: float, unit: str, fix: str = ""
) -> float:
    """Return ``value`` if ``lo <= value <= hi``; else raise :class:`LimitError`.

    Args:
        instrument: instrument name for the message.
        what: name of the quantity (e.g. ``"source level"``).
        value: the requested value.
        lo: smallest allowed value.
        hi: largest allowed value.
        unit: unit symbol for the message.
        fix: what to do instead (appended to the message).
    """
    v = check_finite(instrument, what, value)
    if not lo <= v <= hi:
        hint = f"; {fix}" if fix else ""
        raise LimitError(
            f"{instrument}: {what} {v:.6g} {unit} is outside the instrument's range"
            f" [{lo:.6g}, {hi:.6g}] {unit}; nothing was sent{hint}"
        )
    return v


def check_count(instrument: str, what: str, n: int, lo: int, hi: int) -> int:
    """Return integer ``n`` if ``lo <= n <= hi``; else raise LimitError/ConfigError."""
    if int(n) != n:
        raise ConfigError(f"{instrument}: {what} = {n!r} must be an integer")
    k = int(n)
    if not lo <= k <= hi:
        raise LimitError(
            f"{instrument}: {what} {k} is outside the instrument's range [{lo}, {hi}];"
            " nothing was sent; split the request"
        )
    return k


def check_channels(
    instrument: str, channels: Sequence[int] | NDArray[np.integer], n: int
) -> list[int]:
    """Validate 0-based channel indices (unique, in ``0..n-1``); return them as ints."""
    idx = [int(c) for c in np.asarray(channels).reshape(-1)]
    if len(set(idx)) != len(idx):
        raise ConfigError(f"{instrument}: channel list {idx} has duplicates")
    bad = [c for c in idx if not 0 <= c < n]
    if bad:
        raise ConfigError(
            f"{instrument}: channel(s) {bad} do not exist (0..{n - 1}); check the board file"
        )
    return idx


def parse_float(text: str) -> float:
    """One number from a reply; ValueError if the reply is not exactly one number."""
    parts = text.strip().split()
    if len(parts) != 1:
        raise ValueError(f"expected one number, got {text[:60]!r}")
    return float(parts[0])


def parse_floats(text: str, sep: str = ",", count: int | None = None) -> list[float]:
    r"""Numbers separated by ``sep`` (whitespace allowed); ValueError if garbled.

    Args:
        text: the reply.
        sep: separator (``","`` for SCPI lists and TSP ``printbuffer``; ``"\\t"``
            for TSP ``print`` of several values).
        count: expected number of values (None: any number >= 1).
    """
    items = [p.strip() for p in text.strip().split(sep)]
    if not items or any(not p for p in items):
        raise ValueError(f"empty item in {text[:60]!r}")
    values = [float(p) for p in items]
    if count is not None and len(values) != count:
        raise ValueError(f"expected {count} values, got {len(values)} in {text[:60]!r}")
    return values


def parse_bool(text: str) -> bool:
    """``true``/``false`` (TSP ``print`` of a boolean) or ``1``/``0`` (SCPI)."""
    t = text.strip().lower()
    if t in ("true", "1", "1.00000e+00"):
        return True
    if t in ("false", "0", "0.00000e+00"):
        return False
    raise ValueError(f"expected a boolean, got {text[:60]!r}")


def overflow_to_nan(values: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Replace SCPI overflow/NaN markers and non-finite values by NaN.

    Returns:
        ``(values with NaN, mask of the replaced entries)``.
    """
    v = np.asarray(values, dtype=np.float64).copy()
    bad = ~np.isfinite(v) | (np.abs(v) >= OVERFLOW_THRESHOLD)
    v[bad] = np.nan
    return v, bad


def check_tsp_errors(driver: VisaDriver, hint: str) -> None:
    """Raise ``InstrumentError`` with the first error a TSP instrument queued, if any.

    ``print(errorqueue.count)``, then ``print(errorqueue.next())`` (errorqueue functions,
    TSP command reference); ``hint`` ends the message (what the user should check).
    """
    from instruments.visa_transport import InstrumentError

    t = driver.transport
    n = int(t.query("print(errorqueue.count)", parse=parse_float, idempotent=True))
    if n > 0:
        err = t.query("print(errorqueue.next())", idempotent=False).strip()
        raise InstrumentError(
            f"{driver.name}: instrument reports {n} error(s), first: {' '.join(err.split())};"
            f" {hint}"
        )


class VisaDriver(abc.ABC):
    """``identity`` and ``close`` of a driver that owns one :class:`VisaTransport`.

    A subclass sets ``transport``, ``name`` and ``_closed = False`` in ``__init__`` and
    defines ``safe_state``; ``close`` puts it in the safe state, then closes the connection.
    """

    transport: VisaTransport
    name: str
    _closed: bool

    @abc.abstractmethod
    def safe_state(self) -> None:
        """Put the instrument in its safe state (defined by each driver)."""

    def identity(self) -> str:
        """The ``*IDN?`` reply read at connect."""
        return self.transport.identity

    def close(self) -> None:
        """Safe state, then close the connection (idempotent)."""
        if self._closed:
            return
        try:
            if not self.transport.closed:
                self.safe_state()
        finally:
            self._closed = True
            self.transport.close()


class SmuDriver(VisaDriver):
    """``configure`` of a source-measure unit: settings checked first, then one message.

    A subclass sets ``nplc`` (PLC) in ``__init__`` and defines the ranges of the
    compliances and of NPLC and the commands of the checked settings.
    """

    nplc: float

    @abc.abstractmethod
    def _setting_ranges(self) -> dict[str, tuple[float, float]]:
        """``{"current_limit_a": (lo, hi) A, "voltage_limit_v": (lo, hi) V, "nplc": ...}``."""

    @abc.abstractmethod
    def _send_settings(self, settings: dict[str, float]) -> None:
        """Write the checked settings that were given (keys as :meth:`_setting_ranges`)."""

    def configure(
        self,
        *,
        current_limit_a: float | None = None,
        voltage_limit_v: float | None = None,
        nplc: float | None = None,
    ) -> None:
        """Set compliance and integration time; every value is checked before any is sent.

        Args:
            current_limit_a: compliance of the voltage source, A.
            voltage_limit_v: compliance of the current source, V.
            nplc: integration time, power-line cycles.

        Raises:
            LimitError: a value outside the instrument's range (nothing is sent).
        """
        ranges = self._setting_ranges()
        given = {"current_limit_a": (current_limit_a, "current compliance", "A"),
                 "voltage_limit_v": (voltage_limit_v, "voltage compliance", "V"),
                 "nplc": (nplc, "NPLC", "PLC")}
        settings = {key: check_range(self.name, what, value, *ranges[key], unit)
                    for key, (value, what, unit) in given.items() if value is not None}
        if "nplc" in settings:
            self.nplc = settings["nplc"]
        self._send_settings(settings)
