"""The roles instruments play for a real board: small typed interfaces.

:class:`instruments.real_board.RealBoard` implements the Device interface on top
of these roles; the board file (``examples/boards/*.toml``) says which instrument
plays which role and maps network nodes and edges to instrument channels and
crosspoints. One instrument may play several roles (the hwloop serial board
plays all of them); a source-measure unit, a multichannel meter and a switch
matrix together play them on a SCPI bench.

Channels are the instrument's own 0-based channel numbers (the board file's
wiring maps nodes to them). Units are SI: volts, amperes, siemens, seconds.
Every method checks its arguments against the instrument's own ranges and
raises :class:`hwloop.errors.LimitError` (never clips); the board-level safety
limits are checked by RealBoard before any call.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from hwloop.errors import HwloopError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@runtime_checkable
class Instrument(Protocol):
    """Every instrument: identity, safe state, close."""

    def identity(self) -> str:
        """The instrument's identity string (``*IDN?`` or the board's identify reply)."""
        ...

    def safe_state(self) -> None:
        """Sources to 0 V / 0 A and off, relays open.

        Idempotent; never raises for a state that is already safe.
        """
        ...

    def is_energised(self) -> bool:
        """Read back the outputs.

        True when any source is on at a nonzero level or any relay is closed (checked
        on connect, before anything else is done).
        """
        ...

    def close(self) -> None:
        """Go to the safe state and release the connection. Idempotent."""
        ...


@runtime_checkable
class VoltageSourceRole(Protocol):
    """Sets DC voltages on channels (input nodes; resistive-nudge targets)."""

    def set_voltages(self, channels: IntArray, volts: FloatArray) -> None:
        """Set each channel's source level, V, and turn it on."""
        ...


@runtime_checkable
class CurrentSourceRole(Protocol):
    """Injects DC currents into nodes (current nudges, bias currents)."""

    def set_currents(self, channels: IntArray, amps: FloatArray) -> None:
        """Set each channel's source level, A, and turn it on (0 A: on at 0 A)."""
        ...


@runtime_checkable
class MeterRole(Protocol):
    """Reads node voltages."""

    def read_voltages(
        self, channels: IntArray, n_samples: int
    ) -> tuple[FloatArray, NDArray[np.uint8], FloatArray]:
        """Read every channel ``n_samples`` times.

        Returns:
            ``(samples_v (n_samples, k), flags (n_samples, k) SampleFlag bits,
            timestamps_s (n_samples,))``; an overrange or non-finite reading is
            flagged ``OVERRANGE`` (its value NaN), a compliance trip ``COMPLIANCE``.
        """
        ...


@runtime_checkable
class CrosspointRole(Protocol):
    """Programs and reads the conductance of crosspoints (edges)."""

    def pulse(self, crosspoint: int, amplitude_v: float, width_s: float, count: int) -> int:
        """Apply ``count`` pulses (sign of ``amplitude_v``: polarity, + potentiates).

        Returns:
            The pulses actually applied (less than ``count`` when the device reports
            a compliance trip or a bound).
        """
        ...

    def read_conductance(self, crosspoints: IntArray, v_read: float) -> FloatArray:
        """Conductance of each crosspoint measured at ``v_read`` volts, S."""
        ...


@runtime_checkable
class SourceComplianceRole(Protocol):
    """A source whose compliance state can be read without a measurement (a capability).

    RealBoard queries it after each reading when another instrument is the meter, so
    a source held at its compliance limit is not missed.
    """

    def source_compliance(self, channels: IntArray) -> NDArray[np.bool_]:
        """``(k,)`` True where the channel's source is in compliance now."""
        ...


class PulseOutcome(Protocol):
    """What a bulk pulse call did, crosspoint by crosspoint (request order)."""

    @property
    def applied(self) -> IntArray:
        """``(k,)`` signed pulses applied."""
        ...

    @property
    def status(self) -> NDArray[np.uint8]:
        """``(k,)`` :class:`hwloop.board_protocol.PulseStatus` codes."""
        ...

    @property
    def total_pulses(self) -> int:
        """Pulses applied in all."""
        ...


@runtime_checkable
class BulkCrosspointRole(CrosspointRole, Protocol):
    """A crosspoint role that programs many crosspoints in one call (a capability)."""

    def pulse_many(
        self, crosspoints: IntArray, counts: IntArray, amplitude_v: float, width_s: float
    ) -> PulseOutcome:
        """Apply signed ``counts`` (+ potentiates) at ``amplitude_v`` V, ``width_s`` s.

        Raises:
            ComplianceTripError: a trip stopped the programming (its ``report`` says
                what was applied; crosspoints after the trip are ``SKIPPED``).
        """
        ...


@runtime_checkable
class PulsingSmu(Protocol):
    """A source-measure unit that pulses and reads one device through a switch route.

    Implemented by :class:`instruments.keithley2400.Keithley2400` and
    :class:`instruments.keithley2600.Keithley2600Channel`.
    """

    def pulse_voltage(self, amplitude_v: float, width_s: float, count: int) -> int:
        """Apply ``count`` pulses; returns those applied before a compliance trip."""
        ...

    def measure_current_at(self, v_read: float) -> float:
        """Source ``v_read`` V, measure the current once (A), return to 0 V and off."""
        ...

    def safe_state(self) -> None:
        """Output to 0 and off."""
        ...


class ComplianceTripError(HwloopError):
    """An instrument tripped a current compliance and went to its safe state.

    Attributes:
        report: for a bulk pulse, what was applied up to the trip (``None`` for a
            source setting).
    """

    def __init__(self, message: str, report: PulseOutcome | None = None) -> None:
        super().__init__(message)
        self.report = report
