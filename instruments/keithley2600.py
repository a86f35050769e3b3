"""Keithley Series 2600B System SourceMeter channels over TSP.

Commands are TSP (Lua) chunks from the *Series 2600B System SourceMeter Instrument
Reference Manual* (2600BS-901-01), section "TSP command reference":

* ``smuX.source.func = smuX.OUTPUT_DCVOLTS | smuX.OUTPUT_DCAMPS`` (``smuX.source.func``),
* ``smuX.source.levelv`` / ``smuX.source.leveli`` (``smuX.source.levelY``: source level),
* ``smuX.source.limiti`` / ``smuX.source.limitv`` (``smuX.source.limitY``: compliance),
* ``smuX.source.output = smuX.OUTPUT_ON | smuX.OUTPUT_OFF`` (``smuX.source.output``),
* ``smuX.source.compliance`` (read-only; ``true`` when the limit is in control),
* ``smuX.measure.nplc`` (0.001 to 25), ``smuX.measure.count``,
  ``smuX.measure.v(rbuffer)`` / ``smuX.measure.i()`` (``smuX.measure.Y()``),
* ``smuX.nvbuffer1`` dedicated reading buffer, ``bufferVar.clear()``,
  ``bufferVar.collecttimestamps``, ``printbuffer(1, n, buf.readings, buf.timestamps)``,
* ``delay(seconds)``, ``print(...)`` (values of one ``print`` are tab-separated),
* ``errorqueue.count`` / ``errorqueue.next()``,
* TSP-Link: a channel on another node is ``node[N].smua`` (section "TSP-Link system
  expansion interface"; every ``smuX`` attribute above is TSP-Link accessible).

Channel index ``i`` of the roles is ``channels[i]``, e.g. ``("smua", "smub",
"node[2].smua")``. Source ranges per model: ``smuX.source.levelY`` (2601B/2602B/2604B:
±40 V, ±3 A; 2611B/2612B/2614B/2634B/2635B/2636B: ±200 V, ±1.5 A) and
``smuX.source.limitY`` (compliance ranges) of the same manual.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hwloop.device import SafetyLimits, SampleFlag
from hwloop.errors import ConfigError
from instruments import kinds
from instruments import scpi_util as su
from instruments.roles import CurrentSourceRole, MeterRole, VoltageSourceRole
from instruments.visa_transport import InstrumentError, VisaTransport, planned_timeout_s

FloatArray = NDArray[np.float64]

_CHANNEL = re.compile(r"^(?:node\[(\d{1,2})\]\.)?smu[ab]$")


@dataclass(frozen=True)
class SmuRanges:
    """Source and compliance ranges of one 2600B model (reference manual, levelY/limitY).

    Attributes:
        v_max_v: largest |voltage source level|, V.
        i_max_a: largest |current source level|, A.
        limitv_v: (min, max) voltage compliance, V.
        limiti_a: (min, max) current compliance, A.
    """

    v_max_v: float
    i_max_a: float
    limitv_v: tuple[float, float]
    limiti_a: tuple[float, float]


_LOW_V = SmuRanges(40.0, 3.0, (10e-3, 40.0), (10e-9, 3.0))
_HIGH_V = SmuRanges(200.0, 1.5, (20e-3, 200.0), (10e-9, 1.5))
_LOW_I = SmuRanges(200.0, 1.5, (20e-3, 200.0), (100e-12, 1.5))
MODEL_RANGES: dict[str, SmuRanges] = {
    "2601B": _LOW_V,
    "2602B": _LOW_V,
    "2604B": _LOW_V,
    "2611B": _HIGH_V,
    "2612B": _HIGH_V,
    "2614B": _HIGH_V,
    "2634B": _LOW_I,
    "2635B": _LOW_I,
    "2636B": _LOW_I,
}
"""Ranges by model (the 2600B reference manual's ``smuX.source.levelY`` and ``limitY``)."""

NPLC_RANGE = (0.001, 25.0)
"""``smuX.measure.nplc``: 0.001 to 25."""

MAX_READINGS = 100_000
"""Largest ``smuX.measure.count`` accepted here (dedicated buffers hold > 100 000)."""


def model_from_identity(identity: str) -> str:
    """The model field of a 2600B ``*IDN?`` reply.

    ``"Keithley Instruments Inc., Model 2602B, 1234567, 4.0.0"`` -> ``"2602B"``.
    """
    fields = [f.strip() for f in identity.split(",")]
    if len(fields) < 2:
        return ""
    return fields[1].removeprefix("Model").strip()


class Keithley2600(su.SmuDriver):
    """Several 2600B SMU channels as voltage sources, current sources and meters.

    Implements the roles ``Instrument``, ``VoltageSourceRole``, ``CurrentSourceRole``
    and ``MeterRole`` of :mod:`instruments.roles`; :meth:`channel` gives one channel as
    the pulsing SMU of :class:`instruments.keithley707b.SwitchedCrosspoints`.

    Args:
        transport: the connection (identity already read).
        channels: TSP channel names, index ``i`` = ``channels[i]`` (``smua``, ``smub``,
            ``node[N].smua`` ...).
        model: model number for the ranges (default: from ``*IDN?``; unknown models
            need ``v_max_v``/``i_max_a``).
        v_max_v: optional stricter |voltage level| limit, V.
        i_max_a: optional stricter |current level| limit, A.
        nplc: integration time used to size read timeouts (set on the instrument by
            :meth:`configure`), power-line cycles.
        line_frequency_hz: mains frequency, Hz.
    """

    def __init__(
        self,
        transport: VisaTransport,
        channels: Sequence[str] = ("smua", "smub"),
        *,
        model: str | None = None,
        v_max_v: float | None = None,
        i_max_a: float | None = None,
        nplc: float = 1.0,
        line_frequency_hz: float = 50.0,
    ) -> None:
        self.transport = transport
        self.name = transport.name
        chans = tuple(channels)
        if not chans:
            raise ConfigError(f"{self.name}: give at least one SMU channel")
        for ch in chans:
            m = _CHANNEL.match(ch)
            if m is None or (m.group(1) is not None and not 1 <= int(m.group(1)) <= 64):
                raise ConfigError(
                    f"{self.name}: channel {ch!r} is not a 2600B SMU channel"
                    " (smua, smub, node[N].smua, node[N].smub with N 1..64)"
                )
        if len(set(chans)) != len(chans):
            raise ConfigError(f"{self.name}: channel list {list(chans)} has duplicates")
        self.channels = chans
        self.model = model or model_from_identity(transport.identity)
        base = MODEL_RANGES.get(self.model)
        if base is None:
            if v_max_v is None or i_max_a is None:
                raise ConfigError(
                    f"{self.name}: unknown 2600 model {self.model!r}; pass v_max_v and i_max_a"
                )
            base = SmuRanges(v_max_v, i_max_a, (10e-3, v_max_v), (100e-12, i_max_a))
        self.ranges = SmuRanges(
            min(base.v_max_v, v_max_v) if v_max_v is not None else base.v_max_v,
            min(base.i_max_a, i_max_a) if i_max_a is not None else base.i_max_a,
            base.limitv_v,
            base.limiti_a,
        )
        self.nplc = su.check_range(self.name, "NPLC", nplc, *NPLC_RANGE, "PLC")
        self.line_frequency_hz = float(line_frequency_hz)
        self._closed = False

    # ------------------------------------------------------------------ Instrument
    def _setting_ranges(self) -> dict[str, tuple[float, float]]:
        r = self.ranges
        return {"current_limit_a": r.limiti_a, "voltage_limit_v": r.limitv_v, "nplc": NPLC_RANGE}

    def _send_settings(self, settings: dict[str, float]) -> None:
        """``smuX.source.limiti``/``limitv``/``measure.nplc`` on every channel; check errors."""
        attr = {"current_limit_a": "source.limiti", "voltage_limit_v": "source.limitv",
                "nplc": "measure.nplc"}
        parts = [f"{ch}.{attr[k]} = {su.num(x)}" for k, x in settings.items()
                 for ch in self.channels]
        self.arm_restart_check()
        if parts:
            self.transport.write("; ".join(parts))
        self.check_errors()

    def arm_restart_check(self) -> None:
        """Read (and so clear) the standard event register: its PON bit now means a restart.

        ``print(status.standard.event)`` (2600B reference manual, "Status model",
        "Standard event register": bit 7 PON is set at power-on; reading an event
        register clears it). Called by :meth:`configure` before the settings go out.
        """
        self.transport.query("print(status.standard.event)", parse=su.parse_float, idempotent=True)

    def check_errors(self) -> None:
        """Raise :class:`InstrumentError` on a queued error or a restart of the instrument.

        One ``print(errorqueue.count, status.standard.event)``, then, on errors,
        ``print(errorqueue.next())`` (errorqueue functions, TSP command reference). A set
        PON bit (bit 7 of the standard event register, armed by
        :meth:`arm_restart_check`) means the instrument restarted since: its settings
        (limits, NPLC, levels) are the defaults again and the writes since the last
        check are lost, which its empty error queue would not show.
        """
        vals = self.transport.query(
            "print(errorqueue.count, status.standard.event)",
            parse=lambda t: su.parse_floats(t, "\t", 2), idempotent=True,
        )
        n = int(vals[0])
        su.check_power_on(self.name, vals[1], "status.standard.event")
        if n > 0:
            err = self.transport.query("print(errorqueue.next())", idempotent=False).strip()
            raise InstrumentError(
                f"{self.name}: instrument reports {n} error(s), first: {' '.join(err.split())};"
                " check the command and the instrument's setup"
            )

    def safe_state(self) -> None:
        """Every channel: levels to 0 V and 0 A, then output off (idempotent)."""
        parts: list[str] = []
        for ch in self.channels:
            parts += [
                f"{ch}.source.levelv = 0",
                f"{ch}.source.leveli = 0",
                f"{ch}.source.output = {ch}.OUTPUT_OFF",
            ]
        self.transport.write("; ".join(parts))

    def is_energised(self) -> bool:
        """Read back output state, function and levels of every channel.

        One ``print(smuX.source.output, smuX.source.func, smuX.source.levelv,
        smuX.source.leveli, ...)``; ``OUTPUT_DCAMPS`` = 0, ``OUTPUT_DCVOLTS`` = 1.

        Returns:
            True when any channel's output is on at a nonzero level of its function.
        """
        fields = []
        for ch in self.channels:
            fields += [
                f"{ch}.source.output",
                f"{ch}.source.func",
                f"{ch}.source.levelv",
                f"{ch}.source.leveli",
            ]
        k = len(self.channels)
        vals = self.transport.query(
            f"print({', '.join(fields)})",
            parse=lambda t: su.parse_floats(t, "\t", 4 * k),
            idempotent=True,
        )
        for c in range(k):
            out, func, lv, li = vals[4 * c : 4 * c + 4]
            level = lv if round(func) == 1 else li
            if round(out) == 1 and level != 0.0:
                return True
        return False

    # ------------------------------------------------------------------ sources
    def set_voltages(self, channels: NDArray[np.integer], volts: FloatArray) -> None:
        """Source ``volts[j]`` V on ``channels[j]`` and turn the outputs on (one write).

        Raises:
            LimitError: a level beyond the model's (or the given) voltage range.
        """
        self._source(channels, volts, "voltage", "V", self.ranges.v_max_v, "DCVOLTS", "levelv")

    def set_currents(self, channels: NDArray[np.integer], amps: FloatArray) -> None:
        """Source ``amps[j]`` A into ``channels[j]`` and turn the outputs on (one write).

        Raises:
            LimitError: a level beyond the model's (or the given) current range.
        """
        self._source(channels, amps, "current", "A", self.ranges.i_max_a, "DCAMPS", "leveli")

    def _source(
        self,
        channels: NDArray[np.integer],
        values: FloatArray,
        what: str,
        unit: str,
        limit: float,
        func: str,
        level_attr: str,
    ) -> None:
        """Check every level, then set function, level and output on in one TSP write."""
        idx = su.check_channels(self.name, channels, len(self.channels))
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.size != len(idx):
            raise ConfigError(f"{self.name}: {len(idx)} channels but {x.size} {what}s")
        levels = [su.check_range(self.name, f"{what} level", v, -limit, limit, unit) for v in x]
        parts: list[str] = []
        for c, lv in zip(idx, levels, strict=True):
            ch = self.channels[c]
            parts += [
                f"{ch}.source.func = {ch}.OUTPUT_{func}",
                f"{ch}.source.{level_attr} = {su.num(lv)}",
                f"{ch}.source.output = {ch}.OUTPUT_ON",
            ]
        if parts:
            self.transport.write("; ".join(parts))

    # ------------------------------------------------------------------ meter
    def read_voltages(
        self, channels: NDArray[np.integer], n_samples: int
    ) -> tuple[FloatArray, NDArray[np.uint8], FloatArray]:
        """Measure the voltage of each channel ``n_samples`` times into ``nvbuffer1``.

        One write starts the measurements (``smuX.measure.count``, buffer clear,
        timestamps on, ``smuX.measure.v(smuX.nvbuffer1)``; channels one after the
        other), then one ``printbuffer`` per channel and one ``print`` of the
        compliance states.

        Returns:
            ``(samples_v (n, k), flags (n, k), timestamps_s (n,))``; timestamps on the
            host's monotonic clock (``time.monotonic()``, s), spaced as the first
            channel's buffer timestamps. Overflow (9.91E37) -> NaN + OVERRANGE; a
            channel in compliance -> COMPLIANCE on all its samples.
        """
        idx = su.check_channels(self.name, channels, len(self.channels))
        n = su.check_count(self.name, "samples per channel", n_samples, 1, MAX_READINGS)
        k = len(idx)
        samples = np.zeros((n, k))
        flags = np.zeros((n, k), dtype=np.uint8)
        stamps = np.zeros(n)
        if k == 0:
            return samples, flags, stamps
        names = [self.channels[c] for c in idx]
        parts: list[str] = []
        for ch in names:
            parts += [
                f"{ch}.measure.count = {n}",
                f"{ch}.nvbuffer1.clear()",
                f"{ch}.nvbuffer1.collecttimestamps = 1",
                f"{ch}.measure.v({ch}.nvbuffer1)",
            ]
        t0 = time.monotonic()
        self.transport.write("; ".join(parts))
        timeout = planned_timeout_s(n * k, self.nplc, line_frequency_hz=self.line_frequency_hz)
        for j, ch in enumerate(names):
            vals = self.transport.query(
                f"printbuffer(1, {n}, {ch}.nvbuffer1.readings, {ch}.nvbuffer1.timestamps)",
                parse=lambda t: su.parse_floats(t, ",", 2 * n),
                timeout_s=timeout,
                idempotent=True,
            )
            arr = np.asarray(vals).reshape(n, 2)
            samples[:, j] = arr[:, 0]
            if j == 0:
                stamps = t0 + (arr[:, 1] - arr[0, 1])
        comp = self._compliance(names)
        samples, bad = su.overflow_to_nan(samples)
        flags[bad] |= np.uint8(SampleFlag.OVERRANGE)
        for j, c in enumerate(comp):
            if c:
                flags[:, j] |= np.uint8(SampleFlag.COMPLIANCE)
        return samples, flags, stamps

    def source_compliance(self, channels: NDArray[np.integer]) -> NDArray[np.bool_]:
        """``(k,)`` ``smuX.source.compliance`` of each channel (True: at its limit).

        A SourceComplianceRole: queried when another instrument reads the nodes.
        """
        idx = su.check_channels(self.name, channels, len(self.channels))
        if not idx:
            return np.zeros(0, dtype=bool)
        return np.asarray(self._compliance([self.channels[c] for c in idx]), dtype=bool)

    def _compliance(self, names: Sequence[str]) -> list[bool]:
        """``print(smuX.source.compliance, ...)``: one bool per channel name."""
        comp: list[bool] = self.transport.query(
            f"print({', '.join(f'{ch}.source.compliance' for ch in names)})",
            parse=lambda t: [su.parse_bool(x) for x in t.strip().split("\t")],
            idempotent=True,
        )
        if len(comp) != len(names):
            raise InstrumentError(
                f"{self.name}: compliance reply has {len(comp)} values, not {len(names)}"
            )
        return comp

    # ------------------------------------------------------------------ one channel
    def channel(self, index: int, **kwargs: float) -> Keithley2600Channel:
        """Channel ``index`` as a pulsing SMU (see :class:`Keithley2600Channel`)."""
        su.check_channels(self.name, [index], len(self.channels))
        return Keithley2600Channel(self, self.channels[index], **kwargs)


class Keithley2600Channel:
    """One 2600B channel that pulses and measures a crosspoint (a ``PulsingSmu``).

    Args:
        parent: the instrument.
        channel: TSP channel name (``"smua"``, ``"node[2].smub"``...).
        width_min_s: shortest pulse accepted, s (``delay()`` timing; host limit).
        width_max_s: longest pulse accepted, s.
        max_count: most pulses per call.
    """

    def __init__(
        self,
        parent: Keithley2600,
        channel: str,
        *,
        width_min_s: float = 1.0e-5,
        width_max_s: float = 1.0,
        max_count: float = 10_000,
    ) -> None:
        self.parent = parent
        self.ch = channel
        self.name = f"{parent.name} {channel}"
        self.width_min_s = float(width_min_s)
        self.width_max_s = float(width_max_s)
        self.max_count = int(max_count)

    def pulse_voltage(self, amplitude_v: float, width_s: float, count: int) -> int:
        """Apply ``count`` voltage pulses of ``amplitude_v`` V and ``width_s`` s.

        One TSP chunk: output on at 0 V, then ``count`` times: level = amplitude,
        ``delay(width)``, read ``smuX.source.compliance``, level 0, ``delay(width)``;
        the loop stops at the first pulse that hit compliance; output off; prints the
        number of pulses completed without compliance. Never retried.

        Returns:
            Pulses applied at full amplitude (``< count`` after a compliance trip).
        """
        p = self.parent
        vmax = p.ranges.v_max_v
        a = su.check_range(self.name, "pulse amplitude", amplitude_v, -vmax, vmax, "V")
        w = su.check_range(
            self.name, "pulse width", width_s, self.width_min_s, self.width_max_s, "s"
        )
        n = su.check_count(self.name, "pulse count", count, 1, self.max_count)
        ch = self.ch
        chunk = (
            f"{ch}.source.func = {ch}.OUTPUT_DCVOLTS; {ch}.source.levelv = 0;"
            f" {ch}.source.output = {ch}.OUTPUT_ON; hwl_n = 0;"
            f" for hwl_k = 1, {n} do {ch}.source.levelv = {su.num(a)}; delay({su.num(w)});"
            f" hwl_c = {ch}.source.compliance; {ch}.source.levelv = 0; delay({su.num(w)});"
            f" if hwl_c then break end; hwl_n = hwl_k end;"
            f" {ch}.source.output = {ch}.OUTPUT_OFF; print(hwl_n)"
        )
        timeout = planned_timeout_s(0, 1.0, fixed_s=2.0 * n * w + 0.01 * n)
        done = p.transport.query(chunk, parse=su.parse_float, timeout_s=timeout, idempotent=False)
        return round(float(done))

    def measure_current_at(self, v_read: float) -> float:
        """Source ``v_read`` V, measure the current once, then 0 V and output off.

        Returns:
            The current, A (NaN on overflow). Never retried (it sources).
        """
        p = self.parent
        vmax = p.ranges.v_max_v
        v = su.check_range(self.name, "read voltage", v_read, -vmax, vmax, "V")
        ch = self.ch
        chunk = (
            f"{ch}.source.func = {ch}.OUTPUT_DCVOLTS; {ch}.source.levelv = {su.num(v)};"
            f" {ch}.source.output = {ch}.OUTPUT_ON; hwl_i = {ch}.measure.i();"
            f" {ch}.source.levelv = 0; {ch}.source.output = {ch}.OUTPUT_OFF; print(hwl_i)"
        )
        timeout = planned_timeout_s(1, p.nplc, line_frequency_hz=p.line_frequency_hz)
        i = float(p.transport.query(
            chunk, parse=su.parse_float, timeout_s=timeout, idempotent=False
        ))
        return i if abs(i) < 9.9e37 else float("nan")

    def safe_state(self) -> None:
        """This channel to 0 V / 0 A and off."""
        ch = self.ch
        self.parent.transport.write(
            f"{ch}.source.levelv = 0; {ch}.source.leveli = 0; {ch}.source.output = {ch}.OUTPUT_OFF"
        )


# --------------------------------------------------------------------------- the instrument kind


def tsp_link_names(n: int) -> tuple[str, ...]:
    """``smua, smub, node[2].smua, node[2].smub, ...`` (TSP-Link order) for ``n`` channels."""
    out = []
    for j in range(n):
        node, smu = j // 2 + 1, "smua" if j % 2 == 0 else "smub"
        out.append(smu if node == 1 else f"node[{node}].{smu}")
    return tuple(out)


def _open(ctx: kinds.OpenContext) -> kinds.OpenedInstrument:
    if ctx.has_option("channels"):
        chans = tuple(ctx.option("channels"))
    else:
        n = int(ctx.option("n_channels") or 0) or max(
            2, ctx.used_channels(("inputs", "nudges", "biases", "meter"))
        )
        chans = tsp_link_names(n)
    d = kinds.on_visa(ctx, lambda t: Keithley2600(
        t,
        chans,
        model=ctx.option("model"),
        v_max_v=ctx.option("v_max_v"),
        i_max_a=ctx.option("i_max_a"),
        nplc=float(ctx.option("nplc")),
        line_frequency_hz=float(ctx.option("line_frequency_hz")),
    ))

    def configure(lim: SafetyLimits) -> None:
        d.configure(
            current_limit_a=lim.compliance_a,
            voltage_limit_v=min(d.ranges.v_max_v, lim.v_input_max_v),
        )

    n = len(chans)
    return kinds.opened_on_visa(
        d,
        roles=kinds.RoleDrivers(inputs=d, nudges=d, biases=d, meter=d),
        channel_counts={"inputs": n, "nudges": n, "biases": n, "meter": n},
        confirm=d.check_errors,  # TSP executes in order; also raises a queued error
        configure=configure,
    )


def _open_pulser(ctx: kinds.OpenContext, window: kinds.PulseWindow) -> kinds.OpenedInstrument:
    def build(t: VisaTransport) -> Keithley2600Channel:
        d = Keithley2600(
            t,
            (window.channel or "smua",),
            nplc=float(ctx.option("nplc")),
            line_frequency_hz=float(ctx.option("line_frequency_hz")),
        )
        return d.channel(0, width_min_s=window.width_min_s, width_max_s=window.width_max_s,
                         max_count=window.max_count)

    pulser = kinds.on_visa(ctx, build)
    d = pulser.parent
    return kinds.opened_on_visa(
        d,
        confirm=d.check_errors,
        configure=lambda lim: d.configure(current_limit_a=lim.compliance_a),
        pulser=pulser,
    )


KIND = kinds.InstrumentKind(
    name="keithley2600",
    help="Keithley 2600B SMU channels (TSP) as voltage and current sources and meters",
    roles=(VoltageSourceRole, CurrentSourceRole, MeterRole),
    options=(
        *kinds.VISA_OPTIONS,
        *kinds.TIMING_OPTIONS,
        kinds.KindOption("channels", "strlist", "", None,
                   "TSP channel names in order (default: smua, smub, node[2].smua ...)"),
        kinds.KindOption("n_channels", "int", "", None,
                   "number of TSP-Link channels (default: what the wiring uses, at least 2)"),
        kinds.KindOption("model", "str", "", None, "model number for the ranges (default: *IDN?)"),
        kinds.KindOption("v_max_v", "number", "V", None, "stricter |voltage level| limit"),
        kinds.KindOption("i_max_a", "number", "A", None, "stricter |current level| limit"),
    ),
    open=_open,
    exclusive_options=(("channels", "n_channels"),),
    shared_source_channels=True,
    open_pulser=_open_pulser,
)
"""The ``keithley2600`` instrument kind (entry point ``hwloop.instruments``)."""


def instrument_kind() -> kinds.InstrumentKind:
    """Entry point of the ``keithley2600`` kind (group ``hwloop.instruments``)."""
    return KIND
