"""Keithley 2400 SourceMeter over SCPI (one channel).

Commands from the *2400 Series SourceMeter User's Manual* (2400S-900-01), section 18
"SCPI Command Reference" (and section 9 "Data Store", section 17 "Signal oriented
measurement commands"):

* ``:SOURce:FUNCtion VOLTage|CURRent``, ``:SOURce:VOLTage:MODE FIXed``,
  ``:SOURce:VOLTage[:LEVel] <n>`` (2400: -210 to 210 V), ``:SOURce:CURRent[:LEVel]
  <n>`` (-1.05 to 1.05 A) -- SOURce subsystem;
* ``:SENSe:CURRent:PROTection <n>`` (current compliance of the V-source, up to
  1.05 A), ``:SENSe:VOLTage:PROTection <n>`` (voltage compliance of the I-source, up
  to 210 V), ``:SENSe:CURRent:NPLCycles <n>`` (0.01 to 10; the speed setting is
  global), ``:SENSe:FUNCtion "VOLT"|"CURR"`` -- SENSe1 subsystem;
* ``:OUTPut[:STATe] ON|OFF`` and ``:OUTPut?`` -- OUTPut subsystem;
* ``:FORMat:ELEMents VOLT,CURR,TIME,STAT`` -- FORMat subsystem; status word bit 0
  (OFLO, over-range) and bit 3 (in real compliance);
* ``:TRIGger:COUNt <n>`` (the product of arm and trigger counts is at most 2500),
  ``:INITiate``, ``:READ?``, ``*OPC?``;
* ``:TRACe:CLEar``, ``:TRACe:POINts <n>`` (1 to 2500), ``:TRACe:FEED SENSe``,
  ``:TRACe:FEED:CONTrol NEXT``, ``:TRACe:DATA?`` -- TRACe subsystem;
* ``:SOURce:DELay <n>`` (0 to 999.9999 s) and ``:SOURce:CLEar:AUTO ON|OFF`` (auto
  output-off: the output turns on at the start of each source-delay-measure cycle
  and off after the measurement) -- used for pulses.

Commands of one call are joined with ``;`` into one program message (IEEE 488.2
compound message, each header starting at the root with ``:``).
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from hwloop.device import SampleFlag
from hwloop.errors import ConfigError
from instruments import kinds
from instruments import scpi_util as su
from instruments.roles import CurrentSourceRole, MeterRole, VoltageSourceRole
from instruments.visa_transport import InstrumentStateError, VisaTransport, planned_timeout_s

FloatArray = NDArray[np.float64]

V_MAX_V = 210.0
"""2400 voltage source range, V (2400-LV and 2401: 21 V; pass ``v_max_v``)."""
I_MAX_A = 1.05
"""2400 current source range, A."""
NPLC_RANGE = (0.01, 10.0)
MAX_POINTS = 2500
"""Trace buffer size and largest trigger count."""
STATUS_OFLO = 1 << 0
STATUS_COMPLIANCE = 1 << 3


class Keithley2400(su.SmuDriver):
    """A Keithley 2400 as voltage or current source, voltmeter and pulsing SMU.

    Implements ``Instrument``, ``VoltageSourceRole``, ``CurrentSourceRole`` and
    ``MeterRole`` (channel 0 only) of :mod:`instruments.roles`, and the
    ``PulsingSmu`` methods used by :class:`instruments.keithley707b.SwitchedCrosspoints`.

    Args:
        transport: the connection.
        v_max_v: optional stricter |voltage| limit, V (<= 210 V).
        i_max_a: optional stricter |current| limit, A (<= 1.05 A).
        nplc: integration time used to size timeouts (set by :meth:`configure`), PLC.
        line_frequency_hz: mains frequency, Hz.
        pulse_width_min_s: shortest pulse accepted, s (source delay plus a 0.01 PLC
            conversion: a 2400 cannot make shorter pulses).
    """

    n_channels = 1

    def __init__(
        self,
        transport: VisaTransport,
        *,
        v_max_v: float = V_MAX_V,
        i_max_a: float = I_MAX_A,
        nplc: float = 1.0,
        line_frequency_hz: float = 50.0,
        pulse_width_min_s: float = 1.0e-3,
    ) -> None:
        self.transport = transport
        self.name = transport.name
        self.v_max_v = su.check_range(self.name, "v_max_v", v_max_v, 0.0, V_MAX_V, "V")
        self.i_max_a = su.check_range(self.name, "i_max_a", i_max_a, 0.0, I_MAX_A, "A")
        self.nplc = su.check_range(self.name, "NPLC", nplc, *NPLC_RANGE, "PLC")
        self.line_frequency_hz = float(line_frequency_hz)
        self.pulse_width_min_s = float(pulse_width_min_s)
        self._closed = False

    # ------------------------------------------------------------------ Instrument
    def _setting_ranges(self) -> dict[str, tuple[float, float]]:
        return {"current_limit_a": (1e-9, I_MAX_A), "voltage_limit_v": (0.2e-3, V_MAX_V),
                "nplc": NPLC_RANGE}

    def _send_settings(self, settings: dict[str, float]) -> None:
        """One message: ``:SENS:CURR:PROT`` / ``:SENS:VOLT:PROT`` (compliances), NPLC.

        ``:SENS:CURR:PROT`` is the compliance of the V-source, ``:SENS:VOLT:PROT`` that of
        the I-source, ``:SENS:CURR:NPLC`` the global speed setting.
        """
        command = {"current_limit_a": ":SENS:CURR:PROT", "voltage_limit_v": ":SENS:VOLT:PROT",
                   "nplc": ":SENS:CURR:NPLC"}
        if settings:
            self.transport.write(";".join(f"{command[k]} {su.num(x)}" for k, x in settings.items()))

    def safe_state(self) -> None:
        """Auto output-off off, both levels to 0, output off (idempotent)."""
        self.transport.write(":SOUR:CLE:AUTO OFF;:SOUR:VOLT:LEV 0;:SOUR:CURR:LEV 0;:OUTP OFF")

    def _state(self) -> tuple[bool, str, float, float]:
        """``(output on, source function, voltage level V, current level A)``."""

        def parse(text: str) -> tuple[bool, str, float, float]:
            parts = [p.strip() for p in text.strip().split(";")]
            if len(parts) != 4 or parts[1] not in ("VOLT", "CURR"):
                raise ValueError(f"unexpected state reply {text[:60]!r}")
            return su.parse_float(parts[0]) == 1.0, parts[1], float(parts[2]), float(parts[3])

        state: tuple[bool, str, float, float] = self.transport.query(
            ":OUTP?;:SOUR:FUNC?;:SOUR:VOLT:LEV?;:SOUR:CURR:LEV?", parse=parse
        )
        return state

    def is_energised(self) -> bool:
        """Read back output state, function and level (one compound query).

        Returns:
            True when the output is on at a nonzero level of the source function.
        """
        on, func, v, i = self._state()
        return on and (v if func == "VOLT" else i) != 0.0

    # ------------------------------------------------------------------ sources
    def set_voltages(self, channels: NDArray[np.integer], volts: FloatArray) -> None:
        """Source ``volts[0]`` V on channel 0 and turn the output on."""
        self._source("VOLT", channels, volts, self.v_max_v)

    def set_currents(self, channels: NDArray[np.integer], amps: FloatArray) -> None:
        """Source ``amps[0]`` A from channel 0 and turn the output on (0 A: a voltmeter)."""
        self._source("CURR", channels, amps, self.i_max_a)

    def _source(
        self, func: str, channels: NDArray[np.integer], levels: FloatArray, max_abs: float
    ) -> None:
        """Source ``levels[0]`` (V for ``"VOLT"``, A for ``"CURR"``) within +-``max_abs``."""
        what, unit = ("voltage", "V") if func == "VOLT" else ("current", "A")
        idx = su.check_channels(self.name, channels, 1)
        x = np.asarray(levels, dtype=np.float64).reshape(-1)
        if x.size != len(idx):
            raise ConfigError(f"{self.name}: {len(idx)} channels but {x.size} {what}s")
        if not idx:
            return
        lv = su.check_range(self.name, f"{what} level", x[0], -max_abs, max_abs, unit)
        self.transport.write(
            f":SOUR:FUNC {func};:SOUR:{func}:MODE FIX;:SOUR:{func}:LEV {su.num(lv)};:OUTP ON"
        )

    # ------------------------------------------------------------------ meter
    def read_voltages(
        self, channels: NDArray[np.integer], n_samples: int
    ) -> tuple[FloatArray, NDArray[np.uint8], FloatArray]:
        """Measure the terminal voltage ``n_samples`` times into the trace buffer.

        The output must be on (a voltmeter: :meth:`set_currents` with 0 A). Sends the
        buffer setup and ``:INIT``, waits with ``*OPC?`` (timeout from NPLC x samples;
        not retried), then reads ``:TRAC:DATA?`` (VOLT, TIME, STAT per reading).

        Returns:
            ``(samples_v (n, 1), flags (n, 1), timestamps_s (n,))``, host monotonic
            clock; status bit OFLO -> NaN + OVERRANGE, bit 3 -> COMPLIANCE.
        """
        idx = su.check_channels(self.name, channels, 1)
        n = su.check_count(self.name, "samples", n_samples, 1, MAX_POINTS)
        if not idx:
            return np.zeros((n, 0)), np.zeros((n, 0), dtype=np.uint8), np.zeros(n)
        on, _, _, _ = self._state()
        if not on:
            raise InstrumentStateError(
                f"{self.name}: the output is off, so nothing can be measured; turn it on"
                " first (as a voltmeter: source 0 A)"
            )
        t0 = time.monotonic()
        self.transport.write(
            ':SENS:FUNC "VOLT";:FORM:ELEM VOLT,TIME,STAT;'
            f":TRIG:COUN {n};:TRAC:CLE;:TRAC:POIN {n};:TRAC:FEED SENS;:TRAC:FEED:CONT NEXT;:INIT"
        )
        timeout = planned_timeout_s(n, self.nplc, line_frequency_hz=self.line_frequency_hz)
        self.transport.query("*OPC?", parse=su.parse_float, timeout_s=timeout, idempotent=False)
        vals = self.transport.query(
            ":TRAC:DATA?", parse=lambda t: su.parse_floats(t, ",", 3 * n), idempotent=True
        )
        arr = np.asarray(vals).reshape(n, 3)
        status = arr[:, 2].astype(np.int64)
        samples, bad = su.overflow_to_nan(arr[:, :1])
        bad[:, 0] |= (status & STATUS_OFLO) != 0
        samples[bad] = np.nan
        flags = np.zeros((n, 1), dtype=np.uint8)
        flags[bad] |= np.uint8(SampleFlag.OVERRANGE)
        flags[(status & STATUS_COMPLIANCE) != 0, 0] |= np.uint8(SampleFlag.COMPLIANCE)
        stamps = t0 + (arr[:, 1] - arr[0, 1])
        return samples, flags, stamps

    # ------------------------------------------------------------------ pulsing SMU
    def pulse_voltage(self, amplitude_v: float, width_s: float, count: int) -> int:
        """Apply ``count`` pulses of ``amplitude_v`` V lasting about ``width_s`` s.

        Auto output-off with source delay = width: each source-delay-measure cycle is
        one pulse; ``:READ?`` runs ``count`` of them and returns CURR,STAT per pulse.
        A 2400 cannot stop the burst at a compliance trip, so the pulses from the
        first one in compliance on are reported as not applied. Never retried.

        Returns:
            Pulses applied before the first compliance trip.
        """
        a = su.check_range(
            self.name, "pulse amplitude", amplitude_v, -self.v_max_v, self.v_max_v, "V"
        )
        w = su.check_range(self.name, "pulse width", width_s, self.pulse_width_min_s, 999.9999, "s")
        n = su.check_count(self.name, "pulse count", count, 1, MAX_POINTS)
        self.transport.write(
            f":SOUR:FUNC VOLT;:SOUR:VOLT:MODE FIX;:SOUR:VOLT:LEV {su.num(a)};:SOUR:DEL {su.num(w)};"
            f':SOUR:CLE:AUTO ON;:SENS:FUNC "CURR";:FORM:ELEM CURR,STAT;:TRIG:COUN {n}'
        )
        timeout = planned_timeout_s(
            n, 0.01, fixed_s=n * w, line_frequency_hz=self.line_frequency_hz
        )
        try:
            vals = self.transport.query(
                ":READ?",
                parse=lambda t: su.parse_floats(t, ",", 2 * n),
                timeout_s=timeout,
                idempotent=False,
            )
        finally:
            self.transport.write(":SOUR:CLE:AUTO OFF;:SOUR:VOLT:LEV 0;:SOUR:DEL 0;:TRIG:COUN 1")
        status = np.asarray(vals).reshape(n, 2)[:, 1].astype(np.int64)
        tripped = np.flatnonzero(status & STATUS_COMPLIANCE)
        return int(tripped[0]) if tripped.size else n

    def measure_current_at(self, v_read: float) -> float:
        """One source-measure cycle at ``v_read`` V with auto output-off; returns A.

        Never retried (it sources). NaN when the reading overflowed.
        """
        v = su.check_range(self.name, "read voltage", v_read, -self.v_max_v, self.v_max_v, "V")
        self.transport.write(
            f":SOUR:FUNC VOLT;:SOUR:VOLT:MODE FIX;:SOUR:VOLT:LEV {su.num(v)};:SOUR:DEL 0;"
            ':SOUR:CLE:AUTO ON;:SENS:FUNC "CURR";:FORM:ELEM CURR;:TRIG:COUN 1'
        )
        timeout = planned_timeout_s(1, self.nplc, line_frequency_hz=self.line_frequency_hz)
        try:
            i = float(
                self.transport.query(
                    ":READ?", parse=su.parse_float, timeout_s=timeout, idempotent=False
                )
            )
        finally:
            self.transport.write(":SOUR:CLE:AUTO OFF;:SOUR:VOLT:LEV 0")
        return i if abs(i) < 9.9e37 else float("nan")


# --------------------------------------------------------------------------- the instrument kind


def _opc(d: Keithley2400) -> None:
    """``*OPC?;*ESR?``: answered only after the earlier writes executed; a restart raises.

    ``*ESR?`` reads and clears the standard event status register (2400 manual, section
    14 "Status structure": bit 7 PON, power on); a set PON bit means the instrument
    restarted since the last read (:func:`_arm`): its settings and levels were lost.
    """
    vals = d.transport.query("*OPC?;*ESR?", parse=lambda t: su.parse_floats(t, ";", 2),
                             idempotent=True)
    su.check_power_on(d.name, vals[1], "*ESR?")


def _arm(d: Keithley2400) -> Keithley2400:
    """Read ``*ESR?`` once at connection, so that its PON bit later means a restart."""
    d.transport.query("*ESR?", parse=su.parse_float, idempotent=True)
    return d


def _open(ctx: kinds.OpenContext) -> kinds.OpenedInstrument:
    d = kinds.on_visa(ctx, lambda t: _arm(Keithley2400(
        t,
        v_max_v=float(ctx.option("v_max_v")),
        i_max_a=float(ctx.option("i_max_a")),
        nplc=float(ctx.option("nplc")),
        line_frequency_hz=float(ctx.option("line_frequency_hz")),
        pulse_width_min_s=float(ctx.option("pulse_width_min_s")),
    )))
    return kinds.opened_on_visa(
        d,
        roles=kinds.RoleDrivers(inputs=d, nudges=d, biases=d, meter=d),
        channel_counts={"inputs": 1, "nudges": 1, "biases": 1, "meter": 1},
        confirm=lambda: _opc(d),
    )


def _open_pulser(ctx: kinds.OpenContext, window: kinds.PulseWindow) -> kinds.OpenedInstrument:
    d = kinds.on_visa(ctx, lambda t: _arm(Keithley2400(
        t, nplc=float(ctx.option("nplc")), pulse_width_min_s=window.width_min_s)))
    return kinds.opened_on_visa(d, confirm=lambda: _opc(d), pulser=d)


KIND = kinds.InstrumentKind(
    name="keithley2400",
    help="a Keithley 2400 SMU (SCPI): one voltage or current source and voltmeter",
    roles=(VoltageSourceRole, CurrentSourceRole, MeterRole),
    options=(
        *kinds.VISA_OPTIONS,
        *kinds.TIMING_OPTIONS,
        kinds.KindOption("v_max_v", "number", "V", V_MAX_V, "stricter |voltage| limit"),
        kinds.KindOption("i_max_a", "number", "A", I_MAX_A, "stricter |current| limit"),
        kinds.KindOption("pulse_width_min_s", "number", "s", 1e-3, "shortest pulse accepted"),
    ),
    open=_open,
    shared_source_channels=True,
    open_pulser=_open_pulser,
)
"""The ``keithley2400`` instrument kind (entry point ``hwloop.instruments``)."""


def instrument_kind() -> kinds.InstrumentKind:
    """Entry point of the ``keithley2400`` kind (group ``hwloop.instruments``)."""
    return KIND
