"""``SerialBoardDriver``: the hwloop serial board (``docs/board-protocol.md``) as instrument roles.

One driver plays every role of :mod:`instruments.roles` for the board:

* :class:`~instruments.roles.Instrument` -- ``identity``, ``safe_state``,
  ``is_energised`` (GET_STATE), ``close``;
* :class:`~instruments.roles.VoltageSourceRole` -- ``set_voltages`` (SET_INPUTS);
* :class:`~instruments.roles.CurrentSourceRole` -- ``set_currents`` drives the
  **nudge** current sources (SET_NUDGE_CURRENTS). Bias currents have their own
  method, :meth:`SerialBoardDriver.set_bias_currents` (SET_BIAS_CURRENTS), and a
  role view, :attr:`SerialBoardDriver.bias_source`, whose ``set_currents`` sets
  bias currents, so a board file can map the bias role to it;
* :class:`~instruments.roles.MeterRole` -- ``read_voltages`` (READ_NODES, every
  sample); on-board averaging is :meth:`SerialBoardDriver.read_mean`;
* :class:`~instruments.roles.CrosspointRole` -- ``pulse`` and ``read_conductance``
  (READ_CONDUCTANCE, any number of crosspoints); bulk programming in one frame
  per 524 285 crosspoints is :meth:`SerialBoardDriver.pulse_many`.

Every argument is checked against the channel counts and ranges the board
reported in its IDENTIFY reply before anything is sent: a value beyond a range
or a channel beyond the board raises :class:`hwloop.errors.LimitError` (never
clipped); malformed arguments (wrong shape, NaN, duplicates, non-integers) raise
:class:`hwloop.errors.ConfigError`.

Readings: a sample flagged ``OVERRANGE`` by the board, or not finite, is
returned as NaN flagged ``OVERRANGE`` (the MeterRole contract).

Units: V, A, S, s; times from the board are on the board's clock, s.

This module's one concern is the serial board as instrument roles: its driver and
its instrument kind (``KIND``, entry point ``hwloop.instruments``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hwloop.board_protocol import (
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    Ack,
    BoardError,
    ErrorCode,
    GetState,
    Identify,
    IdentifyReply,
    ProtocolError,
    Pulse,
    PulseReply,
    PulseStatus,
    ReadConductance,
    ReadConductanceReply,
    ReadMode,
    ReadNodes,
    ReadNodesMeanReply,
    ReadNodesSamplesReply,
    SafeState,
    SetBiasCurrents,
    SetInputs,
    SetNudgeCurrents,
    StateReply,
    int_vector,
)
from hwloop.device import SampleFlag
from hwloop.errors import ConfigError, LimitError
from instruments.kinds import InstrumentKind, KindOption, OpenContext, OpenedInstrument, RoleDrivers
from instruments.kinds import SourceLevels as _SourceLevels
from instruments.roles import (
    ComplianceTripError,
    CrosspointRole,
    CurrentSourceRole,
    MeterRole,
    VoltageSourceRole,
)
from instruments.transport import (
    ExchangeRecord,
    RetryPolicy,
    SerialTransport,
    UnconfirmedCommandError,
)

__all__ = [
    "KIND",
    "BiasCurrentSource",
    "ComplianceTripError",
    "MeanReading",
    "PulseReport",
    "SerialBoardDriver",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
U8Array = NDArray[np.uint8]

_OVER = np.uint8(SampleFlag.OVERRANGE)
_PULSE_CHUNK = (MAX_PAYLOAD_BYTES - 20) // 8
"""Crosspoints per PULSE frame (8 request bytes each)."""
_G_CHUNK = (MAX_PAYLOAD_BYTES - 4) // 8
"""Crosspoints per READ_CONDUCTANCE frame (8 reply bytes each)."""


_NOT_DONE = (ErrorCode.BUSY, ErrorCode.BAD_CRC, ErrorCode.BAD_LENGTH)
"""Error replies that state the request was not executed (it may be sent again)."""

@dataclass(frozen=True, eq=False)
class MeanReading:
    """An on-board averaged read (READ_NODES in mean mode).

    Attributes:
        mean_v: ``(k,)`` sample mean per channel, V (NaN where flagged ``OVERRANGE``).
        spread_v: ``(k,)`` sample standard deviation per channel (ddof 1), V.
        flags: ``(k,)`` OR of the samples' :class:`hwloop.device.SampleFlag` bits.
        n_samples: samples averaged.
        t_first_s: time of the first sample, s (board clock).
        t_last_s: time of the last sample, s (board clock).
    """

    mean_v: FloatArray
    spread_v: FloatArray
    flags: U8Array
    n_samples: int
    t_first_s: float
    t_last_s: float

    @property
    def sem_v(self) -> FloatArray:
        """``(k,)`` standard error of the mean, V (``spread / sqrt(n)``)."""
        return np.asarray(self.spread_v / np.sqrt(self.n_samples), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class PulseReport:
    """What a bulk PULSE did, crosspoint by crosspoint (request order).

    Attributes:
        crosspoints: ``(k,)`` crosspoints addressed.
        requested: ``(k,)`` signed pulse counts asked for.
        applied: ``(k,)`` signed pulses applied.
        status: ``(k,)`` :class:`hwloop.board_protocol.PulseStatus` codes.
        amplitude_v: pulse amplitude magnitude, V.
        width_s: pulse width, s.
        aborted: True when a compliance trip stopped the programming.
    """

    crosspoints: IntArray
    requested: IntArray
    applied: IntArray
    status: U8Array
    amplitude_v: float
    width_s: float
    aborted: bool

    @property
    def total_pulses(self) -> int:
        """Pulses applied in all."""
        return int(np.abs(self.applied).sum())


class SerialBoardDriver:
    """The hwloop serial board over a :class:`SerialTransport` (see the module docstring).

    Construction exchanges an IDENTIFY (the channel counts and ranges every later
    argument is checked against) and nothing else: the caller (RealBoard) checks
    :meth:`is_energised` before it drives anything.

    Args:
        transport: an open transport.

    Raises:
        ConfigError: the board speaks another protocol version.
        TransportError: the board does not answer.
    """

    def __init__(self, transport: SerialTransport) -> None:
        self._t = transport
        info = transport.exchange(Identify(), IdentifyReply)
        if info.protocol_version != PROTOCOL_VERSION:
            raise ConfigError(
                f"board at {transport.url} speaks protocol version {info.protocol_version}; "
                f"this driver speaks {PROTOCOL_VERSION}: update the firmware or hwloop"
            )
        self.info: IdentifyReply = info
        """The board's IDENTIFY reply (channel counts, ranges, timing)."""
        self._closed = False

    @classmethod
    def open(
        cls,
        url: str,
        *,
        baudrate: int = 115_200,
        base_timeout_s: float = 0.5,
        retry: RetryPolicy | None = None,
        on_exchange: Callable[[ExchangeRecord], None] | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> SerialBoardDriver:
        """Open ``url`` (pyserial URL or device path) and identify the board.

        Args:
            url: ``/dev/ttyACM0``, ``socket://127.0.0.1:PORT``, ... (``serial_for_url``).
            baudrate: line rate, baud.
            base_timeout_s: fixed part of every exchange's deadline, s.
            retry: retry policy of idempotent commands.
            on_exchange: per-frame log callback (see :class:`SerialTransport`).
            on_event: ``(kind, message)`` callback for retries and warnings.
        """
        t = SerialTransport(
            url,
            baudrate=baudrate,
            base_timeout_s=base_timeout_s,
            retry=retry,
            on_exchange=on_exchange,
            on_event=on_event,
        )
        try:
            return cls(t)
        except BaseException:
            t.close()
            raise

    @property
    def transport(self) -> SerialTransport:
        """The transport (for its statistics and callbacks)."""
        return self._t

    # ------------------------------------------------------------------ Instrument
    def identity(self) -> str:
        """``"NAME, s/n SERIAL, firmware FW, protocol N"`` from the IDENTIFY reply."""
        i = self.info
        return (
            f"{i.board_name}, s/n {i.serial_number}, firmware {i.firmware}, "
            f"protocol {i.protocol_version}"
        )

    def get_state(self) -> StateReply:
        """Every source level as set and whether any output is on (GET_STATE)."""
        return self._t.exchange(GetState(), StateReply, reply_bytes=self._state_bytes())

    def is_energised(self) -> bool:
        """True when an output is on at a nonzero level (GET_STATE)."""
        return self.get_state().energised

    def safe_state(self) -> None:
        """Every source to 0 and off (SAFE_STATE; idempotent, retried like a read)."""
        self._t.exchange(SafeState(), Ack)

    def reconnect(self, fresh: bool) -> None:
        """Re-establish the link: IDENTIFY on the live connection, or (``fresh``) a new one.

        Raises:
            TransportError: the board does not answer (or the port cannot be reopened).
            ConfigError: another board answered.
        """
        info = self._t.reconnect(fresh)
        if info.serial_number != self.info.serial_number:
            raise ConfigError(
                f"after reconnecting, board s/n {info.serial_number} answered at "
                f"{self._t.url}, not s/n {self.info.serial_number}; check the cable"
            )

    def close(self) -> None:
        """Go to the safe state and close the port. Idempotent.

        The port is closed even when the safe state cannot be confirmed (the
        board also goes safe when its host disconnects); the error is re-raised.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._t.is_open:
                self.safe_state()
        finally:
            self._t.close()

    def __enter__(self) -> SerialBoardDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sources
    def set_voltages(self, channels: ArrayLike, volts: ArrayLike) -> None:
        """Set input sources, V, and turn them on (SET_INPUTS; VoltageSourceRole).

        Raises:
            LimitError: a channel beyond ``n_input_channels`` or |V| > ``v_input_max_v``.
            ConfigError: malformed arguments.
        """
        self._set_sources(SetInputs, channels, volts)

    def set_currents(self, channels: ArrayLike, amps: ArrayLike) -> None:
        """Set nudge current sources, A, and turn them on (SET_NUDGE_CURRENTS).

        Raises as :meth:`set_voltages`, against ``n_nudge_channels`` and ``i_nudge_max_a``.
        """
        self._set_sources(SetNudgeCurrents, channels, amps)

    def set_bias_currents(self, channels: ArrayLike, amps: ArrayLike) -> None:
        """Set bias current sources, A, and turn them on (SET_BIAS_CURRENTS).

        Raises as :meth:`set_voltages`, against ``n_bias_channels`` and ``i_bias_max_a``.
        """
        self._set_sources(SetBiasCurrents, channels, amps)

    def _set_sources(
        self,
        request: type[SetInputs | SetNudgeCurrents | SetBiasCurrents],
        channels: ArrayLike,
        levels: ArrayLike,
    ) -> None:
        """Check channels and levels (V or A) against the board's ranges, then send them."""
        i = self.info
        n, limit, unit, what = {
            SetInputs: (i.n_input_channels, i.v_input_max_v, "V", "input voltage"),
            SetNudgeCurrents: (i.n_nudge_channels, i.i_nudge_max_a, "A", "nudge current"),
            SetBiasCurrents: (i.n_bias_channels, i.i_bias_max_a, "A", "bias current"),
        }[request]
        ch = _channels(channels, n, what.split()[0])
        self._set(request(ch, _levels(levels, ch.size, limit, unit, what)))

    @property
    def bias_source(self) -> BiasCurrentSource:
        """The bias current sources as a :class:`~instruments.roles.CurrentSourceRole`."""
        return BiasCurrentSource(self)

    def _set(self, request: SetInputs | SetNudgeCurrents | SetBiasCurrents) -> None:
        try:
            self._t.exchange(request, Ack)
        except BoardError as e:
            if e.error_code == ErrorCode.COMPLIANCE_TRIP:
                self._t.report_event("warning", str(e))
                raise ComplianceTripError(
                    f"{request.COMMAND.name}: the board tripped its compliance and went to its "
                    f"safe state ({e.board_message}); check the wiring and the levels"
                ) from e
            if e.error_code in _NOT_DONE:  # not applied; reconciled like a lost reply
                raise UnconfirmedCommandError(
                    f"{request.COMMAND.name} (seq {e.seq}) was answered {e.error_code.name}; "
                    "re-read the state "
                    "(GET_STATE) and reconcile",
                    request.COMMAND,
                    e.seq,
                    True,
                ) from e
            raise

    # ------------------------------------------------------------------ meter
    def read_voltages(
        self, channels: ArrayLike, n_samples: int
    ) -> tuple[FloatArray, U8Array, FloatArray]:
        """Read ADC channels ``n_samples`` times, every sample (READ_NODES; MeterRole).

        Large reads are split into several frames (each within the 4 MiB payload
        limit and the board's ``max_samples``).

        Returns:
            ``(samples_v (n_samples, k), flags (n_samples, k), timestamps_s (n_samples,))``;
            overrange or non-finite samples are NaN flagged ``OVERRANGE``.

        Raises:
            LimitError: a channel beyond ``n_adc_channels``.
            ConfigError: ``n_samples`` < 1 or malformed channels.
        """
        i = self.info
        ch = _channels(channels, i.n_adc_channels, "ADC")
        n = _n_samples(n_samples)
        k = ch.size
        per = 9 * k + 8
        chunk = max(1, min(i.max_samples, (MAX_PAYLOAD_BYTES - 7) // per))
        parts_s: list[FloatArray] = []
        parts_f: list[U8Array] = []
        parts_t: list[FloatArray] = []
        done = 0
        while done < n:
            m = min(chunk, n - done)
            r = self._t.exchange(
                ReadNodes(ch, m, ReadMode.SAMPLES),
                ReadNodesSamplesReply,
                work_s=m * i.sample_time_s,
                reply_bytes=7 + m * per,
            )
            if r.samples_v.shape != (m, k):
                raise ProtocolError(
                    f"reply has shape {r.samples_v.shape}, expected {(m, k)}",
                )
            parts_s.append(r.samples_v)
            parts_f.append(r.flags)
            parts_t.append(r.timestamps_s)
            done += m
        samples = np.concatenate(parts_s, axis=0) if k else np.zeros((n, 0))
        flags = np.concatenate(parts_f, axis=0) if k else np.zeros((n, 0), np.uint8)
        stamps = np.concatenate(parts_t)
        samples, flags = _flag_overrange(samples, flags)
        return samples, flags, stamps

    def read_mean(self, channels: ArrayLike, n_samples: int) -> MeanReading:
        """Read ADC channels with on-board averaging of ``n_samples`` (READ_NODES, mean mode).

        Raises:
            LimitError: a channel beyond ``n_adc_channels`` or ``n_samples`` >
                ``max_samples``.
            ConfigError: ``n_samples`` < 1 or malformed channels.
        """
        i = self.info
        ch = _channels(channels, i.n_adc_channels, "ADC")
        n = _n_samples(n_samples)
        if n > i.max_samples:
            raise LimitError(
                f"{n} samples exceed the board's max_samples={i.max_samples} per read; "
                "average fewer samples or several reads"
            )
        r = self._t.exchange(
            ReadNodes(ch, n, ReadMode.MEAN),
            ReadNodesMeanReply,
            work_s=n * i.sample_time_s,
            reply_bytes=23 + 17 * ch.size,
        )
        if r.mean_v.size != ch.size or r.n_samples != n:
            raise ProtocolError(
                f"mean reply for {r.mean_v.size} channels x {r.n_samples} samples, expected "
                f"{ch.size} x {n}",
            )
        mean, flags = _flag_overrange(r.mean_v, r.flags)
        return MeanReading(mean, r.spread_v, flags, n, r.t_first_s, r.t_last_s)

    # ------------------------------------------------------------------ crosspoints
    def pulse(self, crosspoint: int, amplitude_v: float, width_s: float, count: int) -> int:
        """Apply ``count`` pulses of ``amplitude_v`` to one crosspoint (CrosspointRole).

        The polarity is the sign of ``amplitude_v`` (+ potentiates); a negative
        ``count`` flips it once more. A compliance trip is not raised here (the
        role contract): the pulses applied before it are returned, the board is in
        its safe state and a ``"warning"`` event is reported.

        Returns:
            Pulses applied, in the sign convention of ``count``.
        """
        amp = float(amplitude_v)
        if not np.isfinite(amp) or amp == 0:
            raise ConfigError(f"pulse amplitude {amplitude_v!r} V must be finite and nonzero")
        sign = 1 if amp > 0 else -1
        try:
            applied = self.pulse_many([int(crosspoint)], [sign * int(count)], abs(amp),
                                      width_s).applied
        except ComplianceTripError as e:
            assert e.report is not None
            applied = e.report.applied
        return sign * int(applied[0])

    def pulse_many(
        self,
        crosspoints: ArrayLike,
        counts: ArrayLike,
        amplitude_v: float,
        width_s: float,
    ) -> PulseReport:
        """Apply signed pulse trains to many crosspoints, one PULSE frame per 524 285.

        Args:
            crosspoints: ``(k,)`` crosspoint numbers, each at most once.
            counts: ``(k,)`` signed pulse counts (+ potentiates, - depresses).
            amplitude_v: pulse amplitude magnitude, V (> 0).
            width_s: pulse width, s.

        Raises:
            LimitError: a crosspoint beyond the board, more pulses than
                ``max_pulses_per_crosspoint``, amplitude or width beyond the board's range.
            ConfigError: malformed arguments.
            ComplianceTripError: the board tripped its compliance (``.report`` says
                what was applied; later crosspoints were not pulsed).
            UnconfirmedCommandError: a frame got no valid reply: re-read the
                conductances (:meth:`read_conductance`) and reconcile.
        """
        i = self.info
        cp = _indices(crosspoints, i.n_crosspoints, "crosspoint")
        c = np.asarray(counts)
        if c.shape != cp.shape:
            raise ConfigError(f"counts must have shape {cp.shape} like the crosspoints")
        if c.size and not np.issubdtype(c.dtype, np.integer):
            raise ConfigError("pulse counts must be integers")
        cnt = c.astype(np.int64)
        peak = int(np.abs(cnt).max()) if cnt.size else 0
        if peak > i.max_pulses_per_crosspoint:
            raise LimitError(
                f"{peak} pulses on one crosspoint exceed the board's max_pulses_per_crosspoint="
                f"{i.max_pulses_per_crosspoint}; split the update"
            )
        amp = float(amplitude_v)
        if not (np.isfinite(amp) and amp > 0):
            raise ConfigError(
                f"amplitude_v={amplitude_v!r} must be a finite magnitude > 0 V "
                "(the polarity is the sign of each count)"
            )
        if amp > i.pulse_amplitude_max_v:
            raise LimitError(
                f"pulse amplitude {amp:.6g} V exceeds the board's {i.pulse_amplitude_max_v:.6g} V"
            )
        w = float(width_s)
        if not np.isfinite(w) or not i.pulse_width_min_s <= w <= i.pulse_width_max_s:
            raise LimitError(
                f"pulse width {w:.6g} s outside the board's {i.pulse_width_min_s:.3g}.."
                f"{i.pulse_width_max_s:.3g} s"
            )
        k = cp.size
        applied = np.zeros(k, dtype=np.int64)
        status = np.full(k, PulseStatus.SKIPPED, dtype=np.uint8)
        aborted = False
        for lo in range(0, max(k, 1), _PULSE_CHUNK):
            hi = min(k, lo + _PULSE_CHUNK)
            work = float(np.abs(cnt[lo:hi]).sum()) * (w + i.pulse_overhead_s)
            r = self._pulse_frame(Pulse(cp[lo:hi], cnt[lo:hi], amp, w), work, 5 + 5 * (hi - lo))
            if r.applied.size != hi - lo:
                raise ProtocolError(
                    f"PULSE reply for {r.applied.size} crosspoints, expected {hi - lo}",
                )
            applied[lo:hi] = r.applied
            status[lo:hi] = r.status
            if r.aborted:
                aborted = True
                break
        report = PulseReport(cp, cnt, applied, status, amp, w, aborted)
        if aborted:
            where = np.flatnonzero(status == PulseStatus.COMPLIANCE)
            at = f" at crosspoint {int(cp[where[0]])}" if where.size else ""
            msg = (
                f"PULSE tripped the board's compliance{at} after {report.total_pulses} pulse(s);"
                " the board went to its safe state and later crosspoints were not pulsed"
            )
            self._t.report_event("warning", msg)
            raise ComplianceTripError(msg + "; check the devices and the pulse amplitude", report)
        return report

    def _pulse_frame(self, request: Pulse, work_s: float, reply_bytes: int) -> PulseReply:
        """One PULSE frame; sent again (bounded) when the board says it did nothing.

        BUSY, BAD_CRC and BAD_LENGTH replies state that no pulse was applied
        (``docs/board-protocol.md``), so resending cannot double a pulse train.
        """
        attempts = self._t.retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._t.exchange(request, PulseReply, work_s=work_s,
                                        reply_bytes=reply_bytes)
            except BoardError as e:
                if e.error_code not in _NOT_DONE or attempt == attempts:
                    raise
                self._t.report_event("retry", f"PULSE (seq {e.seq}) was answered "
                                     f"{e.error_code.name}: no pulse applied; sending it again "
                                     f"(attempt {attempt + 1} of {attempts})")
        raise AssertionError("unreachable")

    def read_conductance(self, crosspoints: ArrayLike, v_read: float) -> FloatArray:
        """Conductance of each crosspoint measured at ``v_read`` volts, S (READ_CONDUCTANCE).

        Any number of crosspoints (one frame per 524 287).

        Raises:
            LimitError: a crosspoint beyond the board or |v_read| > ``v_read_max_v``.
            ConfigError: malformed crosspoints or ``v_read`` zero / not finite.
        """
        i = self.info
        cp = _indices(crosspoints, i.n_crosspoints, "crosspoint", unique=False)
        v = float(v_read)
        if not np.isfinite(v) or v == 0:
            raise ConfigError(f"read voltage {v_read!r} V must be finite and nonzero")
        if abs(v) > i.v_read_max_v:
            raise LimitError(
                f"read voltage {v:.6g} V exceeds the board's v_read_max_v={i.v_read_max_v:.6g} V"
            )
        out = np.empty(cp.size, dtype=np.float64)
        for lo in range(0, max(cp.size, 1), _G_CHUNK):
            hi = min(cp.size, lo + _G_CHUNK)
            r = self._t.exchange(
                ReadConductance(cp[lo:hi], v),
                ReadConductanceReply,
                work_s=(hi - lo) * i.g_read_time_s,
                reply_bytes=4 + 8 * (hi - lo),
            )
            if r.g_s.size != hi - lo:
                raise ProtocolError(
                    f"READ_CONDUCTANCE reply for {r.g_s.size} crosspoints, expected {hi - lo}",
                )
            out[lo:hi] = r.g_s
        return out

    # ------------------------------------------------------------------ helpers
    def _state_bytes(self) -> int:
        i = self.info
        return 7 + 8 * (i.n_input_channels + i.n_nudge_channels + i.n_bias_channels)


class BiasCurrentSource:
    """The board's bias current sources seen as a :class:`~instruments.roles.CurrentSourceRole`."""

    def __init__(self, driver: SerialBoardDriver) -> None:
        self._d = driver

    def set_currents(self, channels: ArrayLike, amps: ArrayLike) -> None:
        """Set bias current sources, A, and turn them on (SET_BIAS_CURRENTS)."""
        self._d.set_bias_currents(channels, amps)


# ---------------------------------------------------------------------------
# Argument checks (before anything is sent)
# ---------------------------------------------------------------------------


def _indices(values: ArrayLike, n: int, what: str, *, unique: bool = True) -> IntArray:
    out = int_vector(values, f"{what} numbers", ConfigError)
    if out.size:
        lo, hi = int(out.min()), int(out.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise LimitError(f"{what} {bad} does not exist: the board has {n} {what}s (0..{n - 1})")
        if unique and np.unique(out).size != out.size:
            raise ConfigError(f"each {what} may appear once per call")
    return out


def _channels(values: ArrayLike, n: int, what: str) -> IntArray:
    return _indices(values, n, f"{what} channel")


def _levels(values: ArrayLike, k: int, limit: float, unit: str, what: str) -> FloatArray:
    v = np.array(values, dtype=np.float64)
    if v.shape != (k,):
        raise ConfigError(f"{what}s must have shape ({k},) like the channels, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ConfigError(f"{what}s contain NaN or inf; pass finite values")
    peak = float(np.max(np.abs(v), initial=0.0))
    if peak > limit:
        raise LimitError(
            f"{what} {peak:.6g} {unit} exceeds the board's range of {limit:.6g} {unit}; "
            "nothing was sent"
        )
    return v


def _n_samples(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"n_samples={n!r} must be an integer >= 1")
    return int(n)


def _flag_overrange(values: FloatArray, flags: U8Array) -> tuple[FloatArray, U8Array]:
    """NaN + OVERRANGE for every sample that is flagged OVERRANGE or not finite."""
    v = np.array(values, dtype=np.float64)
    f = np.array(flags, dtype=np.uint8)
    bad = ~np.isfinite(v) | ((f & _OVER) != 0)
    if bad.any():
        v[bad] = np.nan
        f[bad] |= _OVER
    return v, f


# ---------------------------------------------------------------------------
# The instrument kind
# ---------------------------------------------------------------------------


def _open(ctx: OpenContext) -> OpenedInstrument:
    on_exchange_text, on_event = ctx.callbacks()

    def on_exchange(rec: ExchangeRecord) -> None:
        on_exchange_text(
            f"{rec.direction} {rec.command} seq {rec.seq}: {rec.data_hex[:96]}"
            + ("..." if len(rec.data_hex) > 96 else "")
        )

    retry = RetryPolicy(
        attempts=int(ctx.option("retry_attempts")), backoff_s=float(ctx.option("retry_backoff_s"))
    )
    d = SerialBoardDriver.open(
        ctx.address,
        baudrate=int(ctx.option("baudrate")),
        base_timeout_s=float(ctx.option("timeout_s")),
        retry=retry,
        on_exchange=on_exchange,
        on_event=on_event,
    )
    i = d.info

    def read_levels() -> _SourceLevels:
        st = d.get_state()
        return _SourceLevels(
            st.energised, {"inputs": st.inputs_v, "nudges": st.nudge_a, "biases": st.bias_a}
        )

    return OpenedInstrument(
        identity=d.identity(),
        device=d,
        roles=RoleDrivers(inputs=d, nudges=d, biases=d.bias_source, meter=d, crosspoints=d),
        channel_counts={
            "inputs": i.n_input_channels,
            "nudges": i.n_nudge_channels,
            "biases": i.n_bias_channels,
            "meter": i.n_adc_channels,
            "crosspoints": i.n_crosspoints,
        },
        hard_close=lambda: d.transport.close(),
        read_levels=read_levels,
        reconnect=d.reconnect,
        v_read_range_v=float(i.adc_range_v),
    )


KIND = InstrumentKind(
    name="serial-board",
    help="the hwloop serial board (docs/board-protocol.md): every role on one link",
    roles=(VoltageSourceRole, CurrentSourceRole, MeterRole, CrosspointRole),
    options=(
        KindOption("baudrate", "int", "baud", 115_200, "line rate of a serial port"),
        KindOption("timeout_s", "number", "s", 0.5, "fixed part of every exchange's deadline"),
        KindOption("retry_attempts", "int", "", 3, "attempts of an idempotent command"),
        KindOption("retry_backoff_s", "number", "s", 0.02, "wait before the first retry"),
    ),
    open=_open,
    address_key="url",
)
"""The ``serial-board`` instrument kind (entry point ``hwloop.instruments``)."""


def instrument_kind() -> InstrumentKind:
    """Entry point of the ``serial-board`` kind (group ``hwloop.instruments``)."""
    return KIND
